"""What every sampler module shares: the callback and guided-pair signatures, and grid plumbing."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Callback = Callable[[int, float, Tensor], None]
"""``callback(i, t, x)`` after step ``i``, with the time ``t`` the new ``x`` sits at."""

GuidedPair = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
"""``model_pair(x, t) -> (guided, unconditional)`` predictions of the sampler's kind (CFG++)."""


def check_grid(ts: Tensor) -> None:
    if ts.ndim != 1 or ts.numel() < 2:
        raise ValueError(f"ts must be a 1-D tensor of at least 2 times, got shape {tuple(ts.shape)}")


def t_batch(t: float, x: Tensor) -> Tensor:
    """The scalar time ``t`` as the ``[B]`` tensor a model expects."""
    return torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
