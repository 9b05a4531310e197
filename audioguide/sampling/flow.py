"""Flow-matching (rectified-flow) ODE samplers and their time grids.

Conventions (see :mod:`audioguide.core`): ``x_t = (1 - t) x_0 + t eps`` with ``t = 1`` the noise
end, and the model is ``model(x, t) -> v`` with ``v = dx_t/dt = eps - x_0`` and ``t`` a float
tensor of shape ``[B]``. Samplers integrate ``dx/dt = v`` from ``ts[0]`` (usually 1) down to
``ts[-1]`` (usually 0). Time grids are 1-D float64 tensors of length ``steps + 1``, decreasing
from 1 to 0. ``callback(i, t, x)``, when given, is called after step ``i`` with the time ``t``
(a float, ``ts[i + 1]``) that the new ``x`` sits at.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from audioguide.core import VectorField, flow_alpha_sigma, to_x0_eps
from audioguide.sampling.common import Callback, ContinuousSampler, GuidedPair, check_grid, t_batch


# Sway sampling keeps the grid monotone only for coef in [-1, 1 / (pi/2 - 1)].
_SWAY_MAX = 1.0 / (math.pi / 2.0 - 1.0)


def _check_steps(steps: int) -> None:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")




def _pin_ends(ts: Tensor) -> Tensor:
    """Set the end points to exactly 1 and 0 (warping formulas are exact there only in theory)."""
    ts = ts.clamp(0.0, 1.0)
    ts[0], ts[-1] = 1.0, 0.0
    return ts


def uniform_times(steps: int) -> Tensor:
    """``steps + 1`` equally spaced times from 1 (noise) to 0 (data)."""
    _check_steps(steps)
    return torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)


def shift_times(steps: int, shift: float) -> Tensor:
    """Uniform grid warped by the resolution-dependent shift of Esser et al. 2024 (SD3, §5.3.2).

    ``t' = s t / (1 + (s - 1) t)``; ``s > 1`` spends more steps near the noise end, ``s = 1`` is
    the uniform grid.
    """
    if not shift > 0.0 or not math.isfinite(shift):
        raise ValueError(f"shift must be a positive finite number, got {shift!r}")
    t = uniform_times(steps)
    return _pin_ends(shift * t / (1.0 + (shift - 1.0) * t))


def sway_times(steps: int, coef: float = -1.0) -> Tensor:
    """Sway sampling of F5-TTS (Chen et al. 2024, arXiv 2410.06885), ``f_sway(u; s)``.

    In F5's convention ``tau`` runs from 0 (noise) to 1 (data) and the uniform grid is warped to
    ``tau' = tau + coef (cos(pi/2 tau) - 1 + tau)``; we return ``t = 1 - tau'``. ``coef < 0``
    (default -1) concentrates steps near the noise end, ``coef = 0`` is the uniform grid; the grid
    is monotone for ``-1 <= coef <= 1 / (pi/2 - 1)``.
    """
    if not -1.0 <= coef <= _SWAY_MAX:
        raise ValueError(f"sway coef must lie in [-1, {_SWAY_MAX:.4f}], got {coef!r}")
    tau = 1.0 - uniform_times(steps)
    tau = tau + coef * (torch.cos(0.5 * math.pi * tau) - 1.0 + tau)
    return _pin_ends(1.0 - tau)


def flow_times(steps: int, schedule: str = "uniform", shift: float = 1.0, sway: float = -1.0) -> Tensor:
    """The time grid named ``schedule`` (``"uniform"``, ``"shift"`` or ``"sway"``)."""
    grids: dict[str, Callable[[], Tensor]] = {
        "uniform": lambda: uniform_times(steps),
        "shift": lambda: shift_times(steps, shift),
        "sway": lambda: sway_times(steps, sway),
    }
    if schedule not in grids:
        raise ValueError(f"unknown time schedule {schedule!r}; choose one of {', '.join(grids)}")
    return grids[schedule]()


def sample_euler(model: VectorField, x: Tensor, ts: Tensor, callback: Callback | None = None) -> Tensor:
    """Explicit Euler on ``dx/dt = v(x, t)``: ``x <- x + (t_{i+1} - t_i) v(x, t_i)``.

    First order; one model call per step. For a point-mass data distribution the exact velocity
    is constant along the straight path, so a single step is exact.
    """
    check_grid(ts)
    for i in range(ts.numel() - 1):
        t, t_next = float(ts[i]), float(ts[i + 1])
        x = x + (t_next - t) * model(x, t_batch(t, x))
        if callback is not None:
            callback(i, t_next, x)
    return x


def sample_heun(model: VectorField, x: Tensor, ts: Tensor, callback: Callback | None = None) -> Tensor:
    """Heun's method (explicit trapezoid, Karras et al. 2022, Alg. 1) on ``dx/dt = v(x, t)``.

    Predictor ``x' = x + h v(x, t)``, corrector ``x <- x + h/2 (v(x, t) + v(x', t + h))``. The step
    that lands on ``t = 0`` uses the Euler predictor alone (the velocity at the data end can be
    singular), so a grid of ``n`` steps ending at 0 costs ``2n - 1`` model calls.
    """
    check_grid(ts)
    for i in range(ts.numel() - 1):
        t, t_next = float(ts[i]), float(ts[i + 1])
        h = t_next - t
        v = model(x, t_batch(t, x))
        x_pred = x + h * v
        if t_next <= 0.0:
            x = x_pred
        else:
            x = x + 0.5 * h * (v + model(x_pred, t_batch(t_next, x)))
        if callback is not None:
            callback(i, t_next, x)
    return x


def sample_midpoint(model: VectorField, x: Tensor, ts: Tensor, callback: Callback | None = None) -> Tensor:
    """Explicit midpoint method on ``dx/dt = v(x, t)``; second order, two model calls per step.

    ``x_mid = x + h/2 v(x, t)``, ``x <- x + h v(x_mid, t + h/2)`` with ``h = t_{i+1} - t_i``.
    """
    check_grid(ts)
    for i in range(ts.numel() - 1):
        t, t_next = float(ts[i]), float(ts[i + 1])
        h = t_next - t
        x_mid = x + 0.5 * h * model(x, t_batch(t, x))
        x = x + h * model(x_mid, t_batch(t + 0.5 * h, x))
        if callback is not None:
            callback(i, t_next, x)
    return x


def sample_euler_cfgpp(
    model_pair: GuidedPair, x: Tensor, ts: Tensor, callback: Callback | None = None
) -> Tensor:
    """CFG++ (Chung et al. 2024, arXiv 2406.08070) transcribed from DDIM to rectified flow.

    ``model_pair(x, t)`` returns ``(v_guided, v_uncond)``. The data estimate comes from the guided
    velocity and the noise estimate from the unconditional one,
    ``x0 = (x - t v_guided)``, ``eps = x0(v_uncond) + v_uncond`` (via :func:`to_x0_eps`), and the
    sample is re-noised onto the straight path: ``x <- (1 - t_{i+1}) x0 + t_{i+1} eps``. With
    ``v_guided == v_uncond`` this is exactly :func:`sample_euler`.
    """
    check_grid(ts)
    for i in range(ts.numel() - 1):
        t, t_next = float(ts[i]), float(ts[i + 1])
        t_b = t_batch(t, x)
        v_guided, v_uncond = model_pair(x, t_b)
        alpha, sigma = flow_alpha_sigma(t_b)
        x0, _ = to_x0_eps(v_guided, "flow", x, alpha, sigma)
        _, eps = to_x0_eps(v_uncond, "flow", x, alpha, sigma)
        x = (1.0 - t_next) * x0 + t_next * eps
        if callback is not None:
            callback(i, t_next, x)
    return x


# ---------------------------------------------------------------------------------------------
# As recipes name them
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlowSamplerConfig:
    """``[sampler]`` of the flow ODE samplers: steps and time grid (``uniform``, ``shift``, ``sway``)."""

    steps: int = 16
    schedule: str = "uniform"  # uniform | shift | sway
    shift: float = 1.0
    sway: float = -1.0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        flow_times(1, self.schedule, self.shift, self.sway)  # validates the schedule
        if self.shift != 1.0 and self.schedule != "shift":
            raise ValueError('shift applies only to schedule = "shift"')
        if self.sway != -1.0 and self.schedule != "sway":
            raise ValueError('sway applies only to schedule = "sway"')


def _ode(fn: Callable, pair: bool = False) -> ContinuousSampler:
    def run(field, x, cfg, noise, callback):
        ts = flow_times(cfg.steps, cfg.schedule, cfg.shift, cfg.sway)
        return fn(field.pair if pair else field, x, ts, callback=callback)

    return ContinuousSampler(FlowSamplerConfig, ("flow",), lambda cfg: flow_alpha_sigma, run, cfgpp=pair)


EULER = _ode(sample_euler)
HEUN = _ode(sample_heun)
MIDPOINT = _ode(sample_midpoint)
EULER_CFGPP = _ode(sample_euler_cfgpp, pair=True)
