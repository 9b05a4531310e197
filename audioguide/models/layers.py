"""Layers shared by the generator networks: sinusoidal features and rotary position embeddings."""

from __future__ import annotations

import math

import torch
from torch import Tensor


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
