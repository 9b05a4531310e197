"""Semantic tokens as a condition: the input of an acoustic stage that renders them in a voice.

A staged speech recipe (issue 23; CosyVoice 2, Du et al. 2024, arXiv 2412.10117, §2.4) first draws
supervised semantic tokens with a codec LM, then renders the autoencoder's latents from the tokens
and the speaker with a flow-matching model. This conditioner is that model's view of the tokens:
an input is the token ids of one utterance written as a string (``"412 17 17 980"``, what
:func:`token_text` writes; a corpus row keeps them under ``tokens``), each embedded as a learned
vector plus a linear map of its FSQ coordinates (:func:`audioguide.core.fsq_coordinates`, the
grid the tokenizer quantises to), so that codes next to each other in that grid start out close.
Every token spans ``frames`` latent frames (the tokenizer's stride): a model aligning this condition to its frames
takes these fixed durations instead of predicting them (:attr:`SemanticTokenIds.frames_per_token`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from audioguide.conditioners.base import Conditioner, Encoded
from audioguide.core import AudioguideError, fsq_coordinates

__all__ = ["SemanticTokenIds", "SemanticTokensConfig", "token_ids", "token_text"]


def token_text(ids: Tensor | Sequence[int]) -> str:
    """Token ids as the string this conditioner reads: decimal ids separated by spaces."""
    return " ".join(str(int(i)) for i in (ids.tolist() if isinstance(ids, Tensor) else ids))


def token_ids(text: str, size: int) -> list[int]:
    """The ids of a token string (the inverse of :func:`token_text`), each in ``[0, size)``; an
    empty, non-numeric or out-of-range string is a one-line :class:`AudioguideError`."""
    parts = text.split()
    if not parts:
        raise AudioguideError("token sequence is empty")
    if not all(p.isdigit() for p in parts):
        bad = next(p for p in parts if not p.isdigit())
        raise AudioguideError(f"token sequence holds {bad[:20]!r}; write token ids as integers separated by spaces")
    values = [int(p) for p in parts]
    if max(values) >= size:
        raise AudioguideError(f"token id {max(values)} is out of range: this tokenizer has {size} ids")
    return values


@dataclass(frozen=True)
class SemanticTokensConfig:
    """``levels``: the tokenizer's FSQ levels (``prod(levels)`` ids); ``frames``: latent frames per token."""

    levels: tuple[int, ...] = (8, 5, 5, 5)
    frames: int = 4
    dim: int = 128
    max_len: int = 2000  # tokens (85 s at 23.4 Hz)

    def __post_init__(self) -> None:
        if not self.levels or any(level < 2 for level in self.levels):
            raise ValueError(f"levels must be a non-empty list of integers >= 2, got {list(self.levels)}")
        if self.frames < 1 or self.dim < 1 or self.max_len < 1:
            raise ValueError("frames, dim and max_len must be positive")


class SemanticTokenIds(Conditioner):
    """Embeds token-id strings (see the module docstring); id ``i`` is row ``i + 1`` of the table (0 pads)."""

    Config = SemanticTokensConfig

    def __init__(self, config: SemanticTokensConfig) -> None:
        super().__init__(config.dim)
        self.config = config
        self.size = math.prod(config.levels)
        self.register_buffer("levels", torch.tensor(config.levels, dtype=torch.long), persistent=False)
        self.table = nn.Embedding(self.size + 1, config.dim, padding_idx=0)
        self.coords = nn.Linear(len(config.levels), config.dim, bias=False)

    @property
    def frames_per_token(self) -> int:
        return self.config.frames

    def ids(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Ids ``[B, L]`` (shifted by one; 0 pads) and the mask of real tokens ``[B, L]``."""
        seqs = []
        for text in texts:
            values = token_ids(text, self.size)
            if len(values) > self.config.max_len:
                raise AudioguideError(f"{len(values)} tokens, over this conditioner's limit of {self.config.max_len}")
            seqs.append([v + 1 for v in values])
        ids = torch.zeros(len(seqs), max(len(s) for s in seqs), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
        return ids, ids != 0

    def check(self, inputs: Sequence[str]) -> None:
        self.ids(inputs)

    def forward(self, inputs: Sequence[str]) -> Encoded:
        ids, mask = self.ids(inputs)
        ids, mask = ids.to(self.null.device), mask.to(self.null.device)
        coords = fsq_coordinates((ids - 1).clamp_min(0), self.levels) * mask[..., None]
        return Encoded(self.table(ids) + self.coords(coords.to(self.coords.weight.dtype)), mask)
