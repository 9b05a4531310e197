"""``audioguide train``: one seeded, resumable training loop for every family.

What is trained, and its loss, follow from the recipe (:mod:`audioguide.training.objectives`):
our autoencoder (``[train] target = "representation"``), a verifier (``target = "verifier"``: the
phoneme content verifier, or the caption verifier of sounds), a codec language model (next-token
cross-entropy on the representation's tokens) or a continuous generator (flow matching, mean flows
or discrete-time diffusion on its latents).

The loop, in order, per step: draw a batch from the explicit generator; compute the objective
(conditions dropped for CFG); backward; clip; AdamW step; step the LR schedule (a
``torch.optim.lr_scheduler.LambdaLR``: linear warm-up over ``warmup`` steps, then cosine decay to
10 % of the peak at ``steps``, see :func:`lr_factor`); update the EMA (a
``torch.optim.swa_utils.AveragedModel`` updated with ``get_ema_multi_avg_fn``; its decay warms up
as ``min(ema, (1 + step) / (10 + step))`` so early exports are not the initialisation, and buffers
such as RVQ codebooks are copied, not averaged). Every ``save_every`` steps it writes
``train_state.safetensors`` and exports ``model.safetensors`` in the shipped format
(:mod:`audioguide.training.state`). Every ``sample_every`` steps it writes a validation sample from
a held-out manifest row. Running the same command again resumes.

Multi-GPU / multi-node: launch the same command with ``torchrun --nproc_per_node N -m
audioguide.cli train ... --device cuda`` (torch.distributed: NCCL on GPUs, each rank on
cuda:LOCAL_RANK; Gloo on CPUs). The objective is wrapped in
``torch.nn.parallel.DistributedDataParallel``, which averages the gradients across ranks during
backward; each rank draws its own batches (seed + rank). Running buffers (RVQ codebooks and their
EMA statistics, the autoencoder's latent power) are not broadcast by DDP: after every backward
their floating-point values are averaged across ranks and integer / boolean ones taken from rank 0,
so every rank's codebook update counts. Only rank 0 writes. A resumed multi-process run re-seeds
each rank from (seed, rank, step), so it is reproducible but not identical to an uninterrupted one;
single-process resumes are bit-exact. The single-process CPU path is the default.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LambdaLR
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from audioguide.audio import write_wav
from audioguide.core import AudioguideError
from audioguide.manifest import read_manifest
from audioguide.recipes import Recipe
from audioguide.registry import VERIFIERS
from audioguide.train_config import TrainConfig
from audioguide.training.data import AudioDataset, check_rows, split_holdout
from audioguide.training.objectives import check_training_recipe, make_objective
from audioguide.training.state import TrainState, export

STATE_NAME = "train_state.safetensors"
EXPORT_NAME = "model.safetensors"
Log = Callable[[int, dict[str, float]], None]

__all__ = ["EXPORT_NAME", "STATE_NAME", "TrainResult", "ema_decay", "lr_factor", "make_ema", "make_lr_schedule", "train"]


@dataclass(frozen=True)
class TrainResult:
    step: int
    losses: tuple[float, ...]  # the loss of every step run in this call
    export: Path


# ---------------------------------------------------------------------------------------------
# The library's parts: LR schedule, EMA, data parallelism
# ---------------------------------------------------------------------------------------------


def lr_factor(step: int, warmup: int, steps: int) -> float:
    """The learning rate of (0-based) ``step`` as a fraction of the peak: linear warm-up
    ``(step + 1) / warmup``, then cosine decay from 1 to 0.1 at ``steps`` (0.1 after it)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_lr_schedule(opt: torch.optim.Optimizer, cfg: TrainConfig) -> LambdaLR:
    """``LambdaLR`` over :func:`lr_factor` of the recipe's ``warmup`` and ``steps``; the optimizer's
    ``lr`` is the peak. Step it once after every optimizer step."""
    return LambdaLR(opt, lambda step: lr_factor(step, cfg.warmup, cfg.steps))


def ema_decay(step: int, decay: float) -> float:
    """The EMA decay of the update after (0-based) ``step``: ``min(decay, (1 + step) / (10 + step))``."""
    return min(decay, (1.0 + step) / (10.0 + step))


def make_ema(module: nn.Module, decay: float) -> AveragedModel:
    """An ``AveragedModel`` of ``module`` that starts as a copy of it; each ``update_parameters``
    after step ``s`` moves the parameters by ``ema <- ema + (1 - d) (module - ema)``,
    ``d = ema_decay(s, decay)``, and copies the buffers (codebooks, running statistics)."""

    def update(ema_params, params, n_averaged) -> None:  # n_averaged = 1 + the step just taken
        get_ema_multi_avg_fn(ema_decay(int(n_averaged) - 1, decay))(ema_params, params, n_averaged)

    ema = AveragedModel(module, multi_avg_fn=update, use_buffers=False)
    ema.requires_grad_(False).eval()
    ema.update_parameters(module)  # the first update copies: n_averaged 0 -> 1
    return ema


def _average_buffers(module: nn.Module, world: int) -> None:
    """Keep running statistics (codebooks, latent power) equal across ranks: average floats, take rank 0's others."""
    for b in module.buffers():
        if b.is_floating_point():
            torch.distributed.all_reduce(b)
            b /= world
        else:
            torch.distributed.broadcast(b, 0)


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


def _distributed(device: str) -> tuple[int, int, str, bool]:
    """``(rank, world size, device, owned)`` under torchrun; each rank of a GPU run takes
    cuda:LOCAL_RANK; ``owned`` says the process group was created here (and is ended by :func:`_leave`)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    owned = world > 1 and not torch.distributed.is_initialized()
    if owned:
        gpu = device.startswith("cuda")
        if gpu:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
            torch.cuda.set_device(device)
        torch.distributed.init_process_group("nccl" if gpu else "gloo")
    rank = torch.distributed.get_rank() if world > 1 else 0
    return rank, world, device, owned


def _leave(world: int, owned: bool) -> None:
    """End a multi-process run together: a barrier (no rank exits while rank 0 still writes its
    checkpoint, with the group's connections still open) and then the group this run created."""
    if world > 1:
        torch.distributed.barrier()
        if owned:
            torch.distributed.destroy_process_group()


def _check_device(device: str) -> str:
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise AudioguideError(f"--device {device!r} is not a device (use cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise AudioguideError(f"--device {device}: this torch has no CUDA device")
    if dev.type not in ("cpu", "cuda"):
        raise AudioguideError(f"--device {device!r}: use cpu, cuda or cuda:N")
    return device


def _validation_sample(recipe, representation, model, rows, out_dir: Path, step: int, log: Log | None) -> None:
    """Write ``samples/stepNNNNNNN.wav`` from the first held-out row; a failure is logged, not fatal."""
    if not rows:
        return
    row = rows[0]
    target = out_dir / "samples" / f"step{step:07d}.wav"
    device = next(representation.parameters(), torch.empty(0)).device
    try:
        if recipe.train.target == "representation":
            from audioguide.audio import read_audio

            wav, _ = read_audio(row.audio, representation.sample_rate)
            representation.eval()
            with torch.no_grad():
                x = torch.from_numpy(wav)[None].to(device)
                rec = representation.decode(representation.encode(x))[0, : x.shape[-1]]
            write_wav(target, rec.cpu().numpy(), representation.sample_rate)
            return
        from audioguide.pipeline import PRIMARY_INPUT, Pipeline

        primary = PRIMARY_INPUT[recipe.task]
        inputs = {n: getattr(row, n) for n in model.conditioners if n != primary}
        audio = Pipeline.from_components(recipe, representation, model)([getattr(row, primary)], seed=0, inputs=inputs)
        write_wav(target, audio[0], audio.sample_rate)
    except AudioguideError as e:
        if log is not None:
            log(step, {"sample_failed": 1.0})
        (out_dir / "samples").mkdir(parents=True, exist_ok=True)
        (out_dir / "samples" / f"step{step:07d}.error.txt").write_text(str(e) + "\n")


def _parallel(objective: nn.Module, world: int, device: str) -> nn.Module:
    """The objective itself in one process; under torchrun wrapped in DDP (gradients averaged
    across ranks in backward; buffers are averaged by :func:`_average_buffers` instead)."""
    if world == 1:
        return objective
    dev = torch.device(device)
    ids = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else None
    # find_unused_parameters: a parameter that one batch leaves out of the graph (a condition's
    # branch, an aligned loss) must not stall the reduction; it costs one graph walk per step
    return DistributedDataParallel(objective, device_ids=ids, forward_sync_buffers=False, find_unused_parameters=True)


def train(
    recipe: Recipe,
    manifest: str | Path,
    out_dir: str | Path,
    steps: int | None = None,
    device: str = "cpu",
    log: Log | None = None,
    warm_start: bool = True,
) -> TrainResult:
    """Train what ``recipe`` says on ``manifest`` into ``out_dir``; resumes from its state file.

    A new run starts from the recipe's model weights where that file exists (a warm start), or
    from the seeded initialisation with ``warm_start=False`` or when there is none; a student of
    guidance distillation (``[train.distill]``) then starts from its teacher's weights instead.

    ``steps`` stops this call at that total step count (default: the recipe's ``steps``); the
    learning-rate schedule always follows the recipe, so a run split into several calls is
    identical to one uninterrupted run.
    """
    from audioguide.components import build_components

    cfg = recipe.train
    stop = cfg.steps if steps is None else steps
    out_dir = Path(out_dir)
    rank, world, device, owned = _distributed(_check_device(device))
    check_training_recipe(recipe)
    distilling = cfg.target == "model" and cfg.distill is not None  # the student's warm start: make_objective's
    representation, model = build_components(recipe, require_weights=False, load_model=warm_start and not distilling)
    objective = make_objective(recipe, representation, model, cfg, warm_start=warm_start)
    module = objective.module
    representation.to(device)
    objective.to(device).train()

    rows = read_manifest(manifest)
    reads = VERIFIERS[recipe.verifier.type].reads if cfg.target == "verifier" else None  # the verifier's input
    tokenizer = cfg.target == "representation" and hasattr(representation, "trained")  # learns from alignments
    fixed = cfg.target == "model" and model.aligned and getattr(model.conditioners[model.aligned], "frames_per_token", None)
    if reads == "text" or tokenizer or (cfg.target == "model" and model.aligned and not fixed):  # rows without teacher durations cannot train it
        aligned = [r for r in rows if r.extra.get("phoneme_samples")]
        if not aligned:
            raise AudioguideError(f"no row of {manifest} has phoneme_samples, which the aligned condition needs")
        if log is not None and len(aligned) < len(rows):
            log(0, {"rows_without_durations_skipped": float(len(rows) - len(aligned))})
        rows = aligned
    train_rows, val_rows = split_holdout(rows, cfg.validation, cfg.seed)
    needs = {"representation": ["text"] if tokenizer else [], "verifier": [reads]}.get(cfg.target, list(model.conditioners) if model else [])
    check_rows(val_rows, needs)
    data = AudioDataset(train_rows, representation.sample_rate, needs)

    generator = torch.Generator().manual_seed(cfg.seed + rank)
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = make_lr_schedule(opt, cfg)
    ema = make_ema(module, cfg.ema) if cfg.ema > 0 else None
    state, state_path = TrainState(module, ema, opt, scheduler, generator), out_dir / STATE_NAME
    step = state.load(state_path, recipe) if state_path.exists() else 0
    if world > 1 and step:  # the state holds rank 0's generator: give every rank its own stream again
        generator.manual_seed(cfg.seed + 1_000_003 * rank + step)
    net = _parallel(objective, world, device)
    shipped = module if ema is None else ema.module  # what is exported (and sampled)
    losses = []
    export_path = out_dir / EXPORT_NAME
    while step < stop:
        lr = opt.param_groups[0]["lr"]
        batch = data.sample(cfg.batch_size, generator, cfg.segment_seconds, cfg.length_window, cfg.balance,
                             cfg.balance_by)
        batch = dataclasses.replace(batch, wav=batch.wav.to(device), lengths=batch.lengths.to(device))
        # Modules that draw from torch's global RNG (nn.Dropout in the duration predictor) draw from
        # a stream seeded by (seed, rank, step), so a resumed run repeats them too.
        with torch.random.fork_rng(devices=[device] if torch.device(device).type == "cuda" else []):
            torch.manual_seed(cfg.seed + 1_000_003 * rank + step)
            loss, logs = net(batch, generator, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # under DDP this also averages the gradients across ranks
        if world > 1:
            _average_buffers(module, world)
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        scheduler.step()
        if ema is not None:
            ema.update_parameters(module)
        step += 1
        losses.append(float(loss.detach()))
        if log is not None and rank == 0 and (step % cfg.log_every == 0 or step == stop):
            log(step, {"loss": losses[-1], "lr": lr, **logs})
        if rank == 0 and (step % cfg.save_every == 0 or step == stop):
            state.save(state_path, step, recipe)
            export(export_path, shipped, recipe, step)
        if rank == 0 and step % cfg.sample_every == 0 and cfg.target != "verifier":  # a verifier makes no audio
            _validation_sample(recipe, representation, shipped if cfg.target == "model" else model, val_rows, out_dir, step, log)
            objective.train()
    if rank == 0 and not export_path.exists():
        export(export_path, shipped, recipe, step)
    _leave(world, owned)
    return TrainResult(step, tuple(losses), export_path)
