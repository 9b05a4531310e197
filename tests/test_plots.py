"""Pictures of evaluation reports (`audioguide eval tts|t2a --plots DIR`): the curves' data from hand-made
reports, the spectrogram's axes, and both commands end to end on tiny random recipes (a fake ASR judge,
a sound judge trained on synthetic clips in a second or two)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from audioguide.cli import app
from audioguide.evaluation import plots, tts
from audioguide.evaluation.sound import REAL_LABEL as REAL_AUDIO
from audioguide.evaluation.sound import SettingResult as SoundResult
from audioguide.evaluation.sound import T2AReport, train_sound_classifier
from audioguide.evaluation.sound import Item as SoundItem
from audioguide.evaluation.tts import DEFAULT_LABEL, NO_GUIDANCE_LABEL, REAL_LABEL, Item, Sample, SettingResult, TTSReport
from audioguide.manifest import read_manifest
from tests.conftest import TINY_TTS
from tests.test_eval_sound import sound_manifest
from tests.test_eval_tts import speech_splits

runner = CliRunner()


def png_shape(path) -> tuple[int, ...]:
    """Read a PNG back (matplotlib's reader): its pixel array's shape."""
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return imread(path).shape


def assert_pictures(paths) -> None:
    for path in paths:
        shape = png_shape(path)
        assert len(shape) == 3 and shape[0] > 100 and shape[1] > 100, (path, shape)


# -- the curves' data ---------------------------------------------------------------------------


def tts_result(label: str, scales: dict, heard: dict[str, str], voice_hits: int | None = None) -> SettingResult:
    """Two rows per split ('hello world', 2 words each); ``heard`` maps a split to what the judge heard."""
    items = tuple(Item(split, f"{split}{i}", "ava", "hello world", heard[split],
                       None if voice_hits is None else ("ava" if i < voice_hits else "bob"), 1.0, 0.1)
                  for split in ("held_out", "sus") for i in range(2))
    return SettingResult(label, scales, items)


def test_tts_curves_have_one_point_per_scale_on_the_line():
    ok, half = {"held_out": "hello world", "sus": "hello world"}, {"held_out": "hello", "sus": "hello world"}
    report = TTSReport("tiny", ("held_out", "sus"), (
        tts_result(DEFAULT_LABEL, {"text": 3.0, "speaker": 2.0}, ok, 2),
        tts_result(NO_GUIDANCE_LABEL, {"text": 1.0, "speaker": 1.0}, half, 0),  # speaker at 1: on neither line
        tts_result("text=1", {"text": 1.0, "speaker": 2.0}, half, 1),
        tts_result("text=1.5", {"text": 1.5, "speaker": 2.0}, {"held_out": "world", "sus": "hello"}, 1),
        tts_result("speaker=3", {"text": 3.0, "speaker": 3.0}, ok, 2),
    ), DEFAULT_LABEL, tts_result(REAL_LABEL, {}, ok, 2))
    assert plots.swept_conditions(report) == ["text", "speaker"]
    text, speaker = plots.tts_curves(report)
    assert text.xlabel == "text guidance scale" and [p.ylabel for p in text.panels] == ["WER (%)", "speaker accuracy (%)"]
    held, sus = text.panels[0].lines
    assert (held.label, held.x, held.y, held.default) == ("held_out", (1.0, 1.5, 3.0), (50.0, 50.0, 0.0), 2)
    assert sus.x == (1.0, 1.5, 3.0) and sus.y == (0.0, 50.0, 0.0)
    assert text.panels[0].references == (("real recordings, held_out", 0.0), ("real recordings, sus", 0.0))
    assert text.panels[1].lines[0].y == (50.0, 50.0, 100.0) and text.panels[1].references == (("real recordings", 100.0),)
    assert speaker.panels[0].lines[0].x == (2.0, 3.0) and speaker.panels[0].lines[0].default == 0
    assert [c.xlabel for c in plots.tts_curves(report, ["speaker"])] == ["speaker guidance scale"]
    # a single-condition recipe: no guidance is the scale-1 point; unjudged WER and no voices draw nothing
    one = TTSReport("one", ("held_out",), (
        tts_result(DEFAULT_LABEL, {"text": 3.0}, ok), tts_result(NO_GUIDANCE_LABEL, {"text": 1.0}, half),
        tts_result("text=2", {"text": 2.0}, ok)))
    (curves,) = plots.tts_curves(one)
    assert [p.ylabel for p in curves.panels] == ["WER (%)"] and curves.panels[0].lines[0].x == (1.0, 2.0, 3.0)
    assert plots.tts_curves(one, []) == []  # nothing swept: no curve
    unjudged = TTSReport("one", ("held_out",), tuple(
        SettingResult(r.label, r.scales, tuple(Item(i.split, i.row_id, None, i.reference, None, None, 1.0, 0.1) for i in r.items))
        for r in one.results))
    assert plots.tts_curves(unjudged) == []
    with pytest.raises(Exception, match="cannot draw 'style'"):
        plots.tts_curves(one, ["style"])


def t2a_result(label: str, cfg: float, rescale: float, steps: int, hits: int, fd: float) -> SoundResult:
    items = tuple(SoundItem(f"r{i}", "tone", "music", "tone" if i < hits else "noise", i, 1.0, 0.1) for i in range(4))
    return SoundResult(label, {"caption": cfg}, rescale, steps, items, fd)


def test_t2a_curves_one_line_per_rescale_and_steps():
    # the settings of random-t2a (caption 5, rescale 0.75, 10 steps) with --cfg 1,3,5 --rescale 0,0.75 --steps 2
    results = (
        t2a_result(DEFAULT_LABEL, 5, 0.75, 10, 4, 1.0),
        t2a_result("cfg=1 rescale=0 steps=2", 1, 0.0, 2, 1, 9.0),  # also cfg=1 rescale=0.75 (a no-op there)
        t2a_result("cfg=3 rescale=0 steps=2", 3, 0.0, 2, 2, 5.0),
        t2a_result("cfg=3 rescale=0.75 steps=2", 3, 0.75, 2, 3, 4.0),
        t2a_result("cfg=5 rescale=0 steps=2", 5, 0.0, 2, 3, 3.0),
        t2a_result("cfg=5 rescale=0.75 steps=2", 5, 0.75, 2, 4, 2.0),
    )
    real = SoundResult(REAL_AUDIO, {}, None, None, results[0].items, math.nan)
    report = T2AReport("random-t2a", results, real, DEFAULT_LABEL, {"classes": 4})
    curves = plots.t2a_curves(report)
    adherence, fd = curves.panels
    assert [line.label for line in adherence.lines] == ["rescale 0, 2 steps", "rescale 0.75, 2 steps", "rescale 0.75, 10 steps"]
    r0, r75, default = adherence.lines
    assert r0.x == r75.x == (1.0, 3.0, 5.0)  # one point per swept value on each line
    assert r0.y == (25.0, 50.0, 75.0) and r75.y == (25.0, 75.0, 100.0) and r0.default is None
    assert (default.x, default.y, default.default) == ((5.0,), (100.0,), 0)
    assert adherence.references == ((REAL_AUDIO, 100.0), ("chance (1/4)", 25.0)) and adherence.ylim == (0.0, 100.0)
    assert [line.y for line in fd.lines] == [(9.0, 5.0, 3.0), (9.0, 4.0, 2.0), (1.0,)]
    # no real audio: no FD panel, no reference; one CFG scale: nothing to draw against
    no_fd = T2AReport("x", tuple(SoundResult(r.label, r.scales, r.rescale, r.steps, r.items, math.nan) for r in results))
    assert [p.ylabel for p in plots.t2a_curves(no_fd).panels] == ["prompt adherence, top-1 (%)"]
    assert plots.t2a_curves(T2AReport("x", results[:1] + results[4:5])) is None
    # settings whose conditions have different scales have no single CFG value
    mixed = SoundResult("mixed", {"caption": 3.0, "other": 2.0}, 0.0, 2, results[0].items, 1.0)
    assert plots.uniform_cfg(mixed.scales) is None
    assert plots.t2a_curves(T2AReport("x", (*results[1:3], mixed))).panels[0].lines[0].x == (1.0, 3.0)


# -- drawing ------------------------------------------------------------------------------------


def test_spectrogram_axes_are_seconds_and_hertz(tmp_path):
    pytest.importorskip("matplotlib")
    sr = 16000
    t = np.arange(sr) / sr
    tone = (0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    mel, hop_s, fmax = plots.spectrogram(tone, sr)
    assert mel.shape[0] == plots.N_MELS and fmax == sr / 2
    assert mel.shape[1] * hop_s == pytest.approx(1.0, abs=2 * hop_s)  # frames x hop spans the clip
    peak = plots.mel_centres(fmax)[mel.mean(1).argmax()]
    assert 900 < peak < 1100  # the bin labelled ~1 kHz holds the 1 kHz tone
    assert plots.spectrogram(tone[:50], sr)[0].shape[0] == plots.N_MELS  # shorter than one window
    samples = [Sample("x", "a", "a $tone$ with {braces}", tone, sr), Sample("x", "b", "short", tone[: sr // 4], sr)]
    path = plots.draw_spectrograms(samples, "title_with_$", tmp_path / "s.png")
    assert_pictures([path])
    assert not list(tmp_path.glob(".*.partial"))  # written atomically


def test_import_has_no_side_effects():
    code = ("import sys, audioguide.evaluation.plots, audioguide.cli; "
            "assert not [m for m in sys.modules if m.startswith('matplotlib')], 'matplotlib imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# -- the commands -------------------------------------------------------------------------------


class Heard:
    """A stand-in for Whisper: hears the first word of every sentence right, nothing else."""

    def __init__(self, judge):  # replaces tts._judge(judge)
        pass

    def __call__(self, wav, sample_rate):
        return "hello"


def record_curves(monkeypatch) -> list:
    drawn = []
    original = plots.draw_curves

    def draw(curves, path):
        drawn.append(curves)
        return original(curves, path)

    monkeypatch.setattr(plots, "draw_curves", draw)
    return drawn


def test_eval_tts_plots(tmp_path, write_recipe, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.setattr(tts, "_judge", Heard)
    drawn = record_curves(monkeypatch)
    speech_splits(tmp_path)
    recipe = write_recipe(TINY_TTS)  # text = 3
    out = tmp_path / "pictures"
    res = runner.invoke(app, ["eval", "tts", str(recipe), "--data", str(tmp_path / "held_out.jsonl"), "--data",
                              str(tmp_path / "sus.jsonl"), "--judge", "fake", "--per-voice", "1", "--steps", "2",
                              "--sweep", "text=1,2", "--plots", str(out)])
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["spectrograms-01-recipe_default.png", "spectrograms-02-no_guidance.png", "spectrograms-03-text=2.png",
                     "spectrograms-04-real_recordings.png", "wer-vs-text.png"]  # text=1 is no guidance
    assert all(f"wrote {out / name}" in res.output for name in names)
    assert_pictures(out.iterdir())
    (curves,) = drawn
    assert [line.label for line in curves.panels[0].lines] == ["held_out", "sus"]
    assert all(line.x == (1.0, 2.0, 3.0) for line in curves.panels[0].lines)  # every swept scale and the default
    assert curves.panels[0].lines[0].y == pytest.approx((100 * 3 / 5,) * 3)  # 'hello': 3 of 5 words missed
    # no sweep: spectrograms only
    res = runner.invoke(app, ["eval", "tts", str(recipe), "--data", str(tmp_path / "held_out.jsonl"), "--judge", "",
                              "--per-voice", "1", "--steps", "2", "--no-real", "--plots", str(tmp_path / "plain")])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == ["spectrograms-01-recipe_default.png",
                                                                     "spectrograms-02-no_guidance.png"]


@pytest.fixture(scope="module")
def sound_judge(tmp_path_factory):
    root = tmp_path_factory.mktemp("plots-sound")
    train, held = sound_manifest(root, "train", 4, seed=1), sound_manifest(root, "held_out", 1, seed=2)
    return held, train_sound_classifier(read_manifest(train), seed=0).save(root / "sounds.safetensors")


def test_eval_t2a_plots(tmp_path, sound_judge, monkeypatch):
    pytest.importorskip("matplotlib")
    drawn = record_curves(monkeypatch)
    held, judge = sound_judge
    out = tmp_path / "pictures"
    res = runner.invoke(app, ["eval", "t2a", "random-t2a", "--data", str(held), "--classifier", str(judge), "--per-class", "1",
                              "--cfg", "1,5", "--rescale", "0,0.75", "--steps", "2", "--seconds", "0.5", "--plots", str(out)])
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["adherence-fd-vs-cfg.png", "spectrograms-01-recipe_default.png",
                     "spectrograms-02-cfg=1_rescale=0_steps=2.png", "spectrograms-03-cfg=5_rescale=0_steps=2.png",
                     "spectrograms-04-cfg=5_rescale=0.75_steps=2.png", "spectrograms-05-real_audio.png"]
    assert_pictures(out.iterdir())
    (curves,) = drawn
    adherence, fd = curves.panels
    swept = [line for line in adherence.lines if "2 steps" in line.label]
    assert [line.label for line in swept] == ["rescale 0, 2 steps", "rescale 0.75, 2 steps"]
    assert all(line.x == (1.0, 5.0) for line in swept)  # one point per swept --cfg value
    assert [line.x for line in adherence.lines if "10 steps" in line.label] == [(5.0,)]  # the recipe's own setting
    assert all(math.isfinite(y) for line in fd.lines for y in line.y)


def test_plots_without_matplotlib_is_one_line_before_any_work(tmp_path, sound_judge, monkeypatch):
    import audioguide.cli

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError

    def no_work(*args, **kwargs):
        raise AssertionError("loaded a pipeline")

    monkeypatch.setattr(audioguide.cli, "_load", no_work)
    held, judge = sound_judge
    for args in (["tts", "random-tts", "--data", str(tmp_path / "missing.jsonl")],
                 ["t2a", "random-t2a", "--data", str(held), "--classifier", str(judge)]):
        res = runner.invoke(app, ["eval", *args, "--plots", str(tmp_path / "pictures")])
        assert res.exit_code == 2, res.output
        errors = [line for line in res.output.splitlines() if line.strip()]
        assert len(errors) == 1 and errors[0].startswith("error:") and 'pip install "audioguide[plots]"' in errors[0], res.output
    assert not (tmp_path / "pictures").exists()
