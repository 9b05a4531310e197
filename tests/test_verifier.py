"""The content verifier: frame targets, its score, its training target, and best-of-N reranking."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from audioguide.checkpoints import load_checkpoint
from audioguide.cli import app
from audioguide.core import AudioguideError
from audioguide.models.verifier import PhoneVerifier, VerifierConfig, forced_alignment, frame_targets, verifier_loss
from audioguide.pipeline import Pipeline
from audioguide.recipes import RecipeError, load_recipe
from audioguide.training.trainer import train
from tests.conftest import TINY_AE, TINY_SPEECH, TINY_TRAIN

RECIPE = TINY_SPEECH.replace("GUIDANCE", "scales = { text = 2.0 }").replace("TAIL", """[verifier]
    type = "phones"
    channels = 8
    dim = 16
    dilations = [1, 2]
    kernel = 3
    candidates = 3
TRAIN""")

DIT = 'type = "dit"\n    dim = 32\n    depth = 1\n    heads = 2\n    aligned = "text"\n    encoder_depth = 1'
LM = 'type = "codec-lm"\n    dim = 32\n    depth = 1\n    heads = 2\n    codebook_size = 16\n    aligned = "text"\n    encoder_depth = 1'
EULER, AR = 'type = "euler"\n    steps = 2', 'type = "ar"\n    top_k = 8'


def _recipe(model: str = DIT, sampler: str = EULER, train: str = "") -> str:
    return RECIPE.replace("AE\n", TINY_AE).replace("MODEL", model).replace("SAMPLER", sampler).replace("TRAIN", TINY_TRAIN.replace("[train]", "[train]\n    " + train))


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


def test_frame_targets_follow_the_durations_and_the_loss_is_their_cross_entropy():
    ids = torch.tensor([[5, 7, 9], [4, 6, 0]])
    durations = torch.tensor([[2, 0, 3], [1, 4, 0]])
    assert frame_targets(ids, durations, 5).tolist() == [[5, 5, 9, 9, 9], [4, 6, 6, 6, 6]]
    with pytest.raises(ValueError, match="same shape"):
        frame_targets(ids, durations[:, :2], 5)
    verifier = PhoneVerifier(VerifierConfig(channels=4, dim=8, dilations=(1, 2), kernel=3)).eval()
    z = torch.randn(2, 4, 5, generator=torch.Generator().manual_seed(0))
    logp = verifier(z).log_softmax(-1)
    target = frame_targets(ids, durations, 5)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    loss, logs = verifier_loss(verifier, z, ids, durations, mask)
    expected = -logp.gather(-1, target[..., None]).squeeze(-1)[mask].mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5) and 0.0 <= logs["acc"] <= 1.0
    with pytest.raises(ValueError, match="latents"):
        verifier(torch.randn(1, 3, 5))


def _brute_force_alignment(em):
    """Every monotonic path of T frames over L symbols, each symbol on >= 1 frame: the best one."""
    import itertools

    T, L = em.shape
    best, best_path = -float("inf"), None
    for cuts in itertools.combinations(range(1, T), L - 1):
        bounds = (0, *cuts, T)
        path = [l for l in range(L) for _ in range(bounds[l], bounds[l + 1])]
        total = sum(em[t, path[t]].item() for t in range(T))
        if total > best:
            best, best_path = total, path
    return best_path


def test_forced_alignment_is_the_best_monotonic_path():
    g = torch.Generator().manual_seed(1)
    em = torch.randn(3, 7, 4, generator=g).log_softmax(-1)
    path = forced_alignment(em)
    for b in range(3):
        assert path[b].tolist() == _brute_force_alignment(em[b])
    assert forced_alignment(em[:, :4, :4])[0].tolist() == [0, 1, 2, 3]  # L = T: one frame each
    with pytest.raises(ValueError, match="cannot align 4 symbols to 3 frames"):
        forced_alignment(em[:, :3])


def test_score_is_the_mean_posterior_along_the_forced_alignment_and_prefers_the_spoken_symbols():
    verifier = PhoneVerifier(VerifierConfig(channels=4, dim=8, dilations=(1,), kernel=1)).eval()
    with torch.no_grad():  # a verifier that hears symbol 10 + c where latent channel c is on
        for p in verifier.parameters():
            p.zero_()
        verifier.proj_in.weight[:4, :, 0] = torch.eye(4) * 10
        verifier.norm.weight.fill_(1.0)
        verifier.head.weight[10:14, :4] = torch.eye(4) * 5
    ids = torch.tensor([10, 12, 11])
    said = torch.zeros(2, 4, 9)
    said[0, 0, :3], said[0, 2, 3:6], said[0, 1, 6:] = 1, 1, 1  # "10 12 11"
    said[1, 0, :3], said[1, 3, 3:6], said[1, 1, 6:] = 1, 1, 1  # "10 13 11": one symbol wrong
    scores = verifier.score(said, ids)
    assert scores.shape == (2,) and (0 <= scores).all() and (scores <= 1).all() and scores[0] > scores[1]
    em = verifier(said).log_softmax(-1)[:, :, ids]
    path = forced_alignment(em)
    assert path[0].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert torch.allclose(scores, em.gather(-1, path[..., None]).squeeze(-1).exp().mean(1))
    with pytest.raises(ValueError, match="one sequence"):
        verifier.score(said, ids[None])


def test_verifier_trains_on_teacher_alignments_and_ships_its_config(write_recipe, phoneme_corpus, tmp_path):
    path = write_recipe(_recipe(train='target = "verifier"'))
    history = []
    result = train(load_recipe(path), phoneme_corpus, tmp_path / "run", log=lambda step, logs: history.append(logs["loss"]))
    assert len(history) == 30 and np.mean(history[-5:]) < np.mean(history[:5])
    ckpt = load_checkpoint(result.export)
    assert ckpt.config["component"] == "phones" and ckpt.config["config"]["dilations"] == [1, 2]
    # the pipeline loads those weights as the recipe's verifier
    text = _recipe().replace('candidates = 3', f'candidates = 3\n    weights = "{result.export}"')
    pipe = Pipeline.from_recipe(write_recipe(text, "use.toml"))
    assert all(torch.equal(pipe.verifier.state_dict()[k], v.to(pipe.verifier.state_dict()[k].dtype)) for k, v in ckpt.tensors.items())


@pytest.mark.parametrize("model,sampler", [(DIT, EULER), (LM, AR)], ids=["dit", "codec-lm"])
def test_best_of_n_keeps_the_candidate_the_verifier_scores_highest(write_recipe, model, sampler, monkeypatch):
    pipe = Pipeline.from_recipe(write_recipe(_recipe(model, sampler)))
    assert pipe.candidates_for() == 3
    seen = {}
    real_score = pipe.verifier.score

    def score(z, ids):
        seen["z"], seen["ids"] = z, ids
        s = real_score(z, ids)
        seen["best"] = int(s.argmin())  # prefer the worst, so that the choice is not candidate 0 by chance
        return -s

    monkeypatch.setattr(pipe.verifier, "score", score)
    decoded = []
    rep = pipe.representation
    decode, decode_tokens = rep.decode, rep.decode_tokens
    monkeypatch.setattr(rep, "decode", lambda z: decoded.append(z) or decode(z))
    monkeypatch.setattr(rep, "decode_tokens", lambda c: decoded.append(rep.dequantize(c)) or decode_tokens(c))
    audio = pipe("ah oh", seed=4, inputs={"speaker": "s1"}, seconds=1.0)
    z = seen["z"]
    assert z.shape[0] == 3 and not torch.allclose(z[0], z[1])  # three different draws of one sentence
    assert seen["ids"].ndim == 1 and seen["ids"][0] == seen["ids"][-1]  # the edged phonemes of the sentence
    assert len(decoded) == 1 and torch.allclose(decoded[0][0], z[seen["best"]])  # only the chosen one is decoded
    again = pipe("ah oh", seed=4, inputs={"speaker": "s1"}, seconds=1.0)
    assert np.array_equal(audio[0], again[0])  # reproducible from the seed


def test_one_candidate_is_plain_sampling(write_recipe):
    with_verifier = Pipeline.from_recipe(write_recipe(_recipe()))
    text = _recipe().split("    [verifier]")[0] + "    [train]" + _recipe().split("    [train]")[1]
    plain = Pipeline.from_recipe(write_recipe(text, "plain.toml"))
    assert plain.verifier is None and plain.candidates_for() == 1
    a = with_verifier("ah oh", seed=2, candidates=1)
    b = plain("ah oh", seed=2)
    assert np.array_equal(a[0], b[0])
    with pytest.raises(AudioguideError, match="no \\[verifier\\]"):
        plain("ah oh", candidates=2)
    for bad in (0, 17, 2.5, True):
        with pytest.raises(AudioguideError, match="candidates must be an integer"):
            with_verifier("ah oh", candidates=bad)


def test_cli_candidates_without_a_verifier_is_a_one_line_error(write_recipe, tmp_path):
    text = _recipe().split("    [verifier]")[0] + "    [train]" + _recipe().split("    [train]")[1]
    path = write_recipe(text, "plain.toml")
    out = tmp_path / "x.wav"
    res = CliRunner().invoke(app, ["tts", "ah oh", "--recipe", str(path), "--candidates", "2", "-o", str(out)])
    assert res.exit_code != 0 and "no [verifier]" in res.output and "Traceback" not in res.output and not out.exists()
    res = CliRunner().invoke(app, ["tts", "ah oh", "--recipe", str(write_recipe(_recipe())), "--candidates", "2", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert np.isfinite(sf.read(str(out))[0]).all()


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda t: t.replace('type = "phonemes"\n    dim = 16\n    edges = true', 'type = "characters"\n    dim = 16'), "hears phonemes"),
        (lambda t: t.replace("edges = true", "edges = false"), "edges = true"),
        (lambda t: t.replace("channels = 8\n    dim = 16", "channels = 4\n    dim = 16"), "channels is 4"),
        (lambda t: t.replace("candidates = 3", "candidates = 0"), "candidates must lie"),
        (lambda t: t.replace("candidates = 3", "candidates = 99"), "candidates must lie"),
        (lambda t: t.replace('    aligned = "text"\n    encoder_depth = 1', ""), 'aligned = \\"text\\"'),
        (lambda t: t.replace("kernel = 3", "kernel = 4"), "kernel must be an odd"),
        (lambda t: t.replace("kernel = 3", "kernel = 3\n    depth = 2"), "unknown key 'depth'; valid keys: type, weights, candidates"),
        (lambda t: t.replace("random_weights = true\n", ""), "needs weights"),
        (lambda t: t.replace("random_weights = true\n", "").replace("candidates = 3", "candidates = 1"), "needs weights"),
        (lambda t: t.replace(t[t.index('    type = "autoencoder"'):t.index("    [conditioners.text]")],
                             '    type = "frames"\n    sample_rate = 8000\n    hop = 64\n'), "reads our autoencoder's latents"),
    ],
)
def test_verifier_recipe_errors(write_recipe, edit, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(write_recipe(edit(_recipe())))


def test_verifier_target_needs_a_verifier(write_recipe):
    text = _recipe(train='target = "verifier"').split("    [verifier]")[0] + "    [train]\n    target = \"verifier\"\n"
    with pytest.raises(RecipeError, match="target is 'verifier' but the recipe has no \\[verifier\\]"):
        load_recipe(write_recipe(text))


def test_fewer_frames_than_symbols_skips_the_choice_instead_of_failing(write_recipe, monkeypatch):
    text = _recipe().replace("    [verifier]", "    [duration]\n    min_seconds = 0.01\n    [verifier]")
    pipe = Pipeline.from_recipe(write_recipe(text))
    monkeypatch.setattr(pipe.verifier, "score", lambda z, ids: pytest.fail("nothing to align"))
    audio = pipe("ah oh", seed=1, seconds=0.02)  # 3 frames for 7 edged symbols
    assert audio[0].size and np.isfinite(audio[0]).all()


def test_verifier_training_needs_whole_clips(write_recipe, phoneme_corpus, tmp_path):
    path = write_recipe(_recipe(train='target = "verifier"\n    segment_seconds = 0.5'))
    with pytest.raises(RecipeError, match="whole aligned clips"):
        train(load_recipe(path), phoneme_corpus, tmp_path / "run")


def test_a_candidate_with_non_finite_latents_is_never_chosen(write_recipe, monkeypatch):
    pipe = Pipeline.from_recipe(write_recipe(_recipe()))
    monkeypatch.setattr(pipe.verifier, "score", lambda z, ids: torch.tensor([0.1, float("nan"), 0.9]))
    (piece,) = pipe.prepare("ah oh").pieces
    z = torch.zeros(3, 8, 40)
    assert pipe.best(piece, z) == 2
    z[2, 0, 5] = float("inf")  # the best-scored candidate failed
    assert pipe.best(piece, z) == 0


def test_render_takes_candidates_and_refuses_them_without_a_verifier(write_recipe, tmp_path):
    from audioguide.manifest import write_manifest

    write_manifest(tmp_path / "m.jsonl", [{"id": "a", "text": "ah oh", "speaker": "s0"}])
    plain = _recipe().split("    [verifier]")[0] + "    [train]" + _recipe().split("    [train]")[1]
    res = CliRunner().invoke(app, ["render", str(tmp_path / "m.jsonl"), "-o", str(tmp_path / "out"), "--recipe",
                                   str(write_recipe(plain, "plain.toml")), "--candidates", "2"])
    assert res.exit_code != 0 and "no [verifier]" in res.output and not (tmp_path / "out" / "a.wav").exists()
    res = CliRunner().invoke(app, ["render", str(tmp_path / "m.jsonl"), "-o", str(tmp_path / "out"), "--recipe",
                                   str(write_recipe(_recipe())), "--candidates", "2"])
    assert res.exit_code == 0, res.output
    assert np.isfinite(sf.read(str(tmp_path / "out" / "a.wav"))[0]).all()
