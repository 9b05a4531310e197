"""Mean-flow sampling with the exact average velocity of per-dimension Gaussian data.

For ``x_0 ~ N(mu, s^2)`` per dimension and ``z_t = (1 - t) x_0 + t eps``, ``z_t ~ N(m_t, s_t^2)``
with ``m_t = (1 - t) mu`` and ``s_t^2 = (1 - t)^2 s^2 + t^2``. The probability-flow map keeps the
standardised variable fixed, ``z_r = m_r + s_r (z_t - m_t) / s_t``, so the exact average velocity
over ``[r, t]`` is ``u = (z_t - z_r) / (t - r)``.
"""

from __future__ import annotations

import pytest
import torch

from audioguide.sampling import sample_meanflow

DT = torch.float64
MU = torch.tensor([1.5, -2.0, 0.0], dtype=DT)
S = torch.tensor([0.5, 2.0, 1.0], dtype=DT)


def mean_velocity(z: torch.Tensor, t: torch.Tensor, *, r: torch.Tensor) -> torch.Tensor:
    assert t.shape == r.shape == (z.shape[0],) and bool((t > r).all())
    t, r = t[:, None], r[:, None]

    def m(tau):
        return (1 - tau) * MU

    def s(tau):
        return ((1 - tau) ** 2 * S**2 + tau**2).sqrt()

    z_r = m(r) + s(r) * (z - m(t)) / s(t)
    return (z - z_r) / (t - r)


def test_one_step_is_the_exact_transport():
    eps = torch.randn(4000, 3, generator=torch.Generator().manual_seed(0), dtype=DT)
    x0 = sample_meanflow(mean_velocity, eps)
    assert torch.allclose(x0, MU + S * eps, atol=1e-12)
    # and so the samples follow N(MU, S^2): sampling errors ~0.03 (mean) and ~0.02 (std, relative)
    assert torch.allclose(x0.mean(0), MU, atol=0.1)
    assert torch.allclose(x0.std(0), S, rtol=0.08)


def test_several_steps_agree_with_one():
    eps = torch.randn(256, 3, generator=torch.Generator().manual_seed(1), dtype=DT)
    seen: list[tuple[int, float]] = []
    x4 = sample_meanflow(mean_velocity, eps, steps=4, callback=lambda i, r, z: seen.append((i, r)))
    assert torch.allclose(x4, sample_meanflow(mean_velocity, eps, steps=1), atol=1e-12)
    assert seen == [(0, 0.75), (1, 0.5), (2, 0.25), (3, 0.0)]


def test_uses_the_interval_end_points():
    calls: list[tuple[float, float]] = []

    def model(z, t, *, r):
        calls.append((float(t[0]), float(r[0])))
        return torch.ones_like(z)  # constant average velocity: z_0 = z_1 - 1

    out = sample_meanflow(model, torch.zeros(2, 3, dtype=DT), steps=2)
    assert calls == [(1.0, 0.5), (0.5, 0.0)]
    assert torch.allclose(out, torch.full((2, 3), -1.0, dtype=DT))
    with pytest.raises(ValueError):
        sample_meanflow(model, torch.zeros(2, 3), steps=0)
