"""Few-step sampling with a mean-flow (average velocity) model.

MeanFlow (Geng et al. 2025, arXiv 2505.13447) learns the average velocity over an interval,
``u(z_t, r, t) = 1/(t - r) int_r^t v(z_tau, tau) dtau`` (§3), so the exact flow map is
``z_r = z_t - (t - r) u(z_t, r, t)`` and one network call crosses the whole interval. MeanAudio
(arXiv 2508.06098) applies it to text-to-audio.

Conventions: our time (see :mod:`audioguide.core`), ``z_t = (1 - t) x_0 + t eps`` with ``t = 1``
noise, matching MeanFlow; a network trained with noise at ``t = 0`` (as MeanAudio's is) must be
wrapped to receive ``1 - t`` and ``1 - r``. The model is
``model(z, t, r=r) -> u`` with ``t`` and ``r`` float tensors of shape ``[B]``.
"""

from __future__ import annotations

from dataclasses import dataclass


import torch
from torch import Tensor

from audioguide.core import VectorField, flow_alpha_sigma
from audioguide.sampling.common import Callback, ContinuousSampler



def sample_meanflow(
    model: VectorField, x: Tensor, steps: int = 1, callback: Callback | None = None
) -> Tensor:
    """Integrate from noise ``x`` (at ``t = 1``) to data on a uniform grid of ``steps`` intervals.

    Each step is ``z <- z - (t - r) u(z, r, t)``; with ``steps = 1`` this is
    ``x_0 = eps - u(eps, r=0, t=1)`` (MeanFlow's 1-NFE sampler). ``callback(i, r, z)`` is called after
    step ``i`` with the time ``r`` that the new ``z`` sits at.
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    ts = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    for i in range(steps):
        t, r = float(ts[i]), float(ts[i + 1])
        t_b = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
        r_b = torch.full((x.shape[0],), r, dtype=x.dtype, device=x.device)
        x = x - (t - r) * model(x, t_b, r=r_b)
        if callback is not None:
            callback(i, r, x)
    return x


@dataclass(frozen=True)
class MeanFlowSamplerConfig:
    """``[sampler]`` of the mean-flow sampler: the number of intervals."""

    steps: int = 1

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")


MEANFLOW = ContinuousSampler(
    MeanFlowSamplerConfig, ("flow",), lambda cfg: flow_alpha_sigma,
    lambda field, x, cfg, noise, callback: sample_meanflow(field, x, cfg.steps, callback=callback),
    mean_flow=True,
)
