"""`audioguide tts` / `t2a` as people call them, through real CLI subprocesses: stdout, stdin and
text files, formats and levels, signals, a full disk, and every unclean case of issue 22 as one
`error:` line with exit code 2 and no file left behind."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audioguide.audio import CEILING_DBTP, TARGET_LUFS, loudness, true_peak

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
TTS = ["tts", "-r", "random-tts"]
T2A = ["t2a", "-r", "random-t2a"]


def cli(*args, stdin: bytes | None = None, cwd: Path | None = None, preexec=None, stdout=subprocess.PIPE):
    """Run ``audioguide ARGS`` in a subprocess; (returncode, stdout bytes, stderr text)."""
    res = subprocess.run([sys.executable, "-m", "audioguide.cli", *map(str, args)], input=stdin, stdout=stdout,
                         stderr=subprocess.PIPE, env=ENV, cwd=cwd, preexec_fn=preexec, timeout=300)
    return res.returncode, res.stdout, res.stderr.decode()


def one_error(code: int, err: str, *needles: str) -> None:
    """Exit code 2 and exactly one line on stderr (past the random-weights warning) that starts
    with ``error:`` and holds every needle."""
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning: ")]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert all(n in lines[0] for n in needles), err


# -- output --------------------------------------------------------------------------------------


def test_stdout_carries_exactly_the_file_and_nothing_else(tmp_path):
    code, data, err = cli(*TTS, "Hello there. A second sentence.", "-o", "-", "-s", "3")
    assert code == 0 and "wrote stdout" in err, err
    code, _, _ = cli(*TTS, "Hello there. A second sentence.", "-o", tmp_path / "a.wav", "-s", "3")
    assert code == 0 and data == (tmp_path / "a.wav").read_bytes() and data[:4] == b"RIFF"
    code, flac, _ = cli(*TTS, "Hello there.", "-o", "-", "--format", "flac")
    assert code == 0 and flac[:4] == b"fLaC"


def test_text_from_stdin_or_a_file_is_the_same_call(tmp_path):
    text = "Read from elsewhere. Twice."
    _, direct, _ = cli(*TTS, text, "-o", "-")
    code, piped, err = cli(*TTS, "-", "-o", "-", stdin=text.encode())
    assert code == 0 and piped == direct, err
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    code, filed, err = cli(*TTS, "--text-file", tmp_path / "t.txt", "-o", "-")
    assert code == 0 and filed == direct, err
    one_error(*cli(*TTS, text, "--text-file", tmp_path / "t.txt", "-o", tmp_path / "x.wav")[::2], "not both")
    one_error(*cli(*TTS, "--text-file", tmp_path / "missing.txt", "-o", tmp_path / "x.wav")[::2], "cannot read")
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9")
    one_error(*cli(*TTS, "--text-file", tmp_path / "bad.txt", "-o", tmp_path / "x.wav")[::2], "not UTF-8")
    assert not (tmp_path / "x.wav").exists()


def test_t2a_is_levelled_and_never_clipped(tmp_path):
    from audioguide.pipeline import Pipeline

    raw = Pipeline.from_recipe("random-t2a")("a dog barking", seed=0)[0]
    assert np.abs(raw).max() > 1.0  # the model's own output goes beyond full scale
    code, _, err = cli(*T2A, "a dog barking", "-o", tmp_path / "dog.flac")
    wav, sr = sf.read(str(tmp_path / "dog.flac"))
    assert code == 0 and sf.info(str(tmp_path / "dog.flac")).format == "FLAC", err
    assert abs(loudness(wav, sr) - TARGET_LUFS) < 1.0 and true_peak(wav) <= CEILING_DBTP + 0.05
    code, _, err = cli(*T2A, "a dog barking", "-o", tmp_path / "raw.wav", "--loudness", "off", "--sample-format", "float")
    level, _ = sf.read(str(tmp_path / "raw.wav"), dtype="float32")
    assert code == 0 and true_peak(level) <= CEILING_DBTP + 0.05, err
    assert abs(loudness(level, sr) - loudness(raw, sr)) < 1.0  # 'off' keeps the model's level, under the ceiling


def test_rate_and_sample_format(tmp_path):
    code, _, err = cli(*TTS, "Resampled.", "-o", tmp_path / "a.wav", "--sample-rate", "44100", "--sample-format", "24")
    info = sf.info(str(tmp_path / "a.wav"))
    assert code == 0 and info.samplerate == 44100 and info.subtype == "PCM_24", err
    one_error(*cli(*TTS, "x", "-o", tmp_path / "b.wav", "--sample-rate", "1000000")[::2], "sample rate")
    one_error(*cli(*TTS, "x", "-o", tmp_path / "b.ogg", "--sample-format", "24")[::2], "no sample format")
    one_error(*cli(*TTS, "x", "-o", tmp_path / "b.aiff")[::2], "suffix among")
    one_error(*cli(*TTS, "x", "-o", tmp_path / "b.wav", "--format", "flac")[::2], "disagrees")
    one_error(*cli(*TTS, "x", "-o", tmp_path / "b.wav", "--loudness", "loud")[::2], "--loudness")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav"]


def test_speed_changes_the_length(tmp_path):
    cli(*TTS, "A sentence of some length to speak.", "-o", tmp_path / "a.wav")
    cli(*TTS, "A sentence of some length to speak.", "-o", tmp_path / "b.wav", "--speed", "2")
    assert sf.info(str(tmp_path / "b.wav")).frames < 0.7 * sf.info(str(tmp_path / "a.wav")).frames


def test_audio_is_not_written_to_a_terminal(tmp_path):
    main, other = os.openpty()
    try:
        code, _, err = cli(*TTS, "x", "-o", "-", stdout=other)
    finally:
        os.close(main), os.close(other)
    one_error(code, err, "terminal")


# -- issue 22's unclean cases --------------------------------------------------------------------


def test_sampler_steps_have_an_upper_bound(tmp_path):
    one_error(*cli(*TTS, "Hello.", "--steps", "100000", "-o", tmp_path / "a.wav")[::2], "steps must be at most 1000, got 100000")
    assert not list(tmp_path.iterdir())


def test_a_missing_weights_folder_is_not_found_not_a_hub_lookup(tmp_path):
    env_online = {"HF_HUB_OFFLINE": "0"}
    ENV.update(env_online)
    try:
        code, _, err = cli("tts", "Hello.", "--weights", "runs/tts", "-o", tmp_path / "a.wav", cwd=tmp_path)
    finally:
        ENV["HF_HUB_OFFLINE"] = "1"
    one_error(code, err, "checkpoint not found: runs/tts", "hf://runs/tts")
    assert "Hub repo" not in err


def test_terminal_escapes_are_not_spoken(tmp_path):
    _, clean, _ = cli(*TTS, "Hello there, red text.", "-o", "-")
    code, dirty, err = cli(*TTS, "Hello there, \x1b[31mred\x1b[0m text.", "-o", "-")
    assert code == 0 and dirty == clean, err


@pytest.mark.parametrize("sig, code, message", [(signal.SIGTERM, 143, "error: terminated (SIGTERM)"),
                                                (signal.SIGINT, 130, "error: interrupted")])
def test_a_signal_mid_generation_is_one_line_and_leaves_no_file(tmp_path, sig, code, message):
    text = "A fairly long sentence that goes on for a while. " * 8
    # Ctrl-C as in a terminal: a job started in the background of a non-interactive shell (CI run
    # with `&`) inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler.
    proc = subprocess.Popen([sys.executable, "-m", "audioguide.cli", *TTS, text, "--steps", "1000", "-o", tmp_path / "a.wav"],
                            stderr=subprocess.PIPE, text=True, env=ENV,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    first = proc.stderr.readline()  # the random-weights warning comes after checking, before drawing
    assert first.startswith("warning: "), first
    proc.send_signal(sig)
    rest = proc.stderr.read().strip().splitlines()
    assert proc.wait(timeout=120) == code and rest == [message], rest
    assert list(tmp_path.iterdir()) == []


def _file_limit(nbytes: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))  # writes past it fail (EFBIG)


def test_a_full_disk_is_one_line(tmp_path):
    code, _, err = cli(*TTS, "Hello there, this is long enough to pass the limit.", "-o", tmp_path / "a.wav",
                       preexec=_file_limit(4096))
    one_error(code, err, "cannot write", "a.wav")
    assert list(tmp_path.iterdir()) == []
    with open("/dev/full", "wb") as full:  # ENOSPC on every write
        code, _, err = cli(*TTS, "Hello.", "-o", "-", stdout=full)
    one_error(code, err, "cannot write to stdout: disk full")


def test_a_full_tmpfs_is_one_line(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        code, _, err = cli(*T2A, "a dog", "-o", mount / "dog.wav", "--seconds", "3")
        one_error(code, err, "disk full", "dog.wav")
        assert list(mount.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_training_onto_a_full_disk_is_one_line(tmp_path, corpus):
    from tests.conftest import TINY_TRAIN, TINY_TTS

    recipe = tmp_path / "tiny.toml"
    recipe.write_text(textwrap.dedent(TINY_TTS) + textwrap.dedent(TINY_TRAIN))
    code, _, err = cli("train", recipe, "--data", corpus, "-o", tmp_path / "run", "--steps", "2", preexec=_file_limit(2048))
    progress = [line for line in err.splitlines() if line.startswith("step ")]  # training's log when stderr is no terminal
    one_error(code, "\n".join(line for line in err.splitlines() if line not in progress), "cannot write", "File too large")


# -- the house -----------------------------------------------------------------------------------


def test_speech_without_a_description_never_loads_the_text_encoder():
    probe = ("import sys\nfrom audioguide.pipeline import Pipeline\np = Pipeline.from_recipe('speech')\n"
             "p('Hello there.')\nprint('transformers' in sys.modules)\n"
             "p('Hello there.', inputs={'style': 'a deep voice'})\nprint('transformers' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=ENV, timeout=300)
    assert res.stdout.split() == ["False", "True"], res.stderr


def test_version_and_recipes_text():
    from audioguide import __version__

    code, out, _ = cli("--version")
    assert code == 0 and out.decode().strip() == f"audioguide {__version__}"
    code, out, _ = cli("recipes")
    speech = next(line for line in out.decode().splitlines() if line.startswith("speech "))
    assert code == 0 and "two-step" in speech and "one-step" not in speech
