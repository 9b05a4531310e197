"""How much best-of-N reranking gains, and how much a perfect judge would: every candidate judged.

For each sentence the recipe draws N candidates in one batch, exactly as the pipeline does with
``candidates = N`` (same seed per row as ``audioguide eval tts``), and the Whisper judge transcribes
every one of them. The table compares, per split: the first candidate alone, the mean candidate,
the verifier's choice among the first n (n = 2, 4, ... N), and the oracle (the candidate with the
fewest word errors, what the judge itself would choose), with a paired bootstrap interval of
verifier-choice minus mean-candidate WER.

    python scripts/rerank_study.py speech-lm --data held_out.jsonl --data sus.jsonl --per-voice 6 \
        --candidates 4 --judge base [--out candidates.jsonl] [--threads 2] [--verifier verifier-speech]
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from pathlib import Path

import torch


def draw(pipe, text: str, voice: str | None, n: int, seed: int) -> tuple[list, list[float]]:
    """``n`` candidate waveforms of one sentence, drawn as the pipeline draws them, and the
    verifier's score of each (all 0 where the pipeline makes no choice: fewer frames than symbols)."""
    plan = pipe.prepare(text, seed=seed, inputs={"speaker": voice} if voice else None, candidates=n)
    (piece,), (samples,) = plan.pieces, pipe.draw(plan)
    scores = pipe.scores(piece, samples)
    keep = int(round(piece.seconds * pipe.sample_rate))
    return [w[:keep].float().cpu().numpy() for w in pipe.decode(samples)], [0.0] * n if scores is None else scores.tolist()


def summary(records: list[dict]) -> str:
    by = defaultdict(list)
    for r in records:
        by[(r["split"], r["row"])].append(r)
    groups = list(by.values())
    n_max = min(len(g) for g in groups)
    sizes = [n for n in (2, 4, 8, 16) if n <= n_max]
    head = "| split | sentences | first candidate | mean candidate | " + " | ".join(
        f"verifier of {n} | oracle of {n}" for n in sizes) + f" | verifier of {n_max} - mean, 95 % interval |"
    lines = [head, "|---" * (5 + 2 * len(sizes)) + "|"]

    def wer(gs, pick):
        return sum(pick(g) for g in gs) / sum(g[0]["words"] for g in gs)

    for split in sorted({g[0]["split"] for g in groups}):
        gs = [g for g in groups if g[0]["split"] == split]
        cells = [wer(gs, lambda g: g[0]["errors"]), wer(gs, lambda g: sum(c["errors"] for c in g) / len(g))]
        for n in sizes:
            cells += [wer(gs, lambda g, n=n: max(g[:n], key=lambda c: c["score"])["errors"]),
                      wer(gs, lambda g, n=n: min(c["errors"] for c in g[:n]))]
        rng, diffs = random.Random(0), []
        for _ in range(2000):
            s = [rng.choice(gs) for _ in gs]
            diffs.append(wer(s, lambda g: max(g, key=lambda c: c["score"])["errors"]) - wer(s, lambda g: sum(c["errors"] for c in g) / len(g)))
        diffs.sort()
        lines.append(f"| {split} | {len(gs)} | " + " | ".join(f"{100 * c:.1f} %" for c in cells)
                     + f" | [{100 * diffs[50]:+.1f}, {100 * diffs[1949]:+.1f}] |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("recipe")
    ap.add_argument("--data", action="append", required=True, help="manifest; its stem labels the split (repeatable)")
    ap.add_argument("--per-voice", type=int, default=6)
    ap.add_argument("--candidates", type=int, default=4)
    ap.add_argument("--judge", default="base")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, help="every candidate's transcript and score (JSON Lines)")
    ap.add_argument("--verifier", help="a recipe whose [verifier] judges the candidates (default: the recipe's own)")
    args = ap.parse_args()
    import jiwer

    from audioguide.evaluation.asr import normalize, transcribe
    from audioguide.evaluation.tts import read_splits
    from audioguide.manifest import cap_per_voice
    from audioguide.components import build_verifier
    from audioguide.pipeline import Pipeline
    from audioguide.recipes import load_recipe

    torch.set_num_threads(args.threads)
    pipe = Pipeline.from_recipe(args.recipe)
    if args.verifier:
        pipe.verifier = build_verifier(load_recipe(args.verifier)).eval()
    if pipe.verifier is None:
        raise SystemExit(f"recipe {args.recipe!r} has no [verifier]; name one with --verifier")
    chosen = [(split, row) for split, rows in read_splits(args.data).items() for row in cap_per_voice(rows, args.per_voice)]
    records = []
    for i, (split, row) in enumerate(chosen):  # row i uses seed + i, as in `audioguide eval tts`
        wavs, scores = draw(pipe, row.text, row.speaker, args.candidates, args.seed + i)
        ref = normalize(row.text)
        for j, (wav, score) in enumerate(zip(wavs, scores)):
            hyp = transcribe(wav, pipe.sample_rate, args.judge)
            m = jiwer.process_words(ref, normalize(hyp))
            records.append({"split": split, "row": row.id, "voice": row.speaker, "candidate": j, "score": score,
                            "reference": row.text, "transcript": hyp, "words": len(ref.split()),
                            "errors": m.substitutions + m.deletions + m.insertions})
        print(f"{i + 1}/{len(chosen)}", flush=True)
    if args.out:
        args.out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    print(summary(records))


if __name__ == "__main__":
    main()
