"""Write original / resynthesised pairs of held-out speech to samples/autoencoder/ (one per voice).

    python scripts/resynthesis_samples.py corpus/speech/held_out.jsonl [--voices 3]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from audioguide.audio import read_audio, write_wav
from audioguide.manifest import read_manifest
from audioguide.components import build_components
from audioguide.recipes import load_recipe


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("manifest")
    ap.add_argument("--voices", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("samples/autoencoder"))
    args = ap.parse_args()
    rep, _ = build_components(load_recipe("autoencoder-speech"))
    rep.eval()
    seen: set[str] = set()
    for row in read_manifest(args.manifest):
        if row.speaker in seen or len(seen) >= args.voices:
            continue
        seen.add(row.speaker)
        wav, sr = read_audio(row.audio, rep.sample_rate)
        with torch.inference_mode():
            x = torch.from_numpy(wav)[None]
            latent = rep.decode(rep.encode(x))[0, : len(wav)].numpy()
            tokens = rep.decode_tokens(rep.encode_tokens(x))[0, : len(wav)].numpy()
        write_wav(args.out / f"{row.speaker}_original.wav", wav, sr)
        write_wav(args.out / f"{row.speaker}_latents.wav", latent, sr)
        write_wav(args.out / f"{row.speaker}_tokens.wav", tokens, sr)
        print(row.speaker, repr(row.text), f"{len(wav) / sr:.2f} s, peak {np.abs(latent).max():.2f}")


if __name__ == "__main__":
    main()
