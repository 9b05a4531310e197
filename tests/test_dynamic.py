"""Dynamic guidance from online feedback (Papalampidi et al. 2025): each row's scale is the candidate
an evaluator scores best, from the branches plain CFG at the largest candidate evaluates."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from audioguide import guidance as G
from audioguide.core import AudioguideError
from audioguide.pipeline import Pipeline
from audioguide.recipes import RecipeError, load_recipe
from tests.conftest import TINY_AE, TINY_SPEECH

B, C, T = 3, 4, 6
SCALES = (1.0, 2.0, 3.0)


class ToyDenoiser:
    """A nonlinear random network whose output depends on which conditions each row keeps (as
    tests/test_guidance.py's); counts its calls and rows."""

    def __init__(self, names=("text", "speaker"), seed=0):
        g = torch.Generator().manual_seed(seed)
        self.names = names
        self.a = torch.randn(C, 1, generator=g)
        self.b = torch.randn(C, T, generator=g)
        self.null = {n: torch.randn(C, T, generator=g) for n in names}
        self.calls = self.rows = 0

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
    target = torch.randn(B, C, T, generator=g)  # what the fake evaluator likes to see, per batch row
    return ToyDenoiser(), x, torch.tensor(0.6), cond, target


class Judge:
    """A fake evaluator: minus the distance of each estimate to its row's target; records its calls."""

    def __init__(self, target, offset=0):
        self.target, self.offset, self.calls = target, offset, []

    def __call__(self, est, rows):
        self.calls.append((est.clone(), rows.clone()))
        return -(est - self.target[rows + self.offset]).pow(2).mean((1, 2))


def diverse_target(model, x, t, cond, prefer=(0, 2, 1)):
    """Targets near candidate ``prefer[row]``'s clean estimate, so that rows choose differently."""
    c, u = model.branch(x, t, cond, {"text"}), model.branch(x, t, cond, set())
    return torch.stack([x[i] - t * (u[i] + SCALES[k] * (c[i] - u[i])) + 0.01 for i, k in enumerate(prefer)])


def dynamic_policy(judge, scales=SCALES, **kw):
    policy = G.Guidance(scales={"text": 2.0}, guiders=(G.Dynamic(scales=scales),), **kw)
    return policy.bind({"verifier": judge})


def test_each_row_takes_the_evaluators_best_candidate_and_gets_cfg_at_that_scale(setup):
    model, x, t, cond, _ = setup
    target = diverse_target(model, x, t, cond)
    judge = Judge(target)
    policy = dynamic_policy(judge)
    field = G.GuidedField(model, cond, policy)
    out = field(x, t)
    c, u = model.branch(x, t, cond, {"text"}), model.branch(x, t, cond, set())
    # by hand: candidate s is u + s (c - u); its clean estimate x - t v (flow); the judge's score
    guided = torch.stack([u + s * (c - u) for s in SCALES])
    scores = torch.stack([-(x - t * g - target).pow(2).mean((1, 2)) for g in guided])
    best = scores.argmax(0)
    assert best.tolist() == [0, 2, 1]  # the rows really choose differently
    assert torch.allclose(out, guided[best, torch.arange(B)], atol=1e-5)
    (est, rows), = judge.calls  # one call for every candidate, candidate-major
    assert est.shape == (3 * B, C, T) and rows.tolist() == list(range(B)) * 3
    assert torch.allclose(est.view(3, B, C, T), x - t * guided, atol=1e-5)
    state = field.state_of(policy.guiders[0])
    assert state.chosen.shape == (1, B) and state.chosen[0].tolist() == [SCALES[i] for i in best]
    assert torch.allclose(state.scores[0], scores, atol=1e-5) and torch.allclose(state.t[0], torch.full((B,), 0.6))
    for row in range(B):  # exactly the plain policy's output at the chosen scale
        plain = G.GuidedField(model, cond, G.Guidance(scales={"text": SCALES[best[row]]}))(x, t)
        assert torch.equal(out[row], plain[row])


def test_ties_and_nan_scores_choose_the_smaller_scale(setup):
    model, x, t, cond, _ = setup
    for score in (0.0, math.nan):
        policy = dynamic_policy(lambda est, rows, s=score: torch.full((est.shape[0],), s), scales=(3.0, 1.5, 2.0, 1.5))
        assert policy.guiders[0].scales == (1.5, 2.0, 3.0)  # sorted, duplicates dropped
        field = G.GuidedField(model, cond, policy)
        out = field(x, t)
        assert field.state_of(policy.guiders[0]).chosen.tolist() == [[1.5] * B]
        assert torch.equal(out, G.GuidedField(model, cond, G.Guidance(scales={"text": 1.5}))(x, t))


def test_one_candidate_is_plain_cfg_and_asks_no_evaluator(setup):
    model, x, t, cond, target = setup
    judge = Judge(target)
    out = G.GuidedField(model, cond, dynamic_policy(judge, scales=(3.5,)))(x, t)
    assert judge.calls == [] and torch.equal(out, G.GuidedField(model, cond, G.Guidance(scales={"text": 3.5}))(x, t))


@pytest.mark.parametrize(
    "scales,condition,largest",
    [
        ({"text": 2.0}, None, {"text": 3.0}),
        ({"text": 2.0, "speaker": 1.0}, "text", {"text": 3.0, "speaker": 1.0}),  # speech: u_0, u_text, c
        ({"text": 2.0, "speaker": 1.5}, "speaker", {"text": 2.0, "speaker": 3.0}),
    ],
)
def test_no_network_rows_beyond_plain_cfg_at_the_largest_candidate(setup, scales, condition, largest):
    model, x, t, cond, target = setup
    policy = G.Guidance(scales=scales, guiders=(G.Dynamic(SCALES, condition),)).bind({"verifier": Judge(target)})
    field = G.GuidedField(model, cond, policy)
    field(x, t)
    plain = G.GuidedField(model, cond, G.Guidance(scales=largest))
    plain(x, t)
    assert model.calls == 2 and field.rows_evaluated == plain.rows_evaluated
    chosen = field.state_of(policy.guiders[0]).chosen[0]  # each row equals the policy at its scale
    name = condition or "text"
    out = field(x, t)
    for row in range(B):
        again = G.GuidedField(model, cond, G.Guidance(scales={**scales, name: float(chosen[row])}))(x, t)
        assert torch.allclose(out[row], again[row], atol=1e-6)


def test_independent_and_joint_policies_vary_their_own_combination(setup):
    model, x, t, cond, target = setup
    for mode, expect in (("independent", {"text": 3.0, "speaker": 1.5}), ("joint", {"text": 3.0, "speaker": 3.0})):
        scales = {"text": 2.0, "speaker": 1.5} if mode == "independent" else {"text": 2.0, "speaker": 2.0}
        judge = Judge(target)
        policy = G.Guidance(scales=scales, mode=mode, guiders=(G.Dynamic((3.0,), "text"),)).bind({"verifier": judge})
        out = G.GuidedField(model, cond, policy)(x, t)
        assert torch.equal(out, G.GuidedField(model, cond, G.Guidance(scales=expect, mode=mode))(x, t))


def test_batched_equals_one_by_one(setup):
    model, x, t, cond, _ = setup
    target = diverse_target(model, x, t, cond)
    policy = dynamic_policy(Judge(target))
    field = G.GuidedField(model, cond, policy)
    batched = field(x, t)
    for row in range(B):
        one = dynamic_policy(Judge(target, offset=row))
        f = G.GuidedField(model, {k: v[row : row + 1] for k, v in cond.items()}, one)
        assert torch.allclose(f(x[row : row + 1], t), batched[row : row + 1], atol=1e-6)
        assert f.state_of(one.guiders[0]).chosen[0, 0] == field.state_of(policy.guiders[0]).chosen[0, row]


def test_interval_gated_rows_are_neither_guided_nor_scored(setup):
    model, x, _, cond, target = setup
    judge = Judge(target)
    policy = dynamic_policy(judge, interval=(0.0, 0.75))
    field = G.GuidedField(model, cond, policy)
    t = torch.tensor([0.5, 0.9, 0.7])  # row 1 is outside the interval
    out = field(x, t)
    assert torch.equal(out[1], model.branch(x, t, cond, {"text"})[1])
    (est, rows), = judge.calls
    assert rows.tolist() == [0, 2] * 3 and est.shape[0] == 6
    chosen = field.state_of(policy.guiders[0]).chosen[0]
    assert math.isnan(chosen[1]) and not math.isnan(chosen[0]) and not math.isnan(chosen[2])
    field(x, torch.full((B,), 0.9))  # nothing guided: nothing recorded, the judge not asked
    assert len(judge.calls) == 1 and field.state_of(policy.guiders[0]).chosen.shape == (1, B)


def test_mean_flow_calls_score_the_flow_map_endpoint(setup):
    model, x, t, cond, target = setup
    judge = Judge(target)
    r = torch.tensor([0.0, 0.2, 0.0])
    G.GuidedField(model, cond, dynamic_policy(judge))(x, t, r=r)
    c, u = model.branch(x, t, cond, {"text"}), model.branch(x, t, cond, set())
    (est, _), = judge.calls
    for k, s in enumerate(SCALES):
        assert torch.allclose(est[k * B : (k + 1) * B], x - (t - r).view(-1, 1, 1) * (u + s * (c - u)), atol=1e-5)


def test_other_kinds_are_scored_on_their_x0(setup):
    model, x, t, cond, target = setup
    judge = Judge(target)
    a, s = torch.tensor(0.8), torch.tensor(0.6)
    G.GuidedField(model, cond, dynamic_policy(judge), kind="eps", alpha_sigma=lambda t: (a, s))(x, t)
    c, u = model.branch(x, t, cond, {"text"}), model.branch(x, t, cond, set())
    (est, _), = judge.calls
    assert torch.allclose(est[2 * B :], (x - s * (u + 3.0 * (c - u))) / a, atol=1e-5)


def test_unbound_wrong_or_misused_dynamic_guidance_is_a_one_line_guidance_error(setup):
    model, x, t, cond, _ = setup
    unbound = G.Guidance(scales={"text": 2.0}, guiders=(G.Dynamic(),))
    assert unbound.needs == ("verifier",) and not unbound.frame_local
    with pytest.raises(G.GuidanceError, match="needs an evaluator bound") as e:
        G.GuidedField(model, cond, unbound)
    assert "\n" not in str(e.value)
    with pytest.raises(G.GuidanceError, match="needs a verifier"):
        unbound.bind({})
    bad = unbound.bind({"verifier": lambda est, rows: torch.zeros(2)})
    with pytest.raises(G.GuidanceError, match="one score per estimate"):
        G.GuidedField(model, cond, bad)(x, t)
    with pytest.raises(G.GuidanceError, match="not a guided condition"):
        G.GuidedField(model, cond, G.Guidance(scales={"text": 2.0}, guiders=(G.Dynamic(condition="speaker"),)))
    terms = G.Guidance(mode="terms", custom_terms=(G.CFGTerm(frozenset(), -1.0), G.CFGTerm(frozenset({"text"}), 2.0)),
                       guiders=(G.Dynamic(),))
    with pytest.raises(G.GuidanceError, match='mode "terms"'):
        G.check_policy(terms, kind="flow", cfgpp=False, mean_flow=False, perturbs={})
    with pytest.raises(G.GuidanceError, match="at most one guider"):
        G.Guidance(scales={"text": 2.0}, apg=G.APG(), guiders=(G.Dynamic(),))
    with pytest.raises(G.GuidanceError, match="CFG\\+\\+ scales"):
        G.check_policy(unbound.with_scales(text=1.0), kind="flow", cfgpp=True, mean_flow=False)
    with pytest.raises(G.GuidanceError, match="does not apply to codec-LM logits"):
        G.check_policy(unbound, kind="tokens", cfgpp=False, mean_flow=False)
    for scales in ((), (-1.0,), (math.inf,), "12"):
        with pytest.raises(G.GuidanceError, match="dynamic scales"):
            G.Dynamic(scales=scales)
    assert G.Dynamic().bind(print) == G.Dynamic()  # the evaluator is no part of the policy's identity


# ---------------------------------------------------------------------------------------------
# Recipes and the pipeline
# ---------------------------------------------------------------------------------------------

DIT = 'type = "dit"\n    dim = 32\n    depth = 1\n    heads = 2\n    aligned = "text"\n    encoder_depth = 1\n    mean_flow = true'
VERIFIER = """[verifier]
    type = "phones"
    channels = 8
    dim = 16
    dilations = [1, 2]
    kernel = 3
"""
DYNAMIC = '[guidance.dynamic]\n    condition = "text"\n    scales = [1, 2, 3]\n    '


def _recipe(dynamic: str = DYNAMIC, verifier: str = VERIFIER) -> str:
    return (TINY_SPEECH.replace("AE\n", TINY_AE).replace("MODEL", DIT)
            .replace("SAMPLER", 'type = "meanflow"\n    steps = 2')
            .replace("GUIDANCE", "scales = { text = 2.0 }\n    interval = [0.0, 0.75]")
            .replace("TAIL", dynamic + verifier))


def test_recipe_parses_guidance_dynamic_and_refuses_unknown_keys(write_recipe):
    recipe = load_recipe(write_recipe(_recipe()))
    (dyn,) = recipe.guidance.guiders
    assert dyn == G.Dynamic((1.0, 2.0, 3.0), "text") and recipe.guidance.needs == ("verifier",)
    for table, message in [
        (DYNAMIC.replace("scales = [1, 2, 3]", "scales = [1, 2, 3]\n    smooth = 0.5"), "unknown key 'smooth'; valid keys: scales, condition"),
        (DYNAMIC.replace("scales = [1, 2, 3]", "scales = [1, -2]"), "dynamic scales must be finite numbers >= 0"),
        (DYNAMIC.replace('condition = "text"', 'condition = "speaker"'), "not a guided condition"),
        (DYNAMIC.replace('scales = [1, 2, 3]', 'scales = 2'), "scales must be an array"),
        (DYNAMIC.replace('scales = [1, 2, 3]', 'evaluator = "x"'), "unknown key 'evaluator'"),
    ]:
        with pytest.raises(RecipeError, match=message) as e:
            load_recipe(write_recipe(_recipe(table), "bad.toml"))
        assert "\n" not in str(e.value)


def test_shipped_speech_dynamic_recipe_is_speech_plus_the_verifier_and_dynamic_text_guidance():
    speech, dynamic = load_recipe("speech"), load_recipe("speech-dynamic")
    assert dynamic.model == speech.model and dynamic.sampler == speech.sampler
    assert dataclasses.replace(dynamic.guidance, guiders=()) == speech.guidance
    assert dynamic.guidance.guiders == (G.Dynamic((1.0, 2.0, 3.0), "text"),)
    assert dynamic.verifier == load_recipe("speech-lm").verifier and dynamic.candidates == 1


def test_pipeline_binds_the_verifier_and_a_seed_reproduces_the_audio(write_recipe, monkeypatch):
    pipe = Pipeline.from_recipe(write_recipe(_recipe()))
    seen = []
    real = pipe.verifier.score

    def score(z, ids):  # the real verifier, its calls recorded; it prefers the last candidate
        seen.append((z.shape, ids.clone()))
        return real(z, ids) + torch.arange(z.shape[0], dtype=torch.float32)

    monkeypatch.setattr(pipe.verifier, "score", score)
    texts, options = ["ah oh", "ee"], {"seed": 5, "inputs": {"speaker": "s1"}, "seconds": 1.0}
    a = pipe(texts, **options)
    ids = pipe.model.conditioners["text"].ids(["ah oh"])[0][0]
    assert seen[0][0][0] == 3 and torch.equal(seen[0][1], ids)  # the 3 candidates of the first sentence
    assert len(seen) == 2  # one guided step per sentence (the interval leaves the first step alone)
    b = pipe(texts, **options)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    # a verifier that prefers scale 3 everywhere gives the plain recipe at text = 3
    plain = Pipeline.from_recipe(write_recipe(_recipe(dynamic="", verifier=""), "plain.toml"))
    c = plain(texts, **options, scales={"text": 3.0})
    assert all(np.allclose(p, q, atol=1e-6) for p, q in zip(a, c))
    # pieces of equal length drawn in one batch: the evaluator scores each row against its own text
    seen.clear()
    batched = pipe(texts, **options, batch_size=2)
    assert [shape[0] for shape, _ in seen] == [3, 3] and not torch.equal(seen[0][1], seen[1][1])
    assert all(np.allclose(p, q, atol=1e-5) for p, q in zip(batched, a))


def test_dynamic_guidance_without_a_verifier_is_a_one_line_error(write_recipe):
    pipe = Pipeline.from_recipe(write_recipe(_recipe(verifier="")))
    with pytest.raises(AudioguideError, match="needs the recipe's \\[verifier\\]") as e:
        pipe("ah oh", seed=1)
    assert "\n" not in str(e.value)
    plain = Pipeline.from_recipe(write_recipe(_recipe(dynamic="", verifier=""), "plain.toml"))
    with pytest.raises(AudioguideError, match="dynamic guidance needs the recipe's"):
        plain("ah oh", guidance=pipe.recipe.guidance)
