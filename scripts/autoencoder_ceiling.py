"""How much of a sound's class survives the sound autoencoder: the judge's accuracy on real held-out
clips as they are and after encode -> decode by each autoencoder given, on the same clips.

This is the ceiling of text-to-audio adherence that a representation allows: a generator whose
latents were perfect would still sound like the reconstruction. Also the log-mel L1 distance of
each reconstruction to its clip (the HiFi-GAN mel loss, in the autoencoder's own mel settings).

    python scripts/autoencoder_ceiling.py --data HELD_OUT.jsonl --classifier JUDGE.safetensors \\
        --per-class 6 [--weights A.safetensors --weights B.safetensors ...] [--report OUT.md]

Without --weights: the shipped autoencoder-sound only. Clips are one per audio file among the
first ``--per-class`` captions of each class (the rows `audioguide eval t2a --per-class` judges),
read at the autoencoder's rate (24 kHz). Until 2026-12-07 they were read at the judge's 16 kHz and
handed to the 24 kHz autoencoder as they were, so it coded every clip 1.5 times too high and fast:
the ceilings reported before then (57.5 / 59.6 %, log-mel 0.830 / 0.728) are too low.
``--member mlp|cnn`` judges with one member of an ensemble judge (``audioguide eval sounds --model ensemble``).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch

from audioguide.audio import read_audio
from audioguide.components import build_components
from audioguide.core import AudioguideError
from audioguide.evaluation.descriptions import wilson
from audioguide.evaluation.sound import clip_rows, held_out_rows, load_sound_classifier, row_label
from audioguide.manifest import read_manifest
from audioguide.recipes import load_recipe
from audioguide.training.autoencoder import mel_loss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--classifier", required=True)
    ap.add_argument("--per-class", type=int, default=None)
    ap.add_argument("--weights", action="append", default=[], help="autoencoder checkpoint (repeatable)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--report", type=Path)
    ap.add_argument("--member", choices=("mlp", "cnn"), help="judge with this member of an ensemble judge alone")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    try:
        judge = load_sound_classifier(args.classifier, args.member)
    except AudioguideError as e:
        raise SystemExit(f"error: {e}") from None
    rows = clip_rows(held_out_rows(read_manifest(args.data), args.per_class))
    labels = [row_label(r) for r in rows]
    recipe = load_recipe("autoencoder-sound")
    sides: list[tuple[str, torch.nn.Module | None]] = [("real clips", None)]
    for source in args.weights or [recipe.representation.weights]:
        spec = dataclasses.replace(recipe.representation, weights=str(Path(source).resolve()) if args.weights else source)
        rep, _ = build_components(dataclasses.replace(recipe, representation=spec))
        sides.append((f"through {source}" + ("" if args.weights else " (shipped)"), rep.eval()))

    rate = int(recipe.representation.config.sample_rate)  # the autoencoder's rate: the judge resamples what it hears
    wavs = [read_audio(r.audio, rate)[0] for r in rows]
    per = f", up to {args.per_class} captions per class" if args.per_class else ""
    lines = [f"{len(rows)} real held-out clips of {len(set(labels))} classes ({args.data}{per}); "
             f"judge {args.classifier}", "", "| audio | judge accuracy [95 % CI] | log-mel L1 |", "|---|---|---|"]
    per_class: dict[str, list[float]] = {}
    for name, rep in sides:
        out, distances = [], []
        for wav in wavs:
            if rep is None:
                out.append(wav)
                continue
            with torch.inference_mode():
                x = torch.from_numpy(wav)[None].float()
                y = rep.decode(rep.encode(x))[..., : x.shape[-1]]
                distances.append(float(mel_loss(x, y, rep)))
            out.append(y[0].numpy())
        predicted = judge.predict_features(judge.batch([judge.clip_features(w, rate) for w in out]))
        hits = [p == v for p, v in zip(predicted, labels)]
        lo, hi = wilson(sum(hits), len(hits))
        mel = f"{np.mean(distances):.3f}" if distances else "-"
        lines.append(f"| {name} | {100 * np.mean(hits):.1f} % [{100 * lo:.0f}, {100 * hi:.0f}] | {mel} |")
        for label in sorted(set(labels)):
            per_class.setdefault(label, []).append(float(np.mean([h for h, v in zip(hits, labels) if v == label])))
        print(lines[-1], flush=True)
    lines += ["", "Per class (judge accuracy, columns as the rows above):", "",
              "| class | clips | " + " | ".join(n for n, _ in sides) + " |", "|---|---|" + "---|" * len(sides)]
    for label, accs in per_class.items():
        lines.append(f"| {label} | {labels.count(label)} | " + " | ".join(f"{100 * a:.0f} %" for a in accs) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
