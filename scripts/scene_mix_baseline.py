"""The audio-side baseline for two-source scenes: draw each source alone from its own words and mix
the two waveforms, instead of drawing the scene from one prompt (its caption, or the caption's
sources as a prompt in parts: `audioguide eval t2a --compose`). Judges every mix as `eval t2a` judges
scenes (both classes in the judge's top 2) and writes items that pair with an `eval t2a --items`
file of the same rows and seeds (scripts/compare_sound_items.py).

    python scripts/scene_mix_baseline.py --data SCENES.jsonl --classifier JUDGE -o OUT.jsonl [--gain-db -6]

Row ``i`` of the manifest's rows that `eval t2a` evaluates (all of them, in order) draws its
foreground, if it is a scene with ``part_captions``, with seed ``seed + i`` as `eval t2a` draws it,
and its background with seed ``seed + i + rows``; both
as long as the row (within the recipe's range); the background ``gain_db`` below the foreground by
RMS (:func:`audioguide.audio.mix_scene`, as the corpus mixes its real scenes, 3-10 dB down).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a sound corpus's scenes (rows with 'part_captions')")
    ap.add_argument("--classifier", required=True)
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--recipe", default="sound")
    ap.add_argument("--gain-db", type=float, default=-6.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--setting", default="recipe default", help="the setting label of the items (to pair with eval t2a's)")
    ap.add_argument("--save-wavs", help="also keep the mixes, as DIR/<setting>/<row id>.wav (for scripts/rejudge_sound_items.py)")
    args = ap.parse_args(argv)

    import numpy as np

    from audioguide.audio import mix_scene, write_wav
    from audioguide.core import AudioguideError, atomic_write, set_threads
    from audioguide.evaluation.sound import _slug, held_out_rows, load_sound_classifier, recognised, row_label, row_labels
    from audioguide.manifest import read_manifest
    from audioguide.pipeline import Pipeline

    try:
        set_threads(args.threads)
        judge = load_sound_classifier(args.classifier)
        every = held_out_rows(read_manifest(args.data))  # eval t2a's rows and order: row i draws with seed + i
        rows = [(i, r) for i, r in enumerate(every) if r.extra.get("part_captions")]
        if not rows:
            raise AudioguideError(f"{args.data} has no two-source scenes with 'part_captions'")
        pipe = Pipeline.from_recipe(args.recipe)
    except AudioguideError as e:
        raise SystemExit(f"error: {e}") from None
    d = pipe.recipe.duration
    feats, items = [], []
    for n, (i, row) in enumerate(rows):
        fg_words, bg_words = row.extra["part_captions"][:2]
        secs = min(max(row.duration or d.seconds, d.min_seconds), d.max_seconds)
        t0 = time.perf_counter()
        fg = pipe([fg_words], seed=args.seed + i, seconds=secs)[0]
        bg = pipe([bg_words], seed=args.seed + i + len(every), seconds=secs)[0]
        elapsed = time.perf_counter() - t0
        wav = mix_scene(fg, bg, args.gain_db)
        if args.save_wavs:
            write_wav(Path(args.save_wavs) / _slug(args.setting) / f"{row.id}.wav", wav, pipe.sample_rate)
        feats.append(judge.clip_features(wav, pipe.sample_rate))
        items.append((row, args.seed + i, len(wav) / pipe.sample_rate, elapsed))
        print(f"\r{n + 1}/{len(rows)}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    batch = judge.batch(feats)
    out = []
    for (row, seed, secs, elapsed), top in zip(items, judge.top_features(batch, 2)):
        labels = row_labels(row)
        out.append({"setting": args.setting, "scales": {}, "row_id": row.id, "label": row_label(row), "kind": row.extra.get("kind"),
                    "predicted": top[0], "seed": seed, "seconds": secs, "synthesis_seconds": elapsed, "labels": list(labels),
                    "top": list(top), "hit": recognised(labels, top)})
    both = np.mean([o["hit"] for o in out])
    fg_in = np.mean([o["labels"][0] in o["top"] for o in out])
    bg_in = np.mean([o["labels"][1] in o["top"] for o in out])
    rtf = sum(o["synthesis_seconds"] for o in out) / sum(o["seconds"] for o in out)
    print(f"two draws mixed at {args.gain_db:g} dB: both in the top 2 {100 * both:.1f} %, foreground {100 * fg_in:.1f} %, "
          f"background {100 * bg_in:.1f} % of {len(out)} scenes; RTF {rtf:.3f}")
    with atomic_write(Path(args.output)) as tmp:
        tmp.write_text("".join(json.dumps(o) + "\n" for o in out), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
