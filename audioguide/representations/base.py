"""The representation protocol every codec / autoencoder implements."""

from __future__ import annotations

from torch import Tensor, nn


class Representation(nn.Module):
    """Encodes a waveform ``[B, samples]`` to latents ``[B, channels, frames]`` and decodes back.

    Subclasses set ``sample_rate``, ``channels`` and ``hop`` (samples per latent frame).
    """

    sample_rate: int
    channels: int
    hop: int

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop

    def frames_for(self, seconds: float) -> int:
        """Number of latent frames that decode to at least ``seconds`` of audio."""
        return max(1, int(-(-seconds * self.sample_rate // self.hop)))

    def encode(self, wav: Tensor) -> Tensor:
        raise NotImplementedError

    def decode(self, z: Tensor) -> Tensor:
        raise NotImplementedError
