"""The representation protocol every codec / autoencoder implements."""

from __future__ import annotations

from torch import Tensor, nn


class Representation(nn.Module):
    """Encodes a waveform ``[B, samples]`` to latents ``[B, channels, frames]`` and decodes back.

    Subclasses set ``sample_rate``, ``channels`` and ``hop`` (samples per latent frame).

    Continuous latents go through :meth:`encode` / :meth:`decode`. Representations with discrete
    tokens also set ``n_codebooks`` (``K``) and ``codebook_size`` (``V``) and implement
    :meth:`encode_tokens` (``[B, samples] -> LongTensor [B, K, frames]``, values in ``[0, V)``)
    and :meth:`decode_tokens`; continuous-only representations keep ``n_codebooks = 0`` and
    raise ``NotImplementedError`` there.
    """

    sample_rate: int
    channels: int
    hop: int
    trainable: bool = False  # True: weights come from `audioguide train`, so recipes must name them
    n_codebooks: int = 0
    codebook_size: int = 0

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

    def encode_tokens(self, wav: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no discrete tokens")

    def decode_tokens(self, codes: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no discrete tokens")
