"""Frame-aligned speech: the length regulator, the duration predictor, the aligned DiT and its pipeline."""

from __future__ import annotations

import ast
import copy
import dataclasses
import inspect

import numpy as np
import pytest
import torch

from audioguide.conditioners.phonemes import EDGE, Phonemes, PhonemesConfig
from audioguide.conditioners.speaker import SpeakerId, SpeakerIdConfig
from audioguide.models.aligned import AlignedContent
from audioguide.models.base import former_name
from audioguide.models.codec_lm import CodecLM, CodecLMConfig
from audioguide.models.dit import DiT, DiTConfig, math_attention
from audioguide.models.duration import DurationPredictor, frame_tokens, regulate, samples_to_frames
from audioguide.pipeline import join_speech, split_sentences


def test_frame_tokens_repeats_each_token_its_duration():
    d = torch.tensor([[2, 0, 3, 1], [1, 1, 0, 0]])
    idx = frame_tokens(d, 7)
    assert idx[0].tolist() == [0, 0, 2, 2, 2, 3, 3]  # past sum(d) = 6: the last token
    assert idx[1].tolist() == [0, 1, 3, 3, 3, 3, 3]
    tokens = torch.arange(4.0).view(1, 4, 1).expand(2, 4, 1)
    assert regulate(tokens, d, 6)[0, :, 0].tolist() == [0, 0, 2, 2, 2, 3]


def test_samples_to_frames_keeps_every_total_exact():
    rng = np.random.default_rng(0)
    rows = [rng.integers(0, 3000, size=n).tolist() for n in (5, 9, 17)]
    hop = 256
    frames = [-(-sum(r) // hop) for r in rows]
    out = samples_to_frames(rows, hop, frames, width=20)
    assert out.shape == (3, 20)
    assert out.sum(dim=1).tolist() == frames
    assert (out >= 0).all() and out[0, 5:].abs().sum() == 0
    # rounding never drifts: each boundary is within one frame of the exact one
    ends = np.cumsum(rows[2]) / hop
    assert np.abs(out[2, :17].cumsum(0).numpy()[:-1] - ends[:-1]).max() <= 0.5 + 1e-9


def test_samples_to_frames_rescales_recordings_made_at_another_rate():
    # a 16 kHz recording (flite) of 1 s, three tokens, read at 24 kHz (the representation's rate)
    row = [4000, 8000, 4000]
    hop, n = 240, 100  # 24000 samples = 100 frames
    native = samples_to_frames([row], hop, [n], width=3, lengths=[24000])
    assert native.tolist() == [[25, 50, 25]]  # the same fractions of the clip as in the recording
    assert samples_to_frames([row], hop, [n], width=3).tolist() == [[17, 33, 50]]  # unscaled: content drifts
    same_rate = [[6000, 12000, 6000]]
    assert samples_to_frames(same_rate, hop, [n], 3, lengths=[24000]).tolist() == native.tolist()


def test_duration_predictor_loss_and_rounding():
    log_d = torch.log1p(torch.tensor([[0.0, 3.0, 7.0]]))
    mask = torch.tensor([[True, True, False]])
    assert DurationPredictor.to_frames(log_d, mask).tolist() == [[0, 3, 0]]
    assert DurationPredictor.to_frames(log_d, mask, pace=2.0).tolist() == [[0, 6, 0]]
    target = torch.tensor([[0, 3, 100]])
    assert DurationPredictor.loss(log_d, target, mask) == pytest.approx(0.0, abs=1e-6)  # padding ignored
    assert DurationPredictor.loss(log_d, torch.tensor([[1, 3, 0]]), mask) > 0.1


def _model(mean_flow=False, patch=1, prior_input=False):
    conds = {"text": Phonemes(PhonemesConfig(dim=16, edges=True)),
             "speaker": SpeakerId(SpeakerIdConfig(voices=("a", "b"), dim=8))}
    config = DiTConfig(dim=32, depth=2, heads=4, aligned="text", encoder_depth=1, mean_flow=mean_flow, patch=patch,
                       prior_input=prior_input)
    model = DiT(config, 4, conds)
    with torch.no_grad():  # leave adaLN-Zero so that outputs depend on the inputs
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    return model.eval()


def test_edges_frame_the_phonemes():
    cond = Phonemes(PhonemesConfig(dim=4, edges=True)).ids(["Hi."])[0][0].tolist()
    plain = Phonemes(PhonemesConfig(dim=4)).ids(["Hi."])[0][0].tolist()
    assert cond == [EDGE, *plain, EDGE]


def test_aligned_dit_follows_durations_and_drops_content():
    model = _model()
    cond = model.encode({"text": ["Hello there."] * 2, "speaker": ["a", "a"]})
    L = cond["text"].shape[1]
    d1 = torch.full((2, L), 2)
    d2 = d1.clone()
    d2[:, 3], d2[:, 4] = 0, 4  # same total, other alignment
    x, t = torch.randn(2, 4, 2 * L, generator=torch.Generator().manual_seed(0)), torch.full((2,), 0.5)
    y1 = model(x, t, {**cond, "text.durations": d1}, {})
    y2 = model(x, t, {**cond, "text.durations": d2}, {})
    assert not torch.allclose(y1, y2)
    # dropped text: every frame sees the null token, so durations no longer matter
    drop = {"text": torch.tensor([False, False])}
    z1 = model(x, t, {**cond, "text.durations": d1}, drop)
    z2 = model(x, t, {**cond, "text.durations": d2}, drop)
    torch.testing.assert_close(z1, z2)
    assert not torch.allclose(z1, y1)


def test_aligned_dit_patches_pad_and_crop():
    model = _model(patch=2)
    cond = model.encode({"text": ["Hi."], "speaker": ["b"]})
    L = cond["text"].shape[1]
    cond["text.durations"] = torch.ones(1, L, dtype=torch.long)
    cond["text.durations"][0, -1] = 2  # an odd number of frames: one padded
    T = int(cond["text.durations"].sum())
    assert T % 2 == 1
    y = model(torch.randn(1, 4, T), torch.tensor([0.3]), cond, {})
    assert y.shape == (1, 4, T) and torch.isfinite(y).all()


def test_duration_predictor_sees_the_speaker_and_trains():
    model = _model()
    inputs = {"text": ["Hello there."] * 2, "speaker": ["a", "b"]}
    L = model.encode(inputs)["text"].shape[1]
    durations = torch.randint(0, 6, (2, L), generator=torch.Generator().manual_seed(1))
    x0 = torch.randn(2, 4, int(durations.sum(1).max()))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    first = None
    for _ in range(60):
        cond = {**model.encode(inputs), "text.durations": durations}
        loss = model.aligned_losses(cond, {}, x0)["duration"]
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    cond = {**model.encode(inputs), "text.durations": durations}
    assert model.aligned_losses(cond, {}, x0)["duration"].item() < 0.3 * first
    pred = model.predict_durations(cond)
    assert pred.shape == (2, L) and pred.dtype == torch.long
    assert not torch.equal(pred[0], pred[1])  # same text, other speaker: other durations
    # rows whose text is dropped are not trained on
    dropped = model.aligned_losses(cond, {"text": torch.tensor([False, False])}, x0)
    assert dropped["duration"].item() == 0.0 and dropped["prior"].item() == 0.0


def test_aligned_mean_flow_jvp_runs():
    model = _model(mean_flow=True)
    cond = model.encode({"text": ["Yes."], "speaker": ["a"]})
    cond["text.durations"] = torch.full((1, cond["text"].shape[1]), 2)
    T = int(cond["text.durations"].sum())
    x = torch.randn(1, 4, T)
    with math_attention(model):
        f = lambda z, r, t: model(z, t, cond, {}, r=r)  # noqa: E731
        _, du = torch.func.jvp(f, (x, torch.zeros(1), torch.ones(1)), (torch.randn_like(x), torch.zeros(1), torch.ones(1)))
    assert du.shape == x.shape and torch.isfinite(du).all()


def test_split_sentences_and_join():
    assert split_sentences("Hello there. How are you? Fine!") == ["Hello there.", "How are you?", "Fine!"]
    assert split_sentences("  One sentence only  ") == ["One sentence only"]
    long = ", ".join(["a clause of several words"] * 20) + "."
    parts = split_sentences(long, max_chars=100)
    assert len(parts) > 1 and all(len(p) <= 100 for p in parts)
    assert " ".join(parts).replace(" ", "") == long.replace(" ", "")
    sr = 1000
    a, b = np.ones(100, np.float32), np.ones(50, np.float32)
    joined = join_speech([a, b], sr, pause=0.2)
    assert len(joined) == 100 + 200 + 50
    assert joined[0] == 0.0 and joined[50] == 1.0 and np.all(joined[100:300] == 0)  # faded edges, silent gap


def test_prior_loss_regresses_regulated_tokens_onto_latents():
    model = _model()
    inputs = {"text": ["Hi there."], "speaker": ["a"]}
    L = model.encode(inputs)["text"].shape[1]
    durations = torch.full((1, L), 2)
    x0 = torch.randn(1, 4, 2 * L, generator=torch.Generator().manual_seed(2))
    mask = torch.ones(1, 2 * L, dtype=torch.bool)
    mask[:, -4:] = False
    cond = {**model.encode(inputs), "text.durations": durations}
    losses = model.aligned_losses(cond, {}, x0, mask)
    mu = model.prior(regulate(model._voiced_tokens(model.conditions(cond, {})), durations, 2 * L)).transpose(1, 2)
    expected = (mu - x0)[..., :-4].square().mean()
    torch.testing.assert_close(losses["prior"], expected)
    x0_padded = x0.clone()
    x0_padded[..., -4:] = 100.0  # padding never counts
    torch.testing.assert_close(model.aligned_losses(cond, {}, x0_padded, mask)["prior"], expected)


def test_prior_input_starts_as_the_model_without_it_and_then_reads_mu():
    plain = _model()
    fed = DiT(dataclasses.replace(plain.config, prior_input=True), 4, plain.conditioners).eval()
    assert fed.prior_in.weight.abs().sum() == 0 and fed.prior_in.bias.abs().sum() == 0
    missing, unexpected = fed.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["prior_in.bias", "prior_in.weight"] and not unexpected
    cond = plain.encode({"text": ["Hi there."], "speaker": ["a"]})
    cond["text.durations"] = torch.full((1, cond["text"].shape[1]), 2)
    T = int(cond["text.durations"].sum())
    x, t = torch.randn(1, 4, T), torch.tensor([0.7])
    torch.testing.assert_close(fed(x, t, cond, {}), plain(x, t, cond, {}))  # zero-initialised: a warm start
    with torch.no_grad():
        fed.prior_in.weight.normal_()
    assert not torch.allclose(fed(x, t, cond, {}), plain(x, t, cond, {}))
    with pytest.raises(ValueError, match="prior_input needs an aligned condition"):
        DiTConfig(prior_input=True)


def test_decoder_feeds_the_frames_and_the_prior_per_patch():
    plain = _model(patch=2)
    decoded = DiT(dataclasses.replace(plain.config, decoder_depth=1), 4, plain.conditioners).eval()
    assert decoded.frame_in.weight.abs().sum() == 0  # zero-initialised: a warm start keeps its behaviour
    state = {k: v for k, v in plain.state_dict().items() if not k.startswith("prior.")}
    missing, unexpected = decoded.load_state_dict(state, strict=False)
    assert all(k.startswith(("frame_", "prior.")) for k in missing) and not unexpected
    cond = plain.encode({"text": ["Hi there."], "speaker": ["a"]})
    L = cond["text"].shape[1]
    cond["text.durations"] = torch.full((1, L), 3)
    T = 3 * L  # odd when L is odd: the last patch is padded
    x, t = torch.randn(1, 4, T, generator=torch.Generator().manual_seed(1)), torch.tensor([0.6])
    torch.testing.assert_close(decoded(x, t, cond, {}), plain(x, t, cond, {}))
    with torch.no_grad():
        decoded.frame_in.weight.normal_(generator=torch.Generator().manual_seed(3))
    out = decoded(x, t, cond, {})
    assert out.shape == x.shape and not torch.allclose(out, plain(x, t, cond, {}))
    # the prior is the decoder's per-patch output, p frames per token, trained towards x0
    x0 = torch.randn(1, 4, T, generator=torch.Generator().manual_seed(4))
    conds = decoded.conditions(cond, {})
    voiced = decoded._voiced_tokens(conds)
    patches = torch.ones(1, -(-T // 2), dtype=torch.bool)
    g, mu = decoded._prior(voiced, cond["text.durations"], None, T + T % 2, patches, conds["text"].mask)
    assert g.shape == (1, -(-T // 2), 32) and mu.shape == (1, T + T % 2, 4)
    prior = decoded.aligned_losses(cond, {}, x0)["prior"]
    torch.testing.assert_close(prior, (mu[:, :T].transpose(1, 2) - x0).square().mean())
    opt = torch.optim.Adam(decoded.parameters(), lr=1e-2)
    for _ in range(30):
        fresh = {**decoded.encode({"text": ["Hi there."], "speaker": ["a"]}), "text.durations": cond["text.durations"]}
        loss = decoded.aligned_losses(fresh, {}, x0)["prior"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.5 * float(prior)
    with pytest.raises(ValueError, match="decoder_depth needs an aligned condition"):
        DiTConfig(decoder_depth=1)


def _decoded_model(**overrides):
    plain = _model(patch=2)
    model = DiT(dataclasses.replace(plain.config, decoder_depth=1, prior_input=True, **overrides), 4, plain.conditioners)
    with torch.no_grad():  # wake the zero-initialised projections too
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel() + 1)))
    return model.eval()


def _speech_inputs(model, T_pad=0):
    cond = model.encode({"text": ["Hi there.", "A longer one, here."], "speaker": ["a", "b"]})
    L = cond["text"].shape[1]
    d = torch.randint(1, 4, (2, L), generator=torch.Generator().manual_seed(5)) * cond["text.mask"].long()
    cond["text.durations"] = d
    T = int(d.sum(1).max()) + T_pad
    mask = torch.arange(T)[None] < d.sum(1)[:, None]
    return cond, mask, T


def test_prepared_states_are_what_the_forward_and_the_losses_compute():
    from audioguide.core import prepare

    model = _decoded_model()
    cond, mask, T = _speech_inputs(model)
    g = torch.Generator().manual_seed(6)
    x, x0, t = torch.randn(2, 4, T, generator=g), torch.randn(2, 4, T, generator=g), torch.tensor([0.3, 0.8])
    keep = {"text": torch.tensor([True, False]), "speaker": torch.tensor([False, True])}
    prepared = prepare(model, cond, keep, T, mask)
    assert prepared["text.inputs"].shape == (2, -(-T // 2), 32) and prepared["text.mu"].shape[1] >= T
    assert all(torch.equal(prepared[k], v) for k, v in cond.items())  # cond itself is untouched
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, prepared, keep, mask=mask), model(x, t, cond, keep, mask=mask))
        fresh, shared = model.aligned_losses(cond, keep, x0, mask), model.aligned_losses(prepared, keep, x0, mask)
    assert fresh.keys() == shared.keys() and all(torch.equal(fresh[k], shared[k]) for k in fresh)
    # states prepared for other keep flags are the wrong ones: the forward really reads them
    other = prepare(model, cond, {"text": torch.tensor([True, True])}, T, mask)
    with torch.no_grad():
        assert not torch.allclose(model(x, t, other, keep, mask=mask), model(x, t, cond, keep, mask=mask))
    # a plain function has nothing to prepare
    assert prepare(lambda *a, **k: None, cond, keep, T) == dict(cond)


def test_guided_field_prepares_once_per_branch_and_matches_the_unprepared_model():
    from audioguide.guidance import Guidance, GuidedField
    from audioguide.sampling.flow import sample_euler

    model = _decoded_model()
    cond, mask, T = _speech_inputs(model)
    calls = []
    states_of_model = model._aligned_states

    def counting(cond_, keep_, frames, mask_, losses):
        calls.append({n: k.tolist() for n, k in keep_.items()})
        return states_of_model(cond_, keep_, frames, mask_, losses)

    model._aligned_states = counting  # the token encoder + decoder run
    policy = Guidance(scales={"text": 3.0, "speaker": 1.5})
    x = torch.randn(2, 4, T, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        field = GuidedField(model, cond, policy)
        fast = sample_euler(lambda x_, t_: field(x_, t_, mask=mask), x, torch.linspace(1, 0, 5))
        prepared = len(calls)
        # the same model seen as a plain function: no preparation, everything per step
        plain = GuidedField(lambda *a, **k: DiT.forward(model, *a, **k), cond, policy)
        slow = sample_euler(lambda x_, t_: plain(x_, t_, mask=mask), x, torch.linspace(1, 0, 5))
    assert prepared == 3  # reference, text dropped, both dropped: once each, not once per step
    assert len(calls) == prepared + 4  # the unprepared forward does the same work at every step
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-4)


def test_folded_guidance_prepares_its_null_rows_itself():
    from audioguide.core import prepare
    from audioguide.train_config import MeanFlowConfig
    from audioguide.training.continuous import guided_velocity

    model = _decoded_model(mean_flow=True)
    cond, mask, T = _speech_inputs(model)
    keep = {"text": torch.tensor([True, True]), "speaker": torch.tensor([True, False])}
    g = torch.Generator().manual_seed(8)
    z, v, t = torch.randn(2, 4, T, generator=g), torch.randn(2, 4, T, generator=g), torch.tensor([0.4, 0.9])
    config = MeanFlowConfig(omega=2.0, kappa=0.3, guided_conditions=("text",))
    with_states = guided_velocity(model, z, t, v, prepare(model, cond, keep, T, mask), keep, config, mask)
    torch.testing.assert_close(with_states, guided_velocity(model, z, t, v, cond, keep, config, mask))
    assert not torch.allclose(with_states, v)  # guidance really folded in


# ---------------------------------------------------------------------------------------------
# One aligned-content module in both families; checkpoints from before it still load
# ---------------------------------------------------------------------------------------------


def _lm(seed=0, prior_codebooks=1):
    conds = {"text": Phonemes(PhonemesConfig(dim=16, edges=True)),
             "speaker": SpeakerId(SpeakerIdConfig(voices=("a", "b"), dim=8))}
    config = CodecLMConfig(dim=32, depth=1, heads=4, codebook_size=8, aligned="text", encoder_depth=1,
                           prior_codebooks=prior_codebooks, seed=seed)
    return CodecLM(config, 2, conds).eval()


def test_both_families_compose_the_one_aligned_content_module():
    dit, lm = _model(), _lm()
    assert type(dit.content) is AlignedContent and type(lm.content) is AlignedContent
    assert dit.content.pool is None and set(lm.content.pool) == {"speaker"}  # the DiT lends its adaLN pool_proj
    from audioguide.models import codec_lm

    tree = ast.parse(inspect.getsource(codec_lm))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "audioguide.models.dit" not in imported
    # the host's predict_durations is the module's, with the host's pooled projections
    cond = dit.encode({"text": ["Hi there."], "speaker": ["b"]})
    conds = dit.conditions(cond, {})
    expected = AlignedContent.predict_durations(dit.content, conds, 1.5, None, dit.pool_proj)
    assert torch.equal(dit.predict_durations(cond, pace=1.5), expected)
    # a forward without durations says what is missing
    with pytest.raises(ValueError, match="text.durations"):
        dit(torch.randn(1, 4, 5), torch.tensor([0.5]), cond, {})


@pytest.mark.parametrize("family", ["dit", "lm"])
def test_checkpoints_from_before_the_aligned_module_still_load(family):
    model = _model() if family == "dit" else _lm()
    state = model.state_dict()
    assert any(k.startswith("content.blocks.0.") for k in state) and not any(k.startswith("token_") for k in state)
    former = {former_name(k, model.moved): v for k, v in state.items()}
    assert {"token_in.weight", "token_blocks.0.attn.to_q.weight", "token_norm.bias", "duration.out.weight"} <= set(former)
    moved = {k for k in state if former_name(k, model.moved) != k}
    assert any(k.startswith("content.pool.") for k in moved) == (family == "lm")  # the DiT's pool_proj stays its own
    fresh = DiT(dataclasses.replace(model.config, seed=9), 4, model.conditioners) if family == "dit" else _lm(seed=9)
    assert not all(torch.equal(fresh.state_dict()[k], v) for k, v in state.items())
    fresh.load_state_dict(former)  # strict: every former key finds its place
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in state.items())
    ema = copy.deepcopy(_lm(seed=3) if family == "lm" else fresh)  # the trainer's EMA is a deep copy
    ema.load_state_dict(former)
    assert all(torch.equal(ema.state_dict()[k], v) for k, v in state.items())
    fresh.load_state_dict(state)  # and the new names load as they are


@pytest.mark.parametrize("family", ["dit", "lm"])
def test_moved_parameters_keep_their_order_and_their_seeded_draws(family):
    """parameters() keeps the order of before the move (a training state's optimizer moments are
    keyed by position) and a seed draws each moved parameter under its former name."""
    if family == "dit":
        model = DiT(DiTConfig(dim=32, depth=1, heads=4, aligned="text", encoder_depth=1, decoder_depth=1, prior_input=True),
                    4, _model().conditioners)
        before = ["conditioners", "inp", "time", "cond_proj", "pool_proj", "token_in", "token_blocks", "token_norm", "duration",
                  "frame_blocks", "frame_norm", "frame_in", "prior", "prior_in", "blocks", "final"]
    else:
        model = _lm()
        before = ["conditioners", "cond_proj", "token_in", "token_blocks", "token_norm", "pool_proj", "duration", "prior",
                  "embed", "blocks", "norm", "heads"]
    tops = []
    for name, _ in model.named_parameters():
        top = former_name(name, model.moved).split(".")[0]
        if top not in tops:
            tops.append(top)
    assert tops == before
    # the draw of init_random: by former names, from one seeded generator
    g = torch.Generator().manual_seed(model.config.seed)
    drawn = {}
    for name, p in sorted(model.named_parameters(), key=lambda item: former_name(item[0], model.moved)):
        drawn[name] = torch.randn(p.shape, generator=g)
    p = model.content.blocks[0].conv_in.weight
    torch.testing.assert_close(p, drawn["content.blocks.0.conv_in.weight"] / p[0].numel() ** 0.5)


def test_frames_past_a_rows_durations_repeat_its_last_real_token_whatever_the_padding():
    from audioguide.models.duration import regulate

    states = torch.arange(8.0).view(2, 4, 1)  # row 0 has 2 real tokens, row 1 all 4
    durations = torch.tensor([[1, 2, 0, 0], [1, 1, 1, 1]])
    mask = torch.tensor([[True, True, False, False], [True] * 4])
    padded = regulate(states, durations, 6, mask)[..., 0]
    assert padded.tolist() == [[0, 1, 1, 1, 1, 1], [4, 5, 6, 7, 7, 7]]
    alone = regulate(states[:1, :2], durations[:1, :2], 6)[..., 0]
    assert torch.equal(padded[:1], alone)
    assert regulate(states, durations, 6)[0, 3:, 0].tolist() == [3, 3, 3]  # without the mask: the padding's
