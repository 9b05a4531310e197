"""Continuous training objectives: flow matching, diffusion and MeanFlow (with folded guidance).

The exact-Gaussian checks use the closed-form average velocity of per-dimension Gaussian data
(see tests/test_sampling_meanflow.py): ``z_r = m_r + s_r (z_t - m_t) / s_t``,
``u = (z_t - z_r) / (t - r)``.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from audioguide.conditioners import Characters
from audioguide.conditioners.characters import CharactersConfig
from audioguide.models.base import Generator, init_random
from audioguide.models.dit import DiT, DiTConfig
from audioguide.sampling import DiffusionSchedule, sample_euler, sample_meanflow, uniform_times
from audioguide.train_config import MeanFlowConfig
from audioguide.training.continuous import (
    curriculum_flow_ratio,
    diffusion_loss,
    flow_matching_loss,
    flow_to_mean_flow,
    guided_velocity,
    average_velocity,
    mean_flow_jvp,
    mean_flow_loss,
    mean_flow_target,
    mean_flow_terms,
)

DT = torch.float64


def tiny_dit(seed: int = 0, wake: bool = True, **overrides) -> DiT:
    config = DiTConfig(**({"dim": 16, "depth": 1, "heads": 2, "seed": seed} | overrides))
    model = DiT(config, 3, {"text": Characters(CharactersConfig(dim=8))})
    if wake:  # randomise the adaLN-Zero weights so that the network is not identically zero
        g = torch.Generator().manual_seed(seed + 100)
        with torch.no_grad():
            for _, p in sorted(model.named_parameters()):
                if bool((p == 0).all()):
                    p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return model


def batch(model: Generator, B: int = 4, T: int = 6, seed: int = 0, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(seed)
    texts = ["ab", "hello", "xyz!", "a"][:B]
    with torch.no_grad():
        cond = model.encode({"text": texts})
    cond = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in cond.items()}
    x0 = torch.randn(B, 3, T, generator=g, dtype=dtype)
    keep = {"text": torch.tensor([True, False, True, True][:B])}
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, T - 2 :] = False
    mask[2, T - 3 :] = False
    return x0, cond, keep, mask


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# MeanFlow: JVP, targets, guidance folding
# ---------------------------------------------------------------------------------------------


def test_jvp_matches_central_finite_difference_on_a_dit():
    model = tiny_dit(mean_flow=True).double()
    x0, cond, keep, mask = batch(model, dtype=DT)
    g = gen(1)
    z, v = torch.randn(x0.shape, generator=g, dtype=DT), torch.randn(x0.shape, generator=g, dtype=DT)
    t = torch.tensor([0.9, 0.6, 0.5, 0.3], dtype=DT)
    r = torch.tensor([0.2, 0.6, 0.1, 0.0], dtype=DT)
    u, dudt = mean_flow_jvp(model, z, r, t, v, cond, keep, mask)
    h = 1e-7  # central differences: error O(h^2) (checked: 1e-5 -> 7e-5, 1e-6 -> 7e-7, 1e-7 -> 7e-9 relative)
    with torch.no_grad():
        plus = model(z + h * v, t + h, cond, keep, mask=mask, r=r)
        minus = model(z - h * v, t - h, cond, keep, mask=mask, r=r)
        plain = model(z, t, cond, keep, mask=mask, r=r)
    fd = (plus - minus) / (2 * h)
    valid = mask[:, None, :].expand_as(fd)
    scale = dudt[valid].abs().max()
    assert scale > 1e-2  # a non-trivial derivative
    assert (dudt - fd)[valid].abs().max() < 1e-6 * scale
    assert torch.allclose(u, plain, atol=1e-10)  # the JVP's primal is the ordinary forward
    assert u.requires_grad and not dudt.requires_grad


def test_jvp_only_on_mean_rows_equals_the_jvp_over_the_batch():
    model = tiny_dit(mean_flow=True).double()
    x0, cond, keep, mask = batch(model, dtype=DT)
    g = gen(2)
    z, v = torch.randn(x0.shape, generator=g, dtype=DT), torch.randn(x0.shape, generator=g, dtype=DT)
    t = torch.tensor([0.9, 0.6, 0.5, 0.3], dtype=DT)
    for r in (torch.tensor([0.2, 0.6, 0.5, 0.0], dtype=DT), t.clone(), t - 0.1):
        u_all, dudt_all = mean_flow_jvp(model, z, r, t, v, cond, keep, mask)
        u, dudt = average_velocity(model, z, r, t, v, cond, keep, mask)
        valid = mask[:, None, :].expand_as(u)
        torch.testing.assert_close(u[valid], u_all[valid])
        mean = (r < t)[:, None, None].expand_as(u) & valid
        torch.testing.assert_close(dudt[mean], dudt_all[mean])  # where r = t it is never used:
        torch.testing.assert_close(mean_flow_target(v, r, t, dudt)[valid], mean_flow_target(v, r, t, dudt_all)[valid])
        assert u.requires_grad and not dudt.requires_grad
        assert bool((dudt[r == t] == 0).all())
    # gradients reach the parameters through both kinds of rows
    r = torch.tensor([0.2, 0.6, 0.5, 0.0], dtype=DT)
    u, _ = average_velocity(model, z, r, t, v, cond, keep, mask)
    w = model.final.out.weight
    grads = torch.autograd.grad(u[1].sum(), w, retain_graph=True), torch.autograd.grad(u[0].sum(), w)
    assert all(float(gr[0].abs().sum()) > 0 for gr in grads)


def test_exact_average_velocity_is_a_fixed_point_of_the_target():
    """With the true ``u`` and ``v`` of Gaussian data, ``v - (t - r) du/dt`` reproduces ``u`` (eq. 6)."""
    mu = torch.tensor([1.5, -1.0], dtype=DT)[:, None]
    s = torch.tensor([0.5, 0.8], dtype=DT)[:, None]

    def mean(tau):
        return (1 - tau) * mu

    def std(tau):
        return ((1 - tau) ** 2 * s**2 + tau**2).sqrt()

    def u_exact(z, t, cond, keep, r):
        t_, r_ = t[:, None, None], r[:, None, None]
        return (z - mean(r_) - std(r_) * (z - mean(t_)) / std(t_)) / (t_ - r_)

    def v_exact(z, t):
        t_ = t[:, None, None]
        dstd = (t_ - (1 - t_) * s**2) / std(t_)
        return -mu + dstd * (z - mean(t_)) / std(t_)

    g = gen(0)
    z = torch.randn(5, 2, 3, generator=g, dtype=DT)
    t = 0.5 + 0.5 * torch.rand(5, generator=g, dtype=DT)
    r = t * torch.rand(5, generator=g, dtype=DT)
    v = v_exact(z, t)
    u, dudt = mean_flow_jvp(u_exact, z, r, t, v, {}, {})
    assert torch.allclose(mean_flow_target(v, r, t, dudt), u, atol=1e-12)


def test_flow_ratio_one_makes_the_target_the_flow_velocity():
    model = tiny_dit(mean_flow=True)
    x0, cond, keep, mask = batch(model)
    config = MeanFlowConfig(flow_ratio=1.0)
    terms = mean_flow_terms(model, x0, cond, keep, gen(3), config, mask)
    assert torch.equal(terms.r, terms.t)
    assert torch.equal(terms.u_tgt, terms.v)  # u_tgt = v - 0 * du/dt
    # the same holds on the JVP path, for the r = t rows of a mixed batch
    mixed = mean_flow_terms(model, x0, cond, keep, gen(3), MeanFlowConfig(flow_ratio=0.5), mask)
    flow_rows = mixed.r == mixed.t
    assert 0 < int(flow_rows.sum()) < 4 and bool(mixed.dudt.abs().sum() > 0)
    assert torch.equal(mixed.u_tgt[flow_rows], mixed.v[flow_rows])
    assert not torch.allclose(mixed.u_tgt[~flow_rows], mixed.v[~flow_rows])
    # and the loss is the adaptively weighted flow-matching error
    loss, _ = mean_flow_loss(model, x0, cond, keep, gen(3), config, mask)
    w = mask[:, None, :].float()
    mse = ((terms.u - terms.v) ** 2 * w).sum((1, 2)) / (w.sum((1, 2)) * 3)
    assert torch.allclose(loss, (mse / (mse.detach() + config.c)).mean(), atol=1e-6)


def test_interval_draws_follow_the_config():
    model = tiny_dit(mean_flow=True)
    x0 = torch.zeros(8, 3, 4)
    terms = mean_flow_terms(model, x0, {"text": torch.zeros(8, 1, 8), "text.mask": torch.ones(8, 1, dtype=torch.bool)},
                            {"text": torch.ones(8, dtype=torch.bool)}, gen(0), MeanFlowConfig(flow_ratio=0.75))
    assert bool((terms.r <= terms.t).all()) and int((terms.r == terms.t).sum()) == 6
    assert bool(((terms.t > 0) & (terms.t < 1)).all())


def test_omega_one_kappa_zero_leaves_the_velocity_unchanged():
    model = tiny_dit(mean_flow=True)
    x0, cond, keep, mask = batch(model)
    g = gen(2)
    z, v = torch.randn(x0.shape, generator=g), torch.randn(x0.shape, generator=g)
    t = torch.tensor([0.9, 0.6, 0.5, 0.3])
    out = guided_velocity(model, z, t, v, cond, keep, MeanFlowConfig(omega=1.0, kappa=0.0), mask)
    assert torch.equal(out, v)
    unguided = mean_flow_terms(model, x0, cond, keep, gen(4), MeanFlowConfig(), mask)
    assert torch.equal(unguided.v_tgt, unguided.v)


def test_folded_guidance_formula_on_kept_rows_only():
    model = tiny_dit(mean_flow=True)
    x0, cond, keep, mask = batch(model)  # row 1 dropped its text
    g = gen(2)
    z, v = torch.randn(x0.shape, generator=g), torch.randn(x0.shape, generator=g)
    t = torch.tensor([0.9, 0.6, 0.5, 0.3])
    config = MeanFlowConfig(omega=2.0, kappa=0.3)
    out = guided_velocity(model, z, t, v, cond, keep, config, mask)
    with torch.no_grad():
        u_c = model(z, t, cond, {"text": torch.ones(4, dtype=torch.bool)}, mask=mask, r=t)
        u_n = model(z, t, cond, {"text": torch.zeros(4, dtype=torch.bool)}, mask=mask, r=t)
    expected = 2.0 * v + 0.3 * u_c + (1 - 2.0 - 0.3) * u_n
    kept = keep["text"]
    assert torch.allclose(out[kept], expected[kept], atol=1e-5)
    assert torch.equal(out[~kept], v[~kept])
    assert config.effective_scale == pytest.approx(2.0 / 0.7)


def test_folded_guidance_on_selected_conditions():
    model = tiny_dit(mean_flow=True)
    x0, cond, keep, mask = batch(model)
    with pytest.raises(ValueError, match="speaker"):
        mean_flow_loss(model, x0, cond, keep, gen(0), MeanFlowConfig(omega=2.0, guided_conditions=("speaker",)), mask)


def test_curriculum_goes_from_flow_matching_to_the_final_ratio():
    assert curriculum_flow_ratio(0, 100, 0.25) == 1.0
    assert curriculum_flow_ratio(50, 100, 0.25) == pytest.approx(0.625)
    assert curriculum_flow_ratio(100, 100, 0.25) == 0.25
    assert curriculum_flow_ratio(500, 100, 0.25) == 0.25
    assert curriculum_flow_ratio(0, 0, 0.5) == 0.5
    assert flow_to_mean_flow(MeanFlowConfig(flow_ratio=0.5), 0, 10).flow_ratio == 1.0
    with pytest.raises(ValueError):
        curriculum_flow_ratio(0, 10, 1.5)


@pytest.mark.parametrize("bad", [{"flow_ratio": 1.5}, {"sigma": 0.0}, {"c": 0.0}, {"kappa": 1.0}, {"omega": 0.0}])
def test_mean_flow_config_validation(bad):
    with pytest.raises(ValueError):
        MeanFlowConfig(**bad)


# ---------------------------------------------------------------------------------------------
# Padding and loss decrease
# ---------------------------------------------------------------------------------------------


def _losses(model, x0, cond, keep, mask):
    schedule = DiffusionSchedule.make(100, "scaled_linear", zero_terminal_snr=True)
    out = {
        "flow": flow_matching_loss(model, x0, cond, keep, gen(7), mask)[0],
        "diffusion-v": diffusion_loss(model, x0, cond, keep, gen(7), schedule, "v", mask)[0],
        "diffusion-eps": diffusion_loss(model, x0, cond, keep, gen(7), schedule, "eps", mask)[0],
    }
    if model.mean_flow:
        config = MeanFlowConfig(flow_ratio=0.5, omega=1.5)
        out["mean-flow"] = mean_flow_loss(model, x0, cond, keep, gen(7), config, mask)[0]
    return out


def test_losses_ignore_padded_frames():
    model = tiny_dit(mean_flow=True)
    x0, cond, keep, mask = batch(model)
    x0_changed = x0.clone()
    x0_changed[~mask[:, None, :].expand_as(x0)] = 100.0
    a, b = _losses(model, x0, cond, keep, mask), _losses(model, x0_changed, cond, keep, mask)
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=1e-5), name
    # without the mask the padded content does count
    assert not torch.allclose(flow_matching_loss(model, x0, cond, keep, gen(7))[0],
                              flow_matching_loss(model, x0_changed, cond, keep, gen(7))[0])


@pytest.mark.parametrize("objective", ["flow", "diffusion"])
def test_loss_decreases_on_a_tiny_dit(objective):
    kind = "flow" if objective == "flow" else "v"
    model = tiny_dit(wake=False, kind=kind, dim=32, heads=4)
    x0, cond, keep, mask = batch(model, T=8)
    x0 = (x0 + torch.linspace(-1, 1, 8)).repeat(4, 1, 1)  # some structure to learn; batch of 16
    mask, keep = mask.repeat(4, 1), {k: v.repeat(4) for k, v in keep.items()}
    cond = {k: v.repeat(4, *([1] * (v.ndim - 1))) for k, v in cond.items()}
    schedule = DiffusionSchedule.make(100, "scaled_linear")

    def loss_at(seed: int) -> torch.Tensor:
        if objective == "flow":
            return flow_matching_loss(model, x0, cond, keep, gen(seed), mask)[0]
        return diffusion_loss(model, x0, cond, keep, gen(seed), schedule, kind, mask)[0]

    with torch.no_grad():
        before = sum(loss_at(1000 + i) for i in range(16)) / 16
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(60):
        loss = loss_at(step)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = sum(loss_at(1000 + i) for i in range(16)) / 16
    assert after < 0.8 * before  # measured: 0.52 (flow), 0.69 (diffusion, v)


def test_mean_flow_loss_trains_a_dit_with_folded_guidance():
    model = tiny_dit(wake=False, mean_flow=True)
    x0, cond, keep, mask = batch(model)
    loss, logs = mean_flow_loss(model, x0, cond, keep, gen(0), MeanFlowConfig(flow_ratio=0.5, omega=2.0), mask)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert set(logs) == {"loss", "mse", "mse_flow", "mse_mean"} and math.isfinite(logs["loss"])


def test_objectives_refuse_mismatched_models():
    x0, cond, keep, mask = batch(tiny_dit())
    with pytest.raises(ValueError, match="flow"):
        flow_matching_loss(tiny_dit(kind="eps"), x0, cond, keep, gen(0))
    with pytest.raises(ValueError, match="mean-flow"):
        mean_flow_loss(tiny_dit(), x0, cond, keep, gen(0))
    with pytest.raises(ValueError, match="kind"):
        diffusion_loss(tiny_dit(), x0, cond, keep, gen(0), DiffusionSchedule.make(10), "flow")
    with pytest.raises(ValueError, match="t_dist"):
        flow_matching_loss(tiny_dit(), x0, cond, keep, gen(0), t_dist="beta")


# ---------------------------------------------------------------------------------------------
# Training works end to end on a toy distribution
# ---------------------------------------------------------------------------------------------

MU = torch.tensor([1.5, -1.0])
SD = torch.tensor([0.4, 0.6])


def toy_data(n: int, g: torch.Generator) -> torch.Tensor:
    """Shifted, scaled 2-D Gaussian as latents ``[n, 2, 1]``."""
    return (MU + SD * torch.randn(n, 2, generator=g))[:, :, None]


def gaussian_w2(samples: torch.Tensor) -> float:
    """2-Wasserstein distance between diagonal Gaussians fitted to ``samples`` and to the data."""
    s = samples[:, :, 0]
    return float(((s.mean(0) - MU) ** 2 + (s.std(0) - SD) ** 2).sum().sqrt())


class MeanFlowMLP(Generator):
    """A per-frame MLP of ``(z, t, t - r)``; output layer zero-initialised (untrained = no motion)."""

    mean_flow = True

    def __init__(self, channels: int, hidden: int, seed: int) -> None:
        super().__init__({})
        self.net = nn.Sequential(
            nn.Linear(channels + 4, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, channels),
        )
        init_random(self, seed)
        with torch.no_grad():
            self.net[-1].weight.zero_()
            self.net[-1].bias.zero_()

    def forward(self, x, t, cond, keep, mask=None, r=None):
        r = t if r is None else r
        feats = torch.stack([t, t - r, torch.cos(math.pi * t), torch.sin(math.pi * (t - r))], -1)
        h = torch.cat([x, feats[:, :, None].expand(-1, -1, x.shape[-1]).to(x.dtype)], dim=1)
        return self.net(h.transpose(1, 2)).transpose(1, 2)


def train(model: nn.Module, loss_fn, steps: int, lr: float, batch_size: int, seed: int) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    decay = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0 - i / steps)
    g = gen(seed)
    for _ in range(steps):
        loss, _ = loss_fn(model, toy_data(batch_size, g), {}, {}, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        decay.step()


def test_flow_matching_then_euler_recovers_the_data_distribution():
    model = DiT(DiTConfig(dim=32, depth=1, heads=4, seed=0), 2, {})
    eps = torch.randn(4000, 2, 1, generator=gen(123))

    def sample() -> torch.Tensor:
        with torch.no_grad():
            return sample_euler(lambda x, t: model(x, t, {}, {}), eps, uniform_times(16))

    untrained = gaussian_w2(sample())
    train(model, flow_matching_loss, steps=200, lr=1e-2, batch_size=128, seed=0)
    s = sample()[:, :, 0]
    assert torch.allclose(s.mean(0), MU, atol=0.2)
    assert torch.allclose(s.std(0), SD, rtol=0.25)
    assert gaussian_w2(sample()) < 0.15 * untrained


@pytest.mark.slow
def test_mean_flow_then_one_step_sampling_approaches_the_data_distribution():
    model = MeanFlowMLP(2, 64, seed=0)
    eps = torch.randn(4000, 2, 1, generator=gen(123))
    config = MeanFlowConfig(flow_ratio=0.5, mu=0.0, sigma=1.5)

    def sample() -> torch.Tensor:
        with torch.no_grad():
            return sample_meanflow(lambda x, t, r: model(x, t, {}, {}, r=r), eps, steps=1)

    untrained = gaussian_w2(sample())  # samples = eps: W2 about 1.9
    loss_fn = lambda m, x0, c, k, g: mean_flow_loss(m, x0, c, k, g, config)  # noqa: E731
    train(model, loss_fn, steps=300, lr=1e-2, batch_size=256, seed=0)
    s = sample()
    ratio = s[:, :, 0].std(0) / SD
    assert float((s[:, :, 0].mean(0) - MU).norm()) < 0.3
    assert bool(((ratio > 0.5) & (ratio < 1.5)).all())
    assert gaussian_w2(s) < 0.25 * untrained
