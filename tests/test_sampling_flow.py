"""Flow-matching samplers against the exact velocity field of Gaussian data.

For ``x_0 ~ N(mu, Sigma)`` and ``x_t = (1 - t) x_0 + t eps`` the pair ``(x_0, x_t)`` is jointly
Gaussian, so ``E[eps - x_0 | x_t]`` is known in closed form and is affine in ``x_t``. The ODE it
drives carries ``N(0, I)`` at ``t = 1`` exactly to ``N(mu, Sigma)`` at ``t = 0``; every sampler
step is affine in ``x`` too, so a sampler's pushforward of ``N(0, I)`` is computed exactly from
its images of ``0`` and the unit vectors (no Monte Carlo error).
"""

from __future__ import annotations

import math

import pytest
import torch

from audioguide.sampling import (
    flow_times,
    sample_euler,
    sample_euler_cfgpp,
    sample_heun,
    sample_midpoint,
    shift_times,
    sway_times,
    uniform_times,
)

DT = torch.float64
MU = torch.tensor([1.0, -0.5], dtype=DT)
SIGMA = torch.tensor([[0.5, 0.3], [0.3, 0.4]], dtype=DT)


def gaussian_velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``E[eps - x_0 | x_t]`` for ``x_0 ~ N(MU, SIGMA)``, ``eps ~ N(0, I)``."""
    assert t.shape == (x.shape[0],) and t.dtype == x.dtype and bool((t == t[0]).all())
    a, s = 1.0 - float(t[0]), float(t[0])
    cov_t = a**2 * SIGMA + s**2 * torch.eye(2, dtype=DT)
    w = torch.linalg.solve(cov_t, (x - a * MU).T).T  # Cov[x_t]^{-1} (x_t - E[x_t])
    x0 = MU + a * w @ SIGMA  # Cov[x_0, x_t] = a SIGMA
    eps = s * w  # Cov[eps, x_t] = s I
    return eps - x0


def pushforward(sampler, ts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of the image of N(0, I) under the (affine) sampler map."""
    y = sampler(gaussian_velocity, torch.cat([torch.zeros(1, 2, dtype=DT), torch.eye(2, dtype=DT)]), ts)
    a = (y[1:] - y[0]).T
    return y[0], a @ a.T


def cov_error(sampler, steps: int) -> float:
    mean, cov = pushforward(sampler, uniform_times(steps))
    assert torch.allclose(mean, MU, atol=1e-12)  # the mean path is straight, so exact for all
    return float(torch.linalg.matrix_norm(cov - SIGMA))


# ---------------------------------------------------------------- time grids


@pytest.mark.parametrize("steps", [1, 2, 7, 32])
@pytest.mark.parametrize(
    "grid",
    [
        lambda n: uniform_times(n),
        lambda n: shift_times(n, 3.0),
        lambda n: shift_times(n, 0.3),
        lambda n: sway_times(n, -1.0),
        lambda n: sway_times(n, 0.5),
        lambda n: flow_times(n, "sway"),
    ],
)
def test_grid_runs_from_one_to_zero_decreasing(grid, steps):
    ts = grid(steps)
    assert ts.shape == (steps + 1,) and ts.is_floating_point()
    assert float(ts[0]) == 1.0 and float(ts[-1]) == 0.0
    assert bool((ts[1:] < ts[:-1]).all())


def test_neutral_shift_and_sway_equal_uniform():
    assert torch.allclose(shift_times(9, 1.0), uniform_times(9), atol=1e-15)
    assert torch.allclose(sway_times(9, 0.0), uniform_times(9), atol=1e-15)
    assert torch.equal(flow_times(9), uniform_times(9))


def test_shift_and_sway_values_by_hand():
    # SD3 shift at t = 1/2 with s = 3: 1.5 / (1 + 2 * 0.5) = 0.75
    assert float(shift_times(2, 3.0)[1]) == pytest.approx(0.75)
    assert float(flow_times(2, "shift", shift=3.0)[1]) == pytest.approx(0.75)
    # F5 sway at tau = 1/2 with coef -1: tau' = 1 - cos(pi/4), so t = 1 - tau' = cos(pi/4)
    assert float(sway_times(2, -1.0)[1]) == pytest.approx(math.cos(math.pi / 4))
    assert float(flow_times(2, "sway", sway=-1.0)[1]) == pytest.approx(math.cos(math.pi / 4))


def test_shift_above_one_and_negative_sway_spend_steps_near_noise():
    u = uniform_times(10)
    assert bool((shift_times(10, 3.0)[1:-1] > u[1:-1]).all())
    assert bool((sway_times(10, -1.0)[1:-1] > u[1:-1]).all())


def test_grid_arguments_are_validated():
    with pytest.raises(ValueError, match="uniform.*shift.*sway"):
        flow_times(8, "cosine")
    for bad in (lambda: uniform_times(0), lambda: shift_times(4, 0.0), lambda: sway_times(4, -1.5)):
        with pytest.raises(ValueError):
            bad()


# ---------------------------------------------------------------- samplers


@pytest.mark.parametrize("sampler, steps", [(sample_euler, 200), (sample_heun, 32), (sample_midpoint, 32)])
def test_samplers_reproduce_gaussian_from_noise(sampler, steps):
    gen = torch.Generator().manual_seed(0)
    x1 = torch.randn(4000, 2, generator=gen, dtype=DT)
    x0 = sampler(gaussian_velocity, x1, uniform_times(steps))
    # sampling error of a mean ~0.011, of a covariance entry ~0.011: 5 sigma plus bias
    assert torch.allclose(x0.mean(0), MU, atol=0.06)
    assert torch.allclose(torch.cov(x0.T), SIGMA, atol=0.07)


def test_error_ordering_and_convergence():
    euler16, euler32 = cov_error(sample_euler, 16), cov_error(sample_euler, 32)
    heun8, heun16 = cov_error(sample_heun, 8), cov_error(sample_heun, 16)
    mid8 = cov_error(sample_midpoint, 8)
    assert euler32 < 0.6 * euler16  # first order: error about halves
    assert heun16 < 0.4 * heun8  # second order: about a quarter
    # second-order methods with 8 steps (15-16 model calls) beat Euler with 16 calls by far
    assert heun8 < euler16 / 3 and mid8 < euler16 / 3
    assert cov_error(sample_euler, 200) < 0.02


@pytest.mark.parametrize("sampler", [sample_euler, sample_heun, sample_midpoint])
def test_point_mass_is_exact_in_one_step(sampler):
    c = torch.tensor([[0.3, -2.0, 5.0]], dtype=DT)

    def velocity(x, t):  # data = c: x_t = (1 - t) c + t eps, so v = eps - c = (x_t - c) / t
        return (x - c) / t[:, None]

    x1 = torch.randn(5, 3, generator=torch.Generator().manual_seed(1), dtype=DT)
    assert torch.allclose(sampler(velocity, x1, uniform_times(1)), c.expand(5, 3), atol=1e-12)


def test_same_seed_is_bit_identical_and_seeds_differ():
    def run(seed: int) -> torch.Tensor:
        x1 = torch.randn(16, 2, generator=torch.Generator().manual_seed(seed), dtype=DT)
        return sample_heun(gaussian_velocity, x1, flow_times(6, "sway"))

    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


def test_callback_and_model_calls():
    seen_t: list[float] = []
    calls: list[tuple[int, float, torch.Tensor]] = []

    def velocity(x, t):
        seen_t.append(float(t[0]))
        return gaussian_velocity(x, t)

    ts = uniform_times(5)
    x1 = torch.randn(3, 2, generator=torch.Generator().manual_seed(2), dtype=DT)
    out = sample_heun(velocity, x1, ts, callback=lambda i, t, x: calls.append((i, t, x)))
    assert len(seen_t) == 2 * 5 - 1 and min(seen_t) > 0.0  # no correction on the step to t = 0
    assert [c[0] for c in calls] == list(range(5))
    assert [c[1] for c in calls] == pytest.approx(ts[1:].tolist())
    assert torch.equal(calls[-1][2], out)
    with pytest.raises(ValueError):
        sample_euler(velocity, x1, torch.tensor([1.0]))


def test_cfgpp_with_equal_predictions_is_euler():
    x1 = torch.randn(64, 2, generator=torch.Generator().manual_seed(5), dtype=DT)
    ts = shift_times(12, 2.0)

    def pair(x, t):
        v = gaussian_velocity(x, t)
        return v, v

    expected = sample_euler(gaussian_velocity, x1, ts)
    assert torch.allclose(sample_euler_cfgpp(pair, x1, ts), expected, atol=1e-12)


def test_cfgpp_takes_x0_from_guided_and_noise_from_uncond():
    c = torch.tensor([[2.0, -1.0]], dtype=DT)  # guided: point mass at c
    d = torch.tensor([[-3.0, 0.5]], dtype=DT)  # unconditional: point mass at d

    def pair(x, t):
        return (x - c) / t[:, None], (x - d) / t[:, None]

    x1 = torch.randn(4, 2, generator=torch.Generator().manual_seed(6), dtype=DT)
    out = sample_euler_cfgpp(pair, x1, torch.tensor([1.0, 0.5, 0.25], dtype=DT))
    # by hand: x_{1/2} = (c + x1)/2; eps_u = d + (x_{1/2} - d)/(1/2); x_{1/4} = 3/4 c + 1/4 eps_u
    assert torch.allclose(out, c + 0.25 * (x1 - d), atol=1e-12)
