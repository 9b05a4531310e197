"""Judge clips that `audioguide eval t2a --save-wavs DIR --items ITEMS` kept with another sound judge,
without generating them again: writes an items file of the same form (the new judge's class, top 2
and hit per item; the real clips too), and prints adherence by setting and the Fréchet distance of
the new judge's embeddings to the real clips. Pair two judges' files, or two generators' files under
one judge, with scripts/compare_sound_items.py.

    python scripts/rejudge_sound_items.py ITEMS DIR --data MANIFEST --classifier JUDGE -o OUT.jsonl [--member mlp|cnn]

``DIR`` is the --save-wavs directory (``DIR/<setting>/<row id>.wav``); ``MANIFEST`` the --data of the
run (the real clips are its rows' audio).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def summary(items: list[dict]) -> str:
    """Adherence of single-source items; both sources in the top 2 for two-source scenes."""
    parts = []
    for name, chosen in (("adherence", [o for o in items if o.get("kind") != "mixture"]),
                         ("scenes, both in the top 2", [o for o in items if o.get("kind") == "mixture"])):
        if chosen:
            parts.append(f"{name} {100 * np.mean([o['hit'] for o in chosen]):.1f} % of {len(chosen)}")
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("items")
    ap.add_argument("wavs")
    ap.add_argument("--data", required=True)
    ap.add_argument("--classifier", required=True)
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--member", choices=("mlp", "cnn"), help="judge with this member of an ensemble judge alone")
    args = ap.parse_args(argv)

    from audioguide.audio import read_audio
    from audioguide.core import AudioguideError, atomic_write
    from audioguide.evaluation.classifier import SAMPLE_RATE
    from audioguide.evaluation.sound import (
        REAL_LABEL,
        _slug,
        clip_rows,
        frechet_distance,
        load_sound_classifier,
        recognised,
        row_label,
        row_labels,
    )
    from audioguide.manifest import read_manifest

    try:
        judge = load_sound_classifier(args.classifier, args.member)
    except AudioguideError as e:
        raise SystemExit(f"error: {e}") from None
    rows = {r.id: r for r in read_manifest(args.data)}
    items = [json.loads(line) for line in Path(args.items).read_text(encoding="utf-8").splitlines() if line.strip()]
    generated = [it for it in items if it["seed"] is not None]
    missing = sorted({it["row_id"] for it in generated} - set(rows))
    if missing:
        raise SystemExit(f"error: {len(missing)} item(s) name rows that {args.data} lacks, e.g. {missing[0]!r}")
    wanted = {rows[it["row_id"]].audio.resolve(): rows[it["row_id"]] for it in generated}
    real = [r for r in clip_rows(list(rows.values())) if r.audio.resolve() in wanted]
    real_batch = judge.batch([judge.clip_features(*read_audio(r.audio, SAMPLE_RATE)) for r in real])
    real_emb = judge.embed(real_batch).numpy()
    out = []
    for r, top in zip(real, judge.top_features(real_batch, 2)):
        labels = row_labels(r)  # recognised(): the top 1 for one class, both in the top 2 for a scene
        out.append({"setting": REAL_LABEL, "scales": {}, "row_id": r.id, "label": row_label(r), "kind": r.extra.get("kind"),
                    "predicted": top[0], "seed": None, "seconds": None, "synthesis_seconds": None, "labels": list(labels),
                    "top": list(top), "hit": recognised(labels, top)})
    for setting in dict.fromkeys(it["setting"] for it in generated):
        chosen = [it for it in generated if it["setting"] == setting]
        feats = [judge.clip_features(*read_audio(Path(args.wavs) / _slug(setting) / f"{it['row_id']}.wav", SAMPLE_RATE)) for it in chosen]
        batch = judge.batch(feats)
        tops = judge.top_features(batch, 2)
        for it, top in zip(chosen, tops):
            labels = tuple(it.get("labels") or (it["label"],))
            out.append({**it, "predicted": top[0], "top": list(top), "hit": recognised(labels, top)})
        fd = frechet_distance(judge.embed(batch).numpy(), real_emb)
        print(f"{setting}: {summary(out[-len(chosen):])}, FD {fd:.2f}")
    print(f"real audio: {summary([o for o in out if o['seed'] is None])}")
    with atomic_write(Path(args.output)) as tmp:
        tmp.write_text("".join(json.dumps(o) + "\n" for o in out), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
