"""Torch threads under load: generation time at 1 thread, at all cores, and at all cores with
OpenMP's passive wait policy, on an idle machine and while another process keeps one core busy.

Each setting runs in a fresh process (OpenMP reads ``OMP_WAIT_POLICY`` when torch loads), which
loads the shipped ``speech`` and ``sound`` recipes, warms each up once, then times ``--calls``
calls: one sentence of speech, 4 s of sound. The competing process is a one-thread torch matmul
loop, as another person's job would be. Settings and loads are interleaved round by round;
the table gives medians over every timed call and the slowdown under load.

    python benchmarks/threads.py [--rounds 3] [--calls 5] [--report benchmarks/results/threads.md]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SETTINGS = {  # name -> (threads, extra environment)
    "1 thread (the default)": (1, {}),
    "all cores": (os.cpu_count() or 1, {}),
    "all cores, OMP_WAIT_POLICY=PASSIVE": (os.cpu_count() or 1, {"OMP_WAIT_POLICY": "PASSIVE"}),
}
TEXT = "The quick brown fox jumps over the lazy dog."
PROMPT = "a dog barking"
COMPETITOR = "import torch\ntorch.set_num_threads(1)\na = torch.randn(768, 768)\nwhile True:\n    a @ a"


def child(threads: int, calls: int) -> None:
    """In the fresh process: seconds of each timed call per recipe, as JSON on stdout."""
    from audioguide.core import set_threads
    from audioguide.pipeline import Pipeline

    set_threads(threads)
    out = {}
    for recipe, run in (("speech", lambda p: p(TEXT, seed=0)), ("sound", lambda p: p(PROMPT, seed=0, seconds=4.0))):
        pipe = Pipeline.from_recipe(recipe)
        run(pipe)
        times = []
        for _ in range(calls):
            t = time.perf_counter()
            run(pipe)
            times.append(time.perf_counter() - t)
        out[recipe] = times
    print(json.dumps(out))


def measure(setting: str, calls: int) -> dict[str, list[float]]:
    threads, env = SETTINGS[setting]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")} | env
    res = subprocess.run([sys.executable, __file__, "--child", str(threads), "--calls", str(calls)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--report", type=Path, default=Path(__file__).parent / "results" / "threads.md")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        return child(args.child, args.calls)
    times: dict[tuple[str, str, str], list[float]] = {}
    for r in range(args.rounds):
        for load in ("idle", "one core busy"):
            competitor = None
            if load != "idle":
                competitor = subprocess.Popen([sys.executable, "-c", COMPETITOR], env={**os.environ, "OMP_NUM_THREADS": "1"})
                time.sleep(1.0)
            try:
                for setting in (list(SETTINGS) if r % 2 == 0 else list(SETTINGS)[::-1]):
                    for recipe, t in measure(setting, args.calls).items():
                        times.setdefault((setting, load, recipe), []).extend(t)
                    print(f"round {r + 1} {load}: {setting} done", file=sys.stderr)
            finally:
                if competitor is not None:
                    competitor.kill()
                    competitor.wait()
    report(times, args)


def report(times: dict, args) -> None:
    from benchmarks.tts_speed import write_report

    med = {k: statistics.median(v) for k, v in times.items()}
    lines = [
        "# Torch threads under load (`benchmarks/threads.py`)",
        "",
        f"{os.cpu_count()} cores; {args.rounds} rounds x {args.calls} timed calls per setting, settings and loads "
        "interleaved, each setting in a fresh process; medians in seconds of one call (speech: one sentence, "
        f"\"{TEXT}\", 2.7 s of audio; sound: 4 s of \"{PROMPT}\"). Busy: another process runs a one-thread "
        "torch matmul loop.",
        "",
        "| setting | speech idle | speech, one core busy | slowdown | sound idle | sound, one core busy | slowdown |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in SETTINGS:
        cells = []
        for recipe in ("speech", "sound"):
            idle, busy = med[(s, "idle", recipe)], med[(s, "one core busy", recipe)]
            cells += [f"{idle:.3f}", f"{busy:.3f}", f"{busy / idle:.1f}x"]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    worst = {s: max(max(times[(s, 'one core busy', r)]) for r in ("speech", "sound")) for s in SETTINGS}
    lines += ["", "Slowest single call under load: " + "; ".join(f"{s} {w:.2f} s" for s, w in worst.items()) + "."]
    write_report(lines, args.report)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
