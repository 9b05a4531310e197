"""A tiny per-frame MLP generator: the random-weight stand-in used by test recipes.

Not a model anyone should train for quality; it exists so that every path of the product
(recipes, guidance, samplers, CLI, rendering) can run end to end in seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torch import Tensor, nn

from audioguide.conditioners import Conditioner
from audioguide.core import Cond, Keep
from audioguide.models.base import Generator, init_random
from audioguide.models.layers import sinusoidal


@dataclass(frozen=True)
class ToyFlowConfig:
    hidden: int = 64
    layers: int = 2
    seed: int = 0
    kind: str = "flow"  # prediction kind: flow | eps | v | x0
    mean_flow: bool = False  # also takes r: predicts the average velocity u(z, r, t)

    def __post_init__(self) -> None:
        if self.hidden <= 0 or self.layers < 0:
            raise ValueError("hidden must be positive and layers non-negative")
        if self.kind not in ("flow", "eps", "v", "x0"):
            raise ValueError(f"kind must be one of flow, eps, v, x0, got {self.kind!r}")


class ToyFlow(Generator):
    Config = ToyFlowConfig

    def __init__(self, config: ToyFlowConfig, channels: int, conditioners: Mapping[str, Conditioner]) -> None:
        super().__init__(conditioners)
        self.config, self.kind, self.mean_flow = config, config.kind, config.mean_flow
        h = config.hidden
        self.inp = nn.Linear(channels, h)
        self.time = nn.Linear(h, h)
        self.interval = nn.Linear(h, h)  # embeds t - r for mean-flow use
        self.cond_proj = nn.ModuleDict({n: nn.Linear(c.dim, h) for n, c in conditioners.items()})
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(h), nn.Linear(h, h), nn.GELU()) for _ in range(config.layers))
        self.out = nn.Linear(h, channels)
        init_random(self, config.seed)

    def forward(self, x: Tensor, t: Tensor, cond: Cond, keep: Keep, **extra: Tensor) -> Tensor:
        h = self.inp(x.transpose(1, 2)) + self.time(sinusoidal(t, self.config.hidden))[:, None]
        if self.mean_flow:
            h = h + self.interval(sinusoidal(t - extra.get("r", t), self.config.hidden))[:, None]
        for name, enc in self.conditions(cond, keep).items():
            m = enc.mask.unsqueeze(-1).to(enc.emb.dtype)
            pooled = (enc.emb * m).sum(1) / m.sum(1).clamp_min(1.0)
            h = h + self.cond_proj[name](pooled)[:, None]
        for block in self.blocks:
            h = h + block(h)
        return self.out(h).transpose(1, 2)
