"""Guidance-free codec LMs by CCA (Chen et al. 2024) and GeDi-style token guidance by a discriminator
(Krause et al. 2020): the loss and the rescoring against their formulas, and both wired end to end."""

from __future__ import annotations

import math

import pytest
import torch

from audioguide.conditioners import Characters
from audioguide.core import AudioguideError
from audioguide.guidance import GeDi, Guidance, GuidanceError, GuidedLogits, TokenStep, guider
from audioguide.models.codec_lm import CodecLM, CodecLMConfig
from audioguide.models.verifier import PhoneVerifier, VerifierConfig
from audioguide.pipeline import Pipeline
from audioguide.recipes import RecipeError, load_recipe
from audioguide.sampling.tokens import (
    VerifierJudge,
    apply_delay_pattern,
    guided_lm_step,
    last_frame_logits,
    sample_codec_lm,
    verifier_context,
)
from audioguide.training.cca import CCAObjective, cca_loss, derangement, negative_conditions, retime, sequence_log_likelihood
from tests.conftest import TINY_AE, TINY_SPEECH, TINY_TRAIN

V, K = 12, 3


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny_lm(seed: int = 0, **overrides) -> CodecLM:
    cfg = CodecLMConfig(**{"dim": 32, "depth": 2, "heads": 2, "mlp_ratio": 2.0, "codebook_size": V, "seed": seed,
                           "aligned": "text", "encoder_depth": 1, **overrides})
    return CodecLM(cfg, K, {n: Characters(Characters.Config(dim=16)) for n in ("text", "style")}).eval()


def aligned_cond(model: CodecLM, texts, styles, frames) -> dict[str, torch.Tensor]:
    """Conditions with each text's characters spread evenly over its row's frames."""
    cond = model.encode({"text": texts, "style": styles})
    d = torch.zeros_like(cond["text.mask"], dtype=torch.long)
    for b, (n, f) in enumerate(zip(cond["text.mask"].sum(1).tolist(), frames)):
        d[b, :n] = f // n
        d[b, n - 1] += f - int(d[b].sum())
    cond["text.durations"] = d
    return cond


# ---------------------------------------------------------------------------------------------
# CCA: the loss


def test_cca_loss_is_the_formula_of_the_paper():
    tp, rp = torch.tensor([-10.0, -20.0]), torch.tensor([-12.0, -19.0])
    tn, rn = torch.tensor([-30.0, -25.0]), torch.tensor([-28.0, -26.0])
    beta, lam = 0.5, 3.0
    loss, terms = cca_loss(tp, rp, tn, rn, beta, lam)
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    pos = -(math.log(sig(0.5 * 2.0)) + math.log(sig(0.5 * -1.0))) / 2
    neg = -(math.log(sig(-0.5 * -2.0)) + math.log(sig(-0.5 * 1.0))) / 2
    assert loss.item() == pytest.approx(pos + lam * neg, rel=1e-6)
    assert terms["pos"].item() == pytest.approx(pos, rel=1e-6) and terms["neg"].item() == pytest.approx(neg, rel=1e-6)


def test_at_the_reference_the_loss_is_log2_terms_and_its_gradient_raises_positives_and_lowers_negatives():
    ref_pos, ref_neg = torch.tensor([-40.0, -50.0, -45.0]), torch.tensor([-60.0, -55.0, -70.0])
    theta_pos, theta_neg = ref_pos.clone().requires_grad_(), ref_neg.clone().requires_grad_()
    beta, lam = 0.1, 4.0
    loss, _ = cca_loss(theta_pos, ref_pos, theta_neg, ref_neg, beta, lam)
    assert loss.item() == pytest.approx((1 + lam) * math.log(2), rel=1e-6)
    loss.backward()
    # d/dx -log sigmoid(beta x) at 0 = -beta / 2 per row (mean over 3 rows); descent raises log p(x|c)
    torch.testing.assert_close(theta_pos.grad, torch.full((3,), -beta / 2 / 3))
    torch.testing.assert_close(theta_neg.grad, torch.full((3,), lam * beta / 2 / 3))


def test_sequence_log_likelihood_sums_the_real_tokens_only():
    model = tiny_lm(seed=1)
    codes = torch.randint(0, V, (2, K, 6), generator=gen(2))
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    cond = aligned_cond(model, ["abc", "de"], ["x", "y"], [6, 4])
    got = sequence_log_likelihood(model, codes, cond, mask)
    with torch.no_grad():
        bos = torch.full((2, K, 1), model.bos_id)
        for b, T in enumerate([6, 4]):
            row = apply_delay_pattern(codes[b : b + 1, :, :T], model.pad_id)
            logp = model(torch.cat([bos[:1], row[:, :, :-1]], 2), {k: v[b : b + 1] for k, v in cond.items()}, {}).log_softmax(-1)
            want = sum(logp[0, k, t + k, codes[b, k, t]] for k in range(K) for t in range(T))
            assert got[b].item() == pytest.approx(want.item(), rel=1e-5)
    other = codes.clone()
    other[1, :, 4:] = (other[1, :, 4:] + 1) % V  # padded frames change nothing
    assert sequence_log_likelihood(model, other, cond, mask)[1].item() == pytest.approx(got[1].item(), rel=1e-6)


def test_negatives_take_another_rows_text_retimed_to_their_own_frames():
    perm = derangement(5, gen(3))
    assert sorted(perm.tolist()) == list(range(5)) and (perm != torch.arange(5)).all()
    assert torch.equal(perm, derangement(5, gen(3)))
    with pytest.raises(AudioguideError, match="batch_size must be >= 2"):
        derangement(1, gen(0))
    d = torch.tensor([[2, 3, 5, 0], [1, 1, 0, 0]])
    r = retime(d, torch.tensor([5, 6]))
    assert r.sum(1).tolist() == [5, 6] and r[1].tolist() == [3, 3, 0, 0] and r[0, 3] == 0
    assert r[0].tolist() == [1, 2, 2, 0]  # boundaries 2, 5, 10 of 10 -> 1, 2.5 (up), 5
    model = tiny_lm()
    cond = aligned_cond(model, ["abc", "defgh"], ["x", "y"], [6, 10])
    neg = negative_conditions(cond, torch.tensor([1, 0]), ("text",), "text", torch.tensor([6, 10]))
    assert torch.equal(neg["text"], cond["text"].flip(0)) and torch.equal(neg["text.mask"], cond["text.mask"].flip(0))
    assert torch.equal(neg["style"], cond["style"]) and neg["text.durations"].sum(1).tolist() == [6, 10]
    assert torch.equal(neg["text.durations"][0], retime(cond["text.durations"][1:], torch.tensor([6]))[0])
    every = negative_conditions(cond, torch.tensor([1, 0]), ("text", "style"), "text", torch.tensor([6, 10]))
    assert torch.equal(every["style"], cond["style"].flip(0))


def test_a_few_cca_steps_widen_the_margin_and_leave_the_reference_alone():
    model = tiny_lm(seed=5).train()
    reference = tiny_lm(seed=5)
    reference.load_state_dict(model.state_dict())
    before = {k: v.clone() for k, v in reference.state_dict().items()}
    texts, styles, frames = ["aaa", "bbb", "ccc", "ddd"], ["s"] * 4, [8, 8, 8, 8]
    ids = torch.arange(4)
    codes = ((ids[:, None, None] * 3 + torch.arange(K)[None, :, None] + torch.arange(8)) % V)  # text-dependent
    mask = torch.ones(4, 8, dtype=torch.bool)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    perm = torch.tensor([1, 2, 3, 0])

    def conditions():  # encoded afresh each step: the conditioners train too
        cond = aligned_cond(model, texts, styles, frames)
        return cond, negative_conditions(cond, perm, ("text",), "text", mask.sum(1))

    def margin(m):
        with torch.no_grad():
            cond, neg = conditions()
            return (sequence_log_likelihood(m, codes, cond, mask) - sequence_log_likelihood(m, codes, neg, mask)).mean().item()

    start = margin(model)
    for _ in range(15):
        cond, neg = conditions()
        both = {k: torch.cat([v, neg[k]]) for k, v in cond.items()}
        theta = sequence_log_likelihood(model, codes.repeat(2, 1, 1), both, mask.repeat(2, 1))
        with torch.no_grad():
            ref = sequence_log_likelihood(reference, codes.repeat(2, 1, 1), both, mask.repeat(2, 1))
        loss, _ = cca_loss(theta[:4], ref[:4], theta[4:], ref[4:], beta=0.05, lam=2.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert margin(model) > start + 5.0
    assert all(p.grad is None for p in reference.parameters())
    assert all(torch.equal(before[k], v) for k, v in reference.state_dict().items())


# ---------------------------------------------------------------------------------------------
# CCA: recipes and the trainer

LM = 'type = "codec-lm"\n    dim = 32\n    depth = 1\n    heads = 2\n    codebook_size = 16\n    aligned = "text"\n    encoder_depth = 1'
AR = 'type = "ar"\n    top_k = 8'
DIT = 'type = "dit"\n    dim = 32\n    depth = 1\n    heads = 2\n    aligned = "text"\n    encoder_depth = 1'
EULER = 'type = "euler"\n    steps = 2'
VERIFIER = """[verifier]
    type = "phones"
    channels = 8
    dim = 16
    dilations = [1, 2]
    kernel = 3
    candidates = 2
"""


def speech_recipe(guidance: str = "scales = { text = 2.0 }", tail: str = "") -> str:
    return (TINY_SPEECH.replace("AE\n", TINY_AE).replace("MODEL", LM).replace("SAMPLER", AR)
            .replace("GUIDANCE", guidance).replace("TAIL", tail))


CCA_TRAIN = TINY_TRAIN.replace("steps = 30", "steps = 3").replace("save_every = 30", "save_every = 3") \
    .replace("dropout = { text = 0.2 }", "[train.cca]\n    beta = 0.01\n    lam = 3.0\n    shuffled = [\"text\"]\n    REFERENCE")


def test_cca_recipe_keys_parse_and_mistakes_are_one_line_errors(write_recipe):
    r = load_recipe(write_recipe(speech_recipe("scales = { text = 1.0 }", CCA_TRAIN.replace("REFERENCE", 'reference = "ref.safetensors"'))))
    assert r.train.cca is not None and (r.train.cca.beta, r.train.cca.lam, r.train.cca.shuffled) == (0.01, 3.0, ("text",))
    assert r.train.cca.reference == "ref.safetensors" and r.train.target == "model"
    good = speech_recipe("scales = { text = 1.0 }", CCA_TRAIN.replace("REFERENCE", ""))
    for old, new, message in [
        ("lam = 3.0", "lamda = 3.0", "[train].cca: unknown key 'lamda'; valid keys: beta, lam, reference, shuffled"),
        ("beta = 0.01", "beta = -1.0", "cca beta must be a finite number > 0"),
        ('shuffled = ["text"]', 'shuffled = ["voice"]', "[train.cca] shuffled names 'voice'"),
        ("[train.cca]", "dropout = { text = 0.1 }\n    [train.cca]", "dropout, dropout_all and input_dropout do not apply"),
    ]:
        assert old in good
        with pytest.raises(RecipeError) as err:
            load_recipe(write_recipe(good.replace(old, new, 1), "bad.toml"))
        assert message in str(err.value) and "\n" not in str(err.value)
    dit = speech_recipe("scales = { text = 1.0 }", CCA_TRAIN.replace("REFERENCE", "")).replace(LM, DIT).replace(AR, EULER)
    with pytest.raises(RecipeError, match=r"\[train.cca\] fine-tunes a codec LM"):
        load_recipe(write_recipe(dit, "dit.toml"))


@pytest.fixture()
def phoneme_corpus(corpus, tmp_path):
    """The tone corpus with teacher durations: each clip split evenly over its edged phoneme symbols."""
    from audioguide.audio import read_audio
    from audioguide.conditioners.phonemes import Phonemes, PhonemesConfig
    from audioguide.manifest import read_manifest, write_manifest

    phonemes = Phonemes(PhonemesConfig(dim=4, edges=True))
    rows = []
    for row in read_manifest(corpus):
        n = len(read_audio(row.audio)[0])
        tokens = int(phonemes.ids([row.text])[1].sum())
        samples = [n // tokens] * tokens
        samples[-1] += n - sum(samples)
        rows.append({"id": row.id, "audio": str(row.audio), "text": row.text, "speaker": row.speaker, "phoneme_samples": samples})
    write_manifest(tmp_path / "aligned.jsonl", rows)
    return tmp_path / "aligned.jsonl"


def test_cca_trains_from_its_reference_which_is_never_saved(write_recipe, phoneme_corpus, tmp_path):
    from audioguide.checkpoints import load_checkpoint
    from audioguide.components import build_components
    from audioguide.training.objectives import make_objective
    from audioguide.training.state import export
    from audioguide.training.trainer import STATE_NAME, train

    base = load_recipe(write_recipe(speech_recipe("scales = { text = 1.0 }"), "base.toml"))
    _, pretrained = build_components(base)
    with torch.no_grad():
        for p in pretrained.parameters():
            p.add_(0.01)  # not the seeded initialisation: the warm start must come from the reference
    ref_path = export(tmp_path / "ref.safetensors", pretrained, base, 0)
    train_table = CCA_TRAIN.replace("REFERENCE", f'reference = "{ref_path}"')
    recipe = load_recipe(write_recipe(speech_recipe("scales = { text = 1.0 }", train_table)))
    rep, model = build_components(recipe, require_weights=False)
    objective = make_objective(recipe, rep, model, recipe.train)
    assert isinstance(objective, CCAObjective) and objective.module is model
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), pretrained.state_dict().values()))
    assert not any(p.requires_grad for p in objective.reference.parameters())
    objective.train()
    assert objective.module.training and not objective.reference.training
    logs = []
    result = train(recipe, phoneme_corpus, tmp_path / "run", log=lambda step, l: logs.append(l))
    assert result.step == 3 and all(math.isfinite(v) for v in result.losses)
    assert {"cca/pos", "cca/neg", "cca/gap", "duration"} <= set(logs[-1])
    state = load_checkpoint(tmp_path / "run" / STATE_NAME)
    assert not any("reference" in k for k in state.tensors)
    exported = load_checkpoint(result.export)
    assert set(exported.tensors) == set(pretrained.state_dict())


# ---------------------------------------------------------------------------------------------
# GeDi: the rescoring


def test_gedi_weight_zero_is_the_plain_guided_log_probs():
    logits = torch.randn(2 * 3, K, V, generator=gen(0))
    policy = Guidance(scales={"text": 2.0})
    plain = GuidedLogits(policy)(logits)
    with_gedi = GuidedLogits(Guidance(scales={"text": 2.0}, guiders=(GeDi(weight=0.0, top_k=4),)))
    assert torch.equal(with_gedi(logits, TokenStep(0, torch.empty(3, K, 0, dtype=torch.long))), plain)


def test_gedi_adds_omega_times_the_discriminator_and_renormalises_over_the_top_k():
    logits = torch.randn(2, K, V, generator=gen(1))
    disc = -torch.rand(2, V, generator=gen(2)) * 3  # a fake discriminator: log p(c | token) per token
    seen = []

    def judge(context, candidates):
        seen.append((context.step, candidates.clone()))
        return disc.gather(1, candidates)

    omega, k = 2.0, 4
    g = GeDi(weight=omega, top_k=k).bind(judge)
    policy = Guidance(scales={"text": 1.0}, guiders=(g,))
    out = GuidedLogits(policy)(logits, TokenStep(5, torch.zeros(2, K, 5, dtype=torch.long)))
    lp = logits.log_softmax(-1)
    for b in range(2):
        top = lp[b, 0].topk(k).indices
        want = lp[b, 0, top] + omega * disc[b, top]
        want = want - torch.logsumexp(want, 0)  # renormalised over the top k
        torch.testing.assert_close(out[b, 0, top], want)
        others = torch.ones(V, dtype=torch.bool)
        others[top] = False
        assert torch.isneginf(out[b, 0, others]).all()  # outside the top k: masked
    torch.testing.assert_close(out[:, 1:], lp[:, 1:])  # other codebooks unchanged
    assert seen[0][0] == 5 and seen[0][1].shape == (2, k)
    assert GeDi().evaluator is None  # binding returns a copy


def test_gedi_errors_are_one_line():
    logits = torch.randn(1, K, V, generator=torch.Generator().manual_seed(0))
    unbound = GuidedLogits(Guidance(scales={"text": 1.0}, guiders=(GeDi(weight=1.0),)))
    with pytest.raises(GuidanceError) as err:
        unbound(logits, TokenStep(0, torch.empty(1, K, 0, dtype=torch.long)))
    assert "needs a discriminator bound" in str(err.value) and "\n" not in str(err.value)
    bound = GuidedLogits(Guidance(scales={"text": 1.0}, guiders=(GeDi(weight=1.0).bind(lambda c, x: torch.zeros(x.shape)),)))
    with pytest.raises(GuidanceError, match="must pass GuidedLogits a TokenStep"):
        bound(logits)
    wrong = GuidedLogits(Guidance(scales={"text": 1.0}, guiders=(GeDi(weight=1.0).bind(lambda c, x: torch.zeros(1)),)))
    with pytest.raises(GuidanceError, match="one log-posterior per candidate"):
        wrong(logits, TokenStep(0, torch.empty(1, K, 0, dtype=torch.long)))
    for bad, message in [({"weight": -1.0}, "gedi weight must be"), ({"top_k": 0}, "gedi top_k must be"),
                         ({"evaluator": print}, "unexpected keyword")]:
        with pytest.raises(GuidanceError, match=message):
            guider("gedi", **bad)
    with pytest.raises(GuidanceError, match="does not apply to a 'flow' model"):
        GeDi().check("flow")
    with pytest.raises(GuidanceError, match="takes a judge"):
        GeDi().bind("verifier")


def test_the_sampler_passes_each_step_and_the_columns_drawn_so_far():
    model = tiny_lm(seed=2)
    cond = aligned_cond(model, ["abcd", "ef"], ["x", "y"], [6, 6])
    contexts = []

    def judge(context, candidates):
        contexts.append((context.step, context.drawn.clone()))
        return torch.zeros(candidates.shape)

    policy = Guidance(scales={"text": 2.0}, guiders=(GeDi(weight=1.0, top_k=V).bind(judge),))
    codes = sample_codec_lm(model, cond, 6, policy, gen(4), temperature=1.0)
    delayed = apply_delay_pattern(codes, model.pad_id)
    assert [s for s, _ in contexts] == list(range(6 + K - 1))
    for s, drawn in contexts:
        assert torch.equal(drawn, delayed[:, :, :s])
    # with top_k = V and a judge of zeros, GeDi is the identity on the distribution: same draws
    plain = sample_codec_lm(model, cond, 6, Guidance(scales={"text": 2.0}), gen(4), temperature=1.0)
    assert torch.equal(codes, plain)


def test_a_dominant_discriminator_steers_codebook_zero_and_sampling_stays_reproducible():
    model = tiny_lm(seed=3)
    cond = aligned_cond(model, ["abcd"], ["x"], [7])

    def judge(context, candidates):  # hears only token 3
        return torch.where(candidates == 3, 0.0, -30.0)

    policy = Guidance(scales={"text": 1.5}, guiders=(GeDi(weight=1.0, top_k=V).bind(judge),))
    one = sample_codec_lm(model, cond, 7, policy, gen(5), temperature=1.0, top_k=V)
    two = sample_codec_lm(model, cond, 7, policy, gen(5), temperature=1.0, top_k=V)
    assert torch.equal(one, two) and (one[:, 0] == 3).all()
    assert not (sample_codec_lm(model, cond, 7, Guidance(scales={"text": 1.5}), gen(5), temperature=1.0)[:, 0] == 3).all()


# ---------------------------------------------------------------------------------------------
# GeDi: the verifier as discriminator


def test_last_frame_logits_equal_the_verifiers_forward():
    for dilations, kernel in [((1, 2, 4), 5), ((3, 1), 3)]:
        config = VerifierConfig(channels=4, dim=8, dilations=dilations, kernel=kernel)
        verifier = PhoneVerifier(config).eval()
        for w in (0, 2, 7, 30):
            before = torch.randn(2, 4, w, generator=gen(w)) if w else None
            cand = torch.randn(2, 3, 4, generator=gen(w + 1))
            with torch.no_grad():
                got = last_frame_logits(verifier, before, cand)
                want = torch.stack([verifier(cand[:, j, :, None] if before is None else torch.cat([before, cand[:, j, :, None]], -1))[:, -1]
                                    for j in range(3)], 1)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_the_verifier_judge_hears_each_candidate_after_the_frames_drawn_so_far():
    verifier = PhoneVerifier(VerifierConfig(channels=4, dim=8, dilations=(1, 2), kernel=3)).eval()
    assert verifier_context(verifier) == 1 + 1 + 2
    codebooks = torch.randn(K, V, 4, generator=gen(6))

    def dequantize(codes):  # an RVQ: the sum of the first k codebooks' codewords
        return sum(codebooks[k][codes[:, k]] for k in range(codes.shape[1])).transpose(1, 2)

    targets = torch.tensor([[5, 5, 6, 6, 7, 7], [8, 8, 8, -1, -1, -1]])
    judge = VerifierJudge(verifier, dequantize, targets)
    codes = torch.randint(0, V, (2, K, 6), generator=gen(7))
    drawn = apply_delay_pattern(codes, V + 1)
    candidates = torch.tensor([[0, 4, 9], [1, 2, 3]])
    for s in (0, 2, 4):
        got = judge(TokenStep(s, drawn[:, :, :s]), candidates)
        for b in range(2):
            if targets[b, s] < 0:
                assert (got[b] == 0).all()
                continue
            frames = []
            for j in range(max(0, s - judge.window + 1), s):  # frame j has its first s - j codebooks (at most K)
                frames.append(sum(codebooks[k][codes[b, k, j]] for k in range(min(K, s - j))))
            for c in range(3):
                z = torch.stack([*frames, codebooks[0][candidates[b, c]]], -1)[None]
                with torch.no_grad():
                    want = verifier(z)[0, -1].log_softmax(-1)[targets[b, s]]
                assert got[b, c].item() == pytest.approx(want.item(), abs=1e-5)
    assert judge(TokenStep(6, drawn), candidates) is None  # past every row's frames


# ---------------------------------------------------------------------------------------------
# GeDi: recipes and the pipeline

GEDI = "scales = { text = 2.0 }\n    [guidance.gedi]\n    weight = 2.0\n    top_k = 6"


def test_gedi_recipe_table_parses_and_mistakes_are_one_line_errors(write_recipe):
    r = load_recipe(write_recipe(speech_recipe(GEDI, VERIFIER)))
    (g,) = r.guidance.guiders
    assert isinstance(g, GeDi) and (g.weight, g.top_k) == (2.0, 6) and r.guidance.needs == ("verifier",)
    for old, new, message in [("top_k = 6", "topk = 6", "unknown key 'topk'"),
                              ("weight = 2.0", "weight = -2.0", "gedi weight must be a finite number >= 0")]:
        with pytest.raises(RecipeError) as err:
            load_recipe(write_recipe(speech_recipe(GEDI.replace(old, new), VERIFIER), "bad.toml"))
        assert message in str(err.value) and "[guidance].gedi" in str(err.value) and "\n" not in str(err.value)
    dit = speech_recipe(GEDI, VERIFIER).replace(LM, DIT).replace(AR, EULER)
    with pytest.raises(RecipeError, match="gedi rescores a codec LM's candidate tokens"):
        load_recipe(write_recipe(dit, "dit.toml"))


def test_tiny_codec_lm_with_gedi_by_its_verifier_is_reproducible_per_seed(write_recipe):
    pipe = Pipeline.from_recipe(write_recipe(speech_recipe(GEDI, VERIFIER)))
    a = pipe(["ah oh"], seed=3, inputs={"speaker": "s0"})
    b = pipe(["ah oh"], seed=3, inputs={"speaker": "s0"})
    assert a[0].shape == b[0].shape and (a[0] == b[0]).all()
    plan = pipe.prepare(["ah oh", "ee"], seed=3, inputs={"speaker": "s0"})
    with_gedi = pipe.draw(plan)
    plain = pipe.draw(pipe.prepare(["ah oh", "ee"], seed=3, inputs={"speaker": "s0"}, guidance=Guidance(scales={"text": 2.0})))
    assert any(not torch.equal(x, y) for x, y in zip(with_gedi, plain))  # the verifier steers the draws
    batched = pipe.draw(plan, batch_size=2)  # both pieces in one batch: each as drawn alone
    assert all(torch.equal(x, y) for x, y in zip(with_gedi, batched))
    no_verifier = write_recipe(speech_recipe(GEDI), "plain.toml")
    with pytest.raises(AudioguideError, match="needs the recipe's \\[verifier\\]"):
        Pipeline.from_recipe(no_verifier)(["ah"], seed=0, inputs={"speaker": "s0"})


def test_guided_lm_step_without_token_guiders_is_unchanged():
    model = tiny_lm(seed=4)
    cond = aligned_cond(model, ["abc"], ["x"], [5])
    step = guided_lm_step(model, cond, Guidance(scales={"text": 2.0}))
    prev = torch.full((1, K), model.bos_id)
    out = step(prev)
    gl = GuidedLogits(Guidance(scales={"text": 2.0}))
    cache = model.prefill({k: gl.expand(v) for k, v in cond.items()}, gl.keep(1))
    assert torch.equal(out, gl(model.step(cache, gl.expand(prev))))
