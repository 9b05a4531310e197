"""The identity representation: waveform samples grouped into frames of ``hop`` samples.

No learned parameters and perfect reconstruction; the latent of a frame is its ``hop`` samples
divided by ``scale``. Useful for tests and as a baseline for raw-waveform generators.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from audioguide.representations.base import Representation


@dataclass(frozen=True)
class FramesConfig:
    sample_rate: int = 16000
    hop: int = 128  # samples per latent frame = latent channels
    scale: float = 0.1  # latent = samples / scale

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.hop <= 0 or self.scale <= 0:
            raise ValueError("sample_rate, hop and scale must be positive")


class Frames(Representation):
    Config = FramesConfig

    def __init__(self, config: FramesConfig) -> None:
        super().__init__()
        self.config = config
        self.sample_rate, self.hop, self.channels = config.sample_rate, config.hop, config.hop

    def encode(self, wav: Tensor) -> Tensor:
        pad = (-wav.shape[-1]) % self.hop
        wav = F.pad(wav, (0, pad))
        return wav.unflatten(-1, (-1, self.hop)).transpose(-1, -2) / self.config.scale

    def decode(self, z: Tensor) -> Tensor:
        return (z * self.config.scale).transpose(-1, -2).flatten(-2)
