"""The conditioner protocol and its explicit null condition."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn


class Encoded(NamedTuple):
    """Embeddings ``[B, L, D]`` and a validity mask ``[B, L]`` (True = real token)."""

    emb: Tensor
    mask: Tensor


class Conditioner(nn.Module):
    """Maps a batch of raw inputs to :class:`Encoded` embeddings of width ``dim``.

    The null condition is one learned vector (a length-1 sequence): :meth:`select` swaps it in for
    the rows whose ``keep`` flag is False. Guidance and training dropout both go through it.
    """

    dim: int

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.null = nn.Parameter(torch.zeros(dim))

    def forward(self, inputs: Sequence[str]) -> Encoded:
        raise NotImplementedError

    def check(self, inputs: Sequence[str]) -> None:
        """Raise a one-line ``AudioguideError`` for inputs this conditioner cannot take.

        Cheaper than encoding where a subclass can tell (ids, names, files); by default it encodes.
        """
        with torch.no_grad():
            self(inputs)

    def absent(self, batch: int) -> Encoded:
        """The null condition for ``batch`` rows: what a row sees when its input is not given."""
        emb = self.null[None, None].expand(batch, 1, self.dim).clone()
        return Encoded(emb, torch.ones(batch, 1, dtype=torch.bool, device=emb.device))

    def select(self, enc: Encoded, keep: Tensor, negative: Encoded | None = None) -> Encoded:
        """Replace dropped rows (``keep`` False) by the null condition, or by ``negative`` (a negative
        prompt's encoding, padded to ``enc``'s length): then the "unconditional" branch of
        classifier-free guidance is the negative prompt, and guidance steers away from it (the
        negative prompts of Stable Diffusion / diffusers, whose negative embeddings take the place
        of the empty prompt's)."""
        if negative is not None:
            k = keep.view(-1, 1, 1)
            return Encoded(torch.where(k, enc.emb, negative.emb.to(enc.emb.dtype)), torch.where(keep.view(-1, 1), enc.mask, negative.mask))
        k = keep.view(-1, 1, 1)
        emb = torch.where(k, enc.emb, torch.zeros_like(enc.emb))
        emb[:, 0] = torch.where(k[:, 0], emb[:, 0], self.null.to(emb.dtype))
        first = torch.zeros_like(enc.mask)
        first[:, 0] = True
        return Encoded(emb, torch.where(keep.view(-1, 1), enc.mask, first))
