"""Sound evaluation: the sound-class judge, Fréchet distance, the t2a sweep and its CLI.

Everything is synthetic (tones, chirps and noise made with numpy) and fast; a stub pipeline stands in
for a trained text-to-audio model."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from audioguide.audio import read_audio, write_wav
from audioguide.checkpoints import save_checkpoint
from audioguide.cli import app
from audioguide.core import Audio, AudioguideError
from audioguide.evaluation.classifier import N_SCENE_FEATURES, ClipClassifier, TrainConfig, features, file_features, fit
from audioguide.evaluation.sound import (
    DEFAULT_LABEL,
    REAL_LABEL,
    evaluate_t2a,
    frechet_distance,
    held_out_accuracy,
    load_sound_classifier,
    parse_grid,
    sweep_settings,
    train_sound_classifier,
)
from audioguide.evaluation.speaker import SpeakerClassifier
from audioguide.manifest import read_manifest, write_manifest
from audioguide.recipes import load_recipe

runner = CliRunner()
SR = 16000
KINDS = {"tone": "music", "chirp": "effect", "noise": "effect"}
CAPTIONS = {"tone": "a steady tone", "chirp": "a rising chirp", "noise": "static hiss"}


def synthetic_sound(label: str, rng: np.random.Generator, seconds: float = 0.5, sr: int = SR) -> np.ndarray:
    """A 'class': a harmonic tone, an exponential chirp or white noise; pitch, level and length vary."""
    n = int(sr * seconds)
    t = np.arange(n) / sr
    if label == "tone":
        f0 = rng.uniform(200, 400)
        wav = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 5)) * np.exp(-t * rng.uniform(0.5, 2))
    elif label == "chirp":
        f_start, f_end = rng.uniform(300, 600), rng.uniform(3000, 5000)
        phase = 2 * np.pi * f_start * seconds / np.log(f_end / f_start) * ((f_end / f_start) ** (t / seconds) - 1)
        wav = np.sin(phase)
    else:
        wav = rng.standard_normal(n)
    wav = wav + 0.002 * rng.standard_normal(n)
    return (rng.uniform(0.1, 0.5) * wav / np.abs(wav).max()).astype(np.float32)


def sound_manifest(root, name: str, per_class: int, seed: int, duration: float | None = 0.5):
    rng = np.random.default_rng(seed)
    rows = []
    for label, kind in KINDS.items():
        for i in range(per_class):
            rid = f"{name}-{label}-{i}"
            write_wav(root / f"{rid}.wav", synthetic_sound(label, rng), SR)
            row = {"id": rid, "audio": f"{rid}.wav", "caption": f"{CAPTIONS[label]} number {i}", "label": label, "kind": kind}
            if duration is not None:
                row["duration"] = duration
            rows.append(row)
    path = root / f"{name}.jsonl"
    write_manifest(path, rows)
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("sound")
    train, held = sound_manifest(root, "train", 8, seed=1), sound_manifest(root, "held_out", 4, seed=2)
    clf = train_sound_classifier(read_manifest(train), seed=0)
    return root, train, held, clf


# -- the judge ----------------------------------------------------------------------------------


def test_sound_classifier_separates_classes_and_round_trips(corpus, tmp_path):
    _, train, held, clf = corpus
    assert clf.kind == "sound-classifier" and clf.labels == ("chirp", "noise", "tone") and clf.config["train_items"] == 24
    acc = held_out_accuracy(clf, read_manifest(held))
    assert acc.items == 12 and acc.overall >= 0.9 and set(acc.per_class) == set(KINDS)
    rng = np.random.default_rng(3)
    truth = [c for c in KINDS for _ in range(4)]
    assert clf.accuracy([synthetic_sound(c, rng, sr=24000) for c in truth], 24000, truth) >= 0.9  # resampled inside
    # rows sharing one audio file are one clip; rows without a label or audio are not training data
    rows = read_manifest(train)
    write_manifest(tmp_path / "dup.jsonl", [
        *({"id": r.id, "audio": str(r.audio), "caption": r.caption, "label": r.extra["label"]} for r in rows),
        {"id": "again", "audio": str(rows[0].audio), "caption": "another caption", "label": rows[0].extra["label"]},
        {"id": "unlabelled", "audio": str(rows[1].audio), "caption": "no label"},
    ])
    again = train_sound_classifier(read_manifest(tmp_path / "dup.jsonl"), seed=0)
    assert again.config["train_items"] == 24 and all(torch.equal(again.params[k], clf.params[k]) for k in clf.params)
    assert train_sound_classifier(rows, per_class=3).config["train_items"] == 9
    # save / load: the same predictions and embeddings
    path = clf.save(tmp_path / "sounds.safetensors")
    loaded = load_sound_classifier(path)
    clips = [synthetic_sound(c, rng) for c in truth]
    feats = features(clips, SR, clf.feature_set)
    assert loaded.labels == clf.labels and loaded.kind == "sound-classifier" and loaded.predict(clips, SR) == clf.predict(clips, SR)
    assert loaded.feature_set == "scene" and feats.shape[1] == N_SCENE_FEATURES
    assert loaded.embed(feats).shape == (12, 256) and torch.equal(loaded.embed(feats), clf.embed(feats))
    with pytest.raises(AudioguideError, match="not a speaker classifier"):
        SpeakerClassifier.load(path)
    with pytest.raises(AudioguideError, match="at least two classes"):
        train_sound_classifier([r for r in rows if r.extra["label"] == "tone"])
    with pytest.raises(AudioguideError, match="no rows with both 'audio' and a 'label'"):
        train_sound_classifier(read_manifest(tmp_path / "dup.jsonl")[-1:])


def test_embedding_without_hidden_layer_is_the_standardised_features():
    rng = np.random.default_rng(0)
    feats = features([synthetic_sound(c, rng) for c in KINDS for _ in range(3)], SR)
    clf = fit(feats, [c for c in KINDS for _ in range(3)], config=TrainConfig(hidden=0, steps=20))
    assert torch.allclose(clf.embed(feats), (feats - clf.mean) / clf.std)
    assert clf.embed(feats[:0]).shape == (0, 256)


def test_speaker_checkpoints_written_before_the_generic_classifier_still_load(tmp_path):
    """The old format: kind speaker-classifier, class names under the metadata key 'voices'."""
    mean, std = torch.zeros(256), torch.ones(256)
    params = {"w2": torch.randn(256, 2), "b2": torch.zeros(2)}
    path = save_checkpoint(tmp_path / "old.safetensors", {"mean": mean, "std": std, **params},
                           {"voices": ["ava", "bob"], "hidden": 0}, "speaker-classifier")
    clf = SpeakerClassifier.load(path)
    assert isinstance(clf, SpeakerClassifier) and clf.voices == ("ava", "bob") and clf.config == {"hidden": 0}
    assert ClipClassifier.load(path).labels == ("ava", "bob")
    with pytest.raises(AudioguideError, match="not a sound classifier"):
        load_sound_classifier(path)


# -- Fréchet distance ---------------------------------------------------------------------------


def test_frechet_distance():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((300, 8)), rng.standard_normal((300, 8))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    shifts = [frechet_distance(x, x + s) for s in (0.5, 1.0, 2.0)]
    assert shifts == pytest.approx([8 * 0.25, 8 * 1.0, 8 * 4.0], rel=1e-6)  # equal covariances: ||mu_a - mu_b||^2
    assert frechet_distance(x, y) == pytest.approx(frechet_distance(y, x), rel=1e-6)
    assert 0 < frechet_distance(x, y) < shifts[0]
    # covariances exactly I and 4 I, equal means: Tr(I + 4 I - 2 (4 I)^(1/2)) = d
    white = x - x.mean(0)
    white = white @ np.linalg.inv(np.linalg.cholesky(np.cov(white, rowvar=False))).T
    assert frechet_distance(white, 2 * white) == pytest.approx(8.0, rel=1e-6)
    assert frechet_distance(torch.from_numpy(white), torch.from_numpy(2 * white)) == pytest.approx(8.0, rel=1e-6)
    # fewer samples than dimensions: rank-deficient covariances, still finite and >= 0
    a, b = rng.standard_normal((5, 64)), rng.standard_normal((7, 64)) + 0.3
    for d in (frechet_distance(a, b), frechet_distance(a, a), frechet_distance(a[:1], b[:1]), frechet_distance(a[:2], a[2:4])):
        assert math.isfinite(d) and d >= 0
    assert frechet_distance(a, a) < 1e-6
    assert frechet_distance(a[:1], b[:1]) == pytest.approx(((a[0] - b[0]) ** 2).sum())  # one sample: means only
    with pytest.raises(AudioguideError):
        frechet_distance(a, b[:, :3])


# -- settings -----------------------------------------------------------------------------------


def test_sweep_settings_and_grids():
    recipe = load_recipe("random-t2a")  # caption = 5, rescale 0.75, 10 steps
    assert parse_grid("1, 3,5,", "--cfg") == [1.0, 3.0, 5.0] and parse_grid(None, "--cfg") == [] and parse_grid("", "--cfg") == []
    settings = sweep_settings(recipe, cfg=parse_grid("1,5", "--cfg"), rescale=parse_grid("0,0.75", "--rescale"))
    assert settings == [
        (DEFAULT_LABEL, {}),
        ("cfg=1 rescale=0", {"cfg": 1.0, "rescale": 0.0}),
        # cfg=1 rescale=0.75: with no guidance rescale is a no-op, the same as the previous one
        ("cfg=5 rescale=0", {"cfg": 5.0, "rescale": 0.0}),
        # cfg=5 rescale=0.75 is the recipe default
    ]
    assert sweep_settings(recipe, steps=parse_grid("2,10", "--steps", integer=True)) == [(DEFAULT_LABEL, {}), ("steps=2", {"steps": 2})]
    for text, option, integer, message in [("1,a", "--cfg", False, "--cfg expects numbers"), ("1.5", "--steps", True, "whole numbers"),
                                           ("nan", "--rescale", False, "--rescale expects")]:
        with pytest.raises(AudioguideError, match=message):
            parse_grid(text, option, integer)
    for kwargs, message in [({"cfg": [-1.0]}, "guidance: .*>= 0"), ({"rescale": [2.0]}, "rescale phi must be in"),
                            ({"steps": [0]}, "steps must be")]:
        with pytest.raises(AudioguideError, match=message):
            sweep_settings(recipe, **kwargs)


# -- evaluate_t2a -------------------------------------------------------------------------------


class StubPipe:
    """A 't2a model' that follows its prompt when guided (cfg > 1) and makes noise when not: a tone or
    a chirp for captions that name one, noise otherwise. Records every call."""

    sample_rate = SR

    def __init__(self, recipe: str = "random-t2a"):
        self.recipe = load_recipe(recipe)
        self.calls: list[dict] = []

    def __call__(self, texts, *, seed, cfg=None, rescale=None, steps=None, seconds=None):
        assert len(texts) == 1 and seconds is not None
        self.calls.append({"caption": texts[0], "seed": seed, "cfg": cfg, "rescale": rescale, "steps": steps, "seconds": seconds})
        guided = (cfg if cfg is not None else dict(self.recipe.guidance.scales)["caption"]) > 1
        label = next((c for c in ("tone", "chirp") if guided and c in texts[0]), "noise")
        return Audio((synthetic_sound(label, np.random.default_rng(seed), seconds),), SR)


def stub_rows(tmp_path):
    """Two rows per class (plus one beyond per_class=2), two rows sharing one clip, one without a label."""
    path = sound_manifest(tmp_path, "held", 3, seed=5)
    objs = [json.loads(line) for line in path.read_text().splitlines()]
    objs[0]["duration"] = 0.1  # below the recipe's min_seconds (0.5)
    objs[1]["duration"] = 0.7
    del objs[6]["duration"]  # noise: the recipe's 2 s
    objs[3]["audio"] = objs[4]["audio"]  # two chirp captions of one clip
    objs.append({"id": "nolabel", "audio": objs[0]["audio"], "caption": "a steady tone"})
    write_manifest(path, objs)
    return read_manifest(path)


def test_evaluate_t2a_adherence_pairing_and_report(corpus, tmp_path):
    clf = corpus[3]
    rows = stub_rows(tmp_path)
    pipe = StubPipe()
    settings = sweep_settings(pipe.recipe, cfg=[1.0, 5.0], steps=[2])
    assert [label for label, _ in settings] == [DEFAULT_LABEL, "cfg=1 steps=2", "cfg=5 steps=2"]
    ticks = []
    report = evaluate_t2a(pipe, rows, clf, settings, on_item=lambda i, n: ticks.append((i, n)), seed=7, per_class=2,
                          wav_dir=tmp_path / "wavs")
    assert [r.label for r in report.results] == [DEFAULT_LABEL, "cfg=1 steps=2", "cfg=5 steps=2"] and report.default == DEFAULT_LABEL
    default, unguided, guided = report.results
    assert default.adherence() == 1.0 and guided.adherence() == 1.0
    assert unguided.adherence() == pytest.approx(1 / 3)  # only the noise rows come out right without guidance
    assert unguided.adherence("noise") == 1.0 and unguided.adherence("tone") == 0.0 and unguided.adherence(kind="music") == 0.0
    assert (default.scales, default.rescale, default.steps) == ({"caption": 5.0}, 0.75, 10)
    assert (unguided.scales, unguided.steps) == ({"caption": 1.0}, 2)
    # realism: the guided clips are distributed like the real ones, the unguided noise is not
    assert math.isnan(report.real.fd) and default.fd < unguided.fd and guided.fd < unguided.fd
    assert all(r.rtf > 0 for r in report.results) and math.isnan(report.real.rtf)
    # paired seeds: row i has seed + i in every setting (after one warm-up call)
    calls = pipe.calls[1:]
    assert len(calls) == 3 * 6
    per_setting = [calls[i * 6:(i + 1) * 6] for i in range(3)]
    assert all([c["seed"] for c in s] == list(range(7, 13)) for s in per_setting)
    assert all([c["caption"] for c in s] == [c["caption"] for c in per_setting[0]] for s in per_setting)
    assert [(c["cfg"], c["steps"]) for c in (s[0] for s in per_setting)] == [(None, None), (1.0, 2), (5.0, 2)]
    # durations: the row's, within the recipe's [0.5, 30], else the recipe's 2 s
    assert [c["seconds"] for c in per_setting[0]] == [0.5, 0.7, 0.5, 0.5, 2.0, 0.5]
    # the real reference: each real clip once (two chirp rows share one), judged like the generated ones
    assert len(report.real.items) == 5 and report.real.adherence() >= 0.8
    assert ticks[-1] == (3 * 6 + 5, 3 * 6 + 5)
    assert sorted(p.name for p in (tmp_path / "wavs" / "cfg=1_steps=2").iterdir()) == sorted(f"{r.id}.wav" for r in rows[:2] + rows[3:5] + rows[6:8])
    text = report.markdown("stub")
    assert "| setting | cfg | rescale | steps | adherence (top-1) | FD | RTF |" in text
    assert f"| {DEFAULT_LABEL} | 5 | 0.75 | 10 | 100.0 % |" in text and "| cfg=1 steps=2 | 1 | 0.75 | 2 | 33.3 % |" in text
    assert re.search(rf"\| {REAL_LABEL} \| - \| - \| - \| [\d.]+ % \| - \| - \|", text)  # no FD of the real clips to themselves
    assert "| tone | music | 2 | 100.0 % |" in text and "| noise | effect | 2 | 100.0 % |" in text
    assert "Judge: top-1 accuracy" in text and "1 row(s) without a caption or a label were skipped" in text
    # every row the same length with seconds; the same rows and seeds give the same result
    again = evaluate_t2a(StubPipe(), rows, clf, settings[1:2], seconds=0.6, seed=7, per_class=2)
    assert {it.seconds for it in again.results[0].items} == {0.6}
    assert [it.predicted for it in again.results[0].items] == [it.predicted for it in unguided.items]


def test_evaluate_t2a_rejects_bad_input(corpus, tmp_path):
    clf = corpus[3]
    rows = stub_rows(tmp_path)
    settings = [(DEFAULT_LABEL, {})]
    with pytest.raises(AudioguideError, match="is a tts recipe; sound evaluation needs a t2a recipe"):
        evaluate_t2a(StubPipe("random-tts"), rows, clf, settings)
    narrow = ClipClassifier(("noise", "tone"), clf.mean, clf.std, {k: v[..., :2] if k in ("w2", "b2") else v for k, v in clf.params.items()}, {})
    with pytest.raises(AudioguideError, match="does not know class.*chirp"):
        evaluate_t2a(StubPipe(), rows, narrow, settings)
    unlabelled = [r for r in rows if "label" not in r.extra]
    with pytest.raises(AudioguideError, match="no rows with both a 'caption' and a 'label'"):
        evaluate_t2a(StubPipe(), unlabelled, clf, settings)
    with pytest.raises(AudioguideError, match=r"seconds must be in \[0.5, 30\]"):
        evaluate_t2a(StubPipe(), rows, clf, settings, seconds=0.1)
    with pytest.raises(AudioguideError, match="unknown setting key"):
        evaluate_t2a(StubPipe(), rows, clf, [("x", {"scale": 2.0})])
    pipe = StubPipe()
    with pytest.raises(AudioguideError, match="guidance"):
        evaluate_t2a(pipe, rows, clf, [("x", {"cfg": -2.0})])
    assert pipe.calls == []  # validated before any synthesis


# -- CLI ----------------------------------------------------------------------------------------


def test_eval_sounds_and_t2a_cli(corpus, tmp_path):
    _, train, held, _ = corpus
    out = tmp_path / "sounds.safetensors"
    res = runner.invoke(app, ["eval", "sounds", "--data", str(train), "--held-out", str(held), "-o", str(out), "--per-class", "6"])
    assert res.exit_code == 0, res.output
    assert "held-out accuracy on real audio" in res.output and load_sound_classifier(out).config["train_items"] == 18
    res = runner.invoke(app, ["eval", "sounds", "--data", str(train), "--held-out", str(held), "-o", str(tmp_path / "c.pt")])
    assert res.exit_code == 2 and "must end in .safetensors" in res.output
    # a real (random-weight) t2a recipe end to end
    report = tmp_path / "t2a.md"
    res = runner.invoke(app, ["eval", "t2a", "random-t2a", "--data", str(held), "--classifier", str(out), "--per-class", "1",
                              "--cfg", "1,5", "--steps", "2", "--seconds", "0.5", "--report", str(report),
                              "--items", str(tmp_path / "items.jsonl")])
    assert res.exit_code == 0, res.output
    labels = [line.split("|")[1].strip() for line in report.read_text().splitlines() if line.startswith("| ") and "|---" not in line]
    assert labels[:5] == ["setting", DEFAULT_LABEL, "cfg=1 steps=2", "cfg=5 steps=2", REAL_LABEL]
    assert not list(tmp_path.glob(".t2a.md.*"))  # written atomically
    items = [json.loads(line) for line in (tmp_path / "items.jsonl").read_text().splitlines()]
    rows = sum(1 for r in items if r["setting"] == DEFAULT_LABEL)
    assert {r["setting"] for r in items} == {DEFAULT_LABEL, "cfg=1 steps=2", "cfg=5 steps=2", REAL_LABEL}
    assert all(r["hit"] == (r["predicted"] == r["label"]) for r in items) and rows == 3  # one row per class, 3 classes
    # two runs paired item by item: a run against itself differs by exactly zero
    import subprocess
    import sys

    out_cmp = subprocess.run([sys.executable, "scripts/compare_sound_items.py", str(tmp_path / "items.jsonl"), str(tmp_path / "items.jsonl"),
                              "--resamples", "50"], capture_output=True, text=True, check=True).stdout
    assert f"| {DEFAULT_LABEL} | 3 |" in out_cmp and "+0.0 [+0.0, +0.0]" in out_cmp
    write_manifest(tmp_path / "speech.jsonl", [{"id": "a", "text": "hello", "speaker": "ava"}])
    speaker = SpeakerClassifier(("a", "b"), torch.zeros(256), torch.ones(256), {"w2": torch.zeros(256, 2), "b2": torch.zeros(2)}, {})
    speaker.save(tmp_path / "speaker.safetensors")
    base = ["eval", "t2a", "random-t2a", "--data", str(held), "--classifier", str(out)]
    for args, message in [
        (["eval", "t2a", "random-tts", "--data", str(held), "--classifier", str(out)], "is a tts recipe"),
        (["eval", "t2a", "no-such-recipe", "--data", str(held), "--classifier", str(out)], "no-such-recipe"),
        (["eval", "t2a", "random-t2a", "--data", str(held), "--classifier", str(tmp_path / "missing.safetensors")], "not found"),
        (["eval", "t2a", "random-t2a", "--data", str(tmp_path / "missing.jsonl"), "--classifier", str(out)], "cannot read manifest"),
        (["eval", "t2a", "random-t2a", "--data", str(tmp_path / "speech.jsonl"), "--classifier", str(out)], "no rows with both"),
        (["eval", "t2a", "random-t2a", "--data", str(held), "--classifier", str(tmp_path / "speaker.safetensors")], "not a sound classifier"),
        ([*base, "--cfg", "1,x"], "--cfg expects numbers"),
        ([*base, "--rescale", "3"], "rescale phi"),
        ([*base, "--steps", "0"], "steps must be"),
        ([*base, "--seconds", "100"], "seconds must be in"),
    ]:
        res = runner.invoke(app, args)
        assert res.exit_code == 2, res.output
        errors = [line for line in res.output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0] and "Traceback" not in res.output, res.output


def test_cli_eval_t2a_on_a_recipe_without_a_generator_is_a_one_line_error(tmp_path):
    from typer.testing import CliRunner

    from audioguide.cli import app

    res = CliRunner().invoke(app, ["eval", "t2a", "autoencoder-sound", "--data", str(tmp_path / "x.jsonl"),
                                   "--classifier", str(tmp_path / "c.safetensors")])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "error:" in res.output and "no generator" in res.output


# -- the stronger judge: scene features, multi-label, held out by source -------------------------


def _clicks(rate: float, seconds: float = 4.0, sr: int = SR) -> np.ndarray:
    x = np.zeros(int(seconds * sr), dtype=np.float32)
    rng = np.random.default_rng(0)
    for t in np.arange(0.05, seconds, 1 / rate):
        i = int(t * sr)
        x[i : i + 80] += (rng.standard_normal(80) * np.exp(-np.arange(80) / 15)).astype(np.float32)
    return x


def test_scene_features_see_rhythm_that_summary_statistics_miss():
    """Two click trains with the same clicks at 1.2 and 6 a second: the modulation spectrum peaks
    at each rate; the features are finite, of fixed size, and independent of the clip's level."""
    from audioguide.evaluation.classifier import MOD_BANDS, MOD_EDGES, N_MELS, scene_features

    slow, fast = scene_features(_clicks(1.2), SR), scene_features(_clicks(6.0), SR)
    assert slow.shape == fast.shape == (N_SCENE_FEATURES,) and np.isfinite(slow).all() and np.isfinite(fast).all()
    n_bins = len(MOD_EDGES) - 1
    start = 6 * N_MELS
    mod = lambda f: f[start : start + MOD_BANDS * n_bins].reshape(MOD_BANDS, n_bins).mean(0)  # noqa: E731
    centres = np.sqrt(MOD_EDGES[:-1] * MOD_EDGES[1:])
    assert abs(np.log(centres[mod(slow).argmax()] / 1.2)) < np.log(2.2)
    assert abs(np.log(centres[mod(fast).argmax()] / 6.0)) < np.log(2.2)
    quiet = scene_features(0.1 * _clicks(6.0), SR)  # level-free (up to the flatness floor's epsilon)
    assert np.allclose(quiet[:-4], fast[:-4], atol=1e-3) and np.allclose(quiet[-4:], fast[-4:], atol=0.1)
    assert scene_features(np.zeros(10, np.float32), SR).shape == (N_SCENE_FEATURES,)  # tiny clips pad


def test_multi_label_judge_names_both_sources_of_a_scene():
    from audioguide.audio import mix_scene

    rng = np.random.default_rng(0)
    labels, clips = [], []
    for _ in range(10):
        for c in KINDS:
            clips.append(synthetic_sound(c, rng, 1.0))
            labels.append((c,))
    pairs = [("tone", "noise"), ("chirp", "tone"), ("noise", "chirp")]
    for _ in range(6):
        for a, b in pairs:
            clips.append(mix_scene(synthetic_sound(a, rng, 1.0), synthetic_sound(b, rng, 1.0), -3.0))
            labels.append((a, b))
    feats = features(clips, SR, "scene")
    clf = fit(feats, labels, 0, TrainConfig(64, 300, 1e-2, 1e-3), "sound-classifier", "scene")
    assert clf.config["multi_label"] is True and clf.config["feature_set"] == "scene"
    test = [mix_scene(synthetic_sound(a, rng, 1.0), synthetic_sound(b, rng, 1.0), -3.0) for a, b in pairs for _ in range(3)]
    top = clf.top_features(features(test, SR, "scene"), 2)
    truth = [p for p in pairs for _ in range(3)]
    assert np.mean([set(t) == set(p) for t, p in zip(top, truth)]) >= 0.7
    single = clf.predict([synthetic_sound(c, rng, 1.0) for c in KINDS], SR)
    assert single == list(KINDS)


def test_held_out_accuracy_scores_scenes_by_both_classes(corpus, tmp_path):
    root, train, held, clf = corpus
    from audioguide.audio import mix_scene, read_audio

    rows = read_manifest(held)
    a, b = rows[0], rows[-1]  # a tone and a noise clip
    wav = mix_scene(read_audio(a.audio)[0], read_audio(b.audio)[0], -3.0)
    write_wav(root / "scene.wav", wav, SR)
    write_manifest(tmp_path / "mixed.jsonl", [
        *({"id": r.id, "audio": str(r.audio), "caption": r.caption, "label": r.extra["label"]} for r in rows),
        {"id": "scene", "audio": str(root / "scene.wav"), "caption": "both", "label": a.extra["label"], "labels": [a.extra["label"], b.extra["label"]]},
    ])
    acc = held_out_accuracy(clf, read_manifest(tmp_path / "mixed.jsonl"))
    assert acc.items == 12 and acc.mixtures is not None and acc.mixtures[1] == 1  # the scene is scored apart
    top2 = set(clf.top_features(features([wav], SR, clf.feature_set), 2)[0])
    assert acc.mixtures[0] == float({a.extra["label"], b.extra["label"]} <= top2)


def test_source_holdout_tests_each_class_on_a_source_it_never_saw(tmp_path):
    """Two sources per class: tones and chirps at different registers, noise white or low-passed.
    A judge trained on one source of each class is tested on the other; a class whose sources do
    not resemble each other fails there even though it is easy within a source."""
    from audioguide.evaluation.sound import source_holdout

    rng = np.random.default_rng(0)
    rows = []
    for label in KINDS:
        for source in ("s0", "s1"):
            for i in range(6):
                wav = synthetic_sound(label, rng, 0.6)
                if label == "noise" and source == "s1":
                    wav = np.convolve(wav, np.ones(40) / 40, "same").astype(np.float32)  # another "recording chain"
                path = tmp_path / f"{label}-{source}-{i}.wav"
                write_wav(path, wav, SR)
                rows.append({"id": path.stem, "audio": str(path), "caption": label, "label": label, "source": source})
    write_wav(tmp_path / "lonely.wav", synthetic_sound("tone", rng, 0.6) * 0 + 0.01 * rng.standard_normal(9600).astype(np.float32), SR)
    rows.append({"id": "lonely", "audio": str(tmp_path / "lonely.wav"), "caption": "x", "label": "lonely", "source": "only"})
    write_manifest(tmp_path / "rows.jsonl", rows)
    result = source_holdout(read_manifest(tmp_path / "rows.jsonl"), seed=0, folds=2)
    assert set(result.per_class) == {"tone", "chirp", "noise"} and result.single_source == ("lonely",)
    assert all(n == 12 and k == 2 for _, n, k in result.per_class.values())  # each fold holds out one source's 6 clips
    assert result.items == 36 and result.overall == pytest.approx(np.mean([a for a, _, _ in result.per_class.values()]))
    assert result.per_class["tone"][0] >= 0.8 and result.per_class["chirp"][0] >= 0.8


def two_source_splits(root, rng: np.random.Generator, train: int, held: int) -> tuple[list[dict], list[dict]]:
    """Training and held-out rows of every synthetic class from two sources ("s0", "s1"), written to ``root``."""
    out: dict[str, list[dict]] = {"train": [], "held": []}
    for split, n in (("train", train), ("held", held)):
        for label in KINDS:
            for source in ("s0", "s1"):
                for i in range(n):
                    path = root / f"{split}-{label}-{source}-{i}.wav"
                    write_wav(path, synthetic_sound(label, rng), SR)
                    out[split].append({"id": path.stem, "audio": path.name, "caption": label, "label": label, "source": source})
    return out["train"], out["held"]


def test_eval_sounds_cli_reports_scenes_and_sources(tmp_path):
    rng = np.random.default_rng(1)
    from audioguide.audio import mix_scene

    rows, held = two_source_splits(tmp_path, rng, 6, 3)
    scene = tmp_path / "scene.wav"
    write_wav(scene, mix_scene(synthetic_sound("tone", rng), synthetic_sound("noise", rng), -3.0), SR)
    held.append({"id": "scene", "audio": scene.name, "caption": "both", "label": "tone", "labels": ["tone", "noise"]})
    write_manifest(tmp_path / "train.jsonl", rows)
    write_manifest(tmp_path / "held.jsonl", held)
    out = tmp_path / "judge.safetensors"
    res = runner.invoke(app, ["eval", "sounds", "--data", str(tmp_path / "train.jsonl"), "--held-out", str(tmp_path / "held.jsonl"), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "two-source scenes, both classes in the top 2" in res.output and "(1 scenes)" in res.output
    assert "held out by source (3 folds" in res.output and "(2 sources)" in res.output
    judge = load_sound_classifier(out)
    assert judge.feature_set == "scene" and 0 <= judge.config["source_holdout_accuracy"] <= 1 and "mixture_accuracy" in judge.config
    res = runner.invoke(app, ["eval", "sounds", "--data", str(tmp_path / "train.jsonl"), "--held-out", str(tmp_path / "held.jsonl"), "-o", str(out),
                              "--features", "mfcc"])
    assert res.exit_code == 2 and "--features must be one of" in res.output


def test_evaluate_t2a_scores_two_source_scenes_by_both_classes(corpus, tmp_path):
    """A scene row ('a tone and a chirp') is a hit only when both its classes are the judge's top 2;
    scenes get their own column and stay out of single-source adherence and the per-class table."""
    clf = corpus[3]

    class ScenePipe(StubPipe):
        def __call__(self, texts, *, seed, cfg=None, rescale=None, steps=None, seconds=None):
            if "and" not in texts[0]:
                return super().__call__(texts, seed=seed, cfg=cfg, rescale=rescale, steps=steps, seconds=seconds)
            from audioguide.audio import mix_scene

            rng = np.random.default_rng(seed)
            if (cfg if cfg is not None else 5.0) <= 1:  # unguided: noise, so at most one of the two is in the top 2
                return Audio((synthetic_sound("noise", rng, seconds),), SR)
            return Audio((mix_scene(synthetic_sound("tone", rng, seconds), synthetic_sound("chirp", rng, seconds), -2.0),), SR)

    rows = [r for r in stub_rows(tmp_path) if r.extra.get("label")][:3]
    write_manifest(tmp_path / "scene.jsonl", [
        *({"id": r.id, "audio": str(r.audio), "caption": r.caption, "label": r.extra["label"], "kind": r.extra["kind"]} for r in rows),
        {"id": "scene", "audio": str(rows[0].audio), "caption": "a steady tone and a rising chirp", "label": "tone",
         "labels": ["tone", "chirp"], "kind": "mixture", "duration": 0.5},
    ])
    pipe = ScenePipe()
    report = evaluate_t2a(pipe, read_manifest(tmp_path / "scene.jsonl"), clf, sweep_settings(pipe.recipe, cfg=[1.0]), seed=3)
    default, unguided = report.results
    scene_items = [it for it in default.items if it.kind == "mixture"]
    assert len(scene_items) == 1 and scene_items[0].labels == ("tone", "chirp") and len(scene_items[0].top) == 2
    assert default.adherence(kind="mixture") == float(set(scene_items[0].top) == {"tone", "chirp"})
    assert unguided.items[-1].top[0] == "noise" and unguided.adherence(kind="mixture") == 0.0
    assert default.adherence() == pytest.approx(np.mean([it.hit for it in default.items if it.kind != "mixture"]))
    text = report.markdown()
    assert "two-source scenes (both in top 2)" in text and "| mixture |" not in text


def test_evaluate_t2a_composes_scenes_from_their_sources_words(corpus, tmp_path):
    """With ``compose``, a scene that names its sources' words is drawn as a prompt in parts (the
    foreground's words, the background's as a part, at the given weights); other rows as before."""
    clf = corpus[3]

    class PartsPipe(StubPipe):
        def __call__(self, texts, *, seed, parts=None, part_weights=None, **kw):
            self.calls.append({"text": texts[0], "parts": parts, "weights": part_weights})
            return super().__call__(texts, seed=seed, **kw)

    rows = [r for r in stub_rows(tmp_path) if r.extra.get("label")][:2]
    scene = {"id": "scene", "audio": str(rows[0].audio), "caption": "a steady tone over a rising chirp", "label": "tone",
             "labels": ["tone", "chirp"], "kind": "mixture", "duration": 0.5, "part_captions": ["a steady tone", "a rising chirp"]}
    write_manifest(tmp_path / "scene.jsonl", [*({"id": r.id, "audio": str(r.audio), "caption": r.caption, "label": r.extra["label"],
                                                "kind": r.extra["kind"]} for r in rows), scene])
    manifest = read_manifest(tmp_path / "scene.jsonl")
    pipe = PartsPipe()
    evaluate_t2a(pipe, manifest, clf, [("default", {})], seed=3, compose=[1.0, 0.5])
    composed = [c for c in pipe.calls if c.get("parts")]
    assert composed and all(c["text"] == "a steady tone" and c["parts"] == ["a rising chirp"] and c["weights"] == [1.0, 0.5]
                            for c in composed)
    assert all(c["parts"] is None for c in pipe.calls if "text" in c and c["text"] != "a steady tone")
    with pytest.raises(AudioguideError, match="compose gives 3 weight"):
        evaluate_t2a(PartsPipe(), manifest, clf, [("default", {})], compose=[1.0, 0.5, 0.5])
    with pytest.raises(AudioguideError, match="part_captions"):
        evaluate_t2a(PartsPipe(), manifest[:2], clf, [("default", {})], compose=[1.0, 0.5])


def test_degrade_is_seeded_keeps_length_and_lands_in_its_noise_range():
    """Degraded copies for the judge: same length, the same seed gives the same copy, another seed
    another, none is the clip itself, and none silences it."""
    from audioguide.evaluation.sound import degrade

    t = np.arange(SR) / SR
    wav = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    copies = [degrade(wav, np.random.default_rng(k), SR) for k in range(40)]
    assert all(c.shape == wav.shape and c.dtype == np.float32 for c in copies)
    assert np.array_equal(copies[3], degrade(wav, np.random.default_rng(3), SR))
    assert len({c.tobytes() for c in copies}) == 40
    assert all(float(np.mean((c - wav) ** 2)) > 0 for c in copies)  # every copy is degraded somehow
    assert all(float(np.mean(c**2)) > 0.1 * float(np.mean(wav**2)) for c in copies)


def test_augmented_copies_train_the_judge_and_each_source_fold(tmp_path):
    """--augment K: K degraded copies of every training clip join the judge's training (and each
    held-out-by-source fold trains on the copies of its own training clips only)."""
    from audioguide.evaluation.sound import augmented_features, clip_rows, source_holdout

    rng = np.random.default_rng(2)
    rows = []
    for label in KINDS:
        for source in ("s0", "s1"):
            for i in range(3):
                path = tmp_path / f"{label}-{source}-{i}.wav"
                write_wav(path, synthetic_sound(label, rng, 0.6), SR)
                rows.append({"id": path.stem, "audio": str(path), "caption": label, "label": label, "source": source})
    write_manifest(tmp_path / "rows.jsonl", rows)
    manifest = read_manifest(tmp_path / "rows.jsonl")
    paths = [r.audio for r in clip_rows(manifest)]
    aug = augmented_features(paths, 2, seed=0)
    assert aug.shape == (2, 18, N_SCENE_FEATURES) and torch.equal(aug, augmented_features(paths, 2, seed=0))
    assert not torch.equal(aug[0], aug[1])
    feats = file_features(paths, feature_set="scene")
    judge = train_sound_classifier(manifest, feats=feats, augmented=aug)
    assert judge.config["train_items"] == 54 and judge.config["augmented_copies"] == 2
    plain = train_sound_classifier(manifest, feats=feats)
    assert plain.config["train_items"] == 18 and plain.config["augmented_copies"] == 0
    held = source_holdout(manifest, folds=2, feats=feats, augmented=aug)
    assert held.items == 18 and set(held.per_class) == set(KINDS)
    res = runner.invoke(app, ["eval", "sounds", "--data", str(tmp_path / "rows.jsonl"), "--held-out", str(tmp_path / "rows.jsonl"),
                              "-o", str(tmp_path / "j.safetensors"), "--augment", "1", "--no-by-source"])
    assert res.exit_code == 0, res.output
    assert load_sound_classifier(tmp_path / "j.safetensors").config["augmented_copies"] == 1


# -- the CNN judge ------------------------------------------------------------------------------

TINY_CNN = dict(channels=(4, 8), embed=16, steps=80, batch=8, crop=48)


def test_cnn_judge_learns_classes_is_seeded_and_round_trips(corpus, tmp_path):
    from audioguide.evaluation.cnn_judge import CNNConfig, CNNJudge
    from audioguide.evaluation.sound import train_sound_cnn

    _, train, held, _ = corpus
    config = CNNConfig(**TINY_CNN)
    judge = train_sound_cnn(read_manifest(train), seed=0, config=config)
    assert judge.labels == ("chirp", "noise", "tone") and judge.config["model"] == "cnn" and judge.config["train_items"] == 24
    acc = held_out_accuracy(judge, read_manifest(held))
    assert acc.items == 12 and acc.overall >= 0.9
    again = train_sound_cnn(read_manifest(train), seed=0, config=config)
    other = train_sound_cnn(read_manifest(train), seed=1, config=config)
    w = lambda j: torch.cat([p.flatten() for p in j.net.parameters()])  # noqa: E731
    assert torch.equal(w(judge), w(again)) and not torch.equal(w(judge), w(other))
    path = judge.save(tmp_path / "cnn.safetensors")
    loaded = load_sound_classifier(path)
    assert isinstance(loaded, CNNJudge) and loaded.labels == judge.labels
    rng = np.random.default_rng(5)
    wavs = [synthetic_sound(c, rng) for c in ("tone", "noise", "chirp")]
    feats = loaded.batch([loaded.clip_features(x, SR) for x in wavs])
    assert torch.allclose(loaded.logits(feats), judge.logits(feats)) and loaded.embed(feats).shape == (3, 16)
    assert loaded.predict(wavs, SR) == judge.predict(wavs, SR)
    # a clip shorter than the four-pool minimum still gets a decision
    assert len(loaded.predict(wavs[0][:800], SR)) == 1
    # one shorter than the training crop is judged centred in a crop of silence, as it was trained
    from audioguide.evaluation.cnn_judge import FLOOR_DB, SCALE_DB

    img = np.asarray(feats[0][:, :20], dtype=np.float32)
    padded = np.full((img.shape[0], 48), -FLOOR_DB / SCALE_DB, dtype=np.float32)
    padded[:, 14:34] = img
    with torch.inference_mode():
        expected = loaded.net(torch.from_numpy(padded)[None])
    assert torch.allclose(loaded.logits([img]), expected, atol=1e-5)


def test_cnn_judge_mixes_powers_and_masks_within_range():
    from audioguide.evaluation.cnn_judge import FLOOR_DB, SCALE_DB, _augment, _mix, logmel_image

    rng = np.random.default_rng(0)
    a = logmel_image(synthetic_sound("tone", rng), SR).astype(np.float32)
    b = logmel_image(synthetic_sound("noise", rng), SR).astype(np.float32)
    assert a.max() == 0 and a.min() >= -FLOOR_DB / SCALE_DB  # dB below the peak, floored
    assert np.allclose(_mix(a, a, 0.0), a, atol=1e-5)  # a clip plus itself: twice the power, the same image
    assert np.allclose(_mix(a, b, -300.0), a, atol=1e-5)  # an inaudible background changes nothing
    mixed = _mix(a, b, -3.0)
    assert (mixed >= np.minimum(a, b) - 1e-5).all() and mixed.max() == 0  # power only adds
    out = _augment(a.copy(), np.random.default_rng(1), 6.0)
    assert out.shape == a.shape and out.min() >= -FLOOR_DB / SCALE_DB and not np.array_equal(out, a)
    assert np.array_equal(out, _augment(a.copy(), np.random.default_rng(1), 6.0))  # seeded
    silence = logmel_image(np.zeros(8000, dtype=np.float32), SR)
    assert (silence == np.float16(-FLOOR_DB / SCALE_DB)).all()  # digital silence is quiet, not normalised to loud


def test_cnn_source_holdout_and_cli(tmp_path):
    from audioguide.evaluation.cnn_judge import CNNConfig, CNNJudge
    from audioguide.evaluation.sound import EnsembleJudge, source_holdout

    rows, held = two_source_splits(tmp_path, np.random.default_rng(2), 5, 2)
    write_manifest(tmp_path / "train.jsonl", rows)
    write_manifest(tmp_path / "held.jsonl", held)
    with pytest.raises(AudioguideError, match="needs the CNN's config"):
        source_holdout(read_manifest(tmp_path / "train.jsonl"), ensemble=True)
    for ensemble in (False, True):
        result = source_holdout(read_manifest(tmp_path / "train.jsonl"), seed=0, folds=2, cnn=CNNConfig(**TINY_CNN), ensemble=ensemble)
        assert set(result.per_class) == set(KINDS) and result.items == 30 and all(k == 2 for _, _, k in result.per_class.values())
        assert result.overall >= 0.8
    out = tmp_path / "cnn.safetensors"
    base = ["eval", "sounds", "--data", str(tmp_path / "train.jsonl"), "--held-out", str(tmp_path / "held.jsonl"), "-o", str(out)]
    res = runner.invoke(app, [*base, "--model", "cnn", "--steps", "3"])  # by source: off by default for the CNN
    assert res.exit_code == 0, res.output
    assert "held-out accuracy on real audio" in res.output and "3 classes, 30 training clips" in res.output
    assert "held out by source" not in res.output
    judge = load_sound_classifier(out)
    assert isinstance(judge, CNNJudge) and judge.config["steps"] == 3 and 0 <= judge.config["held_out_accuracy"] <= 1
    both = tmp_path / "both.safetensors"
    res = runner.invoke(app, [*base[:-1], str(both), "--model", "ensemble", "--steps", "3", "--no-by-source"])
    assert res.exit_code == 0, res.output
    assert isinstance(load_sound_classifier(both), EnsembleJudge)
    # the CNN and ensemble judges score a t2a run end to end
    for judge_path in (out, both):
        res = runner.invoke(app, ["eval", "t2a", "random-t2a", "--data", str(tmp_path / "held.jsonl"), "--classifier", str(judge_path),
                                  "--per-class", "1", "--steps", "1", "--seconds", "0.5"])
        assert res.exit_code == 0, res.output
    for bad, message in ((["--model", "svm"], "--model must be mlp, cnn or ensemble"), (["--model", "cnn", "--augment", "2"], "--augment is for the MLP"),
                         (["--steps", "5"], "--steps is for the CNN judge"),
                         (["--model", "cnn", "--features", "scene"], "--features is for the MLP judge")):
        res = runner.invoke(app, [*base, *bad])
        assert res.exit_code == 2 and f"error: {message}" in res.output, res.output


def test_ensemble_judge_averages_its_members_and_round_trips(corpus, tmp_path):
    from audioguide.evaluation.cnn_judge import CNNConfig, file_images
    from audioguide.evaluation.sound import EnsembleJudge, class_probabilities, clip_rows, ensemble_judge, train_sound_cnn

    _, train, held, mlp = corpus
    rows = clip_rows(read_manifest(train))
    cnn = train_sound_cnn(rows, seed=0, config=CNNConfig(**TINY_CNN))
    feats, images = mlp.file_features([r.audio for r in rows]), file_images([r.audio for r in rows])
    judge = ensemble_judge(mlp, cnn, feats, images, [r.extra["label"] for r in rows])
    assert judge.labels == mlp.labels and judge.config["train_accuracy"] >= 0.9 and judge.config["train_items"] == 24
    # each member's embedding has root-mean-square size 1 over the training clips
    batch = judge.batch([judge.clip_features(*read_audio(r.audio, SR)) for r in rows])
    emb = judge.embed(batch)
    assert emb.shape == (24, mlp.params["w1"].shape[1] + 16)
    assert emb[:, : mlp.params["w1"].shape[1]].pow(2).sum(-1).mean().sqrt() == pytest.approx(1.0, rel=1e-3)
    assert emb[:, mlp.params["w1"].shape[1]:].pow(2).sum(-1).mean().sqrt() == pytest.approx(1.0, rel=1e-3)
    # the ensemble's probability is the members' mean: sigmoid for the multi-label CNN, softmax for the MLP
    expected = (torch.softmax(mlp.logits(batch.parts[0]), -1) + torch.sigmoid(cnn.logits(batch.parts[1]))) / 2
    assert not mlp.config["multi_label"] and torch.allclose(judge.probabilities(batch), expected, atol=1e-6)
    assert torch.allclose(class_probabilities(cnn, batch.parts[1]), torch.sigmoid(cnn.logits(batch.parts[1])))
    assert held_out_accuracy(judge, read_manifest(held)).overall >= 0.9
    loaded = load_sound_classifier(judge.save(tmp_path / "both.safetensors"))
    assert isinstance(loaded, EnsembleJudge) and loaded.scales == judge.scales
    assert torch.allclose(loaded.probabilities(batch), judge.probabilities(batch)) and torch.allclose(loaded.embed(batch), emb)
    # one member of an ensemble alone; a member of anything else is a one-line error
    alone = load_sound_classifier(tmp_path / "both.safetensors", member="cnn")
    assert torch.allclose(alone.logits(batch.parts[1]), cnn.logits(batch.parts[1]))
    assert torch.allclose(load_sound_classifier(tmp_path / "both.safetensors", member="mlp").logits(batch.parts[0]), mlp.logits(batch.parts[0]))
    with pytest.raises(AudioguideError, match="not an ensemble"):
        load_sound_classifier(mlp.save(tmp_path / "mlp.safetensors"), member="mlp")
    with pytest.raises(AudioguideError, match="member 'svm'"):
        load_sound_classifier(tmp_path / "both.safetensors", member="svm")
    with pytest.raises(AudioguideError, match="same classes"):
        EnsembleJudge(ClipClassifier(("a", "b"), mlp.mean, mlp.std, mlp.params, {}), cnn)
