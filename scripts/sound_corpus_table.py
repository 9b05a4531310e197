"""The inventory of a captioned sound corpus (`audioguide data sound`): per class, its kind, clips,
minutes and sources, and the two-source scenes; Markdown on stdout (or --report).

    python scripts/sound_corpus_table.py corpus/sound --report benchmarks/results/sound_corpus.md
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path


def clips(path: Path) -> list[dict]:
    """A manifest's rows, one per audio file (captions of one clip counted once)."""
    seen, out = set(), []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if row["audio"] not in seen:
            seen.add(row["audio"])
            out.append(row)
    return out


def table(corpus: Path) -> str:
    train, held = clips(corpus / "train.jsonl"), clips(corpus / "held_out.jsonl")
    kinds, sources, models = collections.defaultdict(set), collections.defaultdict(set), collections.defaultdict(set)
    n_train, n_held, seconds = collections.Counter(), collections.Counter(), collections.Counter()
    for r in train:
        if r["kind"] == "mixture":
            continue
        label = r["label"]
        n_train[label] += 1
        kinds[label].add(r["kind"])
        seconds[label] += r.get("duration") or 0.0
        (models if r["source"].startswith("procedural:") else sources)[label].add(r["source"])
    for r in held:
        if r["kind"] != "mixture":
            n_held[r["label"]] += 1
    lines = ["| class | kind | training clips | held-out clips | training minutes | sources |", "|---|---|---|---|---|---|"]
    order = sorted(n_train, key=lambda c: (min(kinds[c]), c))
    for c in order:
        what = ", ".join(sorted(sources[c]))
        if models[c]:
            what += ("; " if what else "") + f"procedural ({len(models[c])} models)"
        lines.append(f"| {c} | {' + '.join(sorted(kinds[c]))} | {n_train[c]} | {n_held[c]} | {seconds[c] / 60:.1f} | {what} |")
    scenes = [r for r in train if r["kind"] == "mixture"]
    held_scenes = [r for r in held if r["kind"] == "mixture"]
    hours = sum(r.get("duration") or 0.0 for r in train) / 3600
    lines += ["", f"{len(order)} classes; {sum(n_train.values())} training and {sum(n_held.values())} held-out single-source clips; "
              f"{len(scenes)} training and {len(held_scenes)} held-out two-source scenes; {hours:.1f} h of training audio. "
              f"Multi-source classes: {sum(len(sources[c]) + len(models[c]) >= 2 for c in order)} of {len(order)}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--report", type=Path)
    args = parser.parse_args()
    text = table(args.corpus)
    print(text, end="")
    if args.report:
        from audioguide.core import atomic_write

        with atomic_write(args.report) as tmp:
            tmp.write_text(text)


if __name__ == "__main__":
    main()
