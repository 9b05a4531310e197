"""Compare two `audioguide eval t2a --items` files item by item: adherence of each side with its 95 %
bootstrap interval and the paired difference B - A (the same rows and seeds, resampled together),
per setting the two runs share, overall and per class kind (music / effect / procedural / speech);
two-source scenes apart: both sources in the judge's top 2, and each source alone.

    python scripts/compare_sound_items.py A.jsonl B.jsonl [--names before,after] [--resamples 2000]

Rows pair by (setting, row id, seed); rows only one side judged are left out and counted. Reuses the
bootstrap of benchmarks/guidance_methods.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from guidance_methods import paired_ci, ratio_ci  # noqa: E402


def load(path: str) -> dict[tuple[str, str, int | None], dict]:
    items = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            r = json.loads(line)
            items[(r["setting"], r["row_id"], r["seed"])] = r
    return items


def compare(a: dict, b: dict, names: tuple[str, str], resamples: int, seed: int = 0) -> str:
    shared = sorted(set(a) & set(b))
    if not shared:
        raise SystemExit("error: the two files share no (setting, row, seed) item")
    lines = [f"| setting | items | {names[0]} | {names[1]} | {names[1]} - {names[0]} (paired) |", "|---|---|---|---|---|"]
    def hit(r: dict) -> float:
        return float(r["hit"])

    def source(i: int):  # a scene's i-th source (0: the foreground) among the judge's top 2
        return lambda r: float(r["labels"][i] in r["top"][:2])

    for setting in dict.fromkeys(k[0] for k in shared):
        keys = [k for k in shared if k[0] == setting and a[k].get("kind") != "mixture"]
        scenes = [k for k in shared if k[0] == setting and a[k].get("kind") == "mixture"]
        groups = [("all", keys, hit)] + [(kind, [k for k in keys if a[k].get("kind") == kind], hit)
                                         for kind in sorted({a[k].get("kind") or "?" for k in keys})]
        groups += [("scenes, both in the top 2", scenes, hit), ("scenes, foreground in the top 2", scenes, source(0)),
                   ("scenes, background in the top 2", scenes, source(1))]
        for group, ks, score in groups:
            if not ks:
                continue
            ha = np.array([score(a[k]) for k in ks])
            hb = np.array([score(b[k]) for k in ks])
            ones = np.ones(len(ks))
            rng = np.random.default_rng(seed)
            ma, la, ua, idx = ratio_ci(ha, ones, rng, resamples)
            mb, lb, ub, _ = ratio_ci(hb, ones, np.random.default_rng(seed + 1), resamples)
            d, dl, du = paired_ci(ha, ones, hb, ones, idx)
            label = setting if group == "all" else f"{setting}: {group}"
            lines.append(f"| {label} | {len(ks)} | {100 * ma:.1f} % [{100 * la:.1f}, {100 * ua:.1f}] | "
                         f"{100 * mb:.1f} % [{100 * lb:.1f}, {100 * ub:.1f}] | {100 * d:+.1f} [{100 * dl:+.1f}, {100 * du:+.1f}] |")
    only = len(set(a) ^ set(b))
    if only:
        lines.append(f"\n{only} item(s) judged by one side only were left out.")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--names", default="A,B")
    ap.add_argument("--resamples", type=int, default=2000)
    args = ap.parse_args()
    names = tuple(args.names.split(",", 1)) if "," in args.names else ("A", "B")
    print(compare(load(args.a), load(args.b), names, args.resamples))


if __name__ == "__main__":
    main()
