"""Classifier-free guidance as a predictor-corrector (Bradley & Nakkiran 2024, "Classifier-Free
Guidance is a Predictor-Corrector", arXiv 2408.09000, §4).

The paper's predictor-corrector guidance (PCG) alternates, at every step ``t -> t'`` of a grid:

1. **predictor**: one DDIM step for the *conditional* distribution ``p(x | c)``, without guidance;
2. **corrector**: ``K`` steps of Langevin dynamics on the gamma-powered distribution
   ``p_{t', gamma}(x | c) ∝ p_{t'}(x | c)^gamma p_{t'}(x)^(1 - gamma)``, whose score is the CFG score
   ``s_gamma = gamma ∇log p_t(x | c) + (1 - gamma) ∇log p_t(x)``::

       x <- x + (eta / 2) s_gamma(x) + sqrt(eta) z,    z ~ N(0, I).

Its theorem (§4): in the SDE limit, CFG-DDPM with scale ``w`` *is* PCG with ``gamma = 2 w - 1`` and one
Langevin step of size ``eta = g(t)^2 dt`` per step (split the reverse SDE's drift ``f x - g^2 s_w``
into the conditional probability-flow ODE ``f x - g^2 s_c / 2`` and the remainder
``-(g^2 / 2)(2 s_w - s_c) = -(g^2 / 2) s_{2w - 1}``, which with the noise ``g dW`` is Langevin
dynamics). The paper offers PCG as a lens on CFG; here it is a sampler, so that the number of
corrector steps and their size can be measured as design axes.

Our conventions (see :mod:`audioguide.core`): ``x_t = alpha_t x_0 + sigma_t eps``, ``t = 1`` noise.

* **Scores from predictions.** By Tweedie, ``∇log p_t(x) = -E[eps | x_t] / sigma_t``. Every
  prediction kind gives ``eps`` affinely (:func:`~audioguide.core.to_x0_eps`): a flow velocity
  ``v = eps - x_0`` gives ``eps = x + (1 - t) v`` and so ``∇log p_t = -(x + (1 - t) v) / t``; an x0
  prediction gives ``eps = (x - alpha x_0) / sigma``. Because the conversion is the same affine map
  for every branch, the eps of the guided prediction is the guided eps,
  ``eps_gamma = eps_u + gamma (eps_c - eps_u)``, and ``s_gamma = -eps_gamma / sigma_t``: gamma is
  the policy's scale ``w`` (``u + w (c - u)``, the project's one convention), multi-condition
  policies included (a weighted sum of scores is the score of a product of powers).
* **Langevin step size.** ``eta = size * sigma_{t'}^2`` (annealed Langevin, Song & Ermon 2019; the
  size of Song et al. 2021's corrector relative to the noise level), so one corrector step is
  ``x <- x - (size sigma / 2) eps_gamma + sqrt(size) sigma z``: dimensionless and the same for flow
  and diffusion paths. The theorem's step is ``size = 2 (lambda_{t'} - lambda_t)`` with
  ``lambda = log(alpha / sigma)`` (since ``g^2 dt = 2 sigma^2 d lambda``).
* **Predictor.** DDIM with ``eta = 0`` (Song et al. 2021, eq. 12) on the conditional prediction:
  ``x <- alpha' x_0(c) + sigma' eps(c)``; on the rectified-flow path that is exactly an Euler step
  with the conditional velocity.
* The corrector is skipped where ``sigma_{t'} = 0`` (the clean end of the grid: no score there).

With zero corrector steps PCG is the plain DDIM / Euler sampler of the conditional model, i.e.
no guidance: guidance enters only through the corrector. Each step costs the conditional rows
(``B``) plus ``K`` guided evaluations. All noise comes from the noise sampler (the recipe's
per-row ``torch.Generator`` streams) or an explicit generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from audioguide.core import AlphaSigma, VectorField, flow_alpha_sigma, to_x0_eps
from audioguide.sampling.common import Callback, ContinuousSampler, NoiseSampler, check_grid, t_batch
from audioguide.sampling.diffusion import DIFFUSION_KINDS, DiffusionSchedule
from audioguide.sampling.flow import FlowSamplerConfig, flow_times


def _coefficients(alpha_sigma: AlphaSigma, t: float) -> tuple[float, float]:
    alpha, sigma = alpha_sigma(torch.tensor([t], dtype=torch.float64))
    return float(alpha[0]), float(sigma[0])


def _x0_eps(pred: Tensor, kind: str, x: Tensor, alpha: float, sigma: float) -> tuple[Tensor, Tensor]:
    if kind == "eps" and alpha == 0.0:
        raise ValueError("an eps-prediction model cannot denoise at zero SNR (alpha_t = 0); use a 'v', 'x0' or 'flow' model")
    return to_x0_eps(pred, kind, x, torch.tensor(alpha, dtype=x.dtype), torch.tensor(sigma, dtype=x.dtype))


def _noise(noise_sampler: NoiseSampler | None, generator: torch.Generator | None) -> NoiseSampler:
    if noise_sampler is not None:
        return noise_sampler
    if generator is None:
        raise ValueError("Langevin corrector steps need a noise sampler or an explicit torch.Generator")
    return lambda x: torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


def _check(steps: int, size: float) -> None:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"corrector_steps must be an integer >= 0, got {steps!r}")
    if not (isinstance(size, int | float) and math.isfinite(size) and size > 0):
        raise ValueError(f"corrector_size must be a finite number > 0, got {size!r}")


def langevin_correct(
    model: VectorField,
    x: Tensor,
    t: float,
    alpha: float,
    sigma: float,
    kind: str,
    steps: int,
    size: float,
    noise_sampler: NoiseSampler | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``steps`` Langevin steps at time ``t`` on the distribution whose score the guided ``model`` gives.

    ``x <- x + (eta / 2) s(x) + sqrt(eta) z`` with ``s = -eps / sigma`` (``eps`` from the
    prediction of ``kind``), ``eta = size * sigma^2`` and ``z`` from ``noise_sampler`` (or
    ``generator``). For a guided field of scale ``gamma`` its stationary law is, up to the
    step's discretisation, ``p_t(x | c)^gamma p_t(x)^(1 - gamma)`` (normalised).
    """
    _check(steps, size)
    if steps == 0 or sigma <= 0.0:
        return x
    noise = _noise(noise_sampler, generator)
    root = math.sqrt(size) * sigma
    for _ in range(steps):
        _, eps = _x0_eps(model(x, t_batch(t, x)), kind, x, alpha, sigma)
        x = x - (0.5 * size * sigma) * eps + root * noise(x)
    return x


def sample_pcg(
    model: VectorField,
    conditional: VectorField,
    x: Tensor,
    ts: Tensor,
    alpha_sigma: AlphaSigma,
    kind: str,
    corrector_steps: int = 1,
    corrector_size: float = 0.1,
    noise_sampler: NoiseSampler | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Predictor-corrector guidance (Bradley & Nakkiran 2024, §4; see the module docstring).

    ``conditional(x, t)`` is the unguided conditional prediction of ``kind`` (the predictor's),
    ``model(x, t)`` the guided one (the corrector's score, gamma = its scale); ``alpha_sigma`` the
    path of the grid ``ts`` (decreasing, ``t = 1`` noise). Each step ``t -> t'``: the DDIM step
    ``x <- alpha' x_0(c) + sigma' eps(c)``, then ``corrector_steps`` Langevin steps at ``t'`` of size
    ``eta = corrector_size * sigma'^2`` (:func:`langevin_correct`). ``corrector_steps = 0`` is the
    plain deterministic sampler of ``conditional``. ``callback(i, t', x)`` after each step.
    """
    check_grid(ts)
    _check(corrector_steps, corrector_size)
    if corrector_steps > 0:
        noise_sampler = _noise(noise_sampler, generator)
    for i in range(ts.numel() - 1):
        t, t_next = float(ts[i]), float(ts[i + 1])
        (alpha, sigma), (alpha_next, sigma_next) = _coefficients(alpha_sigma, t), _coefficients(alpha_sigma, t_next)
        x0, eps = _x0_eps(conditional(x, t_batch(t, x)), kind, x, alpha, sigma)
        x = alpha_next * x0 + sigma_next * eps
        x = langevin_correct(model, x, t_next, alpha_next, sigma_next, kind, corrector_steps, corrector_size, noise_sampler)
        if callback is not None:
            callback(i, t_next, x)
    return x


# ---------------------------------------------------------------------------------------------
# As recipes name them
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlowPCGConfig(FlowSamplerConfig):
    """``[sampler]`` of ``euler-pcg``: the flow grid (steps, schedule) and the corrector, ``corrector_steps``
    Langevin steps per step of size ``corrector_size * sigma^2`` (0 steps: the unguided Euler sampler)."""

    corrector_steps: int = 1
    corrector_size: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.corrector_steps, self.corrector_size)


@dataclass(frozen=True)
class DiffusionPCGConfig:
    """``[sampler]`` of ``ddim-pcg``: steps on the trailing grid of a beta schedule, and the corrector
    (as :class:`FlowPCGConfig`)."""

    steps: int = 25
    beta_schedule: str = "scaled_linear"  # linear | scaled_linear | cosine
    num_train_steps: int = 1000
    zero_terminal_snr: bool = True
    corrector_steps: int = 1
    corrector_size: float = 0.1

    def __post_init__(self) -> None:
        if not 1 <= self.steps <= self.num_train_steps:
            raise ValueError(f"steps must be in [1, {self.num_train_steps}], got {self.steps}")
        _check(self.corrector_steps, self.corrector_size)
        self.schedule()  # validates beta_schedule

    def schedule(self) -> DiffusionSchedule:
        return DiffusionSchedule.make(self.num_train_steps, self.beta_schedule, self.zero_terminal_snr)


def _euler_pcg(field, x, cfg, noise, callback):
    ts = flow_times(cfg.steps, cfg.schedule, cfg.shift, cfg.sway)
    return sample_pcg(field, field.conditional, x, ts, flow_alpha_sigma, "flow", cfg.corrector_steps,
                      cfg.corrector_size, noise_sampler=noise, callback=callback)


def _ddim_pcg(field, x, cfg, noise, callback):
    s = cfg.schedule()
    return sample_pcg(field, field.conditional, x, s.trailing_times(cfg.steps), s.alpha_sigma, field.kind,
                      cfg.corrector_steps, cfg.corrector_size, noise_sampler=noise, callback=callback)


EULER_PCG = ContinuousSampler(FlowPCGConfig, ("flow",), lambda cfg: flow_alpha_sigma, _euler_pcg)
DDIM_PCG = ContinuousSampler(DiffusionPCGConfig, DIFFUSION_KINDS, lambda cfg: cfg.schedule().alpha_sigma, _ddim_pcg)
