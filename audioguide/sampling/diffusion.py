"""Discrete-time (DDPM-style) diffusion schedules and their samplers.

Conventions (see :mod:`audioguide.core`): ``x_t = alpha_t x_0 + sigma_t eps`` with
``alpha_t = sqrt(alphas_cumprod[n])``, ``sigma_t = sqrt(1 - alphas_cumprod[n])`` and the discrete
timestep ``n`` of ``N`` training steps mapped to ``t = n / (N - 1)``, so ``t = 1`` is the noise end.

**Clean data.** A time grid ends at data, which has no training timestep (``alphas_cumprod[0]`` is
just below 1). Any ``t < 0`` means "clean data": ``alpha = 1``, ``sigma = 0`` (the usual
``alphas_cumprod = 1`` at index ``n = -1``). :func:`DiffusionSchedule.trailing_times` ends with
:data:`CLEAN_T` ``= -1.0``. Samplers never call the model at the last time of a grid, so the model
never sees a negative ``t``; a grid that ends at ``t = 0`` instead stops at timestep 0 with its
small residual noise.

Samplers call ``model(x, t) -> prediction`` of ``kind`` ``"eps"``, ``"v"`` or ``"x0"`` with ``t``
of shape ``[B]`` (the caller's closure maps it to the network's timestep input, e.g.
``round(t * (N - 1))``). ``callback(i, t, x)`` is called after step ``i`` with the time ``t`` (a
float, ``ts[i + 1]``) that the new ``x`` sits at.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from audioguide.core import VectorField, to_x0_eps
from audioguide.sampling.common import Callback, ContinuousSampler, GuidedPair, NoiseSampler, check_grid, t_batch


CLEAN_T: float = -1.0
"""The time that stands for clean data (``alpha = 1``, ``sigma = 0``); any ``t < 0`` does."""

DIFFUSION_KINDS: tuple[str, ...] = ("eps", "v", "x0")


def _linear_betas(n: int) -> Tensor:
    """Ho et al. 2020 (DDPM, §4): betas linear from 1e-4 to 0.02."""
    return torch.linspace(1e-4, 0.02, n, dtype=torch.float64)


def _scaled_linear_betas(n: int) -> Tensor:
    """Rombach et al. 2022 (Stable Diffusion): sqrt(beta) linear from sqrt(0.00085) to sqrt(0.012)."""
    return torch.linspace(0.00085**0.5, 0.012**0.5, n, dtype=torch.float64) ** 2


def _cosine_betas(n: int, s: float = 0.008) -> Tensor:
    """Nichol & Dhariwal 2021, eq. 17: alpha_bar(u) = f(u) / f(0), f(u) = cos^2(pi/2 (u + s)/(1 + s)).

    ``beta_n = 1 - alpha_bar((n + 1) / N) / alpha_bar(n / N)``, clipped at 0.999.
    """
    u = torch.arange(n + 1, dtype=torch.float64) / n
    f = torch.cos(0.5 * math.pi * (u + s) / (1.0 + s)) ** 2
    return (1.0 - f[1:] / f[:-1]).clamp(max=0.999)


_BETA_SCHEDULES: dict[str, Callable[[int], Tensor]] = {
    "linear": _linear_betas,
    "scaled_linear": _scaled_linear_betas,
    "cosine": _cosine_betas,
}


def rescale_zero_terminal_snr(alphas_cumprod: Tensor) -> Tensor:
    """Lin et al. 2023 (arXiv 2305.08891), Alg. 1: make the last timestep pure noise.

    ``sqrt(alpha_bar)`` is shifted so its last value is 0 and scaled so its first value is kept:
    ``a <- (a - a_N) a_1 / (a_1 - a_N)``.
    """
    a = alphas_cumprod.sqrt()
    a_first, a_last = a[0].clone(), a[-1].clone()
    a = (a - a_last) * (a_first / (a_first - a_last))
    return a**2


@dataclass(frozen=True, eq=False)
class DiffusionSchedule:
    """A discrete noise schedule: ``alphas_cumprod[n]`` (float64, non-increasing) for ``n < N``."""

    alphas_cumprod: Tensor

    def __post_init__(self) -> None:
        acp = self.alphas_cumprod
        if acp.ndim != 1 or acp.numel() < 2 or acp.dtype != torch.float64:
            raise ValueError("alphas_cumprod must be a 1-D float64 tensor of at least 2 values")
        if bool((acp < 0).any() or (acp > 1).any() or (acp[1:] > acp[:-1]).any()):
            raise ValueError("alphas_cumprod must be non-increasing within [0, 1]")

    @classmethod
    def make(
        cls,
        num_train_steps: int = 1000,
        beta_schedule: str = "scaled_linear",
        zero_terminal_snr: bool = True,
    ) -> DiffusionSchedule:
        """Build from a named beta schedule; optionally rescaled to zero terminal SNR."""
        if beta_schedule not in _BETA_SCHEDULES:
            choices = ", ".join(_BETA_SCHEDULES)
            raise ValueError(f"unknown beta schedule {beta_schedule!r}; choose one of {choices}")
        if not isinstance(num_train_steps, int) or num_train_steps < 2:
            raise ValueError(f"num_train_steps must be an integer >= 2, got {num_train_steps!r}")
        acp = torch.cumprod(1.0 - _BETA_SCHEDULES[beta_schedule](num_train_steps), dim=0)
        if zero_terminal_snr:
            acp = rescale_zero_terminal_snr(acp)
        return cls(acp)

    @property
    def num_train_steps(self) -> int:
        return self.alphas_cumprod.numel()

    def alpha_sigma(self, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """``(sqrt(alpha_bar_n), sqrt(1 - alpha_bar_n))`` at the nearest ``n = round(t (N - 1))``.

        ``t < 0`` gives clean data ``(1, 0)``; ``n`` is clamped to ``N - 1`` above. Results have ``t``'s
        shape and dtype (a Python float is taken as float64).
        """
        t = t if isinstance(t, Tensor) else torch.tensor(t, dtype=torch.float64)
        n = torch.round(t.double() * (self.num_train_steps - 1)).long().clamp(0, self.num_train_steps - 1)
        acp = torch.where(t < 0, 1.0, self.alphas_cumprod.to(t.device)[n])
        return acp.sqrt().to(t.dtype), (1.0 - acp).sqrt().to(t.dtype)

    def trailing_times(self, steps: int) -> Tensor:
        """The "trailing" spacing of Lin et al. 2023 (§3.3, Table 2), then :data:`CLEAN_T`.

        Timesteps ``n_i = round(N - i N / steps) - 1`` for ``i = 0 .. steps - 1`` (so ``n_0 = N - 1``,
        the pure-noise step under zero terminal SNR) as ``t = n / (N - 1)``, followed by ``-1.0``
        for clean data: a float64 tensor of length ``steps + 1``.
        """
        N = self.num_train_steps
        if not isinstance(steps, int) or not 1 <= steps <= N:
            raise ValueError(f"steps must be an integer in [1, {N}], got {steps!r}")
        i = torch.arange(steps, dtype=torch.float64)
        n = torch.round(N - i * N / steps) - 1.0
        return torch.cat([n / (N - 1), torch.tensor([CLEAN_T], dtype=torch.float64)])


def _alpha_sigma(schedule: DiffusionSchedule, t: float) -> tuple[float, float]:
    alpha, sigma = schedule.alpha_sigma(torch.tensor(t, dtype=torch.float64))
    return float(alpha), float(sigma)


def _x0_eps(pred: Tensor, kind: str, x: Tensor, alpha: float, sigma: float) -> tuple[Tensor, Tensor]:
    """:func:`to_x0_eps` restricted to diffusion kinds, refusing eps at zero SNR (``alpha = 0``)."""
    if kind not in DIFFUSION_KINDS:
        raise ValueError(f"unknown prediction kind {kind!r}; choose one of {', '.join(DIFFUSION_KINDS)}")
    if kind == "eps" and alpha == 0.0:
        raise ValueError(
            "an eps-prediction model cannot denoise at zero SNR (alpha_t = 0); "
            "use a 'v' or 'x0' model or a schedule with zero_terminal_snr=False"
        )
    return to_x0_eps(pred, kind, x, alpha, sigma)



def sample_ddim(
    model: VectorField,
    x: Tensor,
    ts: Tensor,
    schedule: DiffusionSchedule,
    kind: str,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
) -> Tensor:
    """DDIM (Song et al. 2021, eq. 12 with sigma from eq. 16), written with ``alpha = sqrt(alpha_bar)``.

    ``x <- alpha' x0 + sqrt(sigma'^2 - c^2) eps + c z`` with
    ``c = eta (sigma'/sigma) sqrt(1 - alpha^2/alpha'^2)`` and ``z ~ N(0, I)`` drawn by
    ``noise_sampler(x)`` or, without one, from ``generator`` (one of them is required when
    ``eta > 0``; k-diffusion's convention); ``eta = 0`` is the deterministic sampler, ``eta = 1``
    ancestral DDPM. At zero terminal SNR (``alpha = 0``) only ``"v"``/``"x0"`` models work.
    """
    check_grid(ts)
    if not eta >= 0.0:
        raise ValueError(f"eta must be non-negative, got {eta!r}")
    if eta > 0.0 and generator is None and noise_sampler is None:
        raise ValueError("sample_ddim with eta > 0 needs an explicit torch.Generator")
    if noise_sampler is None:
        noise_sampler = lambda x: torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)  # noqa: E731
    for i in range(ts.numel() - 1):
        t, t_next = float(ts[i]), float(ts[i + 1])
        (alpha, sigma), (alpha_next, sigma_next) = _alpha_sigma(schedule, t), _alpha_sigma(schedule, t_next)
        x0, eps = _x0_eps(model(x, t_batch(t, x)), kind, x, alpha, sigma)
        ratio = (alpha / alpha_next) ** 2 if alpha_next > 0.0 else 1.0
        c = eta * (sigma_next / sigma) * math.sqrt(max(1.0 - ratio, 0.0))
        x = alpha_next * x0 + math.sqrt(max(sigma_next**2 - c**2, 0.0)) * eps
        if c > 0.0:
            x = x + c * noise_sampler(x)
        if callback is not None:
            callback(i, t_next, x)
    return x


def _half_log_snr(alpha: float, sigma: float) -> float:
    """``lambda = log(alpha / sigma)``, with ``-inf`` at ``alpha = 0`` and ``+inf`` at ``sigma = 0``."""
    if alpha == 0.0:
        return -math.inf
    if sigma == 0.0:
        return math.inf
    return math.log(alpha / sigma)


def sample_dpmpp_2m(
    model: VectorField,
    x: Tensor,
    ts: Tensor,
    schedule: DiffusionSchedule,
    kind: str,
    callback: Callback | None = None,
) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, arXiv 2211.01095, Alg. 2), data-prediction form.

    With ``lambda = log(alpha / sigma)``, ``h_i = lambda_{i+1} - lambda_i``, ``r_i = h_{i-1} / h_i``:
    ``x_{i+1} = (sigma_{i+1}/sigma_i) x_i + alpha_{i+1} (1 - e^{-h_i}) D_i`` with
    ``D_i = (1 + 1/(2 r_i)) x0_i - 1/(2 r_i) x0_{i-1}``. We use ``alpha_{i+1} (1 - e^{-h_i}) =
    alpha_{i+1} - sigma_{i+1} alpha_i / sigma_i``, finite at ``alpha_i = 0`` (zero-SNR start) and
    ``sigma_{i+1} = 0`` (clean end); the first step and any step where ``h_i`` or ``h_{i-1}`` is
    infinite use the first-order update ``D_i = x0_i`` (which is DDIM).
    """
    check_grid(ts)
    x0_prev, h_prev = None, math.inf
    for i in range(ts.numel() - 1):
        t, t_next = float(ts[i]), float(ts[i + 1])
        (alpha, sigma), (alpha_next, sigma_next) = _alpha_sigma(schedule, t), _alpha_sigma(schedule, t_next)
        x0, _ = _x0_eps(model(x, t_batch(t, x)), kind, x, alpha, sigma)
        h = _half_log_snr(alpha_next, sigma_next) - _half_log_snr(alpha, sigma)
        d = x0
        if x0_prev is not None and math.isfinite(h) and math.isfinite(h_prev):
            r = h_prev / h
            d = (1.0 + 0.5 / r) * x0 - (0.5 / r) * x0_prev
        x = (sigma_next / sigma) * x + (alpha_next - sigma_next * alpha / sigma) * d
        x0_prev, h_prev = x0, h
        if callback is not None:
            callback(i, t_next, x)
    return x


def sample_ddim_cfgpp(
    model_pair: GuidedPair,
    x: Tensor,
    ts: Tensor,
    schedule: DiffusionSchedule,
    kind: str,
    callback: Callback | None = None,
) -> Tensor:
    """CFG++ DDIM (Chung et al. 2024, arXiv 2406.08070), deterministic (``eta = 0``).

    ``model_pair(x, t)`` returns ``(pred_guided, pred_uncond)`` of ``kind``. The data estimate
    comes from the guided prediction, the re-noising direction from the unconditional one:
    ``x <- alpha' x0(guided) + sigma' eps(uncond)``. With equal predictions this is
    :func:`sample_ddim`.
    """
    check_grid(ts)
    for i in range(ts.numel() - 1):
        t, t_next = float(ts[i]), float(ts[i + 1])
        (alpha, sigma), (alpha_next, sigma_next) = _alpha_sigma(schedule, t), _alpha_sigma(schedule, t_next)
        pred_guided, pred_uncond = model_pair(x, t_batch(t, x))
        x0, _ = _x0_eps(pred_guided, kind, x, alpha, sigma)
        _, eps = _x0_eps(pred_uncond, kind, x, alpha, sigma)
        x = alpha_next * x0 + sigma_next * eps
        if callback is not None:
            callback(i, t_next, x)
    return x


# ---------------------------------------------------------------------------------------------
# As recipes name them
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiffusionSamplerConfig:
    """``[sampler]`` of the diffusion samplers: steps on the trailing grid of a beta schedule."""

    steps: int = 25
    beta_schedule: str = "scaled_linear"  # linear | scaled_linear | cosine
    num_train_steps: int = 1000
    zero_terminal_snr: bool = True
    eta: float = 0.0  # DDIM stochasticity (0 = deterministic)

    def __post_init__(self) -> None:
        if not 1 <= self.steps <= self.num_train_steps:
            raise ValueError(f"steps must be in [1, {self.num_train_steps}], got {self.steps}")
        if self.eta < 0:
            raise ValueError(f"eta must be >= 0, got {self.eta}")
        self.schedule()  # validates beta_schedule

    def schedule(self) -> DiffusionSchedule:
        return DiffusionSchedule.make(self.num_train_steps, self.beta_schedule, self.zero_terminal_snr)


def _ddim(field, x, cfg, noise, callback):
    s = cfg.schedule()
    return sample_ddim(field, x, s.trailing_times(cfg.steps), s, field.kind, cfg.eta, callback=callback, noise_sampler=noise)


def _dpmpp(field, x, cfg, noise, callback):
    s = cfg.schedule()
    return sample_dpmpp_2m(field, x, s.trailing_times(cfg.steps), s, field.kind, callback=callback)


def _ddim_cfgpp(field, x, cfg, noise, callback):
    s = cfg.schedule()
    return sample_ddim_cfgpp(field.pair, x, s.trailing_times(cfg.steps), s, field.kind, callback=callback)


def _schedule_of(cfg: DiffusionSamplerConfig):
    return cfg.schedule().alpha_sigma


DDIM = ContinuousSampler(DiffusionSamplerConfig, DIFFUSION_KINDS, _schedule_of, _ddim)
DPMPP_2M = ContinuousSampler(DiffusionSamplerConfig, DIFFUSION_KINDS, _schedule_of, _dpmpp)
DDIM_CFGPP = ContinuousSampler(DiffusionSamplerConfig, DIFFUSION_KINDS, _schedule_of, _ddim_cfgpp, cfgpp=True)
