"""Character (UTF-8 byte) text conditioner: no tokenizer files, works for any language offline."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from audioguide.conditioners.base import Conditioner, Encoded
from audioguide.core import AudioguideError


@dataclass(frozen=True)
class CharactersConfig:
    dim: int = 64
    max_len: int = 1000  # bytes

    def __post_init__(self) -> None:
        if self.dim <= 0 or self.max_len <= 0:
            raise ValueError("dim and max_len must be positive")


class Characters(Conditioner):
    """Embeds each UTF-8 byte of the text (ByT5-style vocabulary of 256 + padding)."""

    Config = CharactersConfig

    def __init__(self, config: CharactersConfig) -> None:
        super().__init__(config.dim)
        self.config = config
        self.table = nn.Embedding(257, config.dim, padding_idx=256)

    def ids(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        encoded = [t.encode("utf-8") for t in texts]
        for t, b in zip(texts, encoded):
            if not b.strip():
                raise AudioguideError("text is empty")
            if len(b) > self.config.max_len:
                raise AudioguideError(
                    f"text is {len(b)} bytes, over this conditioner's limit of {self.config.max_len}: {t[:40]!r}..."
                )
        length = max(len(b) for b in encoded)
        ids = torch.full((len(texts), length), 256, dtype=torch.long)
        for i, b in enumerate(encoded):
            ids[i, : len(b)] = torch.tensor(list(b), dtype=torch.long)
        return ids, ids != 256

    def check(self, inputs: Sequence[str]) -> None:
        self.ids(inputs)

    def forward(self, inputs: Sequence[str]) -> Encoded:
        ids, mask = self.ids(inputs)
        return Encoded(self.table(ids.to(self.null.device)), mask.to(self.null.device))
