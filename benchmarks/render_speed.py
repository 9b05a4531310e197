"""Rendering a dataset: items per second and real-time factor by engine, workers and batch size.

Renders one manifest of held-out sentences with the shipped ``speech`` recipe through the real
CLI (``audioguide render``, a fresh process and output directory each time), in one run and
interleaved: one process unbatched and batched, two local worker processes unbatched and batched,
and two Ray actors on a local Ray instance (when the ``ray`` extra is installed). Every
configuration runs ``--repeats`` times in turn; the table reports medians.

* ``render rows/s``: rows over the render's own wall time (from after the command has loaded its
  pipeline: worker processes' and Ray's start-up are inside it, as a user waits for them);
* ``process rows/s``: rows over the whole command, interpreter start and model loading included;
* ``RTF``: render wall seconds per second of audio written (all workers together);
* ``x``: render rows/s over that of one unbatched process.

    python benchmarks/render_speed.py [--rows 48] [--repeats 3] [--recipe speech]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tts_speed import write_report  # benchmarks/ is on the path when this file runs

from audioguide.corpus.texts import sentences
from audioguide.manifest import write_manifest

SUMMARY = re.compile(r"render: (\d+) written.*?; ([\d.]+) s of audio in ([\d.]+) s")


def configurations(ray: bool) -> list[tuple[str, list[str]]]:
    out = [
        ("1 process, unbatched", ["--workers", "1", "--batch-size", "1"]),
        ("1 process, batch 8", ["--workers", "1", "--batch-size", "8"]),
        ("2 workers, unbatched", ["--workers", "2", "--batch-size", "1"]),
        ("2 workers, batch 8", ["--workers", "2", "--batch-size", "8"]),
    ]
    if ray:
        out.append(("Ray, 2 actors, batch 8", ["--engine", "ray", "--workers", "2", "--batch-size", "8"]))
    return out


def run(manifest: Path, recipe: str, args: list[str]) -> tuple[float, float, float, int]:
    """(render seconds, process seconds, audio seconds, rows) of one fresh render."""
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "audioguide.cli", "render", str(manifest), "-r", recipe, "-o", out, *args],
                             capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
        wall = time.perf_counter() - start
        if res.returncode != 0:
            raise SystemExit(f"render {' '.join(args)} failed:\n{res.stderr[-2000:]}")
        m = SUMMARY.search(res.stderr)
        return float(m.group(3)), wall, float(m.group(2)), int(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--recipe", default="speech")
    ap.add_argument("--report", type=Path, default=Path(__file__).parent / "results" / "render_speed.md")
    args = ap.parse_args()
    try:
        import ray  # noqa: F401

        has_ray = True
    except ImportError:
        has_ray = False
    texts = sentences(args.rows, seed=3, split="held_out")
    configs = configurations(has_ray)
    times: dict[str, list[tuple[float, float, float, int]]] = {name: [] for name, _ in configs}
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "m.jsonl"
        write_manifest(manifest, [{"id": f"s{i:04d}", "text": t} for i, t in enumerate(texts)])
        for r in range(args.repeats):  # interleaved: every configuration once per round
            for name, flags in configs:
                times[name].append(run(manifest, args.recipe, flags))
                print(f"round {r + 1}: {name}: {times[name][-1]}", flush=True)
    base = statistics.median(rows / render for render, _, _, rows in times[configs[0][0]])
    lines = [
        f"# Rendering a dataset ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
        "",
        f"`python benchmarks/render_speed.py` — {args.rows} held-out sentences, recipe `{args.recipe}`, "
        f"`audioguide render` in a fresh process and directory per run, {args.repeats} interleaved rounds, medians. "
        "render rows/s: over the render's wall time (worker and Ray start-up inside it); process rows/s: over the "
        "whole command; RTF: render wall s per audio s; x: render rows/s over one unbatched process.",
        "",
        "| configuration | render rows/s | process rows/s | RTF | x |",
        "|---|---|---|---|---|",
    ]
    for name, _ in configs:
        runs = times[name]
        speed = statistics.median(rows / render for render, _, _, rows in runs)
        whole = statistics.median(rows / wall for _, wall, _, rows in runs)
        rtf = statistics.median(render / audio for render, _, audio, _ in runs)
        lines.append(f"| {name} | {speed:.2f} | {whole:.2f} | {rtf:.4f} | {speed / base:.2f} |")
    write_report(lines, args.report)


if __name__ == "__main__":
    main()
