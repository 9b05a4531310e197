"""Predictor-corrector guidance (Bradley & Nakkiran 2024) on Gaussian data, where every distribution
involved is known in closed form.

Data: ``p(x0 | c) = N(MC, VC)`` and ``p(x0) = N(MU, VU)`` per dimension. On the path
``x_t = alpha x0 + sigma eps`` both stay Gaussian, ``N(alpha m, alpha^2 v + sigma^2)``, the exact
predictions are ``E[x0 | x_t] = m + alpha v (x - alpha m) / var`` and ``E[eps | x_t] = sigma (x - alpha m) / var``,
and the gamma-powered distribution ``p_t(x | c)^gamma p_t(x)^(1 - gamma)`` is Gaussian with precision
``gamma / var_c + (1 - gamma) / var_u``.
"""

from __future__ import annotations

import math

import pytest
import torch

from audioguide import guidance as G
from audioguide.core import flow_alpha_sigma
from audioguide.sampling import RowStreams, langevin_correct, sample_ddim, sample_euler, sample_pcg
from audioguide.sampling.corrector import DDIM_PCG, EULER_PCG, DiffusionPCGConfig, FlowPCGConfig
from audioguide.sampling.diffusion import DiffusionSchedule
from audioguide.sampling.flow import uniform_times

DT = torch.float64
MC, VC, MU, VU = 1.0, 1.0, 0.0, 4.0
GAMMA = 3.0


class Gaussian:
    """The exact denoiser of the Gaussian data above, as a guided model sees it (``keep["c"]``)."""

    def __init__(self, kind: str = "flow", alpha_sigma=flow_alpha_sigma):
        self.kind, self.alpha_sigma, self.rows = kind, alpha_sigma, 0

    def __call__(self, x, t, cond, keep, **extra):
        self.rows += x.shape[0]
        k = keep["c"].view(-1, 1, 1).to(x.dtype) if "c" in keep else torch.ones(x.shape[0], 1, 1, dtype=x.dtype)
        m, v = k * MC + (1 - k) * MU, k * VC + (1 - k) * VU
        a, s = (q.view(-1, 1, 1).to(x.dtype) for q in self.alpha_sigma(t))
        var = a * a * v + s * s
        x0, eps = m + a * v * (x - a * m) / var, s * (x - a * m) / var
        return {"flow": eps - x0, "eps": eps, "x0": x0, "v": a * eps - s * x0}[self.kind]


def powered(gamma: float, alpha: float = 1.0, sigma: float = 0.0) -> tuple[float, float]:
    """Mean and variance of p_t(x | c)^gamma p_t(x)^(1 - gamma)."""
    var_c, var_u = alpha**2 * VC + sigma**2, alpha**2 * VU + sigma**2
    precision = gamma / var_c + (1 - gamma) / var_u
    return (gamma * alpha * MC / var_c + (1 - gamma) * alpha * MU / var_u) / precision, 1.0 / precision


def field(gamma: float = GAMMA, **kw) -> G.GuidedField:
    model = Gaussian(**kw)
    return G.GuidedField(model, {}, G.Guidance(scales={"c": gamma}), model.kind, model.alpha_sigma)


def noise(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 1, 1, generator=torch.Generator().manual_seed(seed), dtype=DT)


def test_zero_corrector_steps_is_the_plain_sampler_of_the_conditional_model():
    x = noise(64, 0)
    f = field()
    ts = uniform_times(6)
    pcg = sample_pcg(f, f.conditional, x, ts, flow_alpha_sigma, "flow", corrector_steps=0)
    plain = sample_euler(field(1.0), x, ts)
    assert torch.allclose(pcg, plain, atol=1e-12) and f.rows_evaluated == 6 * 64  # the conditional rows only
    schedule = DiffusionSchedule.make(100, "scaled_linear", zero_terminal_snr=True)
    fv = field(kind="v", alpha_sigma=schedule.alpha_sigma)
    ts = schedule.trailing_times(5)
    pcg = sample_pcg(fv, fv.conditional, x, ts, schedule.alpha_sigma, "v", corrector_steps=0)
    assert torch.allclose(pcg, sample_ddim(field(1.0, kind="v", alpha_sigma=schedule.alpha_sigma), x, ts, schedule, "v"), atol=1e-10)


@pytest.mark.parametrize("gamma,t", [(GAMMA, 0.5), (1.0, 0.3), (GAMMA, 0.8)])
def test_langevin_corrector_samples_the_gamma_powered_distribution(gamma, t):
    """At a fixed level, the corrector started from p_t(x | c) settles on p_t(x|c)^gamma p_t(x)^(1-gamma)
    (up to the step's discretisation: variance V / (1 - eta / 4V)); gamma = 1 leaves p_t(x | c) as it is."""
    alpha, sigma = 1.0 - t, t
    mean_c, var_c = powered(1.0, alpha, sigma)
    x = mean_c + math.sqrt(var_c) * noise(20000, 1)
    size = 0.05
    y = langevin_correct(field(gamma), x, t, alpha, sigma, "flow", 400, size, generator=torch.Generator().manual_seed(2))
    mean, var = powered(gamma, alpha, sigma)
    var = var / (1 - size * sigma**2 / (4 * var))
    assert abs(y.mean().item() - mean) < 0.02 and abs(y.var().item() / var - 1) < 0.04


def test_pcg_moves_samples_to_the_gamma_powered_distribution_where_cfg_does_not():
    """The paper's point (§3-4): CFG with a deterministic sampler does not sample p(x|c)^gamma p(x)^(1-gamma);
    PCG with enough corrector steps does (here N(1.2, 0.4); the conditional is N(1, 1))."""
    x = noise(20000, 3)
    f = field()
    out = sample_pcg(f, f.conditional, x, uniform_times(20), flow_alpha_sigma, "flow", corrector_steps=5,
                     corrector_size=0.2, generator=torch.Generator().manual_seed(4))
    mean, var = powered(GAMMA)
    assert abs(out.mean().item() - mean) < 0.04 and abs(out.var().item() - var) < 0.03
    # per step: the conditional rows, then 5 guided evaluations (c and u), except at t = 0 (no score there)
    assert f.rows_evaluated == 20 * 20000 + 19 * 5 * 2 * 20000
    cfg = sample_euler(field(), x, uniform_times(20))  # CFG-ODE at the same scale: far off
    assert abs(cfg.mean().item() - mean) > 0.2 and abs(cfg.var().item() - var) > 0.3
    plain = sample_pcg(f, f.conditional, x, uniform_times(20), flow_alpha_sigma, "flow", corrector_steps=0)
    assert abs(plain.mean().item() - MC) < 0.05 and abs(out.var().item() - var) < abs(plain.var().item() - var)


def test_noise_comes_from_the_explicit_generator_and_the_rows_own_streams():
    x = noise(6, 5)
    f = field()
    run = lambda gen: sample_pcg(f, f.conditional, x, uniform_times(4), flow_alpha_sigma, "flow", 2, 0.3,  # noqa: E731
                                 generator=torch.Generator().manual_seed(gen))
    assert torch.equal(run(7), run(7)) and not torch.allclose(run(7), run(8))
    with pytest.raises(ValueError, match="need a noise sampler or an explicit torch.Generator"):
        sample_pcg(f, f.conditional, x, uniform_times(4), flow_alpha_sigma, "flow", 1, 0.3)
    # through the sampler interface: each group of rows draws from its own generator only
    cfg = FlowPCGConfig(steps=4, corrector_steps=2, corrector_size=0.3)
    streams = RowStreams((torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)), (2, 4))
    both = EULER_PCG.run(field(), x, cfg, streams.noise_like, None)
    alone = EULER_PCG.run(field(), x[2:], cfg, RowStreams.single(torch.Generator().manual_seed(2), 4).noise_like, None)
    assert torch.allclose(both[2:], alone, atol=1e-12)


def test_recipe_configs_validate_and_the_diffusion_entry_runs():
    assert FlowPCGConfig().corrector_steps == 1 and FlowPCGConfig(corrector_steps=0).corrector_steps == 0
    for bad, match in [({"corrector_steps": -1}, "corrector_steps must be an integer >= 0"),
                       ({"corrector_size": 0.0}, "corrector_size must be a finite number > 0"),
                       ({"steps": 0}, "steps must be >= 1")]:
        with pytest.raises(ValueError, match=match):
            FlowPCGConfig(**bad)
    with pytest.raises(ValueError, match="corrector_size"):
        DiffusionPCGConfig(corrector_size=float("inf"))
    cfg = DiffusionPCGConfig(steps=5, num_train_steps=100, corrector_steps=2, corrector_size=0.2)
    s = cfg.schedule()
    x = noise(8, 6)
    streams = RowStreams.single(torch.Generator().manual_seed(0), 8)
    out = DDIM_PCG.run(field(kind="v", alpha_sigma=s.alpha_sigma), x, cfg, streams.noise_like, None)
    assert out.shape == x.shape and bool(torch.isfinite(out).all())
    assert DDIM_PCG.kinds == ("eps", "v", "x0") and EULER_PCG.kinds == ("flow",) and not EULER_PCG.mean_flow
