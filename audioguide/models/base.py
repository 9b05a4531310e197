"""What every continuous generator shares: its conditioners, their null conditions, its prediction kind."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from audioguide.conditioners import Conditioner, Encoded
from audioguide.core import Keep


def init_random(module: nn.Module, seed: int) -> nn.Module:
    """Re-initialise every parameter from an explicit generator (no global RNG).

    Matrices get ``N(0, 1/fan_in)``, vectors (biases, norms, null conditions) ``N(0, 0.02^2)``.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(module.named_parameters()):
            if p.ndim >= 2:
                std = 1.0 / math.sqrt(p[0].numel())
            else:
                std = 0.02
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


class Generator(nn.Module):
    """A conditional network ``model(x, t, cond, keep, **extra) -> prediction``.

    ``x`` is ``[B, C, T]`` latents, ``t`` is ``[B]``. Optional ``extra`` tensors: ``mask`` ``[B, T]``
    bool (True = real frame; padded frames are ignored by attention and by losses) and, for
    mean-flow models (``mean_flow = True``), ``r`` ``[B]``, the start of the averaging interval
    (``r = t`` gives the instantaneous velocity).

    Owns its conditioners; :meth:`encode` turns raw inputs into the flat ``cond`` mapping that
    guidance batches (``name`` and ``name.mask`` per condition), and :meth:`conditions` applies the
    ``keep`` flags, swapping in each conditioner's null where a condition is dropped, or the
    condition's negative prompt where ``cond`` carries one (``name.negative`` and
    ``name.negative.mask``, the same length as ``name``; see :func:`with_negative`).
    """

    kind: str = "flow"
    mean_flow: bool = False
    aligned: str = ""  # a condition aligned to frames by durations (then ``predict_durations`` / ``aligned_losses``)

    def __init__(self, conditioners: Mapping[str, Conditioner]) -> None:
        super().__init__()
        self.conditioners = nn.ModuleDict(dict(conditioners))

    def encode(self, inputs: Mapping[str, Sequence[str] | None]) -> dict[str, Tensor]:
        """``{name: inputs}`` -> ``cond``; a condition whose inputs are None (absent) is its null."""
        cond: dict[str, Tensor] = {}
        batch = next((len(v) for v in inputs.values() if v is not None), 1)
        for name, conditioner in self.conditioners.items():
            values = inputs.get(name)
            enc = conditioner.absent(batch) if values is None else conditioner(values)
            cond[name], cond[f"{name}.mask"] = enc.emb, enc.mask
        return cond

    def prepare(self, cond: Mapping[str, Tensor], keep: Keep, frames: int, mask: Tensor | None = None) -> dict[str, Tensor]:
        """``cond`` plus the work of a forward that depends on the conditions only, for these
        ``keep`` flags, ``frames`` and ``mask`` (:func:`audioguide.core.prepare`); here none, a copy."""
        return dict(cond)

    def conditions(self, cond: Mapping[str, Tensor], keep: Keep) -> dict[str, Encoded]:
        out = {}
        for name, conditioner in self.conditioners.items():
            enc = Encoded(cond[name], cond[f"{name}.mask"])
            k = keep.get(name)
            negative = Encoded(cond[f"{name}.negative"], cond[f"{name}.negative.mask"]) if f"{name}.negative" in cond else None
            out[name] = enc if k is None else conditioner.select(enc, k, negative)
        return out


def with_negative(cond: Mapping[str, Tensor], name: str, negative: Encoded) -> dict[str, Tensor]:
    """``cond`` with a negative prompt for condition ``name``: its encoding and the condition's are
    padded (masked) to one length, so guidance's branches stack row by row."""
    emb, mask = cond[name], cond[f"{name}.mask"]
    length = max(emb.shape[1], negative.emb.shape[1])

    def pad(e: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
        extra = length - e.shape[1]
        if extra:
            e = torch.cat([e, e.new_zeros(e.shape[0], extra, e.shape[2])], 1)
            m = torch.cat([m, m.new_zeros(m.shape[0], extra)], 1)
        return e, m

    out = dict(cond)
    out[name], out[f"{name}.mask"] = pad(emb, mask)
    neg_emb, neg_mask = pad(negative.emb.expand(emb.shape[0], -1, -1), negative.mask.expand(emb.shape[0], -1))
    out[f"{name}.negative"], out[f"{name}.negative.mask"] = neg_emb, neg_mask
    return out
