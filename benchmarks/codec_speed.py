"""Encode / decode speed of audio representations on this CPU: ours vs EnCodec and DAC.

EnCodec 24 kHz and DAC 24 kHz are built from their default ``transformers`` configs (random
weights: speed does not depend on the values; official weights cannot be downloaded here), so
the architectures are compared side by side in one run. Real-time factor = compute seconds /
audio seconds (lower is better); ``ratio`` = peer time / our time.

    python benchmarks/codec_speed.py [--threads 1] [--seconds 4] [--weights path/to/ae.safetensors]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from audioguide.representations.autoencoder import Autoencoder, AutoencoderConfig


def best_of(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "codec_speed.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import DacConfig, DacModel, EncodecConfig, EncodecModel

    sr = 24000
    wav = torch.randn(1, int(args.seconds * sr)) * 0.1
    rows = []
    with torch.inference_mode():
        ae = Autoencoder(AutoencoderConfig()).eval()
        params = sum(p.numel() for p in ae.parameters()) / 1e6
        enc = best_of(lambda: ae.encode(wav), args.repeats)
        z = ae.encode(wav)
        dec = best_of(lambda: ae.decode(z), args.repeats)
        codes = ae.encode_tokens(wav)
        tok_enc = best_of(lambda: ae.encode_tokens(wav), args.repeats)
        tok_dec = best_of(lambda: ae.decode_tokens(codes), args.repeats)
        ours = {"latents": (enc, dec), "tokens": (tok_enc, tok_dec)}
        rows.append(("audioguide autoencoder (latents)", params, enc, dec, 1.0))
        rows.append((f"audioguide autoencoder ({ae.n_codebooks} x {ae.codebook_size} RVQ tokens)", params, tok_enc, tok_dec, 1.0))

        encodec = EncodecModel(EncodecConfig()).eval()
        e_codes = encodec.encode(wav[:, None], bandwidth=6.0)
        e_enc = best_of(lambda: encodec.encode(wav[:, None], bandwidth=6.0), args.repeats)
        e_dec = best_of(lambda: encodec.decode(e_codes.audio_codes, [None]), args.repeats)
        e_params = sum(p.numel() for p in encodec.parameters()) / 1e6
        rows.append(("EnCodec 24 kHz, 6 kbps (transformers, 8 codebooks)", e_params, e_enc, e_dec, sum(ours["tokens"]) and (e_enc + e_dec) / sum(ours["tokens"])))

        dac = DacModel(DacConfig()).eval()
        d_codes = dac.encode(wav[:, None]).audio_codes
        d_enc = best_of(lambda: dac.encode(wav[:, None]), args.repeats)
        d_dec = best_of(lambda: dac.decode(audio_codes=d_codes), args.repeats)
        d_params = sum(p.numel() for p in dac.parameters()) / 1e6
        rows.append(("DAC 24 kHz (transformers default config)", d_params, d_enc, d_dec, (d_enc + d_dec) / sum(ours["tokens"])))

    lines = [
        "# Codec speed benchmark",
        "",
        f"{platform.machine()}, torch {torch.__version__}, {args.threads} thread(s), {args.seconds:g} s of 24 kHz audio, "
        f"best of {args.repeats}. RTF = seconds of compute per second of audio. `peer / ours` compares encode+decode "
        "time against our token path (higher = ours faster).",
        "",
        "| representation | params (M) | encode RTF | decode RTF | peer / ours |",
        "|---|---|---|---|---|",
    ]
    for name, p, e, d, ratio in rows:
        lines.append(f"| {name} | {p:.1f} | {e / args.seconds:.4f} | {d / args.seconds:.4f} | {ratio:.1f}x |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
