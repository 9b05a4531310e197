"""Carry a model trained on one tokenizer's tokens over to a retrained tokenizer's tokens.

    python scripts/token_remap.py OLD_TOKENS NEW_TOKENS CHECKPOINT OUT [--levels 8,5,5,5] [--rows N]

OLD_TOKENS and NEW_TOKENS are the same manifest tokenized by the old and the new tokenizer
(``audioguide data tokens``; the same rows in the same order, the same rate and FSQ ``--levels``;
``--rows``: only the first N rows, default all). CHECKPOINT is exported or shipped weights (not a
training state). Position by position they give the
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
from audioguide.conditioners.tokens import token_ids
from audioguide.core import AudioguideError, fsq_coordinates


def co_occurrence(old_path: str, new_path: str, size: int, rows: int) -> torch.Tensor:
    """``P(u | v)`` as a ``[V, V]`` matrix, new token ``v`` by old ``u`` (rows of unseen new tokens are zero)."""
    counts = torch.zeros(size, size, dtype=torch.float64)
    old_rows = open(old_path, encoding="utf-8").read().splitlines()
    new_rows = open(new_path, encoding="utf-8").read().splitlines()
    if len(old_rows) != len(new_rows):
        raise SystemExit(f"error: the manifests have {len(old_rows)} and {len(new_rows)} rows; they must tokenize the same rows")
    for n, (a, b) in enumerate(zip(old_rows[: rows or None], new_rows[: rows or None])):
        old, new = json.loads(a), json.loads(b)
        if old["audio"] != new["audio"]:
            raise SystemExit(f"error: row {n + 1} differs between the manifests ({old['audio']} vs {new['audio']})")
        try:
            u, v = (torch.tensor(token_ids(row["tokens"], size)) for row in (old, new))
        except AudioguideError as e:
            raise SystemExit(f"error: row {n + 1}: {e} (check --levels)") from None
        if len(u) != len(v):
            raise SystemExit(f"error: row {n + 1} has {len(u)} old and {len(v)} new tokens; the tokenizers must share a rate")
        counts.index_put_((v, u), torch.ones(len(u), dtype=torch.float64), accumulate=True)
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
    ap.add_argument("--rows", type=int, default=0, help="count only the first N rows (default: all)")
    args = ap.parse_args()
    levels = torch.tensor([int(x) for x in args.levels.split(",")])
    size = math.prod(levels.tolist())
    p = co_occurrence(args.old, args.new, size, args.rows)
    ckpt = load_checkpoint(args.checkpoint)
    tensors = dict(ckpt.tensors)
    done = []
    if ckpt.kind != "codec-lm" and "conditioners.tokens.table.weight" in tensors:  # acoustic stage
        table, coords = tensors["conditioners.tokens.table.weight"], tensors["conditioners.tokens.coords.weight"]
        if table.shape[0] != size + 1 or coords.shape[1] != len(levels):
            raise SystemExit(f"error: the token table has {table.shape[0] - 1} tokens of {coords.shape[1]} FSQ coordinates; "
                             f"--levels {args.levels} gives {size} of {len(levels)}")
        full = table[1:].double() + fsq_coordinates(torch.arange(size), levels).double() @ coords.double().T
        tensors["conditioners.tokens.table.weight"] = torch.cat([table[:1], remap(full, p).to(table.dtype)])
        tensors["conditioners.tokens.coords.weight"] = torch.zeros_like(coords)
        done += ["conditioners.tokens.table.weight (coordinates folded in)"]
    if ckpt.kind == "codec-lm":  # one codebook of `size` codes (plus bos and pad in the embedding)
        expected = {"embed.0.weight": size + 2, "heads.weight": size, "heads.bias": size, "prior.weight": size, "prior.bias": size}
        if "embed.1.weight" in tensors or any(n in tensors and len(tensors[n]) != k for n, k in expected.items()):
            raise SystemExit(f"error: {args.checkpoint} is not a one-codebook LM over {size} codes (--levels {args.levels})")
        for name in expected:
            if name in tensors:
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
