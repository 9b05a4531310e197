"""Start a recipe's model from another model's weights where names and shapes agree.

    python scripts/warm_start.py RECIPE SOURCE [SOURCE ...] TARGET [--rename OLD=NEW ...] [--zero PREFIX ...] [--force]

Builds RECIPE's model at its seeded initialisation, copies every tensor of SOURCE (a shipped or
exported safetensors file) whose name and shape match, and writes TARGET in the exported format
(config in the metadata), ready for `audioguide train` to continue from (put it where the recipe's
[model] weights point, or pass it to training as the recipe's weights). ``--rename OLD=NEW`` reads
SOURCE's tensors whose names start with OLD as if they started with NEW; a voice table with fewer
voices grows (new voices start at the mean row, as a training warm start grows them). Prints what
was not copied.
Several SOURCEs are read in order, a later one's tensors taking the place of an earlier one's of
the same name; ``--rename`` (and the model's own moved names) apply to every source, so put a
source whose renamed names could collide with another's first. An existing TARGET is replaced
only with ``--force`` (so a forgotten TARGET cannot overwrite the last SOURCE). ``--zero PREFIX`` sets the tensors whose names start with PREFIX to zero after
copying: a new input added through a zeroed projection leaves the warm-started function as it was.
Used for speech-acoustic (from speech.safetensors: all but the phoneme table, the text condition's
null and pooled projection renamed to the tokens') and for tokenizer-speech (a recipe whose
``[train] target = "representation"``: the representation's trained part, here the tokenizer,
whose frame encoder starts as the content verifier's, ``--rename blocks.=frame_blocks.``; the
verifier's input projection and final LayerNorm match by name too, and are copied as well).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from audioguide.checkpoints import load_checkpoint, save_checkpoint
from audioguide.components import build_components
from audioguide.core import load_moved
from audioguide.recipes import load_recipe
from audioguide.registry import REPRESENTATIONS


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("recipe")
    ap.add_argument("source", nargs="+")
    ap.add_argument("target")
    ap.add_argument("--rename", action="append", default=[], help="OLD=NEW name prefix")
    ap.add_argument("--zero", action="append", default=[], help="name prefix of tensors to set to zero")
    ap.add_argument("--force", action="store_true", help="replace an existing TARGET")
    args = ap.parse_args()
    if Path(args.target).exists() and not args.force:
        raise SystemExit(f"error: {args.target} exists; pass --force to replace it (or name the target after the sources)")
    recipe = load_recipe(args.recipe)
    if recipe.train is not None and recipe.train.target == "representation":  # a tokenizer: its trained part,
        spec = recipe.representation  # at its seeded initialisation (not the weights the recipe ships)
        representation = REPRESENTATIONS[spec.type](spec.config)
        model = getattr(representation, "trained", representation)
    else:
        _, model = build_components(recipe, require_weights=False, load_model=False)
        spec = recipe.model
    state = model.state_dict()
    source = {}
    for path in args.source:
        source.update(load_checkpoint(path).tensors)
    load_moved(model, source, "")  # tensors saved under their former names, as loading renames them
    for pair in args.rename:
        old, new = pair.split("=", 1)
        source = {(new + k[len(old):] if k.startswith(old) else k): v for k, v in source.items()}
    for k, v in list(source.items()):  # a voice table with voices added at the end: new rows start at the mean
        if k.endswith("speaker.table.weight") and k in state and v.shape[1:] == state[k].shape[1:] and len(v) < len(state[k]):
            source[k] = torch.cat([v, v.float().mean(0, keepdim=True).to(v.dtype).expand(len(state[k]) - len(v), -1)])
    copied = {k: v.to(state[k].dtype) for k, v in source.items() if k in state and state[k].shape == v.shape}
    state.update(copied)
    zeroed = set()
    for prefix in args.zero:
        named = [k for k in state if k.startswith(prefix)]
        if not named:
            raise SystemExit(f"error: --zero {prefix}: no tensor of the model starts so")
        for k in named:
            state[k] = torch.zeros_like(state[k])
            print(f"  zeroed: {k}")
        zeroed.update(named)
    print(f"copied {len(set(copied) - zeroed)} of {len(state)} tensors")
    for k in sorted(set(state) - set(copied) - zeroed):
        print(f"  kept initial: {k} {tuple(state[k].shape)}")
    for k in sorted(set(source) - set(copied)):
        print(f"  not used: {k} {tuple(source[k].shape)}")
    config = {"component": spec.type, "config": dataclasses.asdict(spec.config), "recipe": recipe.name, "step": 0}
    save_checkpoint(args.target, state, json.loads(json.dumps(config, default=list)), kind=spec.type)
    print(f"wrote {args.target}")


if __name__ == "__main__":
    main()
