"""Held-out retrieval accuracy of a caption verifier (recipe ``verifier-sound``).

    python scripts/caption_retrieval.py --data corpus/sound/held_out.jsonl \
        [--recipe verifier-sound] [--weights RUN/model.safetensors] [--draws 10] [--noise 0.5]

For every held-out clip, its latents (the recipe's autoencoder) are scored against one caption per
class, and the clip counts as retrieved when the caption of its own class scores highest (chance:
one over the number of classes). The class captions are held-out phrasings: each draw takes one
caption per class at random from the other held-out rows of that class (the clip's own caption only
where its class has no other row); accuracy is averaged over ``--draws`` seeded draws. Also
printed: the same with template captions ("the sound of {label}"), the macro average over classes,
and the accuracy on latents noised along the flow path at ``t = --noise`` (what dynamic guidance
shows the verifier mid-sampling).
"""

from __future__ import annotations

import argparse
import dataclasses
import random
from collections import defaultdict
from pathlib import Path

import torch

from audioguide.audio import read_audio
from audioguide.components import build_components, build_verifier
from audioguide.manifest import read_manifest
from audioguide.recipes import load_recipe


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="held-out manifest with caption and label")
    ap.add_argument("--recipe", default="verifier-sound")
    ap.add_argument("--weights", help="verifier weights (default: the recipe's)")
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--noise", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    recipe = load_recipe(args.recipe)
    if args.weights is not None:
        weights = str(Path(args.weights).resolve())
        recipe = dataclasses.replace(recipe, verifier=dataclasses.replace(recipe.verifier, weights=weights))
    representation, _ = build_components(recipe)
    verifier = build_verifier(recipe)
    representation.eval(), verifier.eval()
    rows = [r for r in read_manifest(args.data) if r.caption and r.extra.get("label")]
    labels = sorted({r.extra["label"] for r in rows})
    with torch.inference_mode():
        audio = []
        for r in rows:
            wav = torch.from_numpy(read_audio(r.audio, representation.sample_rate)[0])[None]
            audio.append(verifier.embed_audio(representation.encode(wav)))
        clean = torch.cat(audio)
        g = torch.Generator().manual_seed(args.seed)
        noised = []
        for r in rows:
            wav = torch.from_numpy(read_audio(r.audio, representation.sample_rate)[0])[None]
            z = representation.encode(wav)
            z = (1 - args.noise) * z + args.noise * torch.randn(z.shape, generator=g)
            noised.append(verifier.embed_audio(z))
        noisy = torch.cat(noised)
        by_class = defaultdict(list)
        for i, r in enumerate(rows):
            by_class[r.extra["label"]].append(i)
        own = torch.tensor([labels.index(r.extra["label"]) for r in rows])

        captions = torch.cat([verifier.embed_text([r.caption for r in rows[k : k + 64]]) for k in range(0, len(rows), 64)])
        templates = verifier.embed_text([f"the sound of {label}" for label in labels])

        def accuracy(emb: torch.Tensor, text_of) -> tuple[float, float]:
            """Top-1 and macro accuracy; ``text_of(i)``: the class captions' embeddings for clip ``i``."""
            hits = torch.tensor([float(int((emb[i] @ text_of(i).T).argmax()) == int(own[i])) for i in range(len(rows))])
            macro = sum(float(hits[idx].mean()) for idx in by_class.values()) / len(by_class)
            return float(hits.mean()), macro

        results = defaultdict(list)
        for d in range(args.draws):
            rng = random.Random(args.seed * 1000 + d)
            chosen = [rng.choice(by_class[label]) for label in labels]
            spare = [rng.choice([j for j in by_class[label] if j != c] or by_class[label]) for label, c in zip(labels, chosen)]
            base = captions[chosen]

            def text_of(i: int, base=base, chosen=chosen, spare=spare) -> torch.Tensor:
                k = int(own[i])
                return base if chosen[k] != i else torch.cat([base[:k], captions[spare[k]][None], base[k + 1 :]])

            results["held-out captions"].append(accuracy(clean, text_of))
            results[f"held-out captions, latents noised at t = {args.noise:g}"].append(accuracy(noisy, text_of))
        results["template captions (the sound of {label})"].append(accuracy(clean, lambda i: templates))
    print(f"{len(rows)} clips, {len(labels)} classes (chance {100 / len(labels):.1f} %)")
    for name, accs in results.items():
        top1 = 100 * sum(a for a, _ in accs) / len(accs)
        macro = 100 * sum(m for _, m in accs) / len(accs)
        print(f"{name}: top-1 {top1:.1f} %, macro over classes {macro:.1f} % ({len(accs)} draw(s))")


if __name__ == "__main__":
    main()
