"""Guidance distillation (Meng et al. 2023, stage one; adapters: Jensen et al. 2025): the DiT's
guidance-scale inputs, the distilled policy of GuidedField, the training target and objective, the
recipe keys, and `audioguide train` end to end on tiny models."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from audioguide import guidance as G
from audioguide.checkpoints import load_checkpoint
from audioguide.conditioners import Characters
from audioguide.conditioners.characters import CharactersConfig
from audioguide.models.dit import DiT, DiTConfig, is_guidance_key
from audioguide.recipes import RecipeError, load_recipe
from audioguide.train_config import DistillConfig, MeanFlowConfig
from audioguide.training.continuous import distillation_loss, distillation_targets, distillation_terms
from tests.conftest import TINY_TTS

B, C, T = 4, 3, 6
NAMES = ("text", "speaker")


def conditioners():
    return {n: Characters(CharactersConfig(dim=8)) for n in NAMES}


def tiny(seed: int = 0, wake: bool = True, **overrides) -> DiT:
    """A tiny DiT; ``wake`` randomises its zero-initialised layers (not the guidance ones), so that
    its output is not identically zero."""
    model = DiT(DiTConfig(**({"dim": 16, "depth": 2, "heads": 2, "seed": seed} | overrides)), C, conditioners())
    if wake:
        g = torch.Generator().manual_seed(seed + 100)
        with torch.no_grad():
            for name, p in sorted(model.named_parameters()):
                if bool((p == 0).all()) and not is_guidance_key(name):
                    p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return model.eval()


def student_of(teacher: DiT, names=("text",), adapters: bool = False) -> DiT:
    """A student of ``teacher``'s architecture with guidance inputs, warm-started from it."""
    config = dataclasses.replace(teacher.config, guidance_embed=names, guidance_adapters=adapters)
    student = DiT(config, C, conditioners()).eval()
    missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
    assert not unexpected and missing and all(is_guidance_key(k) for k in missing)
    return student


def inputs(model: DiT, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        cond = model.encode({"text": ["ab", "hello", "xyz!", "a"], "speaker": ["s0", "s1", "s0", "s22"]})
    x = torch.randn(B, C, T, generator=g)
    t = torch.rand(B, generator=g)
    return x, t, cond


def branch(model, x, t, cond, kept, **extra):
    keep = {n: torch.full((x.shape[0],), n in kept) for n in NAMES}
    with torch.no_grad():
        return model(x, t, cond, keep, **extra)


ALL = {n: torch.ones(B, dtype=torch.bool) for n in NAMES}


# ---------------------------------------------------------------------------------------------
# (a), (b) the model's guidance inputs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("extra", [{}, {"mean_flow": True}, {"cond_mode": "prefix", "patch": 2}])
def test_without_guidance_embed_nothing_changes(extra):
    """A DiT built without the new keys has no guidance parameters, and the same seed gives every
    other parameter as before; the guidance input is refused there and, on a student, absent or at
    scale 1 is exactly the forward without it."""
    plain, with_inputs = tiny(wake=False, **extra), tiny(wake=False, guidance_embed=("text",), guidance_adapters=True, **extra)
    a, b = plain.state_dict(), with_inputs.state_dict()
    assert set(b) - set(a) == set(with_inputs.guidance_keys()) and set(a) <= set(b)
    assert all(torch.equal(a[k], b[k]) for k in a) and not plain.guidance_keys()
    assert plain.guidance_inputs == () and with_inputs.guidance_inputs == ("text",)
    assert DiT.guidance_scales(with_inputs.config) == ("text",)
    x, t, cond = inputs(plain)
    with pytest.raises(ValueError, match="takes no guidance input"):
        plain(x, t, cond, ALL, guidance=torch.ones(B, 1))
    teacher = tiny(**extra)
    student = student_of(teacher, adapters=True)
    with torch.no_grad():
        student.guidance_embed["text"].mlp[-1].weight.normal_(generator=torch.Generator().manual_seed(1))  # a trained embedding: still zero at w = 1
        for adapter in student.guidance_adapters:
            adapter.weight.normal_(generator=torch.Generator().manual_seed(1))
        ref = teacher(x, t, cond, ALL)
        assert torch.equal(student(x, t, cond, ALL), ref)
        assert torch.equal(student(x, t, cond, ALL, guidance=torch.ones(B, 1)), ref)
        assert not torch.allclose(student(x, t, cond, ALL, guidance=torch.full((B, 1), 3.0)), ref)


def test_config_refuses_bad_guidance_keys():
    with pytest.raises(ValueError, match="distinct"):
        DiTConfig(guidance_embed=("text", "text"))
    with pytest.raises(ValueError, match="needs guidance_embed"):
        DiTConfig(guidance_adapters=True)
    with pytest.raises(ValueError, match="list of condition names"):
        DiTConfig(guidance_embed="text")
    with pytest.raises(ValueError, match="'caption', which is not a condition"):
        DiT(DiTConfig(dim=16, heads=2, guidance_embed=("caption",)), C, conditioners())
    student = student_of(tiny())
    x, t, cond = inputs(student)
    with pytest.raises(ValueError, match=r"guidance must be \[4, 1\]"):
        student(x, t, cond, ALL, guidance=torch.ones(B, 2))


@pytest.mark.parametrize("mean_flow", [False, True])
@pytest.mark.parametrize("adapters", [False, True])
def test_a_warm_started_student_is_the_teacher_at_every_scale(mean_flow, adapters):
    teacher = tiny(mean_flow=mean_flow)
    student = student_of(teacher, ("text", "speaker"), adapters)
    x, t, cond = inputs(teacher)
    r = t * 0.5 if mean_flow else None
    keep = {"text": torch.tensor([True, False, True, True]), "speaker": torch.tensor([True, True, False, True])}
    with torch.no_grad():
        ref = teacher(x, t, cond, keep, r=r)
        for w in ([1.0, 1.0], [3.0, 1.0], [0.0, 7.5]):
            scales = torch.tensor([w]).expand(B, 2)
            assert torch.equal(student(x, t, cond, keep, r=r, guidance=scales), ref)


def test_a_dropped_condition_ignores_its_scale():
    student = student_of(tiny())
    with torch.no_grad():
        student.guidance_embed["text"].mlp[-1].weight.normal_(generator=torch.Generator().manual_seed(1))
    x, t, cond = inputs(student)
    keep = {"text": torch.tensor([True, False, True, False]), "speaker": torch.ones(B, dtype=torch.bool)}
    with torch.no_grad():
        at1 = student(x, t, cond, keep, guidance=torch.ones(B, 1))
        at4 = student(x, t, cond, keep, guidance=torch.full((B, 1), 4.0))
    dropped = ~keep["text"]
    assert torch.equal(at1[dropped], at4[dropped]) and not torch.allclose(at1[~dropped], at4[~dropped])


# ---------------------------------------------------------------------------------------------
# (c) the training target
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mean_flow", [False, True])
def test_target_is_cfg_of_two_teacher_forwards_per_row(mean_flow):
    """u + w (c - u) per row with each row's own scale and dropout (speaker, which the policy does
    not guide, dropped in both branches where the row dropped it); a mean-flow teacher is called
    with r; the policy's interval is not part of the target."""
    teacher = tiny(mean_flow=mean_flow)
    x, t, cond = inputs(teacher)
    r = t * torch.tensor([0.0, 0.5, 1.0, 0.25]) if mean_flow else None
    extra = {} if r is None else {"r": r}
    w = torch.tensor([[1.0], [2.5], [4.0], [0.5]])
    keep = {"text": torch.ones(B, dtype=torch.bool), "speaker": torch.tensor([True, False, True, True])}
    policy = G.Guidance(scales={"text": 3.0}, interval=(0.0, 0.1), distilled=True)
    target = distillation_targets(teacher, x, t, cond, keep, policy, ("text",), w, r=r)
    with torch.no_grad():
        both = teacher(x, t, cond, keep, **extra)
        no_text = teacher(x, t, cond, {**keep, "text": torch.zeros(B, dtype=torch.bool)}, **extra)
    expected = no_text + w.view(B, 1, 1) * (both - no_text)  # no interval: every row guided
    # one batched forward of both branches against two separate ones: the kernels may block the
    # sums otherwise (AVX2 here), and w up to 4 scales those last-bit differences
    assert (target - expected).abs().max() < 1e-5, (target - expected).abs().max()
    assert torch.allclose(target[0], both[0], atol=1e-6)  # w = 1: the conditional prediction


def test_target_keeps_the_policy_s_own_guiders_and_order():
    """The target is GuidedField's: rescale applies, and a nested policy's text direction is the one
    it measures (text first: with speaker dropped), not the student's choice."""
    teacher = tiny()
    x, t, cond = inputs(teacher)
    w = torch.full((B, 1), 3.0)
    policy = G.Guidance(scales={"text": 2.0, "speaker": 1.0}, rescale=0.5)
    target = distillation_targets(teacher, x, t, cond, ALL, policy, ("text",), w)
    c, u_text, u_none = (branch(teacher, x, t, cond, k) for k in ({"text", "speaker"}, {"text"}, set()))
    cfg = c + 2.0 * (u_text - u_none)  # nested, s = (3, 1): u_0 (1 - 3) + u_text (3 - 1) + c
    assert torch.allclose(target, G.rescale(cfg, c, 0.5), atol=1e-6)


def test_distillation_terms_draws_and_regresses_the_target():
    teacher = tiny(mean_flow=True)
    student = student_of(teacher)
    x0, _, cond = inputs(teacher)
    config = DistillConfig(scales=(1.0, 4.0))
    policy = G.Guidance(scales={"text": 2.0})
    g = torch.Generator().manual_seed(3)
    mf = MeanFlowConfig(flow_ratio=0.5)
    terms = distillation_terms(student, teacher, x0, cond, cond, ALL, g, policy, config, interval=mf)
    assert terms.w.shape == (B, 1) and bool(((terms.w >= 1) & (terms.w <= 4)).all())
    assert bool((terms.r <= terms.t).all()) and int((terms.r == terms.t).sum()) == 2
    te = terms.t.view(B, 1, 1)
    eps = (terms.z - (1 - te) * x0) / te
    assert torch.allclose(eps.std(), torch.tensor(1.0), atol=0.5)
    expected = distillation_targets(teacher, terms.z, terms.t, cond, ALL, policy, ("text",), terms.w, r=terms.r)
    assert torch.equal(terms.target, expected) and terms.pred.requires_grad
    with torch.no_grad():  # step 0: the student is the teacher's conditional prediction
        assert torch.allclose(terms.pred, teacher(terms.z, terms.t, cond, ALL, r=terms.r))
    loss, logs = distillation_loss(student, teacher, x0, cond, cond, ALL, torch.Generator().manual_seed(3), policy, config,
                                   interval=mf)
    assert logs["loss"] == pytest.approx(float((terms.pred - terms.target).detach().square().mean()), rel=1e-5)
    with pytest.raises(ValueError, match="takes guidance scales as inputs"):
        distillation_terms(teacher, teacher, x0, cond, cond, ALL, g, policy, config)


def test_padding_is_excluded_from_the_loss():
    teacher = tiny()
    student = student_of(teacher)
    with torch.no_grad():
        student.guidance_embed["text"].mlp[-1].weight.normal_(generator=torch.Generator().manual_seed(1))
    x0, _, cond = inputs(teacher)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, 4:] = False
    policy, config = G.Guidance(scales={"text": 2.0}), DistillConfig()
    a = distillation_loss(student, teacher, x0, cond, cond, ALL, torch.Generator().manual_seed(0), policy, config, mask)[0]
    x1 = x0.clone()
    x1[1, :, 4:] = 100.0
    b = distillation_loss(student, teacher, x1, cond, cond, ALL, torch.Generator().manual_seed(0), policy, config, mask)[0]
    assert torch.allclose(a, b)


# ---------------------------------------------------------------------------------------------
# (d) optimisation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("adapters_only", [False, True])
def test_a_student_learns_the_guided_prediction_at_two_scales(adapters_only):
    teacher = tiny(depth=1)
    student = student_of(teacher, adapters=adapters_only)
    if adapters_only:  # (the frozen teacher too: kernels may differ with parameters' requires_grad)
        teacher.requires_grad_(False)
        for name, p in student.named_parameters():
            p.requires_grad_(is_guidance_key(name))
    x, t, cond = inputs(teacher)
    policy = G.Guidance(scales={"text": 2.0})
    scales = [torch.full((B, 1), 2.0), torch.full((B, 1), 4.0)]
    targets = [distillation_targets(teacher, x, t, cond, ALL, policy, ("text",), w) for w in scales]
    c = branch(teacher, x, t, cond, set(NAMES))
    opt = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=1e-2 if adapters_only else 3e-3)
    losses = []
    for _ in range(150):
        loss = sum((student(x, t, cond, ALL, guidance=w) - tg).square().mean() for w, tg in zip(scales, targets))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 * losses[0]
    with torch.no_grad():
        for w, target in zip(scales, targets):
            err = (student(x, t, cond, ALL, guidance=w) - target).norm() / (target - c).norm()
            assert err < 0.2, (float(w[0]), float(err))
        if adapters_only:  # the rest is frozen: scale 1 is still exactly the teacher
            assert torch.equal(student(x, t, cond, ALL, guidance=torch.ones(B, 1)), c)


def test_the_loss_falls_with_scales_drawn_per_row():
    """Training on draws of (t, noise, w per row) lowers the loss on held-out draws."""
    teacher = tiny(depth=1)
    student = student_of(teacher).train()
    x0, _, cond = inputs(teacher)
    policy, config = G.Guidance(scales={"text": 2.0}), DistillConfig(scales=(1.0, 4.0))

    def held_out() -> float:
        with torch.no_grad():
            return float(np.mean([distillation_loss(student, teacher, x0, cond, cond, ALL, torch.Generator().manual_seed(100 + i),
                                                    policy, config)[0].item() for i in range(8)]))

    before = held_out()
    opt = torch.optim.Adam(student.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        loss, _ = distillation_loss(student, teacher, x0, cond, cond, ALL, g, policy, config)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert held_out() < 0.7 * before


# ---------------------------------------------------------------------------------------------
# (e) GuidedField with a distilled policy
# ---------------------------------------------------------------------------------------------


class Recording:
    """A model wrapper that records every forward's rows and ``guidance`` input."""

    def __init__(self, model):
        self.model, self.calls = model, []

    @property
    def guidance_inputs(self):
        return self.model.guidance_inputs

    def prepare(self, cond, keep, frames, mask=None):
        return self.model.prepare(cond, keep, frames, mask)

    def __call__(self, x, t, cond, keep, **extra):
        self.calls.append((dict(keep), extra.get("guidance")))
        return self.model(x, t, cond, keep, **extra)


def trained_student(**overrides) -> DiT:
    student = student_of(tiny(**overrides), ("text", "speaker"))
    with torch.no_grad():  # as if trained: the scales change the prediction
        for emb in student.guidance_embed.values():
            emb.mlp[-1].weight.normal_(generator=torch.Generator().manual_seed(1))
    return student


def test_a_distilled_policy_is_one_row_per_sample_with_the_scales_as_input():
    student = trained_student()
    model = Recording(student)
    x, t, cond = inputs(student)
    policy = G.Guidance(scales={"text": 3.0, "speaker": 1.0}, distilled=True)
    field = G.GuidedField(model, cond, policy)
    out = field(x, t)
    assert field.rows_evaluated == B and len(model.calls) == 1
    keep, scales = model.calls[0]
    assert all(bool(k.all()) for k in keep.values())
    assert torch.equal(scales, torch.tensor([[3.0, 1.0]]).expand(B, 2))
    assert torch.equal(out, branch(student, x, t, cond, set(NAMES), guidance=scales))
    # the same policy without distillation runs the branches and passes no scale
    plain = G.GuidedField(model, cond, dataclasses.replace(policy, distilled=False))
    plain(x, t)
    assert plain.rows_evaluated == 3 * B and model.calls[-1][1] is None  # c, u_text, u_none
    # scale 1 everywhere: the plain conditional prediction of the network
    one = G.GuidedField(student, cond, G.Guidance(scales={"text": 1.0}, distilled=True))
    assert torch.equal(one(x, t), branch(student, x, t, cond, set(NAMES))) and one.rows_evaluated == B


def test_rows_outside_the_interval_get_scale_one():
    student = trained_student()
    model = Recording(student)
    x, _, cond = inputs(student)
    t = torch.tensor([0.2, 0.9, 0.5, 0.95])
    policy = G.Guidance(scales={"text": 2.5}, interval=(0.0, 0.75), distilled=True)
    field = G.GuidedField(model, cond, policy)
    out = field(x, t)
    expected = torch.tensor([[2.5, 1.0], [1.0, 1.0], [2.5, 1.0], [1.0, 1.0]])
    assert torch.equal(model.calls[0][1], expected) and field.rows_evaluated == B
    assert torch.equal(out, branch(student, x, t, cond, set(NAMES), guidance=expected))


@pytest.mark.parametrize("mode", ["nested", "independent"])
def test_mixed_text_distilled_speaker_branched(mode):
    """Text through the input, speaker guidance as branches, each branch at the text scale:
    the policy's combination with text's scale set to 1."""
    student = student_of(tiny(), ("text",))
    with torch.no_grad():
        student.guidance_embed["text"].mlp[-1].weight.normal_(generator=torch.Generator().manual_seed(3))
    x, t, cond = inputs(student)
    policy = G.Guidance(scales={"text": 3.0, "speaker": 2.0}, mode=mode, distilled=True)
    field = G.GuidedField(student, cond, policy)
    out = field(x, t)
    w = torch.full((B, 1), 3.0)
    p = {frozenset(k): branch(student, x, t, cond, k, guidance=w) for k in ({"text", "speaker"}, {"text"}, {"speaker"}, set())}
    if mode == "nested":  # s = (1, 2): u_text (1 - 2) + u_all 2
        expected, rows = 2 * p[frozenset({"text", "speaker"})] - p[frozenset({"text"})], 2 * B
    else:  # u (1 - 1 - 2) + c_text + 2 c_speaker, plus the reference row
        expected = -2 * p[frozenset()] + p[frozenset({"text"})] + 2 * p[frozenset({"speaker"})]
        rows = 4 * B
    # batched rows against separate forwards: float rounding, amplified by the weights (-2, 1, 2)
    assert torch.allclose(out, expected, atol=1e-5) and field.rows_evaluated == rows


def test_distilled_guidance_on_a_mean_flow_student_passes_r():
    student = trained_student(mean_flow=True)
    x, t, cond = inputs(student)
    r = t * 0.5
    field = G.GuidedField(student, cond, G.Guidance(scales={"text": 2.0}, distilled=True))
    w = torch.tensor([[2.0, 1.0]]).expand(B, 2)
    assert torch.equal(field(x, t, r=r), branch(student, x, t, cond, set(NAMES), r=r, guidance=w))


def test_refusals_are_one_line_guidance_errors():
    student = trained_student()
    x, t, cond = inputs(student)

    def one_line(call, match):
        with pytest.raises(G.GuidanceError, match=match) as e:
            call()
        assert "\n" not in str(e.value)

    one_line(lambda: G.Guidance(scales={"text": 2.0}, mode="joint", distilled=True), "nested or independent")
    terms = (G.CFGTerm(frozenset(), -1.0), G.CFGTerm(frozenset({"text"}), 2.0))
    one_line(lambda: G.Guidance(mode="terms", custom_terms=terms, distilled=True), "not mode 'terms'")
    one_line(lambda: G.Guidance(scales={"text": 2.0}, distilled=1), "true or false")
    policy = G.Guidance(scales={"text": 2.0}, distilled=True)
    one_line(lambda: G.GuidedField(tiny(), cond, policy), "takes no guidance scale")
    other = student_of(tiny(), ("speaker",))
    one_line(lambda: G.GuidedField(other, cond, policy), "guidance scale of text as an input; this model takes the scales of speaker")
    one_line(lambda: G.check_policy(policy, kind="flow", cfgpp=False, mean_flow=False, guidance_inputs=()), "takes no guidance")
    G.check_policy(policy, kind="flow", cfgpp=False, mean_flow=False, guidance_inputs=("text",))
    negative = {**cond, "text.negative": cond["text"], "text.negative.mask": cond["text.mask"]}
    one_line(lambda: G.GuidedField(student, negative, policy), "negative prompt")


# ---------------------------------------------------------------------------------------------
# (f) recipes, and `audioguide train`
# ---------------------------------------------------------------------------------------------

DIT_MODEL = 'type = "dit"\n    dim = 16\n    depth = 1\n    heads = 2'
TRAIN = """
    [train]
    steps = 20
    batch_size = 4
    lr = 3e-3
    warmup = 2
    save_every = 10
    log_every = 1
    sample_every = 1000
    validation = 0.0
    dropout = { text = 0.2 }
"""


def _tiny_recipe(model_extra: str = "", guidance_extra: str = "", train: str = TRAIN) -> str:
    text = TINY_TTS.replace('type = "toy-flow"\n    hidden = 32', DIT_MODEL + model_extra)
    return text.replace("scales = { text = 3.0 }", "scales = { text = 3.0 }" + guidance_extra) + train


def test_recipe_keys_parse_and_are_checked(write_recipe):
    recipe = load_recipe(write_recipe(_tiny_recipe(
        '\n    guidance_embed = ["text"]\n    guidance_adapters = true', "\n    distilled = true",
        TRAIN + '\n    [train.distill]\n    teacher = "t.safetensors"\n    scales = [1, 5]\n    adapters_only = true\n')))
    assert recipe.model.config.guidance_embed == ("text",) and recipe.model.config.guidance_adapters
    assert recipe.guidance.distilled and recipe.train.distill == DistillConfig("t.safetensors", (1.0, 5.0), True)
    assert load_recipe(write_recipe(_tiny_recipe())).train.distill is None
    bad = [
        (TRAIN + "\n    [train.distill]\n    scale = [1, 4]\n", "[train].distill: unknown key 'scale'; valid keys: teacher, scales, adapters_only"),
        (TRAIN + "\n    [train.distill]\n    scales = [4, 1]\n", "0 <= lo <= hi"),
        (TRAIN + "\n    [train.distill]\n    scales = [1, 2, 3]\n", "must have 2 items"),
        (TRAIN + "\n    distill = 3\n", "distill must be a table"),
    ]
    for train, match in bad:
        with pytest.raises(RecipeError, match=match.replace("[", r"\[").replace("]", r"\]")) as e:
            load_recipe(write_recipe(_tiny_recipe(train=train)))
        assert "\n" not in str(e.value)
    with pytest.raises(RecipeError, match="distilled guidance needs a model that takes the guidance scale of text"):
        load_recipe(write_recipe(_tiny_recipe(guidance_extra="\n    distilled = true")))
    with pytest.raises(RecipeError, match="nested or independent"):
        load_recipe(write_recipe(_tiny_recipe('\n    guidance_embed = ["text"]', '\n    mode = "joint"\n    distilled = true')))


def test_builtin_distilled_recipes_parse_without_weights():
    for name, cond, hi in (("speech-distilled", "text", 4.0), ("sound-distilled", "caption", 8.0)):
        recipe = load_recipe(name)
        assert recipe.guidance.distilled and recipe.model.config.guidance_embed == (cond,)
        assert recipe.train.distill.scales == (1.0, hi) and recipe.train.distill.teacher == f"{name.split('-')[0]}.safetensors"
        from audioguide.training.objectives import check_training_recipe

        check_training_recipe(recipe)


@pytest.mark.parametrize("edit,match", [
    (("", "", TRAIN + "\n    [train.distill]\n"), "set \\[model\\] guidance_embed"),
    (('\n    kind = "v"\n    guidance_embed = ["text"]', "", TRAIN + "\n    [train.distill]\n"), "flow or mean-flow"),
    (('\n    guidance_embed = ["text"]', "", TRAIN.replace("[train]", "[train]\n    flow_steps = 3") + "\n    [train.distill]\n"),
     "do not apply to distillation"),
])
def test_training_checks(write_recipe, edit, match):
    from audioguide.training.objectives import check_training_recipe

    text = _tiny_recipe(*edit)
    if 'kind = "v"' in text:
        text = text.replace('type = "euler"', 'type = "ddim"')
    if "flow_steps" in text:
        text = text.replace("dim = 16\n    depth = 1", "dim = 16\n    depth = 1\n    mean_flow = true").replace(
            'type = "euler"\n    steps = 4', 'type = "meanflow"\n    steps = 1')
    with pytest.raises(RecipeError, match=match):
        check_training_recipe(load_recipe(write_recipe(text)))


def test_audioguide_train_distils_a_tiny_teacher(write_recipe, corpus, tmp_path):
    """A teacher trained for a few steps, then a student warm-started from it (its own weights file
    does not exist): the distillation loss falls, the export has the guidance keys, the teacher is
    in neither the export nor the train state, the run resumes bit-identically, and the student
    speaks through a distilled pipeline at one row per sample and step."""
    from audioguide.pipeline import Pipeline
    from audioguide.training.trainer import train

    teacher_recipe = load_recipe(write_recipe(_tiny_recipe(train=TRAIN.replace("steps = 20", "steps = 10")), "teacher.toml"))
    teacher = train(teacher_recipe, corpus, tmp_path / "teacher").export
    distill = f'\n    [train.distill]\n    teacher = "{teacher}"\n    scales = [1, 4]\n'
    path = write_recipe(_tiny_recipe('\n    guidance_embed = ["text"]\n    weights = "student.safetensors"', "\n    distilled = true",
                                     TRAIN + distill).replace("random_weights = true", ""), "student.toml")
    recipe = load_recipe(path)
    history = []
    result = train(recipe, corpus, tmp_path / "run", log=lambda step, logs: history.append(logs["loss"]))
    assert result.step == 20 and np.isfinite(history).all()
    assert np.mean(history[-5:]) < np.mean(history[:5]), history
    exported = load_checkpoint(result.export).tensors
    teacher_weights = load_checkpoint(teacher).tensors
    assert set(exported) == set(teacher_weights) | {k for k in exported if is_guidance_key(k)} and any(map(is_guidance_key, exported))
    state = load_checkpoint(tmp_path / "run" / "train_state.safetensors").tensors
    assert not any("teacher" in k for k in state) and not any("teacher" in k for k in exported)
    # a resumed run is bit-identical
    train(recipe, corpus, tmp_path / "half", steps=10)
    resumed = train(recipe, corpus, tmp_path / "half", steps=20)
    assert resumed.losses == result.losses[10:]
    # the student generates with its text scale as input
    pipe = Pipeline.from_recipe(recipe, weights=str(result.export))
    audio = pipe("ah oh", seed=0)
    assert audio[0].size and np.isfinite(audio[0]).all()


def test_the_student_starts_from_its_own_weights_or_else_the_teacher_s(write_recipe, corpus, tmp_path):
    """Without a teacher key the [model] weights are the teacher and the warm start (a plain
    checkpoint: the guidance keys start at zero); --from-scratch starts from the seeded
    initialisation; the CLI trains it."""
    from typer.testing import CliRunner

    from audioguide.cli import app
    from audioguide.components import build_components
    from audioguide.training.objectives import DistillObjective, make_objective
    from audioguide.training.trainer import train

    teacher_recipe = load_recipe(write_recipe(_tiny_recipe(train=TRAIN.replace("steps = 20", "steps = 5")), "teacher.toml"))
    teacher = train(teacher_recipe, corpus, tmp_path / "teacher").export
    path = write_recipe(_tiny_recipe(f'\n    guidance_embed = ["text"]\n    weights = "{teacher}"', "\n    distilled = true",
                                     TRAIN + "\n    [train.distill]\n").replace("random_weights = true", ""), "student.toml")
    recipe = load_recipe(path)
    base = load_checkpoint(teacher).tensors
    for warm in (True, False):
        rep, model = build_components(recipe, require_weights=False, load_model=False)
        objective = make_objective(recipe, rep, model, recipe.train, warm_start=warm)
        assert isinstance(objective, DistillObjective) and objective.module is model
        assert all(torch.equal(objective.teacher.state_dict()[k], v) for k, v in base.items())
        state = model.state_dict()
        assert all(torch.equal(state[k], v) for k, v in base.items()) == warm
        assert not any(k.startswith("teacher") for k in objective.module.state_dict())
    res = CliRunner().invoke(app, ["train", str(path), "--data", str(corpus), "--steps", "3", "-o", str(tmp_path / "cli")])
    assert res.exit_code == 0, res.output
    assert any(map(is_guidance_key, load_checkpoint(tmp_path / "cli" / "model.safetensors").tensors))


def test_adapters_only_leaves_the_teacher_s_weights_alone(write_recipe, corpus, tmp_path):
    from audioguide.training.trainer import train

    teacher_recipe = load_recipe(write_recipe(_tiny_recipe(train=TRAIN.replace("steps = 20", "steps = 5")), "teacher.toml"))
    teacher = train(teacher_recipe, corpus, tmp_path / "teacher").export
    distill = f'\n    [train.distill]\n    teacher = "{teacher}"\n    adapters_only = true\n'
    recipe = load_recipe(write_recipe(_tiny_recipe('\n    guidance_embed = ["text"]\n    guidance_adapters = true',
                                                   "\n    distilled = true", TRAIN.replace("steps = 20", "steps = 6") + distill)))
    result = train(recipe, corpus, tmp_path / "run")
    exported, base = load_checkpoint(result.export).tensors, load_checkpoint(teacher).tensors
    assert all(torch.equal(exported[k], v) for k, v in base.items())
    assert any(not torch.equal(v, torch.zeros_like(v)) for k, v in exported.items() if is_guidance_key(k) and k.endswith("2.weight"))


def test_an_adapter_student_ships_as_a_guidance_file_over_its_teacher(write_recipe, corpus, tmp_path):
    """``scripts/ship_weights.py --guidance-only`` keeps the student's guidance inputs; a recipe's
    ``[model] guidance_weights`` loads them over the teacher's file: the same model, and the same
    audio, as the student's whole exported file; a file without them or with more is one line."""
    import subprocess
    import sys
    from pathlib import Path

    from audioguide.components import build_components
    from audioguide.core import AudioguideError
    from audioguide.pipeline import Pipeline
    from audioguide.training.trainer import train

    teacher_recipe = load_recipe(write_recipe(_tiny_recipe(train=TRAIN.replace("steps = 20", "steps = 4")), "teacher.toml"))
    teacher = train(teacher_recipe, corpus, tmp_path / "teacher").export
    student = '\n    guidance_embed = ["text"]\n    guidance_adapters = true'
    distill = f'\n    [train.distill]\n    teacher = "{teacher}"\n    adapters_only = true\n'
    exported = train(load_recipe(write_recipe(_tiny_recipe(student, "\n    distilled = true",
                                                           TRAIN.replace("steps = 20", "steps = 4") + distill))),
                     corpus, tmp_path / "run").export
    shipped = tmp_path / "guidance.safetensors"
    script = Path(__file__).parents[1] / "scripts" / "ship_weights.py"
    subprocess.run([sys.executable, str(script), str(exported), str(shipped), "--guidance-only", "--fp32"], check=True,
                   capture_output=True)
    tensors = load_checkpoint(shipped).tensors
    assert tensors and all(map(is_guidance_key, tensors))

    def recipe_with(guidance: str, name: str):
        text = _tiny_recipe(f'\n    weights = "{teacher}"\n    guidance_weights = "{guidance}"' + student, "\n    distilled = true")
        return load_recipe(write_recipe(text.replace("random_weights = true\n", ""), name))

    recipe = recipe_with(str(shipped), "shipped.toml")
    assert recipe.model.guidance_weights == str(shipped)
    _, model = build_components(recipe)
    whole = load_checkpoint(exported).tensors
    assert all(torch.allclose(v, whole[k]) for k, v in model.state_dict().items())
    pipe, full = Pipeline.from_recipe(recipe), Pipeline.from_recipe(recipe, weights=str(exported))
    a, b = pipe("ah oh", seed=3), full("ah oh", seed=3)
    assert np.array_equal(a[0], b[0]) and np.abs(a[0]).max() > 0
    # training again from the recipe warm-starts the student with both files (an adapter run continued)
    from audioguide.training.objectives import make_objective

    again = load_recipe(write_recipe(_tiny_recipe(f'\n    weights = "{teacher}"\n    guidance_weights = "{shipped}"' + student,
                                                  "\n    distilled = true", TRAIN + distill), "again.toml"))
    rep, fresh = build_components(again, require_weights=False, load_model=False)
    make_objective(again, rep, fresh, again.train)
    assert all(torch.allclose(v, whole[k]) for k, v in fresh.state_dict().items())
    for guidance, match in ((str(tmp_path / "absent.safetensors"), "absent"),
                            (str(exported), "holds more than guidance-scale inputs"),
                            (str(teacher), "missing")):
        with pytest.raises(AudioguideError, match=match) as e:
            build_components(recipe_with(guidance, "bad.toml"))
        assert "\n" not in str(e.value)


@pytest.mark.parametrize("model_extra,match", [
    ('\n    weights = "t.safetensors"\n    guidance_weights = "g.safetensors"', "set guidance_embed"),
    ('\n    guidance_weights = "g.safetensors"\n    guidance_embed = ["text"]', "set weights too"),
])
def test_guidance_weights_need_guidance_inputs_and_base_weights(write_recipe, model_extra, match):
    with pytest.raises(RecipeError, match=match):
        load_recipe(write_recipe(_tiny_recipe(model_extra)))
