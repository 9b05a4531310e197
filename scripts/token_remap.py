"""Carry a model trained on one tokenizer's tokens over to a retrained tokenizer's tokens.

    python scripts/token_remap.py OLD_TOKENS NEW_TOKENS CHECKPOINT OUT [--levels 8,5,5,5] [--rows 3000]

OLD_TOKENS and NEW_TOKENS are the same manifest tokenized by the old and the new tokenizer
(``audioguide data tokens``; the same rows, the same rate). Position by position they give the
co-occurrence of old token ``u`` and new token ``v``; every per-token row of CHECKPOINT becomes
the mix of the old rows its new token was taken from,

    W_new[v] = sum_u P(u | v) W_old[u]        (unseen new tokens: the mean old row),

the same warm start as scripts/acoustic_init.py (tokens as the phonemes they stand for), one level
up: a retrained tokenizer's token is read as the old tokens it replaces, so the acoustic stage and
the LM keep what they learned instead of restarting. Per-token tensors are recognised by name:

* an acoustic stage (``conditioners.tokens.*``): the token table (row ``id + 1``; 0 pads), with
  the FSQ-coordinate map folded into it first (the coordinates of the new ids mean other things)
  and then zeroed;
* a codec LM (``embed.0.weight``, rows ``0 .. V-1`` are the ids, the rest specials; ``heads`` and
  ``prior``, weight and bias): every row indexed by a token id.

Writes OUT (``-`` for CHECKPOINT itself) with CHECKPOINT's config; prints what it remapped.
"""

from __future__ import annotations

import argparse
import json
import math

import torch

from audioguide.checkpoints import load_checkpoint, save_checkpoint
from audioguide.core import fsq_coordinates


def co_occurrence(old_path: str, new_path: str, size: int, rows: int) -> torch.Tensor:
    """``P(u | v)`` as a ``[V_new, V_old]`` matrix (rows of unseen new tokens are zero)."""
    counts = torch.zeros(size, size, dtype=torch.float64)
    with open(old_path, encoding="utf-8") as f_old, open(new_path, encoding="utf-8") as f_new:
        for n, (a, b) in enumerate(zip(f_old, f_new)):
            if n >= rows:
                break
            old, new = json.loads(a), json.loads(b)
            if old["audio"] != new["audio"]:
                raise SystemExit(f"error: row {n + 1} differs between the manifests ({old['audio']} vs {new['audio']})")
            u = torch.tensor([int(t) for t in old["tokens"].split()])
            v = torch.tensor([int(t) for t in new["tokens"].split()])
            k = min(len(u), len(v))
            counts.index_put_((v[:k], u[:k]), torch.ones(k, dtype=torch.float64), accumulate=True)
    return counts / counts.sum(1, keepdim=True).clamp_min(1)


def remap(rows: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``[V, ...]`` per-token rows -> the mix each new token is owed (unseen: the mean row)."""
    flat = rows.double().reshape(rows.shape[0], -1)
    seen = p.sum(1) > 0
    mixed = torch.where(seen[:, None], p @ flat, flat.mean(0))
    return mixed.reshape(rows.shape).to(rows.dtype)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("checkpoint")
    ap.add_argument("out")
    ap.add_argument("--levels", default="8,5,5,5", help="the tokenizer's FSQ levels")
    ap.add_argument("--rows", type=int, default=3000, help="manifest rows counted")
    args = ap.parse_args()
    levels = torch.tensor([int(x) for x in args.levels.split(",")])
    size = math.prod(levels.tolist())
    p = co_occurrence(args.old, args.new, size, args.rows)
    ckpt = load_checkpoint(args.checkpoint)
    tensors = dict(ckpt.tensors)
    done = []
    if ckpt.kind != "codec-lm" and "conditioners.tokens.table.weight" in tensors:  # acoustic stage
        table, coords = tensors["conditioners.tokens.table.weight"], tensors["conditioners.tokens.coords.weight"]
        full = table[1:].double() + fsq_coordinates(torch.arange(size), levels).double() @ coords.double().T
        tensors["conditioners.tokens.table.weight"] = torch.cat([table[:1], remap(full, p).to(table.dtype)])
        tensors["conditioners.tokens.coords.weight"] = torch.zeros_like(coords)
        done += ["conditioners.tokens.table.weight (coordinates folded in)"]
    for name in ("embed.0.weight", "heads.weight", "heads.bias", "prior.weight", "prior.bias"):  # codec LM
        if ckpt.kind == "codec-lm" and name in tensors:
            t = tensors[name]
            tensors[name] = torch.cat([remap(t[:size], p), t[size:]])
            done.append(name)
    if not done:
        raise SystemExit(f"error: {args.checkpoint} has no per-token tensors this script knows")
    out = args.checkpoint if args.out == "-" else args.out
    save_checkpoint(out, tensors, ckpt.config, ckpt.kind)
    print(f"{int((p.sum(1) > 0).sum())} of {size} new tokens seen; remapped {', '.join(done)}; wrote {out}")


if __name__ == "__main__":
    main()
