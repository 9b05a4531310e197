"""Layers shared by the generator networks: sinusoidal features, rotary position embeddings and
the multi-head attention of the DiT and of the FFT blocks over aligned tokens.

Attention
---------
One function, :func:`attention`, serves self- and cross-attention. It calls
``F.scaled_dot_product_attention`` normally and an explicit ``softmax(Q K^T / sqrt(d)) V`` when
``math=True``: ``torch.func.jvp`` (forward-mode AD, needed by the mean-flow loss) has no rule for
the fused CPU kernels. :func:`math_attention` switches a whole model to the explicit path.
Keys whose mask is False (padded frames, padded or dropped condition tokens) get zero weight.
Optional RMSNorm on queries and keys (``qk_norm``; Henry et al. 2020, Dehghani et al. 2023) keeps
the logits bounded, which mean-flow training needs for stability.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sinusoidal(values: Tensor, width: int, scale: float = 1000.0) -> Tensor:
    """Sinusoidal features (Vaswani et al. 2017, §3.5) of ``scale * values`` ``[N]`` -> ``[N, width]``.

    Frequencies ``10000^(-i / (width/2))``; computed in the dtype of ``values`` (float64 works).
    """
    half = width // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=values.dtype, device=values.device) / half)
    angles = scale * values[:, None] * freqs[None]
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


def rope_angles(positions: Tensor, width: int, base: float = 10000.0) -> tuple[Tensor, Tensor]:
    """RoFormer (Su et al. 2021, eq. 34) angles ``m theta_i`` with ``theta_i = base^(-2i/width)``.

    ``positions`` is ``[..., L]`` (float); returns ``(cos, sin)`` of shape ``[..., L, width]`` (each
    angle twice, for the rotate-half layout of :func:`apply_rope`).
    """
    half = width // 2
    inv_freq = base ** (-torch.arange(half, dtype=positions.dtype, device=positions.device) / half)
    angles = positions[..., None] * inv_freq
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate pairs ``(x_i, x_{i + d/2})`` of ``x`` ``[B, H, L, d]`` by the angles of each position."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


# ---------------------------------------------------------------------------------------------
# Attention
# ---------------------------------------------------------------------------------------------


def _attendable(mask: Tensor) -> Tensor:
    """Key mask ``[B, L]`` where a row with no valid key attends to all (avoids NaN rows)."""
    return mask | ~mask.any(dim=-1, keepdim=True)


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, math: bool = False) -> Tensor:
    """``softmax(Q K^T / sqrt(d)) V`` over keys with ``mask`` True (Vaswani et al. 2017, eq. 1).

    ``q`` is ``[B, H, Lq, d]``, ``k`` and ``v`` ``[B, H, Lk, d]``, ``mask`` ``[B, Lk]`` bool. A row whose
    keys are all masked attends to all of them (never NaN). ``math=True`` computes it explicitly,
    which ``torch.func.jvp`` can differentiate; otherwise ``F.scaled_dot_product_attention``.
    """
    key_mask = _attendable(mask)[:, None, None, :]
    if not math:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
    scores = (q @ k.transpose(-2, -1)) / (q.shape[-1] ** 0.5)
    scores = scores.masked_fill(~key_mask, float("-inf"))
    return scores.softmax(dim=-1) @ v


class Attention(nn.Module):
    """Multi-head attention from ``x`` ``[B, Lq, dim]`` to ``context`` ``[B, Lk, dim]``.

    ``math`` selects the explicit path of :func:`attention` (see :func:`math_attention`).
    """

    def __init__(self, dim: int, heads: int, qk_norm: bool) -> None:
        super().__init__()
        self.heads = heads
        self.to_q, self.to_k, self.to_v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.to_out = nn.Linear(dim, dim)
        width = dim // heads
        self.q_norm: nn.Module = nn.RMSNorm(width) if qk_norm else nn.Identity()
        self.k_norm: nn.Module = nn.RMSNorm(width) if qk_norm else nn.Identity()
        self.math = False

    def _split(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def forward(
        self,
        x: Tensor,
        context: Tensor,
        mask: Tensor,
        rope: tuple[Tensor, Tensor] | None = None,
        identity: Tensor | None = None,
    ) -> Tensor:
        """``rope`` holds ``(cos, sin)`` ``[L, d]``; only for self-attention (``context is x``).

        ``identity`` ``[B]`` bool: rows whose attention map is replaced by the identity (each query
        attends to its own position only, so the attention outputs ``V``: the perturbed
        self-attention of PAG, Ahn et al. 2024, §4); self-attention only. Other rows are computed
        exactly as without it.
        """
        q = self.q_norm(self._split(self.to_q(x)))
        k = self.k_norm(self._split(self.to_k(context)))
        v = self._split(self.to_v(context))
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        out = attention(q, k, v, mask, math=self.math)
        if identity is not None and bool(identity.any()):
            if context is not x:
                raise ValueError("an identity attention map needs self-attention (queries and keys alike)")
            out = torch.where(identity.view(-1, 1, 1, 1), v, out)
        return self.to_out(out.transpose(1, 2).flatten(2))


@contextmanager
def math_attention(model: object) -> Iterator[object]:
    """Within the block, every :class:`Attention` of ``model`` uses the explicit math path.

    Needed around ``torch.func.jvp`` (no forward-mode AD through fused SDPA on CPU). The previous
    setting of each module is restored on exit. Anything that is not an ``nn.Module`` (a plain
    function standing in for a model) is left alone.
    """
    found = model.modules() if isinstance(model, nn.Module) else ()
    modules = [m for m in found if isinstance(m, Attention)]
    before = [m.math for m in modules]
    for m in modules:
        m.math = True
    try:
        yield model
    finally:
        for m, b in zip(modules, before):
            m.math = b
