"""Description following (audioguide.evaluation.descriptions) and the pace-varied speech corpus.

The evaluator is checked against stand-in speakers whose pitch, pace and gender are known: one that
obeys every description, one that ignores them, and one whose pace words change the voice (the
entanglement issue 25 describes)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from audioguide.cli import app
from audioguide.core import AudioguideError
from audioguide.evaluation.descriptions import (
    DEEP_HZ,
    HIGH_HZ,
    PAIRS,
    Ask,
    changed,
    check_pairs,
    combined,
    evaluate_descriptions,
    wilson,
)

SR = 16000
GENDERS = {"man": "male", "woman": "female"}


def spoken(f0: float, seconds: float) -> np.ndarray:
    """A voiced stand-in for speech: harmonics at f0 with syllable-like loudness."""
    t = np.arange(int(SR * seconds)) / SR
    wav = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6))
    return (0.2 * wav * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)) / np.abs(wav).max()).astype(np.float32)


class Audio:
    def __init__(self, wav):
        self.wav, self.sample_rate = wav, SR

    def __getitem__(self, i):
        return self.wav


class Pipe:
    """A pipeline-shaped speaker: ``voice(description) -> (f0, seconds per phoneme symbol)``."""

    task = "tts"

    def __init__(self, voice):
        self.voice = voice
        self.recipe = SimpleNamespace(name="stand-in")
        self.model = SimpleNamespace(conditioners={"text": None, "style": None})
        self.calls = []

    def check_texts(self, texts, inputs=None):
        pass

    def __call__(self, texts, seed=0, inputs=None, scales=None, speed=None):
        from audioguide.conditioners.phonemes import phonemize

        desc = (inputs or {}).get("style", "")
        self.calls.append((desc, seed))
        f0, per_phone = self.voice(desc)
        per_phone /= speed or 1.0
        n = sum(ch.isalpha() for ch in phonemize(texts[0]) if ch not in "ˈˌː")
        return Audio(spoken(f0, n * per_phone))


def obedient(desc: str):
    male = any(w in desc for w in ("male voice", "a man", "male speaker")) and "female" not in desc
    f0 = 95.0 if "deep" in desc else 220.0 if "high" in desc else 110.0 if male else 190.0
    pace = 0.12 if any(w in desc for w in ("slow", "slowly")) else 0.06 if any(w in desc for w in ("quick", "fast")) else 0.085
    return f0, pace


def entangled(desc: str):
    """Slow always means the one slow voice there is: high and female."""
    if "slow" in desc:
        return 230.0, 0.12
    return obedient(desc)


class Judge:
    """A speaker judge that names a voice by the clip's pitch."""

    voices = ("man", "woman")

    def predict(self, wavs, sr):
        from audioguide.corpus.speech import voice_measures

        return ["man" if voice_measures(w, sr, "a")["f0_hz"] < 150 else "woman" for w in wavs]


TEXTS = ["The cat sat on the warm mat.", "Seven boats drift past the mill."]


def test_pairs_are_well_formed_and_the_checks_reject_bad_ones():
    check_pairs(PAIRS)
    assert any(not combined(a, b) for a, b in PAIRS) and any(combined(a, b) for a, b in PAIRS)
    assert {k for a, b in PAIRS for k in changed(a, b)} == {"pitch", "pace", "gender"}
    with pytest.raises(AudioguideError, match="change no attribute"):
        check_pairs([(Ask("a deep voice", pitch="deep"), Ask("a deep man", pitch="deep"))])
    with pytest.raises(AudioguideError, match="pitch must go deep -> high"):
        check_pairs([(Ask("a high voice", pitch="high"), Ask("a deep voice", pitch="deep"))])


def test_wilson_interval():
    lo, hi = wilson(8, 8)
    assert hi == 1.0 and 0.6 < lo < 0.7  # 8/8: [0.68, 1]
    lo, hi = wilson(50, 100)
    assert lo < 0.5 < hi and abs((lo + hi) / 2 - 0.5) < 1e-9
    assert all(np.isnan(wilson(0, 0)))


def test_an_obedient_speaker_moves_every_attribute_and_lands_in_bounds():
    pipe = Pipe(obedient)
    report = evaluate_descriptions(pipe, TEXTS, Judge(), GENDERS, seed=3)
    summary = report.summary()
    assert all(k == n and n > 0 for k, n in summary.values()), summary
    # the same seed for a text under every description; a shared description is spoken once
    assert {s for _, s in pipe.calls} == {3, 4}
    descriptions = {d for d, _ in pipe.calls if d}
    assert len(pipe.calls) == (len(descriptions) + 3) * len(TEXTS)  # and three explicit speeds
    rates = dict(report.speed_rates)
    assert rates[0.75] < rates[1.0] < rates[1.3] and abs(rates[1.3] / rates[1.0] - 1.3) < 0.05
    table = report.markdown()
    assert f"'deep' below {DEEP_HZ:g} Hz | 100.0 %" in table and f"'high' above {HIGH_HZ:g} Hz | 100.0 %" in table


def test_entangled_pace_is_caught_in_combined_pairs_only():
    report = evaluate_descriptions(Pipe(entangled), TEXTS, Judge(), GENDERS)
    summary = report.summary()
    single = summary["single-attribute pairs"]
    assert single[0] == single[1]  # alone, every attribute moves
    k, n = summary["combined pairs"]
    assert k < n
    deep = summary[f"'deep' below {DEEP_HZ:g} Hz"]
    assert deep[0] < deep[1]  # "a deep male voice speaking slowly" came out high
    slow_deep = next(p for p in report.pairs if p.a.text == "a deep voice, talking slowly")
    assert not any(slow_deep.moved("pitch"))


def test_a_speaker_that_ignores_descriptions_moves_nothing():
    report = evaluate_descriptions(Pipe(lambda d: (150.0, 0.08)), TEXTS, Judge(), GENDERS)
    k, n = report.summary()["single-attribute pairs"]
    assert k == 0 and n > 0


def test_without_a_judge_gender_pairs_are_not_scored():
    report = evaluate_descriptions(Pipe(obedient), TEXTS[:1])
    assert not report.measured_gender
    assert all(p.clips_a[0].gender is None for p in report.pairs)
    assert "combined pairs, gender" not in report.summary()
    assert "gender pairs are not scored" in report.markdown()


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(AudioguideError, match="no texts"):
        evaluate_descriptions(Pipe(obedient), ["  "])
    with pytest.raises(AudioguideError, match="no gender known"):
        evaluate_descriptions(Pipe(obedient), TEXTS, Judge(), {"man": "male"})
    pipe = Pipe(obedient)
    pipe.model = SimpleNamespace(conditioners={"text": None, "speaker": None})
    with pytest.raises(AudioguideError, match="no voice description"):
        evaluate_descriptions(pipe, TEXTS)


def test_cli_refuses_a_recipe_without_descriptions(tmp_path, write_recipe):
    from tests.conftest import TINY_TTS

    manifest = tmp_path / "held_out.jsonl"
    manifest.write_text('{"id": "a", "text": "hello there", "speaker": "s0"}\n')
    recipe = write_recipe(TINY_TTS)
    result = CliRunner().invoke(app, ["eval", "descriptions", str(recipe), "-d", str(manifest), "--texts", "1"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith("error:") and "no voice description" in result.output


def test_corpus_at_another_pace_keeps_voices_and_alignment(tmp_path):
    pytest.importorskip("hibari")
    from audioguide.corpus.speech import build_speech_corpus
    from audioguide.manifest import read_manifest

    base = read_manifest(build_speech_corpus(tmp_path / "x1", n_sentences=2, seed=1, n_held_out=1)["train"])
    slow = read_manifest(build_speech_corpus(tmp_path / "slow", n_sentences=2, seed=1, n_held_out=1, speed=0.7)["train"])
    assert [r.text for r in slow] == [r.text for r in base] and {r.speaker for r in slow} == {"hibari-heart"}
    assert all(r.id.endswith("_x0.7") and r.extra["speed"] == 0.7 for r in slow)
    assert all("speed" not in r.extra for r in base)
    for a, b in zip(base, slow):
        assert b.duration > 1.2 * a.duration
        assert b.extra["phones_per_second"] < a.extra["phones_per_second"]
        if "phoneme_samples" in b.extra:  # exact alignment at the new pace (needs the onnx package)
            assert sum(b.extra["phoneme_samples"]) == round(b.duration * 24000)
    with pytest.raises(AudioguideError, match="speed must be in"):
        build_speech_corpus(tmp_path / "bad", n_sentences=1, n_held_out=1, speed=3.0)
