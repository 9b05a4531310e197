"""Discrete diffusion schedules and samplers against the exact denoiser of Gaussian data.

For ``x_0 ~ N(mu, Sigma)`` and ``x_t = alpha x_0 + sigma eps`` the posterior means
``E[x_0 | x_t]`` and ``E[eps | x_t]`` are affine in ``x_t`` and known in closed form, so every
prediction kind is exact. DDIM and DPM-Solver++ steps are then affine in ``x`` and a sampler's
pushforward of the Gaussian at ``t = 1`` is computed exactly from the images of three points.
"""

from __future__ import annotations

import pytest
import torch

from audioguide.core import from_x0_eps
from audioguide.sampling import (
    CLEAN_T,
    DiffusionSchedule,
    sample_ddim,
    sample_ddim_cfgpp,
    sample_dpmpp_2m,
)

DT = torch.float64
MU = torch.tensor([1.0, -0.5], dtype=DT)
SIGMA = torch.tensor([[0.5, 0.3], [0.3, 0.4]], dtype=DT)
EYE = torch.eye(2, dtype=DT)
ZERO_SNR = DiffusionSchedule.make(1000, "scaled_linear", zero_terminal_snr=True)
PLAIN = DiffusionSchedule.make(1000, "scaled_linear", zero_terminal_snr=False)


def exact_model(schedule: DiffusionSchedule, kind: str, mu: torch.Tensor = MU):
    """The exact prediction of ``kind`` for Gaussian data, as ``model(x, t)``."""

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert t.shape == (x.shape[0],) and bool((t == t[0]).all()) and 0.0 <= float(t[0]) <= 1.0
        a, s = (float(v) for v in schedule.alpha_sigma(t[0].to(DT)))
        w = torch.linalg.solve(a**2 * SIGMA + s**2 * EYE, (x - a * mu).T).T
        return from_x0_eps(mu + a * w @ SIGMA, s * w, kind, a, s)

    return model


def marginal(schedule: DiffusionSchedule, t: float) -> tuple[torch.Tensor, torch.Tensor]:
    a, s = (float(v) for v in schedule.alpha_sigma(torch.tensor(t, dtype=DT)))
    return a * MU, a**2 * SIGMA + s**2 * EYE


def pushforward(run, schedule: DiffusionSchedule) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of the image of the t = 1 marginal under the (affine) map ``run``."""
    m1, c1 = marginal(schedule, 1.0)
    y = run(torch.cat([m1[None], m1 + EYE]))
    a = (y[1:] - y[0]).T
    return y[0], a @ c1 @ a.T


def cov_error(run, schedule, target_mean=MU, target_cov=SIGMA) -> float:
    mean, cov = pushforward(run, schedule)
    assert torch.allclose(mean, target_mean, atol=1e-10)
    return float(torch.linalg.matrix_norm(cov - target_cov))


# ---------------------------------------------------------------- schedules


@pytest.mark.parametrize("beta_schedule", ["linear", "scaled_linear", "cosine"])
def test_zero_terminal_snr_schedule(beta_schedule):
    plain = DiffusionSchedule.make(1000, beta_schedule, zero_terminal_snr=False).alphas_cumprod
    zero = DiffusionSchedule.make(1000, beta_schedule).alphas_cumprod
    assert zero.dtype == torch.float64 and zero.shape == (1000,)
    assert float(plain[-1]) > 0.0 and float(zero[-1]) == 0.0
    assert bool((zero[1:] < zero[:-1]).all()) and bool((plain[1:] < plain[:-1]).all())
    assert float(zero[0]) == pytest.approx(float(plain[0]), rel=1e-12)  # Alg. 1 keeps the first step


def test_schedule_arguments_are_validated():
    with pytest.raises(ValueError, match="linear.*scaled_linear.*cosine"):
        DiffusionSchedule.make(1000, "sigmoid")
    with pytest.raises(ValueError):
        DiffusionSchedule.make(1)
    with pytest.raises(ValueError):
        ZERO_SNR.trailing_times(0)
    with pytest.raises(ValueError):
        ZERO_SNR.trailing_times(1001)


def test_alpha_sigma():
    acp = ZERO_SNR.alphas_cumprod
    t = torch.tensor([0.0, 250 / 999, 1.0, CLEAN_T, -0.3], dtype=torch.float32)
    alpha, sigma = ZERO_SNR.alpha_sigma(t)
    assert alpha.dtype == sigma.dtype == torch.float32 and alpha.shape == (5,)
    assert torch.allclose(alpha**2 + sigma**2, torch.ones(5))
    assert alpha[1] == pytest.approx(float(acp[250].sqrt()), rel=1e-6)
    assert (float(alpha[2]), float(sigma[2])) == (0.0, 1.0)  # pure noise at t = 1
    assert alpha[3:].tolist() == [1.0, 1.0] and sigma[3:].tolist() == [0.0, 0.0]  # clean data
    a_near, _ = ZERO_SNR.alpha_sigma(torch.tensor((250 + 0.3) / 999, dtype=DT))  # nearest index
    assert float(a_near) == pytest.approx(float(acp[250].sqrt()), rel=1e-12)


def test_trailing_times():
    ts = ZERO_SNR.trailing_times(10)
    n = ts[:-1] * 999
    # Lin et al. 2023, Table 2: trailing spacing of 1000 steps in 10 is 999, 899, ..., 99
    assert torch.allclose(n, torch.arange(999, 0, -100, dtype=DT))
    assert float(ts[-1]) == CLEAN_T and ts.shape == (11,)
    alpha, sigma = ZERO_SNR.alpha_sigma(ts)
    assert (float(alpha[0]), float(sigma[0])) == (0.0, 1.0)  # starts at pure noise
    assert (float(alpha[-1]), float(sigma[-1])) == (1.0, 0.0)  # ends at clean data
    assert bool((ZERO_SNR.trailing_times(1000)[1:] < ZERO_SNR.trailing_times(1000)[:-1]).all())
    # uneven spacing: round(1000 - 1000 i / 3) - 1
    n = ZERO_SNR.trailing_times(3)[:-1] * 999
    assert torch.allclose(n, torch.tensor([999.0, 666.0, 332.0], dtype=DT))


# ---------------------------------------------------------------- samplers


@pytest.mark.parametrize(
    "schedule, kind", [(ZERO_SNR, "v"), (ZERO_SNR, "x0"), (PLAIN, "eps"), (PLAIN, "v")]
)
def test_ddim_and_dpmpp_reproduce_gaussian(schedule, kind):
    model = exact_model(schedule, kind)
    ts250, ts100 = schedule.trailing_times(250), schedule.trailing_times(100)
    ddim = cov_error(lambda x: sample_ddim(model, x, ts250, schedule, kind), schedule)
    dpm = cov_error(lambda x: sample_dpmpp_2m(model, x, ts100, schedule, kind), schedule)
    assert ddim < 0.03 and dpm < 0.03


def test_dpmpp_from_noise_monte_carlo():
    x1 = torch.randn(4000, 2, generator=torch.Generator().manual_seed(0), dtype=DT)
    x0 = sample_dpmpp_2m(exact_model(ZERO_SNR, "v"), x1, ZERO_SNR.trailing_times(50), ZERO_SNR, "v")
    assert torch.allclose(x0.mean(0), MU, atol=0.06)  # sampling error ~0.011 per entry
    assert torch.allclose(torch.cov(x0.T), SIGMA, atol=0.07)  # plus ~0.02 solver bias


@pytest.mark.parametrize("schedule, kind", [(ZERO_SNR, "v"), (PLAIN, "eps")])
def test_dpmpp_beats_ddim_at_few_steps(schedule, kind):
    model = exact_model(schedule, kind)
    ts = schedule.trailing_times(10)
    # the ODE part (up to the last noisy time), where the solver order matters
    target = marginal(schedule, float(ts[-2]))
    ddim = cov_error(lambda x: sample_ddim(model, x, ts[:-1], schedule, kind), schedule, *target)
    dpm = cov_error(lambda x: sample_dpmpp_2m(model, x, ts[:-1], schedule, kind), schedule, *target)
    assert dpm < ddim / 5
    # the whole grid, whose last (denoising) step is first order for both
    ddim = cov_error(lambda x: sample_ddim(model, x, ts, schedule, kind), schedule)
    dpm = cov_error(lambda x: sample_dpmpp_2m(model, x, ts, schedule, kind), schedule)
    assert dpm < 0.75 * ddim


def test_dpmpp_matches_the_algorithm_as_written_in_the_paper():
    """Lu et al. 2022, Alg. 2 in its exponential form, on a grid with very uneven log-SNR steps."""
    schedule, kind = PLAIN, "eps"
    model = exact_model(schedule, kind)
    ts = torch.tensor([1.0, 0.9, 0.5, 0.45, 0.1, 0.0], dtype=DT)
    x = torch.randn(6, 2, dtype=DT, generator=torch.Generator().manual_seed(8))
    expected, x0_prev, h_prev = x.clone(), None, None
    for i in range(len(ts) - 1):
        a, s = schedule.alpha_sigma(ts[i])
        a_next, s_next = schedule.alpha_sigma(ts[i + 1])
        x0 = (expected - s * model(expected, ts[i].expand(6))) / a
        h = torch.log(a_next / s_next) - torch.log(a / s)
        d = x0 if x0_prev is None else (1 + 1 / (2 * h_prev / h)) * x0 - 1 / (2 * h_prev / h) * x0_prev
        expected = (s_next / s) * expected - a_next * (torch.exp(-h) - 1) * d
        x0_prev, h_prev = x0, h
    assert torch.allclose(sample_dpmpp_2m(model, x, ts, schedule, kind), expected, atol=1e-10)


def test_dpmpp_equals_ddim_when_every_step_is_first_order():
    # from zero SNR (h infinite) straight to clean data (h infinite): no room for the 2nd order
    model = exact_model(ZERO_SNR, "v")
    x1 = torch.randn(8, 2, generator=torch.Generator().manual_seed(1), dtype=DT)
    ts = ZERO_SNR.trailing_times(2)
    dpm = sample_dpmpp_2m(model, x1, ts, ZERO_SNR, "v")
    assert torch.allclose(dpm, sample_ddim(model, x1, ts, ZERO_SNR, "v"), atol=1e-12)


@pytest.mark.parametrize("sampler", [sample_ddim, sample_dpmpp_2m])
@pytest.mark.parametrize("kind", ["v", "x0"])
@pytest.mark.parametrize("steps", [1, 2, 5])
def test_zero_snr_gives_no_nan(sampler, kind, steps):
    exact = exact_model(ZERO_SNR, kind)

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # a float32 network
        return exact(x.double(), t.double()).float()

    x1 = torch.randn(8, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float32)
    x1[0] = 0.0  # the mean of the noise, which the exact model carries to MU
    seen: list[torch.Tensor] = []
    ts = ZERO_SNR.trailing_times(steps)
    out = sampler(model, x1, ts, ZERO_SNR, kind, callback=lambda i, t, x: seen.append(x))
    assert out.dtype == torch.float32 and len(seen) == steps
    assert all(bool(torch.isfinite(x).all()) for x in seen)
    assert torch.allclose(out[0].double(), MU, atol=1e-5)


def test_eps_model_at_zero_snr_is_refused():
    model = exact_model(PLAIN, "eps")
    x1 = torch.randn(4, 2, dtype=DT, generator=torch.Generator().manual_seed(3))
    ts = ZERO_SNR.trailing_times(4)
    with pytest.raises(ValueError, match="zero SNR"):
        sample_ddim(model, x1, ts, ZERO_SNR, "eps")
    with pytest.raises(ValueError, match="zero SNR"):
        sample_dpmpp_2m(model, x1, ts, ZERO_SNR, "eps")
    with pytest.raises(ValueError, match="zero SNR"):
        sample_ddim_cfgpp(lambda x, t: (model(x, t), model(x, t)), x1, ts, ZERO_SNR, "eps")
    with pytest.raises(ValueError, match="eps, v, x0"):
        sample_ddim(model, x1, ts, ZERO_SNR, "flow")


def test_ddim_with_eta_is_reproducible_and_needs_a_generator():
    model = exact_model(ZERO_SNR, "v")
    ts = ZERO_SNR.trailing_times(20)
    x1 = torch.randn(16, 2, dtype=DT, generator=torch.Generator().manual_seed(4))

    def run(seed: int, eta: float) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return sample_ddim(model, x1, ts, ZERO_SNR, "v", eta=eta, generator=generator)

    assert torch.equal(run(7, 0.5), run(7, 0.5))
    assert not torch.equal(run(7, 0.5), run(8, 0.5))
    assert torch.equal(run(7, 0.0), run(8, 0.0))  # eta = 0 draws nothing
    with pytest.raises(ValueError, match="Generator"):
        sample_ddim(model, x1, ts, ZERO_SNR, "v", eta=1.0)
    with pytest.raises(ValueError):
        sample_ddim(model, x1, ts, ZERO_SNR, "v", eta=-0.1, generator=torch.Generator())


def test_ddim_with_eta_one_is_the_ddpm_posterior():
    """Song et al. 2021, §4.1: eta = 1 draws from q(x_s | x_t, x_0) of Ho et al. 2020, eq. 7."""
    t, s = 0.6, 0.3
    acp_t, acp_s = (float(PLAIN.alpha_sigma(torch.tensor(u, dtype=DT))[0]) ** 2 for u in (t, s))
    beta = 1 - acp_t / acp_s  # the single "beta" from s to t
    x0 = torch.tensor([2.0, -1.0], dtype=DT)
    x_t = torch.tensor([0.5, 0.7], dtype=DT).expand(20000, 2)
    out = sample_ddim(
        lambda x, _t: x0.expand_as(x), x_t, torch.tensor([t, s], dtype=DT), PLAIN, "x0",
        eta=1.0, generator=torch.Generator().manual_seed(9),
    )
    mean = acp_s**0.5 * beta / (1 - acp_t) * x0 + (1 - beta) ** 0.5 * (1 - acp_s) / (1 - acp_t) * x_t[0]
    var = (1 - acp_s) / (1 - acp_t) * beta
    assert torch.allclose(out.mean(0), mean, atol=5 * (var / 20000) ** 0.5)
    assert torch.allclose(out.var(0), torch.full((2,), var, dtype=DT), rtol=0.05)


def test_ancestral_ddim_reproduces_gaussian():
    gen = torch.Generator().manual_seed(5)
    x1 = torch.randn(4000, 2, generator=gen, dtype=DT)
    ts = ZERO_SNR.trailing_times(200)
    x0 = sample_ddim(exact_model(ZERO_SNR, "v"), x1, ts, ZERO_SNR, "v", eta=1.0, generator=gen)
    assert torch.allclose(x0.mean(0), MU, atol=0.06)
    assert torch.allclose(torch.cov(x0.T), SIGMA, atol=0.07)


def test_cfgpp_with_equal_predictions_is_ddim():
    model = exact_model(ZERO_SNR, "v")
    ts = ZERO_SNR.trailing_times(12)
    x1 = torch.randn(32, 2, dtype=DT, generator=torch.Generator().manual_seed(6))
    out = sample_ddim_cfgpp(lambda x, t: (model(x, t), model(x, t)), x1, ts, ZERO_SNR, "v")
    assert torch.allclose(out, sample_ddim(model, x1, ts, ZERO_SNR, "v"), atol=1e-12)


def test_cfgpp_takes_x0_from_guided_and_noise_from_uncond():
    c = torch.tensor([[2.0, -1.0]], dtype=DT)
    d = torch.tensor([[-3.0, 0.5]], dtype=DT)
    ts = torch.tensor([0.8, 0.4], dtype=DT)
    (a0, s0), (a1, s1) = (PLAIN.alpha_sigma(t) for t in ts)
    x = torch.randn(4, 2, dtype=DT, generator=torch.Generator().manual_seed(7))
    out = sample_ddim_cfgpp(lambda x, t: (c.expand_as(x), d.expand_as(x)), x, ts, PLAIN, "x0")
    # x0 = c from the guided branch; eps = (x - a0 d) / s0 from the unconditional one
    assert torch.allclose(out, a1 * c + s1 * (x - a0 * d) / s0, atol=1e-12)
    # with the whole grid the final clean sample is the guided x0
    ts = ZERO_SNR.trailing_times(3)
    out = sample_ddim_cfgpp(lambda x, t: (c.expand_as(x), d.expand_as(x)), x, ts, ZERO_SNR, "x0")
    assert torch.allclose(out, c.expand_as(x), atol=1e-12)
