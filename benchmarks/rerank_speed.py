"""What best-of-N reranking costs: real-time factor of a recipe with a verifier per number of candidates.

Each recipe speaks the same held-out sentences with ``candidates`` = 1 (plain sampling), 2, 4, ...
in one run: the candidates of a sentence are one batch through the generator, then the content
verifier scores them all and only the chosen one is decoded. RTF = compute seconds / audio seconds
(lower is better); ``x plain`` = RTF / RTF at one candidate.

    python benchmarks/rerank_speed.py [--recipes speech-lm] [--candidates 1 2 4] [--threads 2] [--sentences 8]
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch
from tts_speed import rtf, write_report  # benchmarks/ is on the path when this file runs

from audioguide.corpus.texts import sentences


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipes", nargs="+", default=["speech-lm"])
    ap.add_argument("--candidates", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sentences", type=int, default=8)
    ap.add_argument("--report", type=Path, default=Path(__file__).parent / "results" / "rerank_speed.md")
    args = ap.parse_args()
    from audioguide.pipeline import Pipeline

    torch.set_num_threads(args.threads)
    texts = sentences(args.sentences, seed=1, split="held_out")
    lines = [
        f"# Best-of-N reranking: real-time factor ({platform.processor() or platform.machine()}, {args.threads} threads)",
        "",
        f"`python benchmarks/rerank_speed.py` — {len(texts)} held-out sentences, each recipe at its defaults "
        "except the number of candidates. RTF = compute s / audio s; `x plain` = RTF / RTF with one candidate.",
        "",
        "| recipe | candidates | RTF | x plain |",
        "|---|---|---|---|",
    ]
    for name in args.recipes:
        pipe = Pipeline.from_recipe(name)
        timed = {n: rtf(lambda s, n=n: pipe(s, seed=0, candidates=n)[0], texts, pipe.sample_rate)
                 for n in sorted({1, *args.candidates})}
        for n in args.candidates:
            lines.append(f"| `{name}` | {n} | {timed[n]:.4f} | {timed[n] / timed[1]:.2f} |")
    write_report(lines, args.report)


if __name__ == "__main__":
    main()
