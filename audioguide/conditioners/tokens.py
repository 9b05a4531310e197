"""Semantic tokens as a condition: the input of an acoustic stage that renders them in a voice.

A staged speech recipe (issue 23; CosyVoice 2, Du et al. 2024, arXiv 2412.10117, §2.4) first draws
supervised semantic tokens with a codec LM, then renders the autoencoder's latents from the tokens
and the speaker with a flow-matching model. This conditioner is that model's view of the tokens:
an input is the token ids of one utterance written as a string (``"412 17 17 980"``, what
:func:`token_text` writes; a corpus row keeps them under ``tokens``), each embedded as a learned
vector plus a linear map of its FSQ coordinates (:func:`audioguide.core.fsq_coordinates`, the
grid the tokenizer quantises to), so that codes next to each other in that grid start out close.
With ``decoder = true`` the tokens are also read through a copy of the tokenizer's own decoder
(:class:`TokenDecoder`, dilated convolutions over the token sequence up to the latent frames, trained
to name each frame's phoneme): each token's frame features, concatenated and projected, are added to
its embedding, so the acoustic stage reads what a token says in its context, not only its table row.
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

__all__ = ["DilatedBlock", "SemanticTokenIds", "SemanticTokensConfig", "TokenDecoder", "token_ids", "token_text"]


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
    """``levels``: the tokenizer's FSQ levels (``prod(levels)`` ids); ``frames``: latent frames per token.
    ``decoder = true`` also reads the tokens through a copy of the tokenizer's :class:`TokenDecoder`
    (its ``decoder_dim``, ``decoder_depth`` and ``decoder_kernel``; the copy starts as the
    tokenizer's, ``scripts/warm_start.py``): each token's ``frames`` frame features, concatenated and
    projected, are added to its embedding."""

    levels: tuple[int, ...] = (8, 5, 5, 5)
    frames: int = 4
    dim: int = 128
    max_len: int = 2000  # tokens (85 s at 23.4 Hz)
    decoder: bool = False
    decoder_dim: int = 192
    decoder_depth: int = 2
    decoder_kernel: int = 5

    def __post_init__(self) -> None:
        if not self.levels or any(level < 2 for level in self.levels):
            raise ValueError(f"levels must be a non-empty list of integers >= 2, got {list(self.levels)}")
        if self.frames < 1 or self.dim < 1 or self.max_len < 1:
            raise ValueError("frames, dim and max_len must be positive")
        if self.decoder_dim < 1 or self.decoder_depth < 0 or self.decoder_kernel < 1 or self.decoder_kernel % 2 == 0:
            raise ValueError("decoder_dim must be positive, decoder_depth >= 0 and decoder_kernel an odd integer")


class DilatedBlock(nn.Module):
    """``x + MLP(LN(dwconv(x)))`` over ``[B, D, T]`` (ConvNeXt, Liu et al. 2022, §2.5, in 1-D), dilated
    (the semantic tokenizer's and the content verifier's block)."""

    def __init__(self, dim: int, kernel: int, dilation: int = 1) -> None:
        super().__init__()
        self.dw = nn.Conv1d(dim, dim, kernel, padding=dilation * (kernel - 1) // 2, dilation=dilation, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.mlp(self.norm(self.dw(x).transpose(1, 2))).transpose(1, 2)


class TokenDecoder(nn.Module):
    """FSQ values ``[B, L, d]`` -> frame features ``[B, frames, dim]`` (``stride`` frames a token):
    a linear map of the values, ``depth`` blocks at the token rate, a transposed convolution to the
    frames and two dilated blocks there, layer-normed. Given the tokens' ``mask [B, L]``, padding is
    held at zero between the layers, so a row's features do not depend on the rows padded beside it. The semantic tokenizer
    (:mod:`audioguide.representations.semantic`) trains it to predict each frame's phoneme and
    latent from the tokens; a :class:`SemanticTokenIds` with ``decoder`` on holds a copy, so an
    acoustic stage starts from features that already name the phonemes."""

    def __init__(self, values: int, dim: int, stride: int, depth: int = 2, kernel: int = 5) -> None:
        super().__init__()
        self.from_fsq = nn.Linear(values, dim)
        self.up_blocks = nn.ModuleList(DilatedBlock(dim, kernel) for _ in range(depth))
        self.up = nn.ConvTranspose1d(dim, dim, stride, stride=stride)
        self.out_blocks = nn.ModuleList(DilatedBlock(dim, kernel, d) for d in (1, 2))
        self.norm = nn.LayerNorm(dim)

    def forward(self, q: Tensor, frames: int, mask: Tensor | None = None) -> Tensor:
        dtype = self.from_fsq.weight.dtype
        keep = (torch.ones_like(q[..., 0]) if mask is None else mask).to(dtype)[:, None]  # [B, 1, L]
        h = self.from_fsq(q.to(dtype)).transpose(1, 2) * keep
        for block in self.up_blocks:
            h = block(h) * keep
        keep = keep.repeat_interleave(self.up.stride[0], dim=-1)[..., :frames]
        h = self.up(h)[..., :frames] * keep
        for block in self.out_blocks:
            h = block(h) * keep
        return self.norm(h.transpose(1, 2))


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
        if config.decoder:
            self.decoder = TokenDecoder(len(config.levels), config.decoder_dim, config.frames, config.decoder_depth, config.decoder_kernel)
            self.from_decoder = nn.Linear(config.frames * config.decoder_dim, config.dim)

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
        x = self.table(ids) + self.coords(coords.to(self.coords.weight.dtype))
        if self.config.decoder:
            B, L = ids.shape
            frames = self.decoder(coords, L * self.config.frames, mask)  # [B, L * frames, decoder_dim]
            x = x + self.from_decoder(frames.reshape(B, L, -1))
        return Encoded(x, mask)
