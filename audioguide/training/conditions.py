"""Per-condition dropout for training, so that multi-condition CFG works at inference.

Each condition is dropped (replaced by its conditioner's null) independently with its own
probability, and all of them together with ``p_all`` (VoxInstruct drops text, semantic tokens and
description at 0.1 each; F5-TTS drops the audio prompt at 0.3 and both at 0.2). The result is the
same ``keep`` mapping guidance uses at inference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor


def draw_keep(
    names: Sequence[str],
    p_drop: Mapping[str, float],
    batch: int,
    generator: torch.Generator,
    p_all: float = 0.0,
    device: torch.device | str = "cpu",
) -> dict[str, Tensor]:
    """Boolean keep masks ``[batch]`` per condition (True = keep), drawn from ``generator``, on ``device``."""
    for name, p in list(p_drop.items()) + [("all", p_all)]:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability for {name!r} must be in [0, 1], got {p}")
    drop_all = torch.rand(batch, generator=generator) < p_all
    keep = {}
    for name in names:
        u = torch.rand(batch, generator=generator)
        keep[name] = (~(drop_all | (u < p_drop.get(name, 0.0)))).to(device)
    return keep
