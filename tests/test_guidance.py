"""Guidance toolbox: each method against its paper formula, computed here branch by branch."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest
import torch

from audioguide import guidance as G
from audioguide.core import convert_prediction

B, C, T = 3, 4, 6


class ToyDenoiser:
    """A nonlinear random network whose output depends on which conditions each row keeps."""

    def __init__(self, names=("text", "speaker"), seed=0):
        g = torch.Generator().manual_seed(seed)
        self.names = names
        self.a = torch.randn(C, 1, generator=g)
        self.b = torch.randn(C, T, generator=g)
        self.null = {n: torch.randn(C, T, generator=g) for n in names}
        self.calls = 0
        self.rows = 0

    def __call__(self, x, t, cond, keep, **extra):
        self.calls += 1
        self.rows += x.shape[0]
        out = torch.tanh(x * self.a) + t.view(-1, 1, 1) * self.b
        for n in self.names:
            k = keep[n].view(-1, 1, 1).float() if n in keep else torch.zeros(x.shape[0], 1, 1)
            out = out + k * cond[n] * (1 + x.abs()) + (1 - k) * self.null[n]
        return out

    def branch(self, x, t, cond, kept):
        keep = {n: torch.full((x.shape[0],), n in kept) for n in self.names}
        return self(x, t.expand(x.shape[0]), cond, keep)


@pytest.fixture
def setup():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, C, T, generator=g)
    cond = {"text": torch.randn(B, C, T, generator=g), "speaker": torch.randn(B, C, T, generator=g)}
    return ToyDenoiser(), x, torch.tensor(0.6), cond


def single(w, **kw):
    return G.Guidance(scales={"text": w}, **kw)


def test_w_one_is_conditional_and_skips_unconditional(setup):
    model, x, t, cond = setup
    out = G.GuidedField(model, cond, single(1.0))(x, t)
    assert torch.allclose(out, model.branch(x, t, cond, {"text"}))
    assert model.rows == 2 * B  # one guided call (B rows) + the reference call above (B rows)


def test_plain_cfg_formula_in_one_forward(setup):
    model, x, t, cond = setup
    field = G.GuidedField(model, cond, single(3.0))
    out = field(x, t)
    assert model.calls == 1 and field.rows_evaluated == 2 * B
    c, u = model.branch(x, t, cond, {"text"}), model.branch(x, t, cond, set())
    assert torch.allclose(out, u + 3.0 * (c - u), atol=1e-5)


def test_w_zero_is_unconditional(setup):
    model, x, t, cond = setup
    out = G.GuidedField(model, cond, single(0.0))(x, t)
    assert torch.allclose(out, model.branch(x, t, cond, set()), atol=1e-6)


def test_nested_text_speaker_formula(setup):
    model, x, t, cond = setup
    s_t, s_s = 2.5, 1.7
    field = G.GuidedField(model, cond, G.Guidance(scales={"text": s_t, "speaker": s_s}))
    out = field(x, t)
    assert model.calls == 1 and field.rows_evaluated == 3 * B
    u00 = model.branch(x, t, cond, set())
    ut0 = model.branch(x, t, cond, {"text"})
    uts = model.branch(x, t, cond, {"text", "speaker"})
    assert torch.allclose(out, u00 + s_t * (ut0 - u00) + s_s * (uts - ut0), atol=1e-5)


def test_nested_equal_scales_is_joint_and_skips_the_middle_branch(setup):
    model, x, t, cond = setup
    nested = G.GuidedField(model, cond, G.Guidance(scales={"text": 3.0, "speaker": 3.0}))
    joint = G.GuidedField(model, cond, G.Guidance(scales={"text": 3.0, "speaker": 3.0}, mode="joint"))
    assert torch.allclose(nested(x, t), joint(x, t), atol=1e-5)
    assert nested.rows_evaluated == 2 * B


def test_independent_formula(setup):
    model, x, t, cond = setup
    out = G.GuidedField(model, cond, G.Guidance(scales={"text": 2.0, "speaker": 1.5}, mode="independent"))(x, t)
    u = model.branch(x, t, cond, set())
    ct = model.branch(x, t, cond, {"text"})
    cs = model.branch(x, t, cond, {"speaker"})
    assert torch.allclose(out, u + 2.0 * (ct - u) + 1.5 * (cs - u), atol=1e-5)


@pytest.mark.parametrize("make", [G.nested_terms, G.independent_terms])
def test_term_weights_sum_to_one(make):
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        scales = (torch.rand(3, generator=g) * 8).tolist()
        terms = make(["a", "b", "c"], scales)
        assert abs(sum(tm.weight for tm in terms) - 1.0) < 1e-9


def test_custom_terms_jasco_style(setup):
    model, x, t, cond = setup
    terms = (
        G.CFGTerm(frozenset({"text", "speaker"}), 2.0),
        G.CFGTerm(frozenset({"speaker"}), 0.5),
        G.CFGTerm(frozenset(), -1.5),
    )
    out = G.GuidedField(model, cond, G.Guidance(mode="terms", custom_terms=terms))(x, t)
    expect = sum(tm.weight * model.branch(x, t, cond, tm.keep) for tm in terms)
    assert torch.allclose(out, expect, atol=1e-5)
    with pytest.raises(ValueError, match="sum to 1"):
        G.Guidance(mode="terms", custom_terms=terms[:2])


def _std(v, dims):
    return v.std(dim=dims, keepdim=True)


@pytest.mark.parametrize("reduce,dims", [("all", (1, 2)), ("channels", (1,))])
def test_rescale_formula(setup, reduce, dims):
    model, x, t, cond = setup
    phi, w = 0.7, 5.0
    out = G.GuidedField(model, cond, single(w, rescale=phi, reduce=reduce))(x, t)
    c, u = model.branch(x, t, cond, {"text"}), model.branch(x, t, cond, set())
    x_cfg = u + w * (c - u)
    x_re = x_cfg * _std(c, dims) / _std(x_cfg, dims)
    assert torch.allclose(out, phi * x_re + (1 - phi) * x_cfg, atol=1e-5)
    # phi = 0 is plain CFG; phi = 1 matches the conditional std exactly.
    plain = G.GuidedField(model, cond, single(w, rescale=0.0))(x, t)
    assert torch.allclose(plain, x_cfg, atol=1e-5)
    full = G.GuidedField(model, cond, single(w, rescale=1.0, reduce=reduce))(x, t)
    assert torch.allclose(_std(full, dims), _std(c, dims), atol=1e-4)


def test_rescale_in_declared_space_differs_and_matches_formula(setup):
    model, x, t, cond = setup
    a, s = torch.tensor([0.8]), torch.tensor([0.6])
    field = G.GuidedField(
        model, cond, single(4.0, rescale=0.75, rescale_space="x0"), kind="eps", alpha_sigma=lambda t: (a.expand_as(t), s.expand_as(t))
    )
    out = field(x, t)
    c, u = model.branch(x, t, cond, {"text"}), model.branch(x, t, cond, set())
    to0 = lambda p: convert_prediction(p, "eps", "x0", x, a, s)  # noqa: E731
    g0, c0 = to0(u + 4.0 * (c - u)), to0(c)
    re0 = 0.75 * g0 * _std(c0, (1, 2)) / _std(g0, (1, 2)) + 0.25 * g0
    assert torch.allclose(out, convert_prediction(re0, "x0", "eps", x, a, s), atol=1e-4)
    native = G.GuidedField(model, cond, single(4.0, rescale=0.75), kind="eps")(x, t)
    assert not torch.allclose(out, native, atol=1e-3)


def test_apg_degenerate_cases_equal_plain_cfg(setup):
    model, x, t, cond = setup
    plain = G.GuidedField(model, cond, single(4.0))(x, t)
    apg = G.APG(eta=1.0, norm_threshold=1e9, momentum=0.0)
    out = G.GuidedField(model, cond, single(4.0, apg=apg))(x, t)
    assert torch.allclose(out, plain, atol=1e-4)


def test_apg_formula_with_momentum_and_clip(setup):
    model, x, t, cond = setup
    w, eta, r, beta = 4.0, 0.3, 0.5, -0.5
    field = G.GuidedField(model, cond, single(w, apg=G.APG(eta=eta, norm_threshold=r, momentum=beta)))
    to0 = lambda p, xx: convert_prediction(p, "flow", "x0", xx, 1 - t.expand(B), t.expand(B))  # noqa: E731
    avg = None
    for step in range(2):
        xs = x + 0.1 * step
        out = field(xs, t)
        D_c = to0(model.branch(xs, t, cond, {"text"}), xs)
        D_u = to0(model.branch(xs, t, cond, set()), xs)
        d = D_c - D_u
        avg = d if avg is None else d + beta * avg
        d = avg
        n = d.flatten(1).norm(dim=1).view(-1, 1, 1)
        d = d * torch.clamp(r / n, max=1.0)
        unit = D_c / D_c.flatten(1).norm(dim=1).view(-1, 1, 1)
        par = (d * unit).sum((1, 2), keepdim=True) * unit
        D = D_c + (w - 1) * ((d - par) + eta * par)
        expect = convert_prediction(D, "x0", "flow", xs, 1 - t.expand(B), t.expand(B))
        assert torch.allclose(out, expect, atol=1e-4), step


def apg_reference_rows(model, x, t, cond, w, eta, r, beta, avg, rows):
    """APG of Alg. 1 computed row by row for ``rows``; ``avg`` holds each row's momentum (or None)."""
    out = {}
    for b in rows:
        xb, tb = x[b : b + 1], t[b : b + 1]
        a, s = 1 - tb, tb
        cb = {k: v[b : b + 1] for k, v in cond.items()}
        D_c = convert_prediction(model.branch(xb, tb, cb, {"text"}), "flow", "x0", xb, a, s)
        d = D_c - convert_prediction(model.branch(xb, tb, cb, set()), "flow", "x0", xb, a, s)
        d = d if avg[b] is None else d + beta * avg[b]
        avg[b] = d
        d = d * torch.clamp(r / d.flatten(1).norm(dim=1).view(-1, 1, 1), max=1.0)
        unit = D_c / D_c.flatten(1).norm(dim=1).view(-1, 1, 1)
        par = (d * unit).sum((1, 2), keepdim=True) * unit
        D = D_c + (w - 1) * ((d - par) + eta * par)
        out[b] = convert_prediction(D, "x0", "flow", xb, a, s)[0]
    return out


def test_apg_momentum_persists_per_row_when_other_rows_leave_the_interval(setup):
    """Rows switched off by the interval keep their momentum; the others keep accumulating theirs."""
    model, x, _, cond = setup
    w, eta, r, beta = 4.0, 0.3, 0.5, -0.5
    policy = single(w, apg=G.APG(eta=eta, norm_threshold=r, momentum=beta), interval=(0.2, 0.8))
    field = G.GuidedField(model, cond, policy)
    avg = [None] * B
    times = [[0.5, 0.5, 0.5], [0.9, 0.5, 0.5], [0.5, 0.9, 0.4], [0.3, 0.3, 0.9], [0.6, 0.7, 0.3]]
    for step, tv in enumerate(times):
        t = torch.tensor(tv)
        xs = x + 0.1 * step
        out = field(xs, t)
        inside = [b for b in range(B) if 0.2 < tv[b] <= 0.8]
        expect = apg_reference_rows(model, xs, t, cond, w, eta, r, beta, avg, inside)
        c = model(xs, t, cond, {"text": torch.ones(B, dtype=torch.bool), "speaker": torch.zeros(B, dtype=torch.bool)})
        for b in range(B):
            want = expect[b] if b in inside else c[b]
            assert torch.allclose(out[b], want, atol=1e-4), (step, b)
    # the momentum really mattered: a row guided after a pause differs from a fresh start
    fresh = apg_reference_rows(model, xs, t, cond, w, eta, r, beta, [None] * B, [0])[0]
    assert not torch.allclose(out[0], fresh, atol=1e-4)
    assert field.state_of(policy.apg)[frozenset()].shape == (B, C, T)


@pytest.mark.parametrize("apg", [None, G.APG(eta=0.2, norm_threshold=0.7, momentum=-0.5)])
def test_duplicate_custom_terms_equal_merged_ones(setup, apg):
    model, x, t, cond = setup
    dup = (
        G.CFGTerm(frozenset({"text", "speaker"}), 1.5),
        G.CFGTerm(frozenset(), -0.25),
        G.CFGTerm(frozenset({"text", "speaker"}), 1.0),
        G.CFGTerm(frozenset(), -1.25),
    )
    merged = (G.CFGTerm(frozenset({"text", "speaker"}), 2.5), G.CFGTerm(frozenset(), -1.5))
    p_dup = G.Guidance(mode="terms", custom_terms=dup, apg=apg)
    p_merged = G.Guidance(mode="terms", custom_terms=merged, apg=apg)
    assert p_dup.terms == merged
    f_dup, f_merged = G.GuidedField(model, cond, p_dup), G.GuidedField(model, cond, p_merged)
    for step in range(3):
        xs = x + 0.1 * step
        assert torch.allclose(f_dup(xs, t), f_merged(xs, t), atol=1e-6), step
    assert f_dup.rows_evaluated == f_merged.rows_evaluated == 3 * 2 * B
    if apg is None:
        c, u = model.branch(x, t, cond, {"text", "speaker"}), model.branch(x, t, cond, set())
        assert torch.allclose(G.GuidedField(model, cond, p_dup)(x, t), 2.5 * c - 1.5 * u, atol=1e-5)


def test_mix_is_the_weighted_sum(setup):
    model, x, t, cond = setup
    c, u = model.branch(x, t, cond, {"text"}), model.branch(x, t, cond, set())
    assert torch.allclose(G.mix([u, c], [-2.0, 3.0]), u + 3.0 * (c - u), atol=1e-5)
    assert torch.allclose(G.mix([u, c], [-2.0, 3.0]), G.combine(torch.stack([u, c]), [-2.0, 3.0]))
    with pytest.raises(ValueError, match="one weight per prediction"):
        G.mix([u, c], [1.0])


def test_interval_outside_is_conditional_and_cheap(setup):
    model, x, _, cond = setup
    policy = single(3.0, interval=(0.2, 0.5))
    field = G.GuidedField(model, cond, policy)
    for tv, inside in [(0.1, False), (0.2, False), (0.35, True), (0.5, True), (0.9, False)]:
        t = torch.tensor(tv)
        before = field.rows_evaluated
        out = field(x, t)
        c, u = model.branch(x, t, cond, {"text"}), model.branch(x, t, cond, set())
        expect = u + 3.0 * (c - u) if inside else c
        assert torch.allclose(out, expect, atol=1e-5), tv
        assert field.rows_evaluated - before == (2 * B if inside else B)


def test_interval_per_sample_times(setup):
    model, x, _, cond = setup
    t = torch.tensor([0.1, 0.4, 0.9])
    out = G.GuidedField(model, cond, single(3.0, interval=(0.2, 0.5)))(x, t)
    keep = {"text": torch.ones(B, dtype=torch.bool), "speaker": torch.zeros(B, dtype=torch.bool)}
    c = model(x, t, cond, keep)
    u = model(x, t, cond, {n: torch.zeros(B, dtype=torch.bool) for n in keep})
    assert torch.allclose(out[1], (u + 3 * (c - u))[1], atol=1e-5)
    assert torch.allclose(out[[0, 2]], c[[0, 2]], atol=1e-6)


def test_cfg_zero_star_formula_and_zero_init(setup):
    model, x, t, cond = setup
    w = 4.0
    out = G.GuidedField(model, cond, single(w, zero_star=True))(x, t)
    c, u = model.branch(x, t, cond, {"text"}), model.branch(x, t, cond, set())
    s = (c * u).sum((1, 2), keepdim=True) / (u * u).sum((1, 2), keepdim=True)
    assert torch.allclose(out, s * u + w * (c - s * u), atol=1e-5)
    field = G.GuidedField(model, cond, single(w, zero_star=True, zero_init=0.04))
    assert torch.count_nonzero(field(x, torch.tensor(0.97))) == 0
    assert torch.allclose(field(x, t), out, atol=1e-6)


def test_cfg_zero_star_rescales_only_the_unconditional_branch(setup):
    """Several conditions: ``s* u + sum_k s_k (c_k - s* u)`` (independent) and
    ``s* u_00 + s_t (u_t0 - s* u_00) + s_s (u_ts - u_t0)`` (nested), with ``s* = <c, u> / ||u||^2``
    measured against the all-conditions prediction ``c``."""
    model, x, t, cond = setup
    u, c = model.branch(x, t, cond, set()), model.branch(x, t, cond, {"text", "speaker"})
    c_t, c_s = model.branch(x, t, cond, {"text"}), model.branch(x, t, cond, {"speaker"})
    s = (c * u).sum((1, 2), keepdim=True) / (u * u).sum((1, 2), keepdim=True)
    scales = {"text": 3.0, "speaker": 2.0}
    ind = G.GuidedField(model, cond, G.Guidance(scales=scales, mode="independent", zero_star=True))(x, t)
    assert torch.allclose(ind, s * u + 3.0 * (c_t - s * u) + 2.0 * (c_s - s * u), atol=1e-4)
    nest = G.GuidedField(model, cond, G.Guidance(scales=scales, mode="nested", zero_star=True))(x, t)
    assert torch.allclose(nest, s * u + 3.0 * (c_t - s * u) + 2.0 * (c - c_t), atol=1e-4)


def test_zero_init_refuses_non_velocity_kinds(setup):
    model, _, _, cond = setup
    with pytest.raises(G.GuidanceError, match="zero_init zeroes a flow velocity; it does not apply to a 'eps' model"):
        G.GuidedField(model, cond, single(3.0, zero_init=0.04), kind="eps")


def test_interval_on_sigma_is_the_edm_noise_level(setup):
    """On a flow path ``sigma = t / (1 - t)``: (0.5, 2] guides t in (1/3, 2/3] only."""
    model, x, _, cond = setup
    t = torch.tensor([0.3, 0.5, 0.7])  # sigma 0.43, 1.0, 2.33
    out = G.GuidedField(model, cond, single(3.0, interval=(0.5, 2.0), interval_on="sigma"))(x, t)
    c, u = model.branch(x, t, cond, {"text"}), model.branch(x, t, cond, set())
    assert torch.allclose(out[1], (u + 3 * (c - u))[1], atol=1e-5)
    assert torch.allclose(out[[0, 2]], c[[0, 2]], atol=1e-6)


class ConvergingDenoiser(ToyDenoiser):
    """c and u become parallel as t -> 0 (for rows in ``fast``); cos(c, u) then -> 1."""

    def __init__(self, fast):
        super().__init__(names=("text",))
        self.fast = fast

    def __call__(self, x, t, cond, keep, **extra):
        self.calls += 1
        self.rows += x.shape[0]
        k = keep["text"].view(-1, 1, 1).float()
        mix = t.view(-1, 1, 1) * (1 - k)
        return torch.ones_like(x) * 2 + mix * self.null["text"] + 0 * cond["text"]


def test_adaptive_guidance_stops_unconditional_passes(setup):
    _, x, _, cond = setup
    model = ConvergingDenoiser(fast=None)
    policy = single(3.0, adaptive=G.Adaptive(threshold=0.99, patience=2))
    field = G.GuidedField(model, cond, policy)
    per_call, outs = [], []
    for tv in [0.9, 0.5, 0.05, 0.02, 0.01, 0.005]:
        before = field.rows_evaluated
        t = torch.tensor(tv)
        outs.append((field(x, t), t))
        per_call.append(field.rows_evaluated - before)
    # Early on cos(c, u) is low: both branches; after two converged evaluations: c alone.
    assert per_call[:4] == [2 * B] * 4 and per_call[4:] == [B, B]
    out, t = outs[-1]
    assert torch.allclose(out, model.branch(x, t, cond, {"text"}))
    # A stricter threshold never converges: every call guides.
    strict = G.GuidedField(model, cond, single(3.0, adaptive=G.Adaptive(threshold=1.0, patience=1)))
    for tv in [0.9, 0.5, 0.05]:
        strict(x, torch.tensor(tv))
    assert strict.rows_evaluated == 3 * 2 * B


def test_adaptive_is_per_sample(setup):
    _, x, _, cond = setup
    model = ConvergingDenoiser(fast=None)
    field = G.GuidedField(model, cond, single(3.0, adaptive=G.Adaptive(threshold=0.99, patience=1)))
    field(x, torch.tensor([0.01, 0.9, 0.9]))  # row 0 converges now
    before = field.rows_evaluated
    out = field(x, torch.tensor([0.9, 0.9, 0.9]))
    assert field.rows_evaluated - before == B + 2
    c = model.branch(x, torch.tensor(0.9), cond, {"text"})
    assert torch.allclose(out[0], c[0]) and not torch.allclose(out[1], c[1])


def test_pair_returns_guided_and_unconditional(setup):
    model, x, t, cond = setup
    guided, uncond = G.GuidedField(model, cond, single(0.6)).pair(x, t)
    c, u = model.branch(x, t, cond, {"text"}), model.branch(x, t, cond, set())
    assert torch.allclose(uncond, u) and torch.allclose(guided, u + 0.6 * (c - u), atol=1e-6)
    # with weight 0 on u (w = 1) CFG++ still needs u: it is evaluated anyway.
    g1, u1 = G.GuidedField(model, cond, single(1.0)).pair(x, t)
    assert torch.allclose(g1, c) and torch.allclose(u1, u)


def test_per_call_override_really_overrides(setup):
    model, x, t, cond = setup
    base = G.Guidance(scales={"text": 2.0, "speaker": 1.0})
    over = base.with_scales(speaker=4.0)
    assert dict(over.scales) == {"text": 2.0, "speaker": 4.0} and dict(base.scales)["speaker"] == 1.0
    a = G.GuidedField(model, cond, base)(x, t)
    b = G.GuidedField(model, cond, over)(x, t)
    ut0 = model.branch(x, t, cond, {"text"})
    uts = model.branch(x, t, cond, {"text", "speaker"})
    assert torch.allclose(b - a, 3.0 * (uts - ut0), atol=1e-5)
    with pytest.raises(G.GuidanceError, match="no guidance scale named 'style'"):
        base.with_scales(style=2.0)
    assert dataclasses.replace(base, rescale=0.5).rescale == 0.5


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"scales": {"text": -1.0}}, ">= 0"),
        ({"scales": {"text": float("nan")}}, "finite"),
        ({"rescale": 1.5}, r"\[0, 1\]"),
        ({"interval": (0.5, 0.2)}, "lo < hi"),
        ({"mode": "banana"}, "nested, independent"),
        ({"reduce": "time"}, "all, channels"),
        ({"rescale_space": "latent"}, "rescale_space must be one of native"),
        ({"interval_on": "steps"}, "interval_on must be t or sigma"),
        ({"zero_init": 1.0}, r"zero_init must be in \[0, 1\)"),
        ({"apg": {"eta": 0.5}}, "apg must be an APG"),
        ({"guiders": ("ramp",)}, "guiders must be Guider objects"),
    ],
)
def test_invalid_policies_are_errors(kwargs, match):
    with pytest.raises(G.GuidanceError, match=match):
        G.Guidance(**kwargs)


def test_peer_conventions_convert_to_ours(setup):
    model, x, t, cond = setup
    c, u = model.branch(x, t, cond, {"text"}), model.branch(x, t, cond, set())
    s = 2.0
    f5 = c + s * (c - u)  # F5-TTS cfg_strength
    cosy = (1 + s) * c - s * u  # CosyVoice
    orig = c + s * (c - u)  # diffusers use_original_formulation
    for peer, conv in [(f5, G.from_f5tts), (cosy, G.from_cosyvoice), (orig, G.from_diffusers_original)]:
        w = conv(s)
        assert torch.allclose(peer, u + w * (c - u), atol=1e-5)


def test_guided_logits_batched_equals_branch_by_branch():
    g = torch.Generator().manual_seed(0)
    V, K = 11, 2
    emb = torch.randn(3, V, generator=g)
    base = torch.randn(K, V, generator=g)

    def lm(tokens, keep):  # logits depend on kept conditions
        return base + tokens.unsqueeze(-1) + keep["text"].view(-1, 1, 1) * emb[0] + keep["speaker"].view(-1, 1, 1) * emb[1]

    policy = G.Guidance(scales={"text": 3.0, "speaker": 1.5})
    gl = G.GuidedLogits(policy)
    batch = 4
    keep = gl.keep(batch)
    assert gl.n_branches == 3 and keep["text"].shape == (3 * batch,)
    tokens = gl.expand(torch.zeros(batch, K, dtype=torch.long))
    guided = gl(lm(tokens, keep))
    # branch by branch with raw logits: same distribution after softmax
    one = lambda kept: lm(torch.zeros(batch, K, dtype=torch.long), {n: torch.full((batch,), n in kept) for n in ("text", "speaker")})  # noqa: E731
    raw = one(set()) + 3.0 * (one({"text"}) - one(set())) + 1.5 * (one({"text", "speaker"}) - one({"text"}))
    assert torch.allclose(guided.softmax(-1), raw.softmax(-1), atol=1e-5)
    with pytest.raises(G.GuidanceError, match="rescale does not apply to codec-LM logits"):
        G.GuidedLogits(policy.override(rescale=0.5))
    with pytest.raises(G.GuidanceError, match="interval does not apply to codec-LM logits"):
        G.GuidedLogits(dataclasses.replace(policy, interval=(0.2, 0.8)))


# --------------------------------------------------------------------------------------------
# Guiders: the policy's guiders, the registry, checks, overrides, a new method as one class
# --------------------------------------------------------------------------------------------


def test_policy_builds_one_guider_per_method_in_order():
    apg, ad = G.APG(), G.Adaptive(0.99, 2)
    p = single(3.0, rescale=0.7, rescale_space="x0", apg=apg, interval=(0.1, 0.9), interval_on="sigma",
               zero_star=True, zero_init=0.04, adaptive=ad)
    assert p.methods == (G.CFGZeroStar(True, 0.04), apg, G.Rescale(0.7, "x0"), G.Interval(0.1, 0.9, "sigma"), ad)
    assert single(3.0).methods == () and single(3.0, zero_init=0.1).methods == (G.CFGZeroStar(False, 0.1),)
    assert {"cfg-zero-star", "apg", "rescale", "interval", "adaptive"} <= set(G.GUIDERS)
    assert G.guider("interval", lo=0.1, hi=0.5) == G.Interval(0.1, 0.5)
    with pytest.raises(G.GuidanceError, match="no guider named 'nope'; registered: .*apg"):
        G.guider("nope")


def test_built_in_guiders_passed_as_objects_equal_their_keywords(setup):
    model, x, _, cond = setup
    t = torch.tensor([0.1, 0.4, 0.9])
    kw = single(3.0, rescale=0.7, interval=(0.2, 0.5), zero_star=True)
    objs = single(3.0, guiders=(G.CFGZeroStar(), G.Rescale(0.7), G.Interval(0.2, 0.5)))
    assert torch.equal(G.GuidedField(model, cond, kw)(x, t), G.GuidedField(model, cond, objs)(x, t))


def test_extra_guiders_survive_copies_and_keywords_are_rebuilt():
    extra = G.Rescale(0.3)
    p = single(3.0, rescale=0.7, guiders=(extra,))
    assert p.guiders == (extra,) and p.methods == (G.Rescale(0.7), extra)
    q = dataclasses.replace(p, rescale=0.5)
    assert q.methods == (G.Rescale(0.5), extra)
    assert p.override(cfg=2.0, rescale=0.0).methods == (extra,)
    assert p == single(3.0, rescale=0.7, guiders=(extra,))


def test_at_most_one_guider_replaces_the_combination():
    @dataclass(frozen=True)
    class Mean(G.Guider, name="test-mean"):
        def combine(self, step, c, preds):
            return c

    single(3.0, guiders=(Mean(),))
    with pytest.raises(G.GuidanceError, match="at most one guider may replace the weighted combination, got apg, test-mean"):
        single(3.0, apg=G.APG(), guiders=(Mean(),))


def test_a_guider_name_is_taken_once():
    with pytest.raises(G.GuidanceError, match="a guider named 'apg' exists already"):
        class Other(G.Guider, name="apg"):
            pass


def test_override_is_the_one_place_for_per_call_overrides():
    base = G.Guidance(scales={"text": 2.0, "speaker": 1.0}, rescale=0.7)
    assert dict(base.override(cfg=4).scales) == {"text": 4.0, "speaker": 4.0}
    both = base.override(cfg=4.0, scales={"speaker": 1.5}, rescale=0.2)
    assert dict(both.scales) == {"text": 4.0, "speaker": 1.5} and both.rescale == 0.2
    assert both.methods == (G.Rescale(0.2),)
    assert base.override() == base and dict(base.scales)["text"] == 2.0
    with pytest.raises(G.GuidanceError, match="no guidance scale named 'style'; this policy has text, speaker"):
        base.override(scales={"style": 2.0})
    with pytest.raises(G.GuidanceError, match=r"rescale phi must be in \[0, 1\], got 2.0"):
        base.override(rescale=2.0)
    with pytest.raises(G.GuidanceError, match="must be a finite number >= 0"):
        base.override(cfg=-1.0)
    with pytest.raises(G.GuidanceError, match="guidance overrides must be numbers"):
        base.override(cfg="strong")
    terms = G.Guidance(mode="terms", custom_terms=(G.CFGTerm(frozenset({"text"}), 2.0), G.CFGTerm(frozenset(), -1.0)))
    with pytest.raises(G.GuidanceError, match="no guidance scale named 'text'; this policy has none"):
        terms.override(cfg=3.0)


@pytest.mark.parametrize(
    "policy,kind,cfgpp,mean_flow,match",
    [
        (single(3.0), "flow", True, False, r"CFG\+\+ scales live in \[0, 1\]; scale for 'text' is 3.0"),
        (G.Guidance(mode="terms", custom_terms=(G.CFGTerm(frozenset({"text"}), 2.0), G.CFGTerm(frozenset(), -1.0))),
         "eps", True, False, "scale for 'text' is 2.0"),
        (single(3.0, rescale=0.5), "tokens", False, False, "rescale does not apply to codec-LM logits"),
        (single(3.0, apg=G.APG()), "tokens", False, False, "apg does not apply"),
        (single(3.0, zero_star=True), "tokens", False, False, "zero_star does not apply"),
        (single(3.0, adaptive=G.Adaptive()), "tokens", False, False, "adaptive does not apply"),
        (single(3.0, zero_init=0.1), "tokens", False, False, "zero_init does not apply to codec-LM logits"),
        (single(3.0, zero_init=0.1), "v", False, False, "zero_init zeroes a flow velocity; it does not apply to a 'v' model"),
        (single(3.0, zero_init=0.1), "flow", False, True, "it does not apply to a mean-flow sampler"),
        (single(3.0), "latent", False, False, "unknown model kind 'latent'"),
    ],
)
def test_check_policy_refuses(policy, kind, cfgpp, mean_flow, match):
    with pytest.raises(G.GuidanceError, match=match):
        G.check_policy(policy, kind=kind, cfgpp=cfgpp, mean_flow=mean_flow)


def test_check_policy_allows():
    G.check_policy(single(0.7), kind="flow", cfgpp=True, mean_flow=False)
    G.check_policy(G.Guidance(scales={"text": 3.0, "speaker": 1.5}), kind="tokens", cfgpp=False, mean_flow=False)
    G.check_policy(single(3.0, zero_init=0.1, zero_star=True, rescale=0.7, apg=G.APG(), interval=(0.1, 0.9),
                          adaptive=G.Adaptive()), kind="flow", cfgpp=False, mean_flow=False)
    G.check_policy(single(3.0, rescale=0.7, interval=(0.1, 0.9)), kind="x0", cfgpp=False, mean_flow=True)


# The README's example: a new guidance method is one class.
@dataclass(frozen=True)
class Ramp(G.Guider, name="ramp"):
    """Guidance that grows from none at pure noise (t = 1) to full at the data (t = 0)."""

    power: float = 1.0

    def refine(self, step, guided, c):  # step.t: the times of the guided rows
        ramp = (1 - step.t).pow(self.power).view(-1, *[1] * (c.ndim - 1))
        return c + ramp * (guided - c)


def test_readme_example_a_new_method_is_one_class(setup):
    model, x, _, cond = setup
    policy = G.Guidance(scales={"text": 3.0}, guiders=(Ramp(power=2.0),))
    t = torch.tensor([0.9, 0.5, 0.1])
    out = G.GuidedField(model, cond, policy)(x, t)
    c, u = model(x, t, cond, {"text": torch.ones(B, dtype=torch.bool), "speaker": torch.zeros(B, dtype=torch.bool)}), \
        model(x, t, cond, {"text": torch.zeros(B, dtype=torch.bool), "speaker": torch.zeros(B, dtype=torch.bool)})
    ramp = ((1 - t) ** 2).view(-1, 1, 1)
    assert torch.allclose(out, c + ramp * (u + 3.0 * (c - u) - c), atol=1e-5)
    assert G.GUIDERS["ramp"] is Ramp and G.guider("ramp", power=2.0) == Ramp(2.0)
    assert policy.override(cfg=2.0).methods == (Ramp(2.0),)  # it rides along with every copy
    G.check_policy(policy, kind="eps", cfgpp=False, mean_flow=False)
    with pytest.raises(G.GuidanceError, match="ramp does not apply to codec-LM logits"):
        G.GuidedLogits(policy)
    # it composes with the built-in guiders: inside the interval only, after the rescale
    both = G.GuidedField(model, cond, single(3.0, rescale=0.5, interval=(0.2, 0.8), guiders=(Ramp(),)))(x, t)
    rescaled = G.GuidedField(model, cond, single(3.0, rescale=0.5))(x, t)
    assert torch.allclose(both[1], (c + 0.5 * (rescaled - c))[1], atol=1e-5)
    assert torch.equal(both[[0, 2]], c[[0, 2]])


def test_guider_hooks_get_predictions_in_their_declared_space(setup):
    """A guider declaring x0 gets x0 predictions and its output is converted back: returning the
    reference in x0 gives back the reference in the model's own (eps) space."""

    @dataclass(frozen=True)
    class ToReference(G.Guider, name="test-to-reference"):
        space: str = "x0"

        def refine(self, step, guided, c):
            a, s = step.alpha_sigma(step.t)
            expect = convert_prediction(step.branches[step.reference], "eps", "x0", step.x, a, s)
            assert torch.equal(c, expect)
            return c

    model, x, t, cond = setup
    a, s = torch.tensor([0.8]), torch.tensor([0.6])
    asig = lambda t: (a.expand_as(t), s.expand_as(t))  # noqa: E731
    out = G.GuidedField(model, cond, single(4.0, guiders=(ToReference(),)), kind="eps", alpha_sigma=asig)(x, t)
    assert torch.allclose(out, model.branch(x, t, cond, {"text"}), atol=1e-5)


def test_guider_extra_branches_are_evaluated_in_the_same_forward(setup):
    """A guider may ask for branches the terms do not weigh; they come in ``step.branches``."""

    @dataclass(frozen=True)
    class UseNull(G.Guider, name="test-use-null"):
        def branches(self, conditions):
            return (frozenset(),)

        def refine(self, step, guided, c):
            return guided + step.branches[frozenset()]

    model, x, t, cond = setup
    policy = G.Guidance(scales={"text": 1.0, "speaker": 2.0}, guiders=(UseNull(),))  # the null branch has weight 0
    field = G.GuidedField(model, cond, policy)
    out = field(x, t)
    assert model.calls == 1 and field.rows_evaluated == 3 * B
    plain = G.GuidedField(model, cond, G.Guidance(scales={"text": 1.0, "speaker": 2.0}))(x, t)
    assert torch.allclose(out, plain + model.branch(x, t, cond, set()), atol=1e-5)


def test_guider_state_is_per_generation(setup):
    @dataclass(frozen=True)
    class Count(G.Guider, name="test-count"):
        def start(self):
            return [0]

        def observe(self, step, c, preds):
            step.state[0] += 1

    model, x, t, cond = setup
    g = Count()
    policy = single(3.0, guiders=(g,))
    f1, f2 = G.GuidedField(model, cond, policy), G.GuidedField(model, cond, policy)
    f1(x, t), f1(x, t), f2(x, t)
    assert f1.state_of(g) == [2] and f2.state_of(g) == [1]


def test_a_guider_may_apply_to_logits():
    @dataclass(frozen=True)
    class Sharpen(G.Guider, name="test-sharpen"):
        logits = True

        def refine_logits(self, guided, branches):
            return 2.0 * guided - branches[frozenset()]

    policy = single(3.0, guiders=(Sharpen(),))
    G.check_policy(policy, kind="tokens", cfgpp=False, mean_flow=False)
    logits = torch.randn(2 * 4, 5, generator=torch.Generator().manual_seed(0))
    out = G.GuidedLogits(policy)(logits)
    lp = logits.log_softmax(-1)
    u, c = lp[:4], lp[4:]
    assert torch.allclose(out, 2.0 * (u + 3.0 * (c - u)) - u, atol=1e-5)


# --------------------------------------------------------------------------------------------
# TCFG (Kwon et al. 2025): tangential damping of the unconditional prediction
# --------------------------------------------------------------------------------------------


def _damped_by_gram(c, u):
    """TCFG's u' for one pair of vectors, not by SVD: the first right singular vector of A = [c; u]
    is A^T e / ||A^T e|| for the top eigenvector e of the 2 x 2 Gram matrix A A^T."""
    A = torch.stack([c, u])
    evals, evecs = torch.linalg.eigh(A @ A.T)
    v1 = A.T @ evecs[:, -1]
    v1 = v1 / v1.norm()
    return (u @ v1) * v1


@pytest.mark.parametrize("reduce", ["all", "channels"])
def test_tangential_damping_is_the_projection_on_the_first_singular_vector(reduce):
    g = torch.Generator().manual_seed(7)
    c = torch.randn(2, 3, 5, generator=g, dtype=torch.float64)
    u = torch.randn(2, 3, 5, generator=g, dtype=torch.float64)
    out = G.tangential_damping(c, u, reduce)
    assert out.shape == u.shape and out.dtype == torch.float64
    for b in range(2):
        if reduce == "all":
            assert torch.allclose(out[b].flatten(), _damped_by_gram(c[b].flatten(), u[b].flatten()), atol=1e-10)
        else:  # one 3-vector per frame
            for f in range(5):
                assert torch.allclose(out[b, :, f], _damped_by_gram(c[b, :, f], u[b, :, f]), atol=1e-10)
    # the damping removes a component: never longer, and nothing to remove when u is parallel to c
    assert bool((out.flatten(1).norm(dim=1) <= u.flatten(1).norm(dim=1) + 1e-12).all())
    assert torch.allclose(G.tangential_damping(c, -2.5 * c, reduce), -2.5 * c, atol=1e-10)
    # in float32 too, returned in the input's dtype
    out32 = G.tangential_damping(c.float(), u.float(), reduce)
    assert out32.dtype == torch.float32 and torch.allclose(out32.double(), out, atol=1e-4)


def test_tcfg_formula_in_its_eps_space_and_scale_one(setup):
    """``x = u' + w (c - u')`` with ``u'`` damped in eps space, for a flow model (converted there and back)."""
    model, x, _, cond = setup
    t = torch.tensor([0.3, 0.6, 0.9])
    field = G.GuidedField(model, cond, single(3.0, tcfg=G.TCFG()), kind="flow")
    out = field(x, t)
    assert model.calls == 1 and field.rows_evaluated == 2 * B
    a, s = 1 - t, t
    c = convert_prediction(model.branch(x, t, cond, {"text"}), "flow", "eps", x, a, s)
    u = convert_prediction(model.branch(x, t, cond, set()), "flow", "eps", x, a, s)
    u_d = G.tangential_damping(c, u)
    expect = convert_prediction(u_d + 3.0 * (c - u_d), "eps", "flow", x, a, s)
    assert torch.allclose(out, expect, atol=1e-4)
    assert not torch.allclose(out, G.GuidedField(model, cond, single(3.0), kind="flow")(x, t), atol=1e-3)
    # w = 1 is the conditional prediction, without evaluating u
    one = G.GuidedField(model, cond, single(1.0, tcfg=G.TCFG()), kind="flow")
    assert torch.allclose(one(x, t), model.branch(x, t, cond, {"text"})) and one.rows_evaluated == B


def test_tcfg_damps_the_branch_keeping_fewest_conditions(setup):
    model, x, t, cond = setup
    out = G.GuidedField(model, cond, G.Guidance(scales={"text": 2.5, "speaker": 1.7}, tcfg=G.TCFG("eps")), kind="eps")(x, t)
    u00, ut0, uts = (model.branch(x, t, cond, k) for k in (set(), {"text"}, {"text", "speaker"}))
    u00 = G.tangential_damping(uts, u00)  # against the reference, the one branch dropping everything
    assert torch.allclose(out, u00 + 2.5 * (ut0 - u00) + 1.7 * (uts - ut0), atol=1e-4)


def test_tcfg_recipe_keys_and_refusals():
    assert single(3.0, tcfg=G.TCFG()).methods == (G.TCFG("eps"),)
    with pytest.raises(G.GuidanceError, match="tcfg space must be one of native"):
        G.TCFG("latent")
    with pytest.raises(G.GuidanceError, match="tcfg does not apply to codec-LM logits"):
        G.check_policy(single(3.0, tcfg=G.TCFG()), kind="tokens", cfgpp=False, mean_flow=False)
    with pytest.raises(G.GuidanceError, match="tcfg must be a TCFG or None"):
        single(3.0, tcfg={"space": "eps"})


# --------------------------------------------------------------------------------------------
# PAG / STG (Ahn et al. 2024; Hyung et al. 2024): a perturbed branch in the same batched forward
# --------------------------------------------------------------------------------------------


class PerturbableDenoiser(ToyDenoiser):
    """:class:`ToyDenoiser` that can perturb 3 "layers" of two kinds per row: a flagged row's output
    changes by a fixed nonlinear amount per layer (what an identity attention map or a skipped
    block does to a real network, in miniature)."""

    perturbable = {"attention": 3, "skip": 3}

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        g = torch.Generator().manual_seed(11)
        self.effect = {k: torch.randn(3, C, T, generator=g) for k in ("attention", "skip")}
        self.perturbs = []

    def __call__(self, x, t, cond, keep, perturb=None, **extra):
        out = super().__call__(x, t, cond, keep, **extra)
        self.perturbs.append(perturb)
        for kind, flags in (perturb or {}).items():
            assert flags.dtype == torch.bool and flags.shape == (x.shape[0], 3)
            out = out + torch.einsum("bl,lct->bct", flags.float(), self.effect[kind]) * torch.cos(x)
        return out

    def perturbed(self, x, t, cond, kept, kind, layers):
        keep = {n: torch.full((x.shape[0],), n in kept) for n in self.names}
        flags = torch.zeros(x.shape[0], 3, dtype=torch.bool)
        flags[:, list(layers)] = True
        return self(x, t.expand(x.shape[0]), cond, keep, perturb={kind: flags})


@pytest.fixture
def pert(setup):
    _, x, t, cond = setup
    return PerturbableDenoiser(), x, t, cond


@pytest.mark.parametrize("cls,kind", [(G.PAG, "attention"), (G.STG, "skip")])
def test_perturbation_guidance_alone_needs_no_condition(pert, cls, kind):
    """``c + s (c - c^)`` with ``w = 1 + s``: the reference and its perturbed copy, one forward."""
    model, x, t, cond = pert
    field = G.GuidedField(model, cond, G.Guidance(guiders=(cls(3.0, (2, 0)),)))
    out = field(x, t)
    assert model.calls == 1 and field.rows_evaluated == 2 * B
    flags = model.perturbs[-1][kind]
    assert not flags[:B].any() and flags[B:, [0, 2]].all() and not flags[B:, 1].any()
    c = model(x, t.expand(B), cond, {})  # no condition in the policy: keep is empty (this toy reads that as dropped)
    c_hat = model.perturbed(x, t, cond, set(), kind, (0, 2))
    assert torch.allclose(out, c + 2.0 * (c - c_hat), atol=1e-5)


def test_pag_with_cfg_is_one_batched_forward_and_equals_branch_by_branch(pert):
    model, x, t, cond = pert
    field = G.GuidedField(model, cond, single(2.5, pag=G.PAG(1.8, (1,))))
    out = field(x, t)
    assert model.calls == 1 and field.rows_evaluated == 3 * B
    c, u = model.branch(x, t, cond, {"text"}), model.branch(x, t, cond, set())
    c_hat = model.perturbed(x, t, cond, {"text"}, "attention", (1,))
    assert torch.allclose(out, u + 2.5 * (c - u) + 0.8 * (c - c_hat), atol=1e-5)
    # PAG and STG together: two perturbed branches, still one forward
    both = G.GuidedField(model, cond, single(2.5, pag=G.PAG(1.8, (1,)), stg=G.STG(1.5, (0,))))
    calls = model.calls
    out2 = both(x, t)
    assert model.calls == calls + 1 and both.rows_evaluated == 4 * B
    s_hat = model.perturbed(x, t, cond, {"text"}, "skip", (0,))
    assert torch.allclose(out2, out + 0.5 * (c - s_hat), atol=1e-5)


def test_perturbation_off_is_the_plain_prediction(pert):
    model, x, t, cond = pert
    off = G.GuidedField(model, cond, single(2.5, pag=G.PAG(1.0, (1,))))
    assert torch.equal(off(x, t), G.GuidedField(model, cond, single(2.5))(x, t))
    assert off.rows_evaluated == 2 * B and all(p is None for p in model.perturbs)
    alone = G.GuidedField(model, cond, G.Guidance(scales={"text": 1.0}, stg=G.STG(1.0, (1,))))
    assert torch.allclose(alone(x, t), model.branch(x, t, cond, {"text"})) and alone.rows_evaluated == B


def test_perturbation_guidance_respects_the_interval_and_rescale_sees_it(pert):
    model, x, _, cond = pert
    t = torch.tensor([0.1, 0.5, 0.9])
    field = G.GuidedField(model, cond, single(2.0, pag=G.PAG(2.0, (1,)), interval=(0.2, 0.6), rescale=0.5))
    out = field(x, t)
    assert field.rows_evaluated == B + 2 * 1  # the reference for all, u and c^ for the one guided row
    c, u = model.branch(x, t, cond, {"text"}), model.branch(x, t, cond, set())
    c_hat = model.perturbed(x, t, cond, {"text"}, "attention", (1,))
    guided = u + 2.0 * (c - u) + (c - c_hat)
    assert torch.allclose(out[1], G.rescale(guided, c, 0.5)[1], atol=1e-5)
    assert torch.equal(out[[0, 2]], c[[0, 2]])


def test_a_model_that_cannot_perturb_is_refused_in_one_line(setup, pert):
    model, x, t, cond = setup
    policy = single(3.0, pag=G.PAG(2.0, (1,)))
    with pytest.raises(G.GuidanceError, match="^pag needs a model that perturbs 'attention' per row; this model perturbs nothing$"):
        G.GuidedField(model, cond, policy)
    with pytest.raises(G.GuidanceError, match="stg layers \\[0, 5\\]: the model has 3 layers \\(0 to 2\\)"):
        G.GuidedField(pert[0], cond, single(3.0, stg=G.STG(2.0, (5, 0))))
    match = "test-shuffle needs a model that perturbs 'shuffle' per row; this model perturbs attention, skip"
    with pytest.raises(G.GuidanceError, match=match):
        G.check_policy(G.Guidance(guiders=(_Shuffle(2.0, (0,)),)), kind="flow", cfgpp=False, mean_flow=False,
                       perturbs={"attention": 1, "skip": 1})
    G.check_policy(policy, kind="flow", cfgpp=False, mean_flow=True, perturbs={"attention": 2})  # linear: mean flows too
    with pytest.raises(G.GuidanceError, match="pag does not apply to codec-LM logits"):
        G.check_policy(policy, kind="tokens", cfgpp=False, mean_flow=False)
    for bad, match in [((2.0, ()), "non-empty list"), ((2.0, (-1,)), "block indices >= 0"), ((-1.0, (0,)), ">= 0 \\(1 = off\\)")]:
        with pytest.raises(G.GuidanceError, match=match):
            G.PAG(*bad)
    with pytest.raises(G.GuidanceError, match="pag must be a PAG or None"):
        single(3.0, pag=G.STG(2.0, (0,)))
    assert G.PAG(2.0, [2, 0, 2]).layers == (0, 2)


@dataclass(frozen=True)
class _Shuffle(G.PAG, name="test-shuffle"):
    """A user's perturbation guider asking for a perturbation no model here has."""

    perturb = "shuffle"


# --------------------------------------------------------------------------------------------
# Mean-flow models: guiders in another space than the model's are refused (issue 24, item 7)
# --------------------------------------------------------------------------------------------


def test_mean_velocity_is_not_a_velocity_for_x0():
    """Why: for N(0, 1) data the exact average velocity over [0.5, 1] at t = 1 is u = (1 - 1/sqrt 2) z / 0.5,
    so treating it as v gives x0 = z - t u = 0.414 z, where E[x0 | z_1] = 0 (z_1 is pure noise)."""
    z = torch.tensor([1.0, -2.0])
    z_r = z * (0.5**2 + 0.5**2) ** 0.5  # the flow map of N(0, 1) data keeps z / std_t
    u = (z - z_r) / (1.0 - 0.5)
    x0_as_if_v = convert_prediction(u, "flow", "x0", z, torch.tensor(0.0), torch.tensor(1.0))
    assert torch.allclose(x0_as_if_v, (2**0.5 - 1.0) * z, atol=1e-6) and torch.allclose(x0_as_if_v, 0.4142 * z, atol=1e-4)


@pytest.mark.parametrize(
    "policy,match",
    [
        (single(3.0, apg=G.APG()), 'apg works in x0 space, .* set apg space = "native"'),
        (single(3.0, rescale=0.5, rescale_space="x0"), 'rescale works in x0 space, .* set rescale_space = "native"'),
        (single(3.0, tcfg=G.TCFG()), 'tcfg works in eps space, .* set tcfg space = "native"'),
        (single(3.0, rescale=0.5, rescale_space="v"), "average velocity u\\(z, r, t\\) does not give for r < t"),
    ],
)
def test_guiders_that_convert_spaces_are_refused_with_a_mean_flow_sampler(policy, match):
    with pytest.raises(G.GuidanceError, match=match):
        G.check_policy(policy, kind="flow", cfgpp=False, mean_flow=True)
    G.check_policy(policy, kind="flow", cfgpp=False, mean_flow=False)  # a flow-matching sampler: exact


def test_guiders_in_the_native_space_apply_to_mean_flows():
    for policy in (single(3.0, apg=G.APG(space="native")), single(3.0, apg=G.APG(space="flow")),
                   single(3.0, rescale=0.5), single(3.0, tcfg=G.TCFG("flow")), single(3.0, zero_star=True),
                   single(3.0, interval=(0.0, 0.75), adaptive=G.Adaptive())):
        G.check_policy(policy, kind="flow", cfgpp=False, mean_flow=True)


def test_the_field_refuses_to_convert_an_average_velocity(setup):
    """At run time the engine knows r: converting is exact for r = t and refused otherwise."""
    model, x, _, cond = setup
    t = torch.tensor([0.9, 0.6, 0.3])
    field = G.GuidedField(model, cond, single(3.0, apg=G.APG()))
    with pytest.raises(G.GuidanceError, match="u\\(z, r, t\\) with r != t has no other space to convert to, as apg \\(x0\\) would"):
        field(x, t, r=t / 2)
    at_t = G.GuidedField(model, cond, single(3.0, apg=G.APG()))(x, t, r=t.clone())  # r = t: u is v
    assert torch.allclose(at_t, G.GuidedField(model, cond, single(3.0, apg=G.APG()))(x, t), atol=1e-6)
    native = G.GuidedField(model, cond, single(3.0, apg=G.APG(space="native"), rescale=0.5))
    native(x, t, r=t / 2)  # the model's own space: nothing to convert


# --------------------------------------------------------------------------------------------
# The speech recipe's guided step: three rows in its nested order, two with text guided last
# --------------------------------------------------------------------------------------------


def test_speech_recipe_guided_step_runs_three_rows_and_the_text_last_order_two():
    from audioguide.recipes import load_recipe

    policy = load_recipe("speech").guidance
    assert policy.conditions == ("text", "speaker", "style") and policy.interval == (0.0, 0.75)
    names = ("text", "speaker", "style")
    model = ToyDenoiser(names)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(B, C, T, generator=g)
    cond = {n: torch.randn(B, C, T, generator=g) for n in names}
    t = torch.full((B,), 0.5)  # the guided second step
    field = G.GuidedField(model, cond, policy)
    out = field(x, t)
    assert field.rows_evaluated == 3 * B  # c, u_text, u_none
    c, u_text, u_none = (model.branch(x, t, cond, k) for k in (set(names), {"text"}, set()))
    assert torch.allclose(out, c + (u_text - u_none), atol=1e-5)
    two = G.Guidance(scales={"speaker": 1.0, "style": 1.0, "text": 2.0}, interval=(0.0, 0.75))
    field2 = G.GuidedField(model, cond, two)
    out2 = field2(x, t)
    assert field2.rows_evaluated == 2 * B  # c, u_speaker+style
    assert torch.allclose(out2, c + (c - model.branch(x, t, cond, {"speaker", "style"})), atol=1e-5)


def _with_part(cond, part):
    mask = torch.ones(B, C, dtype=torch.bool)
    return {**cond, "text.mask": mask, "text.part1": part, "text.part1.mask": mask}


@pytest.mark.parametrize("weights", [(1.0, 0.6), (0.5, 0.5)])
def test_conjunction_formula_in_one_forward(setup, weights):
    """Composable Diffusion (Liu et al. 2022, eq. 10): u + w sum_k lam_k (c_k - u), one forward."""
    model, x, t, cond = setup
    part = torch.randn(B, C, T, generator=torch.Generator().manual_seed(5))
    cond = _with_part(cond, part)
    field = G.GuidedField(G.Conjunction(model, "text", weights), cond, single(3.0))
    out = field(x, t)
    assert model.calls == 1
    # the null branch once; the kept one per part, plus u unless the weights sum to 1
    assert model.rows == B + B * (2 + (sum(weights) != 1.0))
    c0 = model.branch(x, t, cond, {"text"})
    c1 = model.branch(x, t, {**cond, "text": part}, {"text"})
    u = model.branch(x, t, cond, set())
    expected = u + 3.0 * (weights[0] * (c0 - u) + weights[1] * (c1 - u))
    assert torch.allclose(out, expected, atol=1e-5)


def test_conjunction_rows_are_independent_and_extras_follow_their_rows(setup):
    """Batched equals sequential, rows with the condition dropped are the model's own prediction,
    and per-row inputs (``t``, a mask) travel with their rows."""
    model, x, _, cond = setup
    cond = _with_part(cond, torch.randn(B, C, T, generator=torch.Generator().manual_seed(6)))
    t = torch.tensor([0.2, 0.5, 0.9])
    keep = {"text": torch.tensor([True, False, True]), "speaker": torch.tensor([True, True, False])}
    seen = []

    def spy(x, t, cond, keep, mask):
        seen.append(mask.clone())
        return model(x, t, cond, keep) * mask[:, None, :]

    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, 4:] = False
    conj = G.Conjunction(spy, "text", (1.0, 0.7))
    out = conj(x, t, cond, keep, mask=mask)
    for b in range(B):
        row = {k: v[b : b + 1] for k, v in cond.items()}
        one = conj(x[b : b + 1], t[b : b + 1], row, {k: v[b : b + 1] for k, v in keep.items()}, mask=mask[b : b + 1])
        assert torch.allclose(out[b : b + 1], one, atol=1e-6)
    plain = spy(x[1:2], t[1:2], {k: v[1:2] for k, v in cond.items() if ".part" not in k},
                {k: v[1:2] for k, v in keep.items()}, mask[1:2])
    assert torch.equal(out[1:2], plain)  # dropped: evaluated once, as it is
    assert seen[0].shape[0] == 2 * 3 + 1  # rows 0 and 2: two parts + u each; row 1 once


def test_conjunction_refuses_bad_weights_and_missing_parts(setup):
    model, x, t, cond = setup
    with pytest.raises(G.GuidanceError, match="at least 2 parts"):
        G.Conjunction(model, "text", (1.0,))
    with pytest.raises(G.GuidanceError, match="finite and > 0"):
        G.Conjunction(model, "text", (1.0, -0.5))
    conj = G.Conjunction(model, "text", (1.0, 1.0, 1.0))
    with pytest.raises(G.GuidanceError, match="text.part1"):
        conj(x, t.expand(B), {**cond, "text.mask": torch.ones(B, C, dtype=torch.bool)}, {"text": torch.ones(B, dtype=torch.bool)})


def test_conjunction_gives_each_part_row_its_own_sequence_and_mask():
    """Part k's rows see part k's embedding and mask; the prompt's rows and u's rows the prompt's."""
    g = torch.Generator().manual_seed(7)
    emb = {k: torch.randn(2, 5, 3, generator=g) for k in ("p", "q")}
    mask = {"p": torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 0, 0]], dtype=torch.bool),
            "q": torch.tensor([[1, 1, 1, 1, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)}
    cond = {"caption": emb["p"], "caption.mask": mask["p"], "caption.part1": emb["q"], "caption.part1.mask": mask["q"]}
    seen = {}

    def spy(x, t, cond, keep, **extra):
        seen.update(cond=cond, keep=keep)
        return x.new_zeros(x.shape)

    G.Conjunction(spy, "caption", (1.0, 0.5))(torch.zeros(2, 1, 4), torch.tensor([0.3, 0.7]), cond, {"caption": torch.tensor([True, True])})
    # rows: the prompt (both samples), part 1 (both), u (both, dropped)
    got, keep = seen["cond"], seen["keep"]["caption"]
    assert torch.equal(got["caption"][:2], emb["p"]) and torch.equal(got["caption.mask"][:2], mask["p"])
    assert torch.equal(got["caption"][2:4], emb["q"]) and torch.equal(got["caption.mask"][2:4], mask["q"])
    assert torch.equal(got["caption.mask"][4:], mask["p"]) and keep.tolist() == [True, True, True, True, False, False]
    assert not any(".part" in k for k in got)  # the wrapped model sees plain conditions
