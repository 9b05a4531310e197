"""Rendering datasets at scale, through the real CLI in real processes: batched equals single, a
results manifest with fingerprints, kill -9 and resume, SIGTERM, concurrent renders of one
directory, local workers, torchrun shards and a local Ray instance."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from audioguide.audio import master
from audioguide.checkpoints import save_checkpoint
from audioguide.cli import app
from audioguide.manifest import read_manifest, write_manifest
from audioguide.pipeline import Pipeline
from audioguide.render import OutputStore, jobs_for, render
from tests.conftest import TINY_AE, TINY_SPEECH

DIT = ('type = "dit"\n    dim = 32\n    depth = 2\n    heads = 2\n    patch = 2\n    aligned = "text"\n    encoder_depth = 1\n'
       '    decoder_depth = 1\n    cond_mode = "cross"\n    seed = 3')
TEXTS = ["Ah.", "A longer sentence, with a pause. And a second one!", "Oh oh oh, ee.", "Hi.", "One more row here.",
         "Short.", "The quick brown fox.", "Ee oo ah.", "A fourth, rather longer sentence of words.", "Oh."]


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """A tiny aligned DiT recipe and weights in which every weight is nonzero (a fresh DiT outputs
    exactly zero), plus a manifest of rows of different lengths and voices."""
    root = tmp_path_factory.mktemp("speech")
    recipe = root / "speech.toml"
    text = (TINY_SPEECH.replace("AE\n", TINY_AE).replace("MODEL", DIT).replace("SAMPLER", 'type = "euler"\n    steps = 3')
            .replace("GUIDANCE", "scales = { text = 2.0, speaker = 1.5 }\n    interval = [0.0, 0.8]")
            .replace("TAIL", "[duration]\n    min_seconds = 0.05\n    max_seconds = 0.6\n    seconds = 0.5"))
    recipe.write_text("\n".join(line.strip() for line in text.splitlines()))
    pipe = Pipeline.from_recipe(recipe)
    g = torch.Generator().manual_seed(0)
    state = {k: v + 0.2 * torch.randn(v.shape, generator=g) if v.is_floating_point() and not v.any() else v
             for k, v in pipe.model.state_dict().items()}
    weights = save_checkpoint(root / "dit.safetensors", state, {}, "dit")
    manifest = root / "m.jsonl"
    write_manifest(manifest, [{"id": f"r{i:02d}", "text": t, "speaker": f"s{i % 2}"} for i, t in enumerate(TEXTS)])
    return recipe, weights, manifest


def cli(*args, timeout: float = 300, **popen):
    """``audioguide`` in a real process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "audioguide.cli", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def finish(proc, timeout: float = 300) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def render_cli(speech, out, *extra):
    recipe, weights, manifest = speech
    return ("render", manifest, "-r", recipe, "--weights", weights, "-o", out, "--seed", 7, *extra)


def wavs(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.wav"))}


def leftovers(out: Path) -> list[str]:
    """Temporary files and claims a finished render must not leave."""
    return sorted(p.name for p in out.glob(".*.partial")) + sorted(p.name for p in (out / ".render" / "claims").glob("w*"))


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(speech, tmp_path_factory):
    """An uninterrupted render, batch size 4."""
    out = tmp_path_factory.mktemp("reference") / "out"
    code, err = finish(cli(*render_cli(speech, out, "--batch-size", 4)))
    assert code == 0, err
    return out


def test_batched_render_equals_single_calls_and_records_every_row(speech, reference, tmp_path):
    recipe, weights, manifest = speech
    single = tmp_path / "single"
    code, err = finish(cli(*render_cli(speech, single, "--batch-size", 1)))
    assert code == 0, err
    batched, alone = wavs(reference), wavs(single)
    assert sorted(batched) == [f"r{i:02d}.wav" for i in range(len(TEXTS))] == sorted(alone)
    pipe = Pipeline.from_recipe(recipe, weights=str(weights))
    for i, name in enumerate(sorted(batched)):
        a, _ = sf.read(reference / name, dtype="int16")
        b, _ = sf.read(single / name, dtype="int16")
        assert a.shape == b.shape and np.abs(a.astype(int) - b).max() <= 1  # float rounding of padded batches
        call, _ = master(pipe(TEXTS[i], seed=7 + i, inputs={"speaker": f"s{i % 2}"})[0], pipe.sample_rate)
        assert np.abs(b / 32768 - call).max() < 2 / 32768  # the CLI writes what the API returns, levelled
    assert any(batched[n] != alone[n] for n in batched) or True  # equal bytes are allowed, not required
    rows = records(reference)
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows) or len(rows) == len(TEXTS)
    assert len(rows) == len(TEXTS) and all(r["status"] == "done" and r["error"] is None for r in rows)
    first = next(r for r in rows if r["id"] == "r01")
    assert first["seed"] == 8 and first["inputs"] == {"speaker": "s1"} and first["file"] == "r01.wav"
    assert first["weights"]["model"].startswith("sha256:") and first["recipe_sha256"] and len(first["fingerprint"]) == 64
    assert abs(first["duration"] - sf.info(reference / "r01.wav").duration) < 1e-3
    assert not leftovers(reference)


@pytest.mark.slow
def test_kill_9_at_any_moment_then_resume_equals_an_uninterrupted_run(speech, reference, tmp_path):
    out, midway = tmp_path / "out", 0
    for target in (0, 1, 3, 6, 8):  # killed during start-up, and after so many rows
        proc = cli(*render_cli(speech, out, "--batch-size", 4))
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if len(list(out.glob("*.wav"))) >= target:
                break
            time.sleep(0.002)
        midway += proc.poll() is None
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert midway >= 3  # most kills hit a running render
    (out / f".r05.wav.{os.uname().nodename}-999999.partial").write_bytes(b"RIFF")  # as a kill mid-write leaves
    code, err = finish(cli(*render_cli(speech, out, "--batch-size", 4)))
    assert code == 0, err
    assert wavs(out) == wavs(reference)
    assert not leftovers(out)


@pytest.mark.slow
def test_sigterm_stops_cleanly_with_one_line_and_the_rerun_finishes(speech, reference, tmp_path):
    recipe, weights, manifest = speech
    rows = [{"id": f"x{i:03d}", "text": TEXTS[i % len(TEXTS)], "speaker": "s0"} for i in range(60)]
    long = tmp_path / "long.jsonl"
    write_manifest(long, rows)
    args = ("render", long, "-r", recipe, "--weights", weights, "--batch-size", 1)
    out = tmp_path / "out"
    proc = cli(*args, "-o", out)
    while proc.poll() is None and not list(out.glob("*.wav")):
        time.sleep(0.002)
    assert proc.poll() is None  # 60 rows take a while
    proc.send_signal(signal.SIGTERM)
    code, err = finish(proc)
    assert code == 128 + signal.SIGTERM, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "terminated (SIGTERM)" in lines[0] and "rerun" in lines[0] and "Traceback" not in err
    assert not leftovers(out) and 0 < len(wavs(out)) < len(rows)
    code, err = finish(cli(*args, "-o", out))
    assert code == 0, err
    whole = tmp_path / "whole"
    code, err = finish(cli(*args, "-o", whole))
    assert code == 0, err
    assert wavs(out) == wavs(whole)


def test_an_edited_row_is_rendered_again_and_the_others_are_not(speech, reference, tmp_path):
    recipe, weights, manifest = speech
    out = tmp_path / "out"
    runner = CliRunner()
    args = [str(a) for a in render_cli(speech, out, "--batch-size", 4)]
    assert runner.invoke(app, args).exit_code == 0
    before = wavs(out)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    rows[2]["text"] = "A different text now."
    edited = tmp_path / "edited.jsonl"
    write_manifest(edited, rows)
    args[1] = str(edited)
    res = runner.invoke(app, args)
    assert res.exit_code == 0 and f"1 written, {len(TEXTS) - 1} skipped" in res.output, res.output
    after = wavs(out)
    assert after["r02.wav"] != before["r02.wav"] and all(after[k] == before[k] for k in before if k != "r02.wav")
    last = {r["id"]: r for r in records(out)}["r02"]
    assert last["prompt"] == "A different text now."
    res = runner.invoke(app, args + ["--steps", "2"])  # every row's settings changed
    assert res.exit_code == 0 and f"{len(TEXTS)} written" in res.output


@pytest.mark.slow
def test_two_concurrent_renders_of_one_directory_render_each_row_once(speech, reference, tmp_path):
    out = tmp_path / "out"
    procs = [cli(*render_cli(speech, out, "--batch-size", 2)) for _ in range(2)]
    results = [finish(p) for p in procs]
    assert all(code == 0 for code, _ in results), results
    done = [r["id"] for r in records(out) if r["status"] == "done"]
    assert sorted(done) == [f"r{i:02d}" for i in range(len(TEXTS))]  # each row once
    assert wavs(out).keys() == wavs(reference).keys() and not leftovers(out)


@pytest.mark.slow
def test_local_workers_and_torchrun_shards_write_what_one_process_writes(speech, reference, tmp_path):
    code, err = finish(cli(*render_cli(speech, tmp_path / "workers", "--batch-size", 4, "--workers", 2)))
    assert code == 0, err
    assert wavs(tmp_path / "workers") == wavs(reference)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "audioguide.cli",
           *map(str, render_cli(speech, tmp_path / "ranks", "--batch-size", 4))]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert wavs(tmp_path / "ranks") == wavs(reference)
    assert sorted(r["id"] for r in records(tmp_path / "ranks")) == [f"r{i:02d}" for i in range(len(TEXTS))]


@pytest.mark.slow
def test_ray_engine_on_a_local_instance_writes_what_one_process_writes(speech, reference, tmp_path):
    pytest.importorskip("ray")
    recipe, weights, manifest = speech
    pipe = Pipeline.from_recipe(recipe, weights=str(weights))
    report = render(pipe, read_manifest(manifest), tmp_path / "ray", seed=7, batch_size=4, workers=2, engine="ray",
                    weights=str(weights), loudness=-16.0)  # the CLI's default level
    assert (report.written, report.failed) == (len(TEXTS), 0)
    assert wavs(tmp_path / "ray") == wavs(reference)
    again = render(pipe, read_manifest(manifest), tmp_path / "ray", seed=7, batch_size=4, workers=2, engine="ray",
                   weights=str(weights), loudness=-16.0)
    assert (again.written, again.skipped) == (0, len(TEXTS))


def test_a_failing_row_is_recorded_and_the_run_goes_on(speech, tmp_path):
    recipe, weights, manifest = speech
    rows = [json.loads(line) for line in manifest.read_text().splitlines()][:4]
    rows[1]["text"] = " ".join(["A very long sentence without any end"] * 5)  # over the recipe's 0.6 s
    bad = tmp_path / "bad.jsonl"
    write_manifest(bad, rows)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["render", str(bad), "-r", str(recipe), "--weights", str(weights), "-o", str(out)])
    assert res.exit_code == 1 and "error: 1 of 4 row(s) failed" in res.output
    by_id = {r["id"]: r for r in records(out)}
    assert by_id["r01"]["status"] == "failed" and "over 0.6 s" in by_id["r01"]["error"]
    assert sorted(wavs(out)) == ["r00.wav", "r02.wav", "r03.wav"]


def test_a_full_disk_is_one_line_and_leaves_nothing_half_written(speech, tmp_path, monkeypatch):
    recipe, weights, manifest = speech

    def full(fd):  # where a file system with delayed allocation reports that it is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["render", str(manifest), "-r", str(recipe), "--weights", str(weights), "-o", str(out)])
    assert res.exit_code == 2 and res.output.count("error:") == 1 and "cannot write" in res.output and "disk full (no space left on device)" in res.output
    assert not list(out.glob("*.wav")) and not leftovers(out)


def test_progress_goes_to_logs_as_plain_lines_with_a_summary(speech, tmp_path):
    code, err = finish(cli(*render_cli(speech, tmp_path / "out", "--log-every", 0.1)))
    assert code == 0, err
    assert any(line.startswith("render: ") and "rows/s" in line and f"/{len(TEXTS)} rows" in line for line in err.splitlines())
    assert f"render: {len(TEXTS)} written, 0 skipped (done before), 0 failed" in err and "RTF" in err


def test_claims_and_fingerprints(speech, tmp_path):
    recipe, weights, manifest = speech
    pipe = Pipeline.from_recipe(recipe, weights=str(weights))
    rows = read_manifest(manifest)
    a, b = jobs_for(pipe, rows, 7, {}, str(weights)), jobs_for(pipe, rows, 7, {"steps": 2}, str(weights))
    assert len({j.fingerprint for j in a}) == len(rows) and all(x.fingerprint != y.fingerprint for x, y in zip(a, b))
    assert [j.fingerprint for j in a] == [j.fingerprint for j in jobs_for(pipe, rows, 7, {}, str(weights))]
    unset = jobs_for(pipe, rows, 7, {"scales": {}, "cfg": None}, str(weights))  # what the CLI passes without options
    assert [j.fingerprint for j in unset] == [j.fingerprint for j in a]
    assert all(x.fingerprint != y.fingerprint for x, y in zip(a, jobs_for(pipe, rows, 7, {}, str(weights), loudness=-16.0)))
    store, other = OutputStore(tmp_path), OutputStore(tmp_path)
    assert store.claim("w1") and other.claim("w1")  # one process: its own claim
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / ".render" / "claims" / "w2").write_text(json.dumps({"host": os.uname().nodename, "pid": int(dead.stdout)}))
    assert store.claim("w2")  # its process is gone: stale, taken over
    (tmp_path / ".render" / "claims" / "w3").write_text(json.dumps({"host": "elsewhere", "pid": 1}))
    assert not store.claim("w3")  # another host's, within its lease
    os.utime(tmp_path / ".render" / "claims" / "w3", (0, 0))
    assert store.claim("w3")  # not renewed for a lease: stale


def test_workers_share_the_thread_budget_without_oversubscribing():
    from audioguide.render.engine import threads_per_worker

    assert [threads_per_worker(w, 8) for w in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)  # --threads 2 (or OMP_NUM_THREADS=2): the budget workers split
        assert threads_per_worker(2) == 1 and threads_per_worker(1) == 2
    finally:
        torch.set_num_threads(before)
