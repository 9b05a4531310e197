"""Paired comparison of two `audioguide eval tts --transcripts` files (A: before, B: after).

    python scripts/compare_transcripts.py A.jsonl B.jsonl [--setting "recipe default"]

Per split: B's corpus WER with its 95 % bootstrap interval over sentences, and on the rows both
files judged, A's and B's WER and the paired change B - A with its 95 % bootstrap interval (the
same resampled sentences on both sides, 2000 resamples, seed 0). Then WER per voice and split and
speaker accuracy for each side. Words are counted after the judge's normaliser,
as `eval tts` counts them; the counting and the intervals are `benchmarks/guidance_methods.py`'s.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

RESAMPLES = 2000


def load(path: str, setting: str) -> dict[tuple[str, str], tuple[int, int, str, bool | None]]:
    """(split, row id) -> (word errors, reference words, voice, voice recognised or None)."""
    from benchmarks.guidance_methods import item_errors

    out = {}
    for line in open(path, encoding="utf-8"):
        r = json.loads(line)
        if r["setting"] != setting or r["transcript"] is None:
            continue
        errors, words = item_errors(r["reference"], r["transcript"])
        if not words:
            continue
        recognised = None if r["predicted_voice"] is None else r["predicted_voice"] == r["voice"]
        out[(r["split"], r["row_id"])] = (errors, words, r["voice"], recognised)
    return out


def main() -> None:
    from benchmarks.guidance_methods import paired_ci, ratio_ci

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--setting", default="recipe default")
    args = ap.parse_args()
    a, b = load(args.a, args.setting), load(args.b, args.setting)
    rng = np.random.default_rng(0)
    for split in sorted({k[0] for k in b}):
        keys = sorted(k for k in b if k[0] == split)
        v, lo, hi, _ = ratio_ci(*(np.array([b[k][i] for k in keys]) for i in (0, 1)), rng, RESAMPLES)
        print(f"{split}: B {100 * v:.1f} % [{100 * lo:.1f}, {100 * hi:.1f}] over {len(keys)} sentences")
        shared = [k for k in keys if k in a]
        if shared:
            ea, na, eb, nb = (np.array([d[k][i] for k in shared]) for d in (a, b) for i in (0, 1))
            idx = rng.integers(0, len(shared), (RESAMPLES, len(shared)))
            d, dlo, dhi = paired_ci(ea, na, eb, nb, idx)
            print(f"  the {len(shared)} both judged: A {100 * ea.sum() / na.sum():.1f} %, B {100 * eb.sum() / nb.sum():.1f} %, "
                  f"B - A {100 * d:+.1f} [{100 * dlo:+.1f}, {100 * dhi:+.1f}] points")

    def per_voice(d, voice):
        rows = defaultdict(lambda: [0, 0])
        hits = [x[3] for x in d.values() if x[2] == voice and x[3] is not None]
        for (split, _), (err, words, v, _) in d.items():
            if v == voice:
                rows[split][0] += err
                rows[split][1] += words
        if not rows:
            return "-"
        wer = " / ".join(f"{100 * rows[s][0] / rows[s][1]:.1f}" for s in sorted(rows))
        return f"WER {wer} %, speaker {100 * np.mean(hits):.1f} %" if hits else f"WER {wer} %"

    for voice in sorted({x[2] for x in (*a.values(), *b.values())}):
        print(f"{voice:14s} A: {per_voice(a, voice):40s} B: {per_voice(b, voice)}")
    for name, d in (("A", a), ("B", b)):
        hits = [x[3] for x in d.values() if x[3] is not None]
        if hits:
            print(f"{name} speaker accuracy {100 * np.mean(hits):.1f} % of {len(hits)}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the benchmarks' statistics
    main()
