"""Real-time factor of the default text-to-audio recipe on this CPU, decoder included.

Generates held-out prompts (phrasings never seen in training) with the shipped ``sound`` recipe at
its defaults (its sampler and steps, the conditional and negative/null branches in one batched
forward, CFG rescale, our decoder) and with one step of its sampler (``--steps 1``). No text-to-audio peer runs offline
here (AudioLDM, Stable Audio Open, Tango and MeanAudio all download their weights at run time), so
the reference in the same run is FluidSynth rendering the same length of General MIDI music, the
sound engine the corpus was made with: ``ratio`` = reference RTF / our RTF. Real-time factor =
compute seconds / audio seconds (lower is better). The breakdown times our stages separately
(``tts_speed.stages``): conditions (the text encoder; t2a has no durations), sampling, decoding.

    python benchmarks/t2a_speed.py [--threads 1 2] [--prompts 8] [--recipe sound] [--seconds 4]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch
from tts_speed import stages  # benchmarks/ is on the path when this file runs

PROMPTS = (
    "you can hear a dog barking", "audio of a slow cello melody", "listen: a loud drum kit playing a rock beat",
    "a woman speaking, recorded clearly", "you can hear birds singing", "audio of a piano chord progression",
    "an explosion, recorded clearly", "listen: a notification chime", "audio of water splashing",
    "you can hear a man reading aloud", "a fast flute tune, recorded clearly", "listen: a gun firing",
)


def rtf(generate, prompts, seconds, repeats: int = 5) -> float:
    """Compute seconds over audio seconds of one pass over ``prompts``, the median of ``repeats``
    passes (this shared 2-core VM's speed drifts between runs), after one untimed warm-up."""
    generate(prompts[0])
    passes = []
    for _ in range(repeats):
        spent = 0.0
        for p in prompts:
            t = time.perf_counter()
            generate(p)
            spent += time.perf_counter() - t
        passes.append(spent / (seconds * len(prompts)))
    return float(np.median(passes))


def fluidsynth_rtf(prompts: int, seconds: float) -> float | None:
    """FluidSynth's marginal real-time factor on General MIDI pieces of ``seconds``: rendering
    ``2 * prompts`` pieces minus rendering ``prompts`` (each one process run), so its process start
    and soundfont load, which our side does not pay per call, cancel; after an untimed warm-up.
    FluidSynth renders on one thread whatever torch's setting. None when it is not installed."""
    from audioguide.core import AudioguideError

    try:
        from audioguide.corpus.sound import INSTRUMENTS, compose, render_pieces

        rng = np.random.default_rng(0)
        pieces = [(i, i.programs[0], compose(rng, i, seconds)[0]) for i in (INSTRUMENTS * (2 * prompts))[: 2 * prompts]]
        render_pieces(pieces[:1], seconds)  # warm-up: page cache, soundfont file
        t = time.perf_counter()
        render_pieces(pieces[:prompts], seconds)
        half = time.perf_counter() - t
        t = time.perf_counter()
        render_pieces(pieces, seconds)
        full = time.perf_counter() - t
        return max(full - half, 0.0) / (prompts * seconds)
    except (AudioguideError, ImportError):  # not installed: no reference column
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--recipe", default="sound")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--repeats", type=int, default=5, help="timed passes over the prompts; the median is reported")
    ap.add_argument("--report", type=Path)
    args = ap.parse_args()
    from audioguide import Pipeline

    pipe = Pipeline.from_recipe(args.recipe)
    prompts = list(PROMPTS[: args.prompts])
    steps = pipe.recipe.sampler.config.steps
    lines = [
        f"# Text-to-audio speed: recipe `{args.recipe}`",
        "",
        f"{len(prompts)} held-out prompts, {args.seconds:g} s each; {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}. RTF = compute seconds / audio seconds (lower is better), median of {args.repeats} passes; ratio = FluidSynth RTF / ours.",
        "",
        f"| threads | ours, default ({steps} {pipe.recipe.sampler.type} steps, CFG + rescale) | ours, 1 step | FluidSynth (reference, marginal, 1 thread) | ratio (default) |",
        "|---|---|---|---|---|",
    ]
    breakdown = []
    ref = fluidsynth_rtf(len(prompts), args.seconds)  # once: FluidSynth does not use torch's threads
    for threads in args.threads:
        torch.set_num_threads(threads)
        ours = rtf(lambda p: pipe([p], seed=0, seconds=args.seconds), prompts, args.seconds, args.repeats)
        one = rtf(lambda p: pipe([p], seed=0, seconds=args.seconds, steps=1), prompts, args.seconds, args.repeats)
        ratio = f"{ref / ours:.2f}" if ref else "n/a"
        lines.append(f"| {threads} | {ours:.4f} | {one:.4f} | {f'{ref:.4f}' if ref else 'n/a'} | {ratio} |")
        breakdown.append((threads, stages(pipe, prompts, args.seconds)))  # tts_speed's stages, at a fixed length
        print(lines[-1], flush=True)
    lines += ["", "Stages of the default, seconds per second of audio:", "", "| threads | " + " | ".join(breakdown[0][1]) + " |",
              "|---" * (len(breakdown[0][1]) + 1) + "|"]
    for threads, b in breakdown:
        lines.append(f"| {threads} | " + " | ".join(f"{v:.4f}" for v in b.values()) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.report:
        from audioguide.core import atomic_write

        with atomic_write(args.report) as tmp:
            tmp.write_text(text)


if __name__ == "__main__":
    main()
