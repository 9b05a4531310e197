"""CLI and batch rendering: valid WAVs, one-line errors with exit code 2, resumable jobs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from audioguide import Pipeline
from audioguide.cli import app
from audioguide.core import AudioguideError
from audioguide.manifest import read_manifest, write_manifest
from audioguide.render import render
from tests.conftest import TINY_TTS

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_tts_writes_a_valid_wav_and_warns_about_random_weights(tmp_path):
    out = tmp_path / "hello.wav"
    res = run("tts", "Hello world.", "-r", "random-tts", "-o", out, "--seed", 1, "--steps", 3)
    assert res.exit_code == 0, res.output
    assert "RANDOM weights" in res.output
    data, sr = sf.read(str(out))
    assert sr == 16000 and data.size > 0 and np.abs(data).max() <= 1.0
    again = tmp_path / "again.wav"
    assert run("tts", "Hello world.", "-r", "random-tts", "-o", again, "--seed", 1, "--steps", 3).exit_code == 0
    assert out.read_bytes() == again.read_bytes()


def test_t2a_and_recipes_listing(tmp_path):
    out = tmp_path / "dog.wav"
    res = run("t2a", "a dog barking", "-r", "random-t2a", "-o", out, "--seconds", 1.0, "--rescale", 0.5)
    assert res.exit_code == 0, res.output
    assert sf.info(str(out)).frames == 16000
    neg = tmp_path / "neg.wav"
    assert run("t2a", "a dog barking", "-r", "random-t2a", "-o", neg, "--seconds", 1.0, "--negative", "music").exit_code == 0
    assert neg.read_bytes() != out.read_bytes()  # the negative prompt takes the null branch's place
    both = tmp_path / "both.wav"
    res = run("t2a", "a dog barking", "-r", "random-t2a", "-o", both, "--seconds", 1.0, "--and", "rain falling", "--and-weight", 0.6)
    assert res.exit_code == 0, res.output
    assert sf.info(str(both)).frames == 16000 and both.read_bytes() != out.read_bytes()  # a prompt in parts
    res = run("recipes")
    assert res.exit_code == 0
    lines = res.output.strip().splitlines()
    assert any(line.startswith("random-tts ") and "[random weights]" in line for line in lines)
    assert any(line.startswith("autoencoder-speech ") and "[train only]" in line for line in lines)


@pytest.mark.parametrize(
    "args,message",
    [
        (["tts", "Hi.", "--recipe", "nope"], "unknown recipe 'nope'"),
        (["tts", "Hi.", "--scale", "text=-3"], "must be a finite number >= 0"),
        (["tts", "Hi.", "--scale", "text"], "--scale expects NAME=NUMBER"),
        (["tts", "Hi.", "--scale", "accent=2"], "no guidance scale named 'accent'"),
        (["tts", "Hi.", "--rescale", "1.5"], "rescale phi must be in [0, 1]"),
        (["tts", "Hi.", "--cfg", "-1"], ">= 0"),
        (["tts", "   "], "text is empty"),
        (["tts", "Hi.", "--recipe", "random-t2a"], "is a t2a recipe; use `audioguide t2a`"),
        (["t2a", "rain", "-r", "random-t2a", "--seconds", "500"], "seconds must be in"),
        (["t2a", "rain", "-r", "random-t2a", "--negative", "  "], "text is empty"),
        (["t2a", "rain", "-r", "random-t2a", "--and", "  "], "part: text is empty"),
        (["t2a", "rain", "-r", "random-t2a", "--and-weight", "0.5"], "--and-weight weighs the --and parts"),
        (["t2a", "rain", "-r", "random-t2a", "--and", "wind", "--and-weight", "0"], "part weights must be numbers in (0, 4]"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    out = tmp_path / "o.wav"
    res = run(*args, "-o", out)
    assert res.exit_code == 2, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], res.output
    assert "Traceback" not in res.output and not out.exists()
    assert "RANDOM" not in res.output  # options are validated before any warning or work


def test_bad_recipe_file_and_output(tmp_path, write_recipe):
    bad = write_recipe(TINY_TTS.replace("hidden = 32", "hidden = 32\nwidth = 3"))
    res = run("tts", "Hi.", "--recipe", bad, "-o", tmp_path / "o.wav")
    assert res.exit_code == 2 and "unknown key 'width'" in res.output and str(bad) in res.output
    res = run("tts", "Hi.", "-o", tmp_path / "o.aiff")
    assert res.exit_code == 2 and "suffix among" in res.output
    existing = tmp_path / "keep.wav"
    existing.write_bytes(b"precious")
    res = run("tts", "Hi.", "-o", existing)
    assert res.exit_code == 2 and "--force" in res.output and existing.read_bytes() == b"precious"


def test_manifest_errors_name_the_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"text": "ok"}\n{"text": 3}\n')
    with pytest.raises(AudioguideError, match=r"m.jsonl:2: text must be str"):
        read_manifest(path)
    path.write_text('{"id": "a", "text": "x"}\n\n{"id": "a", "text": "y"}\n')
    with pytest.raises(AudioguideError, match=r"m.jsonl:3: duplicate id 'a'"):
        read_manifest(path)
    path.write_text('{"id": "../evil", "text": "x"}\n')
    with pytest.raises(AudioguideError, match="may contain only"):
        read_manifest(path)
    path.write_text("not json\n")
    with pytest.raises(AudioguideError, match=r"m.jsonl:1: invalid JSON"):
        read_manifest(path)


def test_render_resumes_and_matches_single_calls(tmp_path, write_recipe):
    pipe = Pipeline.from_recipe(write_recipe(TINY_TTS))
    manifest = tmp_path / "m.jsonl"
    write_manifest(manifest, [{"id": "a", "text": "First."}, {"id": "b", "text": "Second one."}, {"text": "Third.", "seed": 99}])
    rows = read_manifest(manifest)
    out = tmp_path / "out"
    # simulate an interrupted job: only the first row was finished
    first = render(pipe, rows[:1], out, seed=5)
    assert (first.written, first.skipped) == (1, 0)
    stamp = (out / "a.wav").stat().st_mtime_ns
    report = render(pipe, rows, out, seed=5)
    assert (report.written, report.skipped) == (2, 1)
    assert (out / "a.wav").stat().st_mtime_ns == stamp
    for name, text, seed in [("a", "First.", 5), ("b", "Second one.", 6), ("000002", "Third.", 99)]:
        data, _ = sf.read(str(out / f"{name}.wav"), dtype="float32")
        single = pipe(text, seed=seed)[0]
        assert np.abs(data - single).max() < 1e-4  # 16-bit PCM quantisation


def test_render_cli_infers_sound_from_caption_manifests(tmp_path):
    manifest = tmp_path / "m.jsonl"
    write_manifest(manifest, [{"id": "rain", "caption": "rain on a roof", "duration": 1.0}])
    res = run("render", manifest, "-r", "random-t2a", "-o", tmp_path / "out", "--steps", 2)
    assert res.exit_code == 0, res.output
    assert sf.info(str(tmp_path / "out" / "rain.wav")).frames == 16000


def test_render_cli_validates_all_rows_first(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "a", "text": "Fine."}) + "\n" + json.dumps({"id": "b", "caption": "no text"}) + "\n")
    res = run("render", manifest, "-o", tmp_path / "out")
    assert res.exit_code == 2 and "row 'b' has no 'text'" in res.output
    assert not (tmp_path / "out").exists()
    manifest.write_text(json.dumps({"id": "a", "text": "Fine."}) + "\n")
    res = run("render", manifest, "-o", tmp_path / "out", "--steps", 2)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "a.wav").exists()
    res = run("render", manifest, "-o", tmp_path / "out", "--steps", 2)
    assert res.exit_code == 0 and "0 written, 1 skipped" in res.output
    res = run("render", manifest, "-o", tmp_path / "out")  # other steps: other audio, rendered again
    assert res.exit_code == 0 and "1 written, 0 skipped" in res.output


SPEAKER = TINY_TTS.replace(
    "[model]", '[conditioners.speaker]\ntype = "speaker-id"\nvoices = ["ava", "bob"]\ndim = 8\n[model]'
).replace("scales = { text = 3.0 }", "scales = { text = 3.0, speaker = 2.0 }")


def test_voices_from_the_cli_and_manifests(tmp_path, write_recipe):
    recipe = write_recipe(SPEAKER)
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    assert run("tts", "Hello.", "-r", recipe, "--voice", "ava", "-o", a).exit_code == 0
    assert run("tts", "Hello.", "-r", recipe, "--voice", "bob", "-o", b).exit_code == 0
    assert a.read_bytes() != b.read_bytes()
    # no --voice: the speaker condition is absent (its null), so the voice is neither ava nor bob
    res = run("tts", "Hello.", "-r", recipe, "-o", tmp_path / "null.wav")
    assert res.exit_code == 0 and (tmp_path / "null.wav").read_bytes() not in (a.read_bytes(), b.read_bytes())
    # a recipe's [defaults] fill in a call that gives only the text
    default = write_recipe(SPEAKER + '\n[defaults]\nspeaker = "bob"\n', "d.toml")
    assert run("tts", "Hello.", "-r", default, "-o", tmp_path / "d.wav").exit_code == 0
    assert (tmp_path / "d.wav").read_bytes() == b.read_bytes()
    res = run("tts", "Hello.", "-r", recipe, "--voice", "carl", "-o", tmp_path / "c.wav")
    assert res.exit_code == 2 and "unknown voice 'carl'; voices: ava, bob" in res.output
    res = run("tts", "Hello.", "-r", "random-tts", "--describe", "a deep voice", "-o", tmp_path / "c.wav")
    assert res.exit_code == 2 and "takes no input 'style'" in res.output
    manifest = tmp_path / "m.jsonl"
    write_manifest(manifest, [{"id": "x", "text": "Hello.", "speaker": "bob"}, {"id": "y", "text": "Hi.", "speaker": "eve"}])
    res = run("render", manifest, "-r", recipe, "-o", tmp_path / "out")
    assert res.exit_code == 2 and "unknown voice 'eve'" in res.output and not (tmp_path / "out").exists()
    write_manifest(manifest, [{"id": "x", "text": "Hello.", "speaker": "bob"}])
    assert run("render", manifest, "-r", recipe, "-o", tmp_path / "out").exit_code == 0
    assert (tmp_path / "out" / "x.wav").read_bytes() == b.read_bytes()


def test_long_speech_is_checked_sentence_by_sentence(tmp_path, write_recipe):
    """The text limit applies to each generated sentence, not to the whole input."""
    recipe = write_recipe(TINY_TTS.replace("dim = 16", "dim = 16\nmax_len = 40"))
    long = "The first short sentence. A second short one here. And then a third!"  # 68 bytes, pieces < 40
    out = tmp_path / "long.wav"
    res = run("tts", long, "-r", recipe, "-o", out, "--steps", 2)
    assert res.exit_code == 0, res.output
    assert sf.info(str(out)).frames > 0
    res = run("tts", "One single sentence that runs well past forty bytes", "-r", recipe, "-o", tmp_path / "x.wav")
    assert res.exit_code == 2 and "over this conditioner's limit of 40" in res.output
    manifest = tmp_path / "m.jsonl"
    write_manifest(manifest, [{"id": "a", "text": long}])
    assert run("render", manifest, "-r", recipe, "-o", tmp_path / "out", "--steps", 2).exit_code == 0


def test_output_paths_fail_before_any_work(tmp_path):
    res = run("tts", "Hi.", "-r", "random-tts", "-o", tmp_path / ("a" * 300 + ".wav"))
    assert res.exit_code == 2 and "File name too long" in res.output and "Traceback" not in res.output
    (tmp_path / "afile").write_text("x")
    res = run("tts", "Hi.", "-r", "random-tts", "-o", tmp_path / "afile" / "x.wav")
    assert res.exit_code == 2 and "afile is not a directory" in res.output
    assert "RANDOM" not in res.output  # refused before the model was loaded
    long_ok = tmp_path / ("b" * 246 + ".wav")  # a legal 250-byte name: the temporary file must fit too
    res = run("tts", "Hi.", "-r", "random-tts", "-o", long_ok, "--steps", 2)
    assert res.exit_code == 0, res.output
    assert sf.info(str(long_ok)).frames > 0 and not list(tmp_path.glob(".*partial"))


def test_render_checks_every_seed_and_names_the_row(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "a", "text": "Hi."}) + "\n" + json.dumps({"id": "b", "text": "Yo.", "seed": -1}) + "\n")
    with pytest.raises(AudioguideError, match=r"m.jsonl:2: seed must be an integer in \[0, 2\^64 - 1\]"):
        read_manifest(manifest)
    manifest.write_text(json.dumps({"id": "a", "text": "Hi."}) + "\n" + json.dumps({"id": "b", "text": "Yo."}) + "\n")
    res = run("render", manifest, "-r", "random-tts", "-o", tmp_path / "out", "--seed", 2**64 - 1)
    assert res.exit_code == 2 and "row 'b': seed must be an integer" in res.output  # row b's seed is 2^64
    assert not (tmp_path / "out").exists()  # nothing rendered before the error
    manifest.write_text(json.dumps({"id": "a", "text": "Hi."}) + "\n" + json.dumps({"id": "b", "text": "  "}) + "\n")
    res = run("render", manifest, "-r", "random-tts", "-o", tmp_path / "out")
    assert res.exit_code == 2 and "row 'b': text is empty" in res.output
    manifest.write_text(json.dumps({"id": "x" * 201, "text": "Hi."}) + "\n")
    with pytest.raises(AudioguideError, match="id is 201 characters; at most 200"):
        read_manifest(manifest)
    manifest.write_text(json.dumps({"id": "a", "text": "Hi."}) + "\n")
    res = run("render", manifest, "-o", tmp_path / "out", "--task", "t2a", "-r", "random-tts")
    assert res.exit_code == 2 and "use --task tts" in res.output


def test_usage_errors_are_one_line(tmp_path):
    """Typer's own errors (bad option value, missing argument, unknown command) go through main()."""
    import subprocess
    import sys

    for args, message in [
        (["tts", "Hi.", "--seed", "-1"], "Invalid value for '--seed'"),
        (["tts"], "Missing argument 'text'"),
        (["nope"], "No such command 'nope'"),
    ]:
        res = subprocess.run([sys.executable, "-m", "audioguide.cli", *args, "-o", str(tmp_path / "o.wav")],
                             capture_output=True, text=True, timeout=120)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1, res.stderr
        assert lines[0].startswith("error: ") and message in lines[0], res.stderr


def test_data_commands_check_their_options_before_any_work(tmp_path):
    for bad in ["hibari-heart=nan", "hibari-heart=inf", "hibari-heart=2.5", "hibari-heart=-1"]:
        res = run("data", "speech", "-o", tmp_path / "c", "--limit", bad)
        assert res.exit_code == 2 and "--limit expects NAME=N with a whole number N >= 0" in res.output, res.output
    res = run("data", "merge", tmp_path / "missing", "-o", tmp_path / "merged")
    assert res.exit_code == 2 and "not found; build that corpus first" in res.output
    assert not (tmp_path / "c").exists() and not (tmp_path / "merged").exists()
