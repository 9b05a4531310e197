"""Speech evaluation: the speaker-ID judge, guidance sweeps, WER / speaker accuracy / RTF per setting,
and PESQ / STOI in the codec report. Everything is synthetic and fast; no Whisper."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from audioguide import Pipeline
from audioguide.audio import write_wav
from audioguide.cli import app
from audioguide.core import AudioguideError
from audioguide.evaluation.speaker import (
    SpeakerClassifier,
    clip_features,
    fit,
    row_features,
    train_speaker_classifier,
)
from audioguide.evaluation.tts import (
    DEFAULT_LABEL,
    NO_GUIDANCE_LABEL,
    REAL_LABEL,
    evaluate_tts,
    parse_sweep,
    read_splits,
    sweep_settings,
)
from audioguide.manifest import read_manifest, write_manifest
from tests.conftest import TINY_TTS

runner = CliRunner()
SR = 16000
VOICES = {"low": (110.0, 500.0), "mid": (180.0, 1200.0), "high": (260.0, 2500.0)}  # f0, spectral peak


def synthetic_voice(voice: str, rng: np.random.Generator, seconds: float | None = None, sr: int = SR) -> np.ndarray:
    """A 'voice': a harmonic source with vibrato at the voice's pitch, shaped by one resonance,
    with syllable-like loudness; level, length and pitch vary from clip to clip."""
    f0, peak = VOICES[voice]
    n = int(sr * (seconds or rng.uniform(0.5, 1.0)))
    t = np.arange(n) / sr
    freq = f0 * rng.uniform(0.93, 1.07) * (1 + 0.03 * np.sin(2 * np.pi * rng.uniform(3, 6) * t))
    phase = 2 * np.pi * np.cumsum(freq) / sr
    wav = np.zeros(n)
    for k in range(1, int(4000 / f0)):
        wav += np.exp(-(((k * f0) - peak) / 600.0) ** 2) * np.sin(k * phase) / k**0.5
    envelope = (0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(2, 5) * t + rng.uniform(0, 6))) * np.hanning(n) ** 0.2
    wav = wav * envelope + 0.003 * rng.standard_normal(n)
    return (rng.uniform(0.1, 0.4) * wav / np.abs(wav).max()).astype(np.float32)


def voice_manifest(root, name: str, per_voice: int, seed: int, sr: int = SR):
    rng = np.random.default_rng(seed)
    rows = []
    for voice in VOICES:
        for i in range(per_voice):
            rid = f"{name}-{voice}-{i}"
            write_wav(root / f"{rid}.wav", synthetic_voice(voice, rng, sr=sr), sr)
            rows.append({"id": rid, "audio": f"{rid}.wav", "text": "hello world", "speaker": voice})
    path = root / f"{name}.jsonl"
    write_manifest(path, rows)
    return path


# -- speaker classifier -------------------------------------------------------------------------


def test_features_ignore_level_and_silence():
    rng = np.random.default_rng(0)
    wav = synthetic_voice("mid", rng, seconds=0.6)
    a = clip_features(wav, SR)
    assert a.shape == (256,) and a.dtype == np.float32
    assert np.abs(clip_features(0.25 * wav, SR) - a).max() < 1e-4  # the level does not matter
    padded = np.concatenate([np.zeros(SR // 2, np.float32), 0.25 * wav, np.zeros(SR // 3, np.float32)])
    other = clip_features(synthetic_voice("low", rng, seconds=0.6), SR)
    assert np.linalg.norm(clip_features(padded, SR) - a) < 0.2 * np.linalg.norm(other - a)  # nor does silence, much
    assert np.all(np.isfinite(clip_features(np.zeros(100, np.float32), SR)))  # silence, shorter than a window


def test_speaker_classifier_separates_voices_and_round_trips(tmp_path):
    train = read_manifest(voice_manifest(tmp_path, "train", 10, seed=1))
    clf = train_speaker_classifier(train, per_voice=8, seed=0)
    assert clf.voices == ("high", "low", "mid") and clf.config["train_items"] == 24
    rng = np.random.default_rng(2)
    truth = [v for v in VOICES for _ in range(5)]
    clips = [synthetic_voice(v, rng) for v in truth]
    assert clf.accuracy(clips, SR, truth) >= 0.9
    # another sample rate (resampled to 16 kHz inside)
    clips8 = [synthetic_voice(v, rng, sr=8000) for v in truth]
    assert clf.accuracy(clips8, 8000, truth) >= 0.9
    # deterministic from the seed, and identical after save / load
    feats, labels = row_features(train, per_voice=8)
    again, other = fit(feats, labels, seed=0), fit(feats, labels, seed=1)
    assert all(torch.equal(again.params[k], clf.params[k]) for k in clf.params)
    assert not torch.equal(other.params["w1"], clf.params["w1"])
    path = clf.save(tmp_path / "clf.safetensors")
    loaded = SpeakerClassifier.load(path)
    assert loaded.voices == clf.voices and loaded.config["hidden"] == clf.config["hidden"]
    assert loaded.predict(clips, SR) == clf.predict(clips, SR)
    feats = torch.from_numpy(np.stack([clip_features(c, SR) for c in clips]))
    assert torch.equal(loaded.logits(feats), clf.logits(feats))
    with pytest.raises(AudioguideError, match="at least two voices"):
        train_speaker_classifier([r for r in train if r.speaker == "low"], per_voice=3)


def test_eval_speakers_cli(tmp_path):
    train = voice_manifest(tmp_path, "train", 8, seed=3)
    held = voice_manifest(tmp_path, "held", 4, seed=4)
    out = tmp_path / "clf.safetensors"
    res = runner.invoke(app, ["eval", "speakers", "--data", str(train), "--held-out", str(held), "-o", str(out), "--per-voice", "6"])
    assert res.exit_code == 0, res.output
    assert "held-out accuracy on real audio" in res.output and out.exists()
    assert SpeakerClassifier.load(out).config["train_items"] == 18
    res = runner.invoke(app, ["eval", "speakers", "--data", str(train), "--held-out", str(held), "-o", str(tmp_path / "c.pt")])
    assert res.exit_code == 2 and "must end in .safetensors" in res.output
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"nope")
    with pytest.raises(AudioguideError):
        SpeakerClassifier.load(bad)


# -- guidance sweeps ----------------------------------------------------------------------------


def test_sweep_settings():
    recipe = (("text", 2.0), ("speaker", 1.5))
    settings = sweep_settings(recipe, parse_sweep(["text=1,1.5,2,3", "speaker=1,2"]))
    assert settings == [
        (DEFAULT_LABEL, {"text": 2.0, "speaker": 1.5}),
        (NO_GUIDANCE_LABEL, {"text": 1.0, "speaker": 1.0}),
        ("text=1", {"text": 1.0, "speaker": 1.5}),
        ("text=1.5", {"text": 1.5, "speaker": 1.5}),
        # text=2 is the recipe default: dropped as a duplicate
        ("text=3", {"text": 3.0, "speaker": 1.5}),
        ("speaker=1", {"text": 2.0, "speaker": 1.0}),
        ("speaker=2", {"text": 2.0, "speaker": 2.0}),
    ]
    assert sweep_settings({"text": 2.0}) == [(DEFAULT_LABEL, {"text": 2.0}), (NO_GUIDANCE_LABEL, {"text": 1.0})]
    assert sweep_settings({"text": 2.0}, baseline=False) == [(DEFAULT_LABEL, {"text": 2.0})]
    # without the baseline, an explicit sweep to 1 is kept under its own label
    assert [label for label, _ in sweep_settings({"text": 2.0}, {"text": [1.0]}, baseline=False)] == [DEFAULT_LABEL, "text=1"]
    with pytest.raises(AudioguideError, match="cannot sweep 'style'"):
        sweep_settings(recipe, {"style": [2.0]})
    for bad in ["text", "text=", "text=a,b", "=2"]:
        with pytest.raises(AudioguideError, match="--sweep expects NAME=W1,W2"):
            parse_sweep([bad])
    with pytest.raises(AudioguideError, match=">= 0"):
        parse_sweep(["text=-1"])


# -- evaluate_tts -------------------------------------------------------------------------------

SPEAKER = TINY_TTS.replace(
    "[model]", '[conditioners.speaker]\ntype = "speaker-id"\nvoices = ["ava", "bob"]\ndim = 8\n[model]'
).replace("scales = { text = 3.0 }", "scales = { text = 3.0, speaker = 2.0 }")


class FakeJudge:
    """Always hears "hello world"; counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, wav, sample_rate):
        assert wav.dtype == np.float32 and sample_rate > 0
        self.calls += 1
        return "hello world"


class FakeClassifier:
    voices = ("ava", "bob")

    def predict(self, wavs, sample_rate):
        return ["ava"] * len(wavs)


def speech_splits(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        write_wav(tmp_path / f"{name}.wav", 0.1 * rng.standard_normal(4000), 8000)
    write_manifest(tmp_path / "held_out.jsonl", [
        {"id": "a", "audio": "a.wav", "text": "Hello, world!", "speaker": "ava"},  # 0 errors / 2 words
        {"id": "b", "audio": "b.wav", "text": "hello there friend", "speaker": "bob"},  # 2 errors / 3 words
    ])
    write_manifest(tmp_path / "sus.jsonl", [
        {"id": "c", "audio": "c.wav", "text": "green ideas sleep", "speaker": "bob"},  # 3 errors / 3 words
        {"id": "d", "audio": "c.wav", "text": "one more row", "speaker": "bob"},  # beyond per_voice=1
    ])
    return read_splits([tmp_path / "held_out.jsonl", tmp_path / "sus.jsonl"])


def test_evaluate_tts_counts_words_voices_and_time(tmp_path, write_recipe):
    pipe = Pipeline.from_recipe(write_recipe(SPEAKER))
    splits = speech_splits(tmp_path)
    settings = sweep_settings(pipe.recipe.guidance.scales, {"text": [1.5]})
    judge = FakeJudge()
    report = evaluate_tts(pipe, splits, settings, judge, FakeClassifier(), seed=0, per_voice=1)
    assert report.splits == ("held_out", "sus") and [r.label for r in report.results] == [DEFAULT_LABEL, NO_GUIDANCE_LABEL, "text=1.5"]
    assert judge.calls == 3 * 4  # 3 rows x (3 settings + the real recordings)
    for r in [*report.results, report.real]:
        assert len(r.items) == 3
        assert r.wer("held_out") == pytest.approx(2 / 5) and r.wer("sus") == pytest.approx(1.0)
        assert r.wer() == pytest.approx(5 / 8)
        assert r.speaker_accuracy() == pytest.approx(1 / 3)
        assert r.wer(voice="bob") == pytest.approx(5 / 6) and r.speaker_accuracy(voice="ava") == 1.0
    assert all(r.rtf > 0 for r in report.results) and math.isnan(report.real.rtf)
    # paired samples: the same row gets the same seed (and so the same audio) under equal scales
    same = evaluate_tts(pipe, splits, settings[:1], FakeJudge(), None, seed=0, per_voice=1, real=False)
    assert same.real is None and math.isnan(same.results[0].speaker_accuracy())
    assert [it.seconds for it in same.results[0].items] == [it.seconds for it in report.results[0].items]
    text = report.markdown("tiny")
    assert "| setting | scales | WER held_out | WER sus | speaker acc | RTF |" in text
    assert f"| {DEFAULT_LABEL} | text=3 speaker=2 | 40.0 % | 100.0 % | 33.3 % |" in text
    assert f"| {NO_GUIDANCE_LABEL} | text=1 speaker=1 |" in text and f"| {REAL_LABEL} | - |" in text
    assert "| ava | 1 | 0.0 % | - | 100.0 % |" in text and "| bob | 2 | 66.7 % | 100.0 % | 0.0 % |" in text


def test_evaluate_tts_without_a_speaker_condition_and_bad_input(tmp_path, write_recipe):
    pipe = Pipeline.from_recipe("random-tts")
    splits = speech_splits(tmp_path)
    report = evaluate_tts(pipe, splits, sweep_settings(pipe.recipe.guidance.scales), FakeJudge(), FakeClassifier(),
                          per_voice=1, steps=2)
    assert report.results[0].wer("held_out") == pytest.approx(2 / 5)
    assert math.isnan(report.results[0].speaker_accuracy())  # no voice was requested
    assert report.real.speaker_accuracy() == pytest.approx(1 / 3)  # the recordings do have voices
    assert "no speaker condition" in report.markdown()
    speaker_pipe = Pipeline.from_recipe(write_recipe(SPEAKER))
    with pytest.raises(AudioguideError, match="does not know voice"):
        class Narrow(FakeClassifier):
            voices = ("ava",)
        evaluate_tts(speaker_pipe, splits, [("x", {"text": 2.0})], FakeJudge(), Narrow())
    with pytest.raises(AudioguideError, match="unknown voice 'eve'"):
        write_manifest(tmp_path / "eve.jsonl", [{"id": "e", "text": "Hi.", "speaker": "eve"}])
        evaluate_tts(speaker_pipe, read_splits([tmp_path / "eve.jsonl"]), [("x", {})], FakeJudge())
    with pytest.raises(AudioguideError, match="must be a finite number >= 0"):
        evaluate_tts(speaker_pipe, splits, [("x", {"text": -1.0})], FakeJudge())
    with pytest.raises(AudioguideError, match="two manifests named 'held_out'"):
        read_splits([tmp_path / "held_out.jsonl", tmp_path / "held_out.jsonl"])


def test_eval_tts_cli(tmp_path, write_recipe):
    recipe = write_recipe(SPEAKER)
    speech_splits(tmp_path)
    held, sus = tmp_path / "held_out.jsonl", tmp_path / "sus.jsonl"
    out = tmp_path / "report.md"
    res = runner.invoke(app, ["eval", "tts", str(recipe), "--data", str(held), "--data", str(sus), "--judge", "",
                              "--per-voice", "1", "--sweep", "text=1,2", "--sweep", "speaker=3", "--no-real", "--report", str(out),
                              "--transcripts", str(tmp_path / "heard.jsonl")])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    labels = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ") and "|---" not in line]
    assert labels[:7] == ["setting", DEFAULT_LABEL, NO_GUIDANCE_LABEL, "text=1", "text=2", "speaker=3", "voice"]
    heard = [json.loads(line) for line in (tmp_path / "heard.jsonl").read_text().splitlines()]
    per_setting = {label: [r for r in heard if r["setting"] == label] for label in labels[1:6]}
    n = len(per_setting[DEFAULT_LABEL])
    assert n >= 2 and all(len(rs) == n for rs in per_setting.values()) and len(heard) == 5 * n
    assert per_setting["speaker=3"][0]["scales"]["speaker"] == 3.0
    assert {r["split"] for r in heard} == {"held_out", "sus"} and all(r["transcript"] is None for r in heard)  # --judge ''
    assert not list(tmp_path.glob(".report.md.*"))  # written atomically
    for args, message in [
        (["--sweep", "text"], "--sweep expects NAME=W1,W2"),
        (["--sweep", "style=2"], "cannot sweep 'style'"),
        (["--classifier", str(tmp_path / "missing.safetensors")], "not found"),
        (["--steps", "0"], ""),
    ]:
        res = runner.invoke(app, ["eval", "tts", str(recipe), "--data", str(held), "--judge", "", *args])
        assert res.exit_code == 2, res.output
        errors = [line for line in res.output.splitlines() if line.startswith("error:")]
        assert not message or (len(errors) == 1 and message in errors[0]), res.output
    res = runner.invoke(app, ["eval", "tts", "random-t2a", "--data", str(held), "--judge", ""])
    assert res.exit_code == 2 and "is a t2a recipe" in res.output


# -- PESQ and STOI ------------------------------------------------------------------------------


def test_pesq_and_stoi_rank_clean_above_noisy():
    from audioguide.evaluation.codec import pesq_wb, stoi

    rng = np.random.default_rng(0)
    for sr in (16000, 8000, 24000):
        clean = synthetic_voice("mid", rng, seconds=1.0, sr=sr)
        noisy = clean + 0.05 * rng.standard_normal(len(clean)).astype(np.float32)
        assert pesq_wb(clean, clean, sr) > 4.5 and stoi(clean, clean, sr) > 0.99
        assert pesq_wb(clean, noisy, sr) < 2.5 and stoi(clean, noisy, sr) < 0.95
    assert math.isnan(pesq_wb(np.zeros(8000, np.float32), np.zeros(8000, np.float32), 16000))  # no speech


def test_codec_report_has_pesq_and_stoi(tmp_path):
    voice_manifest(tmp_path, "real", 1, seed=5, sr=8000)
    recipe = tmp_path / "frames.toml"
    recipe.write_text('name = "frames"\ntask = "tts"\n[representation]\ntype = "frames"\nsample_rate = 8000\nhop = 64\n')
    res = runner.invoke(app, ["eval", "codec", str(recipe), "--data", str(tmp_path / "real.jsonl"), "--judge", "",
                              "--report", str(tmp_path / "r.md")])
    assert res.exit_code == 0, res.output
    lines = (tmp_path / "r.md").read_text().splitlines()
    header = [c.strip() for c in lines[2].split("|")]
    rows = {c[1].strip(): c for c in (line.split("|") for line in lines if line.startswith("| ") and "|---" not in line)}
    assert header[5:7] == ["PESQ-WB", "STOI"] and set(rows) >= {"low", "mid", "high", "all"}
    assert float(rows["all"][5]) > 4.5 and float(rows["all"][6]) > 0.99  # the identity representation
    res = runner.invoke(app, ["eval", "codec", str(recipe), "--data", str(tmp_path / "real.jsonl"), "--judge", "", "--no-pesq"])
    assert res.exit_code == 0 and "| all | 3 | 0.000 | 0.000 | - | - |" in res.output


@pytest.mark.slow
def test_whisper_judge_hears_real_speech_not_random_weights(tmp_path):
    """End to end with the real judge: teacher recordings are intelligible, a random-weight recipe is not."""
    pytest.importorskip("faster_whisper")
    hibari = pytest.importorskip("hibari")
    tts = hibari.Hibari(threads=1)
    texts = ["Please call Stella and ask her to bring these things from the store.", "The weather is nice today."]
    rows = []
    for i, text in enumerate(texts):
        write_wav(tmp_path / f"r{i}.wav", np.asarray(tts(text), dtype=np.float32), tts.sample_rate)
        rows.append({"id": f"r{i}", "audio": f"r{i}.wav", "text": text, "speaker": "hibari-heart"})
    write_manifest(tmp_path / "held_out.jsonl", rows)
    pipe = Pipeline.from_recipe("random-tts")
    report = evaluate_tts(pipe, read_splits([tmp_path / "held_out.jsonl"]), sweep_settings(pipe.recipe.guidance.scales)[:1],
                          "tiny.en", steps=2)
    assert report.real.wer() <= 0.15 and report.results[0].wer() >= 0.8
