"""What every continuous generator shares: its conditioners, their null conditions, its prediction kind."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from audioguide.conditioners import Conditioner, Encoded
from audioguide.core import Keep, former_name, init_random, load_moved, part_key  # noqa: F401  (init_random: re-exported for the models)


def masked_mean(enc: Encoded) -> Tensor:
    """Mean of ``enc.emb`` ``[B, L, D]`` over the tokens with ``enc.mask`` True -> ``[B, D]``."""
    m = enc.mask.unsqueeze(-1).to(enc.emb.dtype)
    return (enc.emb * m).sum(1) / m.sum(1).clamp_min(1.0)


class Generator(nn.Module):
    """A conditional network ``model(x, t, cond, keep, **extra) -> prediction``.

    ``x`` is ``[B, C, T]`` latents, ``t`` is ``[B]``. Optional ``extra`` tensors: ``mask`` ``[B, T]``
    bool (True = real frame; padded frames are ignored by attention and by losses), for
    mean-flow models (``mean_flow = True``) ``r`` ``[B]``, the start of the averaging interval
    (``r = t`` gives the instantaneous velocity), and for a model that can perturb itself per row
    (:meth:`perturbations` not empty) ``perturb``, ``{kind: [B, layers] bool}``: like ``keep``, flags
    that the guidance layer sets on some rows (perturbation guidance, PAG / STG); the network only
    obeys them.

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
        # parameters that moved into submodules, {prefix now: former prefix}: checkpoints written
        # before the move load through this pre-hook, and init_random draws them as it did
        self.moved: dict[str, str] = {}
        self.register_load_state_dict_pre_hook(load_moved)

    @classmethod
    def perturbations(cls, config: Any) -> dict[str, int]:
        """The per-row perturbations the forward of a model built from ``config`` takes as
        ``perturb``: kind -> number of layers. None here."""
        return {}

    @property
    def perturbable(self) -> dict[str, int]:
        """:meth:`perturbations` of this model."""
        return type(self).perturbations(getattr(self, "config", None))

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


def _padded(cond: Mapping[str, Tensor], name: str, extra: Mapping[str, Encoded]) -> dict[str, Tensor]:
    """``cond`` with ``extra`` encodings of condition ``name`` added under their keys, the condition's
    own encoding and every other sequence of it (a negative prompt, prompt parts) padded (masked)
    to one length, so guidance's branches stack row by row."""
    B = cond[name].shape[0]
    seqs = {key: Encoded(cond[key], cond[f"{key}.mask"]) for key in cond
            if (key == name or key.startswith(f"{name}.")) and not key.endswith(".mask") and f"{key}.mask" in cond
            and cond[key].ndim == 3}
    seqs.update({key: Encoded(e.emb.expand(B, -1, -1), e.mask.expand(B, -1)) for key, e in extra.items()})
    length = max(e.emb.shape[1] for e in seqs.values())
    out = dict(cond)
    for key, e in seqs.items():
        pad = length - e.emb.shape[1]
        emb, mask = e.emb, e.mask
        if pad:
            emb = torch.cat([emb, emb.new_zeros(emb.shape[0], pad, emb.shape[2])], 1)
            mask = torch.cat([mask, mask.new_zeros(mask.shape[0], pad)], 1)
        out[key], out[f"{key}.mask"] = emb, mask
    return out


def with_negative(cond: Mapping[str, Tensor], name: str, negative: Encoded) -> dict[str, Tensor]:
    """``cond`` with a negative prompt for condition ``name`` (``name.negative``): its encoding and
    the condition's are padded (masked) to one length, so guidance's branches stack row by row."""
    return _padded(cond, name, {f"{name}.negative": negative})


def with_parts(cond: Mapping[str, Tensor], name: str, parts: Sequence[Encoded]) -> dict[str, Tensor]:
    """``cond`` whose condition ``name`` is part 0 of a prompt in parts, with ``parts`` (parts
    1, 2, ...) under :func:`~audioguide.core.part_key`, all padded to one length (see
    :class:`audioguide.guidance.Conjunction`)."""
    return _padded(cond, name, {part_key(name, k): p for k, p in enumerate(parts, 1)})
