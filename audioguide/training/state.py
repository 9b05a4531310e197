"""The files a training run writes: its resumable state and its shipped-format weights.

``train_state.safetensors`` holds everything needed to resume bit-for-bit, and no pickles:

* ``model.*``: the trained module's ``state_dict`` (parameters and buffers such as RVQ codebooks);
* ``ema.*``: the EMA copy's (:class:`torch.optim.swa_utils.AveragedModel`'s inner module), when
  the recipe keeps one; its update count is the step (the trainer's invariant), so it is not stored;
* ``optim.<param>.<name>``: the optimizer's per-parameter tensors (AdamW's moments and step);
* ``rng``: the batch generator's state;
* in the metadata (JSON): the step, the recipe's name, the optimizer's param groups and scalar
  state, and the LR scheduler's ``state_dict`` (its ``lr_lambdas`` are functions and are not saved:
  the trainer rebuilds them from the recipe).

``model.safetensors`` is the shipped format: the component's ``state_dict`` with its config in the
metadata (``component``, ``config``, ``recipe``, ``step``), loadable through ``--weights``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LRScheduler
from torch.optim.swa_utils import AveragedModel

from audioguide.checkpoints import load_checkpoint, save_checkpoint
from audioguide.core import AudioguideError
from audioguide.recipes import Recipe

__all__ = ["TrainState", "export"]


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict]:
    """The optimizer's state as flat tensors ``optim.<param>.<name>`` and JSON metadata."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{pid}.{k}"] = v
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_state(tensors: dict[str, Tensor], meta: dict) -> dict:
    """The inverse of :func:`_optimizer_tensors`: a ``state_dict`` for ``Optimizer.load_state_dict``."""
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    for key, v in meta["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    return {"state": state, "param_groups": meta["param_groups"]}


@dataclass
class TrainState:
    """What a run resumes from: the trained module, its EMA (or None), the optimizer, the LR
    scheduler and the batch generator; :meth:`save` and :meth:`load` write and restore them in place."""

    module: nn.Module
    ema: AveragedModel | None
    opt: torch.optim.Optimizer
    scheduler: LRScheduler
    generator: torch.Generator

    def save(self, path: Path, step: int, recipe: Recipe) -> None:
        """Write the resumable state of a run after ``step`` steps (see the module docstring)."""
        tensors = {f"model.{k}": v for k, v in self.module.state_dict().items()}
        if self.ema is not None:
            tensors.update({f"ema.{k}": v for k, v in self.ema.module.state_dict().items()})
        opt_tensors, opt_meta = _optimizer_tensors(self.opt)
        tensors.update(opt_tensors)
        tensors["rng"] = self.generator.get_state()
        schedule = {k: v for k, v in self.scheduler.state_dict().items() if k != "lr_lambdas"}
        meta = {"step": step, "optim": opt_meta, "scheduler": schedule, "recipe": recipe.name}
        save_checkpoint(path, tensors, meta, kind="train-state")

    def load(self, path: Path, recipe: Recipe) -> int:
        """Restore a run in place and return its step; a state that does not fit this recipe (or was
        written by an older audioguide) is a one-line error (start a new run directory)."""
        ckpt = load_checkpoint(path)
        if ckpt.kind != "train-state":
            raise AudioguideError(f"{path} is not a training state")
        if ckpt.config.get("recipe") != recipe.name:
            raise AudioguideError(f"{path} belongs to recipe {ckpt.config.get('recipe')!r}, not {recipe.name!r}: use another --output")
        if "scheduler" not in ckpt.config:
            raise AudioguideError(f"{path} was written by an older audioguide and cannot be resumed; use another --output")
        t = ckpt.tensors
        try:
            step = int(ckpt.config["step"])
            self.module.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model.")})
            if self.ema is not None:
                # a run that had no EMA so far starts one from the current weights
                ema_state = {k[4:]: v for k, v in t.items() if k.startswith("ema.")}
                self.ema.module.load_state_dict(ema_state or self.module.state_dict())
                self.ema.n_averaged.fill_(step + 1)  # one copy at the start, then one update per step
            self.opt.load_state_dict(_optimizer_state(t, ckpt.config["optim"]))
            lambdas = [None] * len(self.opt.param_groups)  # functions: rebuilt from the recipe, never stored
            self.scheduler.load_state_dict({**ckpt.config["scheduler"], "lr_lambdas": lambdas})
            self.generator.set_state(t["rng"])
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            reason = str(e).splitlines()[0][:200]
            raise AudioguideError(f"{path} does not fit the recipe as it is now ({reason}); use another --output") from None
        return step


def export(path: Path, module: nn.Module, recipe: Recipe, step: int) -> Path:
    """Write shipped-format weights: safetensors with the component's config in the metadata."""
    spec = {"representation": recipe.representation, "verifier": recipe.verifier}.get(recipe.train.target, recipe.model)
    config = {"component": spec.type, "config": dataclasses.asdict(spec.config), "recipe": recipe.name, "step": step}
    return save_checkpoint(path, module.state_dict(), json.loads(json.dumps(config, default=list)), kind=spec.type)
