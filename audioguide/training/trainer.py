"""``audioguide train``: one seeded, resumable training loop for every family.

What is trained follows from the recipe:

* ``[train] target = "representation"``: our autoencoder, with its reconstruction objective;
* a codec language model (``model.kind == "tokens"``): next-token cross-entropy on the
  representation's tokens;
* a continuous generator: flow matching (``kind = "flow"``), mean flows (``mean_flow = true``) or
  discrete-time diffusion (``kind = "eps" | "v" | "x0"``) on the representation's latents.

The loop, in order, per step: draw a batch from the explicit generator; drop conditions for CFG;
compute the family's loss; backward; clip; AdamW step with linear warm-up and cosine decay; update
the EMA. Every ``save_every`` steps it writes ``train_state.safetensors`` (weights, EMA, optimizer,
generator state and step: everything needed to resume bit-for-bit, and no pickles) and exports
``model.safetensors`` in the shipped format (config in the metadata). Every ``sample_every`` steps
it writes a validation sample from a held-out manifest row. Running the same command again resumes.

Multi-GPU / multi-node: launch the same command with ``torchrun --nproc_per_node N -m
audioguide.cli train ... --device cuda`` (torch.distributed: NCCL on GPUs, each rank on
cuda:LOCAL_RANK; Gloo on CPUs); each rank draws its own batches (seed + rank), gradients are
all-reduced and averaged after every backward, running buffers (codebooks) are averaged, and only
rank 0 writes. A resumed multi-process run re-seeds each rank from (seed, rank, step), so it is
reproducible but not identical to an uninterrupted one; single-process resumes are bit-exact.
The single-process CPU path is the default.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from audioguide.audio import write_wav
from audioguide.checkpoints import load_checkpoint, save_checkpoint
from audioguide.core import AudioguideError, prepare
from audioguide.manifest import read_manifest
from audioguide.recipes import Recipe
from audioguide.training.conditions import draw_keep
from audioguide.training.config import TrainConfig
from audioguide.training.data import AudioBatch, AudioDataset, check_rows, split_holdout

STATE_NAME = "train_state.safetensors"
EXPORT_NAME = "model.safetensors"
Objective = Callable[[AudioBatch, torch.Generator, int], tuple[Tensor, dict[str, float]]]
Log = Callable[[int, dict[str, float]], None]


@dataclass(frozen=True)
class TrainResult:
    step: int
    losses: tuple[float, ...]  # the loss of every step run in this call
    export: Path


# ---------------------------------------------------------------------------------------------
# Objectives per family
# ---------------------------------------------------------------------------------------------


def _conditions(
    model, batch: AudioBatch, cfg: TrainConfig, generator: torch.Generator, mask: Tensor | None = None, hop: int = 1
):
    """Encoded conditions and dropout flags; for a model with a frame-aligned condition also its
    teacher durations in latent frames (``mask`` ``[B, T]``: each row's real frames; ``hop``:
    samples per frame)."""
    names = list(model.conditioners)
    cond = model.encode({n: batch.inputs[n] for n in names})
    if model.aligned:
        frames = mask.sum(dim=1).tolist()
        cond[f"{model.aligned}.durations"] = _teacher_durations(model, batch, cond, frames, hop)
    keep = draw_keep(names, dict(cfg.dropout), batch.wav.shape[0], generator, cfg.dropout_all, batch.wav.device)
    return cond, keep


def _teacher_durations(model, batch: AudioBatch, cond, frames: list[int], hop: int) -> Tensor:
    name = model.aligned
    tokens = cond[f"{name}.mask"].sum(dim=1).tolist()
    return teacher_durations(name, batch, tokens, cond[name].shape[1], frames, hop).to(cond[name].device)


def teacher_durations(name: str, batch: AudioBatch, tokens: list[int], width: int, frames: list[int], hop: int) -> Tensor:
    """The rows' ``phoneme_samples`` as frame durations ``[B, width]`` of the ``tokens[b]`` tokens of
    condition ``name``; a row whose alignment does not fit its tokens is a one-line error."""
    from audioguide.models.duration import samples_to_frames

    for i, (n, samples) in enumerate(zip(tokens, batch.alignments)):
        if samples is None or len(samples) != n:
            have = "none" if samples is None else f"{len(samples)} tokens"
            raise AudioguideError(
                f"training row {batch.indices[i] if batch.indices else i}: the {name!r} condition has {n} tokens but "
                f"phoneme_samples has {have}; rebuild the corpus with `audioguide data speech`"
            )
    return samples_to_frames(batch.alignments, hop, frames, width, batch.lengths.tolist())


def make_objective(recipe: Recipe, representation, model, cfg: TrainConfig) -> tuple[nn.Module, Objective]:
    """The module to optimise and ``objective(batch, generator, step) -> (loss, logs)``."""
    if cfg.target == "representation":
        from audioguide.training.autoencoder import autoencoder_loss

        if not any(p.requires_grad for p in representation.parameters()):
            raise AudioguideError(f"representation {recipe.representation.type!r} has nothing to train")

        def ae(batch, generator, step):
            return autoencoder_loss(representation, batch.wav, generator)

        return representation, ae

    representation.eval()
    for p in representation.parameters():
        p.requires_grad_(False)

    hop = representation.hop

    def cached(encode: Callable[[Tensor], Tensor]) -> Callable[[AudioBatch], tuple[Tensor, Tensor]]:
        """``batch -> (encoded [B, C, T], frame mask [B, T])``. Whole clips (no crops) are encoded
        once each and kept (the representation is frozen); the rest of a padded row is zeros."""
        cache: dict[int, Tensor] = {}

        def run(batch: AudioBatch) -> tuple[Tensor, Tensor]:
            if cfg.segment_seconds > 0 or not batch.indices:
                with torch.no_grad():
                    z = encode(batch.wav)
                return z, batch.frame_mask(hop, z.shape[-1])
            for j, (i, n) in enumerate(zip(batch.indices, batch.lengths.tolist())):
                if i not in cache:
                    with torch.no_grad():
                        cache[i] = encode(batch.wav[j, :n][None])[0]
            zs = [cache[i] for i in batch.indices]
            z = zs[0].new_zeros(len(zs), zs[0].shape[0], max(z.shape[-1] for z in zs))
            for j, zj in enumerate(zs):
                z[j, :, : zj.shape[-1]] = zj
            return z, batch.frame_mask(hop, z.shape[-1])

        return run

    if cfg.target == "verifier":
        return _verifier_objective(recipe, representation, cached)

    if model.kind == "tokens":
        from audioguide.training.tokens import codec_lm_loss

        tokens = cached(representation.encode_tokens)

        def lm(batch, generator, step):
            codes, mask = tokens(batch)
            cond, keep = _conditions(model, batch, cfg, generator, mask, hop)
            loss, logs = codec_lm_loss(model, codes, cond, keep, mask, cfg.input_dropout, generator)
            if model.aligned:  # the duration predictor (and the content prior) against the teacher
                for name, extra in model.aligned_losses(cond, keep, codes, mask).items():
                    loss, logs = loss + extra, {**logs, name: float(extra.detach())}
            return loss, logs

        return model, lm

    from audioguide.training import continuous as C

    latents = cached(representation.encode)

    def with_durations(objective):
        """Adds the aligned-encoder losses for a model with a frame-aligned condition."""
        def run(batch, generator, step):
            x0, mask = latents(batch)
            cond, keep = _conditions(model, batch, cfg, generator, mask, hop)
            # the conditions' step-invariant states, shared by the objective's forward and the losses below
            cond = prepare(model, cond, keep, x0.shape[-1], mask)
            loss, logs = objective(x0, mask, cond, keep, generator, step)
            if model.aligned:  # direct supervision of the aligned encoder: durations and Grad-TTS's prior
                for name, extra in model.aligned_losses(cond, keep, x0, mask).items():
                    loss, logs = loss + extra, {**logs, name: float(extra.detach())}
            return loss, logs

        return run

    if model.mean_flow:
        base = cfg.meanflow or C.MeanFlowConfig()

        def meanflow(x0, mask, cond, keep, generator, step):
            config = C.flow_to_mean_flow(base, max(step - cfg.flow_steps, 0), cfg.curriculum_steps)
            if step < cfg.flow_steps:  # pre-training: plain flow matching rows only
                config = dataclasses.replace(config, flow_ratio=1.0)
            return C.mean_flow_loss(model, x0, cond, keep, generator, config, mask=mask)

        return model, with_durations(meanflow)

    if model.kind == "flow":

        def flow(x0, mask, cond, keep, generator, step):
            return C.flow_matching_loss(model, x0, cond, keep, generator, mask=mask, t_dist=cfg.t_dist)

        return model, with_durations(flow)

    schedule = recipe.sampler.config.schedule()

    def diffusion(x0, mask, cond, keep, generator, step):
        return C.diffusion_loss(model, x0, cond, keep, generator, schedule, model.kind, mask=mask)

    return model, with_durations(diffusion)


def _verifier_objective(recipe: Recipe, representation, cached) -> tuple[nn.Module, Objective]:
    """The content verifier (:mod:`audioguide.models.verifier`) against the corpus's teacher alignments:
    frame-symbol cross-entropy on the encoder's latents, for half of the rows (when the
    representation has tokens) on their RVQ round trip, what a codec LM's tokens decode to. A
    verifier run always starts from the seeded initialisation (a few minutes on a CPU)."""
    from audioguide.models.verifier import verifier_loss
    from audioguide.registry import CONDITIONERS, VERIFIERS

    spec, text_spec = recipe.verifier, dict(recipe.conditioners)["text"]
    with torch.random.fork_rng(devices=[]):  # seeded from the config, the caller's RNG untouched
        verifier = VERIFIERS[spec.type](spec.config)
        text = CONDITIONERS[text_spec.type](text_spec.config)
    latents, hop = cached(representation.encode), representation.hop
    tokens = bool(getattr(representation, "n_codebooks", 0))
    ids_of: dict[int, Tensor] = {}  # the G2P runs once per row

    def objective(batch, generator, step):
        z, mask = latents(batch)
        if tokens:
            trip = (torch.rand(z.shape[0], generator=generator) < 0.5).to(z.device)
            if trip.any():
                with torch.no_grad():
                    z = z.clone()
                    z[trip] = representation.dequantize(representation.quantize(z[trip]))
        for i, t in zip(batch.indices, batch.inputs["text"]):
            if i not in ids_of:
                ids_of[i] = text.ids([t])[0][0]
        rows = [ids_of[i] for i in batch.indices]
        ids = nn.utils.rnn.pad_sequence(rows, batch_first=True)  # pad id 0
        durations = teacher_durations("text", batch, [len(r) for r in rows], ids.shape[1], mask.sum(dim=1).tolist(), hop)
        return verifier_loss(verifier, z, ids.to(z.device), durations.to(z.device), mask)

    return verifier, objective


# ---------------------------------------------------------------------------------------------
# State: safetensors only (no pickles), everything needed to resume exactly
# ---------------------------------------------------------------------------------------------


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict]:
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
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    for key, v in meta["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def save_state(path: Path, module: nn.Module, ema: nn.Module | None, opt, generator: torch.Generator, step: int, recipe: Recipe) -> None:
    tensors = {f"model.{k}": v for k, v in module.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    opt_tensors, opt_meta = _optimizer_tensors(opt)
    tensors.update(opt_tensors)
    tensors["rng"] = generator.get_state()
    meta = {"step": step, "optim": opt_meta, "recipe": recipe.name}
    save_checkpoint(path, tensors, meta, kind="train-state")


def load_state(path: Path, module: nn.Module, ema: nn.Module | None, opt, generator: torch.Generator, recipe: Recipe) -> int:
    """Restore a run; a state that does not fit this recipe is a one-line error (start a new run directory)."""
    ckpt = load_checkpoint(path)
    if ckpt.kind != "train-state":
        raise AudioguideError(f"{path} is not a training state")
    if ckpt.config.get("recipe") != recipe.name:
        raise AudioguideError(f"{path} belongs to recipe {ckpt.config.get('recipe')!r}, not {recipe.name!r}: use another --output")
    t = ckpt.tensors
    try:
        module.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model.")})
        if ema is not None:
            ema_state = {k[4:]: v for k, v in t.items() if k.startswith("ema.")}
            ema.load_state_dict(ema_state or module.state_dict())
        opt.load_state_dict(_optimizer_state(t, ckpt.config["optim"]))
        generator.set_state(t["rng"])
    except (RuntimeError, ValueError, KeyError) as e:
        reason = str(e).splitlines()[0][:200]
        raise AudioguideError(f"{path} does not fit the recipe as it is now ({reason}); use another --output") from None
    return int(ckpt.config["step"])


def export(path: Path, module: nn.Module, recipe: Recipe, step: int) -> Path:
    """Write shipped-format weights: safetensors with the component's config in the metadata."""
    spec = {"representation": recipe.representation, "verifier": recipe.verifier}.get(recipe.train.target, recipe.model)
    config = {"component": spec.type, "config": dataclasses.asdict(spec.config), "recipe": recipe.name, "step": step}
    return save_checkpoint(path, module.state_dict(), json.loads(json.dumps(config, default=list)), kind=spec.type)


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


def _lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 10 % of the peak."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


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


def _sync_buffers(module: nn.Module, world: int) -> None:
    """Keep running statistics (codebooks, latent power) equal across ranks: average floats, take rank 0's integers."""
    for b in module.buffers():
        if b.is_floating_point():
            torch.distributed.all_reduce(b)
            b /= world
        else:
            torch.distributed.broadcast(b, 0)


def _average_gradients(params: list[nn.Parameter], world: int) -> None:
    """Data parallelism under torchrun: all-reduce and average every gradient across ranks."""
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        torch.distributed.all_reduce(p.grad)
        p.grad /= world


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


def check_training_recipe(recipe: Recipe) -> None:
    """Training-time checks that need the whole recipe: CFG needs trained nulls; crops need unconditioned audio."""
    from audioguide.pipeline import PRIMARY_INPUT
    from audioguide.recipes import RecipeError

    cfg, where = recipe.train, f"{recipe.source}: [train]"
    if cfg.target == "verifier" and cfg.segment_seconds > 0:
        raise RecipeError(f"{where}: a verifier learns from whole aligned clips; segment_seconds must be 0")
    if cfg.target != "model":
        return
    dropped = {name for name, p in cfg.dropout if p > 0} if cfg.dropout_all == 0 else set(recipe.condition_names)
    guided = [name for name, w in recipe.guidance.scales if w != 1.0]
    meanflow = cfg.meanflow
    if meanflow is not None and meanflow.guided:
        guided += list(meanflow.guided_conditions or recipe.condition_names)
        unknown = [n for n in meanflow.guided_conditions if n not in recipe.condition_names]
        if unknown:
            raise RecipeError(f"{where}.meanflow guided_conditions names {unknown[0]!r}; conditions: {', '.join(recipe.condition_names)}")
    for name in guided:
        if name not in dropped:
            raise RecipeError(
                f"{where}: condition {name!r} is guided but never dropped in training, so its null would stay untrained; "
                f"set dropout = {{ {name} = 0.1 }}"
            )
    if cfg.segment_seconds > 0 and PRIMARY_INPUT[recipe.task] in recipe.condition_names:
        raise RecipeError(f"{where}: segment_seconds crops audio but {PRIMARY_INPUT[recipe.task]!r} describes the whole clip; use 0")


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
    from the seeded initialisation with ``warm_start=False`` or when there is none.

    ``steps`` stops this call at that total step count (default: the recipe's ``steps``); the
    learning-rate schedule always follows the recipe, so a run split into several calls is
    identical to one uninterrupted run.
    """
    from audioguide.pipeline import build_components

    cfg = recipe.train
    stop = cfg.steps if steps is None else steps
    out_dir = Path(out_dir)
    rank, world, device, owned = _distributed(_check_device(device))
    check_training_recipe(recipe)
    representation, model = build_components(recipe, require_weights=False, load_model=warm_start)
    module, objective = make_objective(recipe, representation, model, cfg)
    representation.to(device)
    module.to(device).train()

    rows = read_manifest(manifest)
    if cfg.target == "verifier" or (cfg.target == "model" and model.aligned):  # rows without teacher durations cannot train it
        aligned = [r for r in rows if r.extra.get("phoneme_samples")]
        if not aligned:
            raise AudioguideError(f"no row of {manifest} has phoneme_samples, which the aligned condition needs")
        if log is not None and len(aligned) < len(rows):
            log(0, {"rows_without_durations_skipped": float(len(rows) - len(aligned))})
        rows = aligned
    train_rows, val_rows = split_holdout(rows, cfg.validation, cfg.seed)
    needs = {"representation": [], "verifier": ["text"]}.get(cfg.target, list(model.conditioners) if model else [])
    check_rows(val_rows, needs)
    data = AudioDataset(train_rows, representation.sample_rate, needs)

    generator = torch.Generator().manual_seed(cfg.seed + rank)
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = copy.deepcopy(module).eval().requires_grad_(False) if cfg.ema > 0 else None
    state_path = out_dir / STATE_NAME
    step = load_state(state_path, module, ema, opt, generator, recipe) if state_path.exists() else 0
    if world > 1 and step:  # the state holds rank 0's generator: give every rank its own stream again
        generator.manual_seed(cfg.seed + 1_000_003 * rank + step)
    losses = []
    export_path = out_dir / EXPORT_NAME
    while step < stop:
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg)
        batch = data.sample(cfg.batch_size, generator, cfg.segment_seconds, cfg.length_window, cfg.balance)
        batch = dataclasses.replace(batch, wav=batch.wav.to(device), lengths=batch.lengths.to(device))
        # Modules that draw from torch's global RNG (nn.Dropout in the duration predictor) draw from
        # a stream seeded by (seed, rank, step), so a resumed run repeats them too.
        with torch.random.fork_rng(devices=[device] if torch.device(device).type == "cuda" else []):
            torch.manual_seed(cfg.seed + 1_000_003 * rank + step)
            loss, logs = objective(batch, generator, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if world > 1:
            _average_gradients(params, world)
            _sync_buffers(module, world)
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        if ema is not None:
            decay = min(cfg.ema, (1.0 + step) / (10.0 + step))  # warm-up: early exports are not the init
            with torch.no_grad():
                for pe, pm in zip(ema.parameters(), module.parameters()):
                    pe.lerp_(pm, 1.0 - decay)
                for be, bm in zip(ema.buffers(), module.buffers()):  # running statistics, codebooks
                    be.copy_(bm)
        step += 1
        losses.append(float(loss.detach()))
        if log is not None and rank == 0 and (step % cfg.log_every == 0 or step == stop):
            log(step, {"loss": losses[-1], "lr": opt.param_groups[0]["lr"], **logs})
        if rank == 0 and (step % cfg.save_every == 0 or step == stop):
            save_state(state_path, module, ema, opt, generator, step, recipe)
            export(export_path, ema or module, recipe, step)
        if rank == 0 and step % cfg.sample_every == 0 and cfg.target != "verifier":  # a verifier makes no audio
            _validation_sample(recipe, representation, ema or module if cfg.target == "model" else model, val_rows, out_dir, step, log)
            module.train()
    if rank == 0 and not export_path.exists():
        export(export_path, ema or module, recipe, step)
    _leave(world, owned)
    return TrainResult(step, tuple(losses), export_path)
