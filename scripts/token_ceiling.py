"""What semantic tokens allow: real recordings tokenized and rendered back by the acoustic stage.

    python scripts/token_ceiling.py --data HELD_OUT.jsonl --data SUS.jsonl [--per-voice 5]
        [--tokenizer tokenizer-speech] [--acoustic speech-acoustic] [--judge base]
        [--classifier speakers.safetensors] [--report out.md]

Issue 23 asks, before committing to a token design, what WER the tokens allow when the teacher's
own tokens are rendered. For every row (at most ``--per-voice`` per voice and split) this judges
three versions of the same sentence with the same ASR judge and speaker classifier:

* the real recording (the ceiling of everything);
* the autoencoder's round trip (what any generator on its latents can at best sound like);
* the recording's semantic tokens rendered by the acoustic stage in the row's voice (seed = row
  index): what a codec LM that drew exactly the teacher's tokens would sound like.

Per split: corpus WER with its 95 % bootstrap interval over sentences, speaker accuracy. The counting
and the intervals are ``benchmarks/guidance_methods.py``'s.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIDES = ("real recording", "autoencoder round trip", "tokens -> acoustic stage")


def main() -> None:
    from audioguide.audio import read_audio
    from audioguide.components import build_components
    from audioguide.conditioners.tokens import token_text
    from audioguide.evaluation.asr import load_judge, transcribe
    from audioguide.evaluation.speaker import SpeakerClassifier
    from audioguide.evaluation.tts import read_splits
    from audioguide.manifest import cap_per_voice
    from audioguide.pipeline import Pipeline
    from audioguide.recipes import load_recipe
    from benchmarks.guidance_methods import cell, item_errors, ratio_ci

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", action="append", required=True)
    ap.add_argument("--per-voice", type=int, default=5)
    ap.add_argument("--tokenizer", default="tokenizer-speech")
    ap.add_argument("--acoustic", default="speech-acoustic")
    ap.add_argument("--judge", default="base")
    ap.add_argument("--classifier")
    ap.add_argument("--report")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    representation, _ = build_components(load_recipe(args.tokenizer))
    representation.eval()
    acoustic = Pipeline.from_recipe(args.acoustic)
    classifier = SpeakerClassifier.load(args.classifier) if args.classifier else None
    load_judge(args.judge)
    splits = read_splits(args.data)
    rows = [(split, row) for split, rs in splits.items() for row in cap_per_voice(rs, args.per_voice)]
    results = {side: [] for side in SIDES}  # (split, errors, words, voice recognised)
    for i, (split, row) in enumerate(rows):
        wav, sr = read_audio(row.audio, representation.sample_rate)
        x = torch.from_numpy(wav)[None]
        with torch.inference_mode():
            z = representation.latents(x)
            tokens = representation.tokenizer.tokens(z)[0]
            round_trip = representation.decode(z)[0].numpy()
            rendered = acoustic([token_text(tokens)], seed=i, inputs={"speaker": row.speaker})[0]
        for side, audio in zip(SIDES, (wav, round_trip, rendered)):
            errors, words = item_errors(row.text, transcribe(audio, sr, args.judge))
            voice = None if classifier is None else classifier.predict([audio], sr)[0] == row.speaker
            results[side].append((split, errors, words, voice))
        print(f"{i + 1}/{len(rows)}", end="\r", file=sys.stderr)
    rng = np.random.default_rng(0)
    lines = ["| | " + " | ".join(f"WER {s} (%)" for s in splits) + " | speaker accuracy (%) |",
             "|---|" + "---|" * (len(splits) + 1)]
    for side in SIDES:
        cells = []
        for split in splits:
            mine = [r for r in results[side] if r[0] == split]
            num, den = np.array([r[1] for r in mine], float), np.array([r[2] for r in mine], float)
            v, lo, hi, _ = ratio_ci(num, den, rng)
            cells.append(cell(v, lo, hi))
        voices = [r[3] for r in results[side] if r[3] is not None]
        acc = f"{100 * np.mean(voices):.1f}" if voices else "-"
        lines.append(f"| {side} | " + " | ".join(cells) + f" | {acc} |")
    table = "\n".join(lines)
    header = (f"Rows: {len(rows)} ({', '.join(f'{s}: {sum(1 for r in rows if r[0] == s)}' for s in splits)}), "
              f"at most {args.per_voice} per voice and split; judge Whisper {args.judge}; tokenizer {args.tokenizer}, "
              f"acoustic stage {args.acoustic}.\n\n")
    print(header + table)
    if args.report:
        Path(args.report).write_text(f"# Semantic-token ceiling\n\n{header}{table}\n", encoding="utf-8")


if __name__ == "__main__":
    main()
