"""Turn an exported training checkpoint into shipped package weights.

    python scripts/ship_weights.py RUN/model.safetensors audioguide/weights/NAME.safetensors \
        [--calibrate MANIFEST] [--fp32] [--recipe NAME] [--guidance-only]

Floating-point tensors are stored as float16 (half the size; they are upcast when loaded) unless
``--fp32``; the config stays in the metadata. ``--calibrate`` sets an autoencoder's latent scale
from up to 64 clips of a manifest, so its latents have unit variance for the generators.
``--recipe`` names the recipe the weights ship with, where they were trained by a fine-tuning
copy of it under another name. ``--guidance-only`` keeps only a model's guidance-scale embeddings
and adapters: what an adapter-only distilled student ships as its ``[model] guidance_weights``.
"""

from __future__ import annotations

import argparse

import torch

from audioguide.audio import read_audio
from audioguide.checkpoints import load_checkpoint, save_checkpoint
from audioguide.manifest import read_manifest
from audioguide.registry import REPRESENTATIONS


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("source")
    ap.add_argument("target")
    ap.add_argument("--calibrate", help="manifest of audio for an autoencoder's latent scale")
    ap.add_argument("--fp32", action="store_true")
    ap.add_argument("--recipe", help="the shipped recipe's name, recorded in the metadata")
    ap.add_argument("--guidance-only", action="store_true", help="keep only the guidance-scale embeddings and adapters")
    args = ap.parse_args()
    ckpt = load_checkpoint(args.source)
    tensors = dict(ckpt.tensors)
    if args.guidance_only:
        from audioguide.models.dit import is_guidance_key

        tensors = {k: v for k, v in tensors.items() if is_guidance_key(k)}
        if not tensors:
            raise SystemExit(f"error: {args.source} has no guidance-scale embeddings or adapters")
    if args.calibrate:
        kind = ckpt.config["component"]
        rep = REPRESENTATIONS[kind](REPRESENTATIONS[kind].Config(**_tuples(ckpt.config["config"])))
        rep.load_state_dict(tensors)
        rep.eval()
        rows = read_manifest(args.calibrate)[:64]
        wav = [torch.from_numpy(read_audio(r.audio, rep.sample_rate)[0]) for r in rows]
        batch = torch.nn.utils.rnn.pad_sequence(wav, batch_first=True)
        scale = rep.calibrate(batch)
        print(f"latent scale {scale:.4f}")
        tensors = rep.state_dict()
    if not args.fp32:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    config = {**ckpt.config, "recipe": args.recipe} if args.recipe else ckpt.config
    save_checkpoint(args.target, tensors, config, ckpt.kind)
    print(f"wrote {args.target}")


def _tuples(config: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}


if __name__ == "__main__":
    main()
