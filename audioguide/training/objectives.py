"""What ``audioguide train`` minimises, per family: one ``nn.Module`` per objective.

Each objective holds the module being trained (``objective.module``: the one the optimizer, EMA
and export see) and computes ``forward(batch, generator, step) -> (loss, logs)``: a scalar to
back-propagate and plain floats. Being a module, an objective can be wrapped whole by
``torch.nn.parallel.DistributedDataParallel``, which then sees exactly the trained parameters; the
frozen representation that encodes the batches is held as a function, not as a submodule.

* :class:`AutoencoderObjective` (``[train] target = "representation"``): our autoencoder's
  reconstruction loss (:mod:`audioguide.training.autoencoder`).
* :class:`CodecLMObjective` (``model.kind == "tokens"``): next-token cross-entropy on the
  representation's delayed RVQ tokens (:mod:`audioguide.training.tokens`); with ``[train.cca]``,
  :class:`audioguide.training.cca.CCAObjective` instead (Condition Contrastive Alignment against
  the frozen pretrained model, for sampling without guidance).
* :class:`FlowObjective`, :class:`MeanFlowObjective`, :class:`DiffusionObjective`: flow matching,
  mean flows (Geng et al. 2025, with MeanAudio's flow-matching-first curriculum) and
  discrete-time diffusion on the representation's latents (:mod:`audioguide.training.continuous`).
* :class:`DistillObjective` (``[train.distill]``): guidance distillation of a frozen teacher's
  guided prediction into a model that takes the guidance scale as an input.
* :class:`VerifierObjective` (``target = "verifier"``): frame-symbol cross-entropy of the content
  verifier (:mod:`audioguide.models.verifier`) against the corpus's teacher alignments.
* :class:`CaptionVerifierObjective` (``target = "verifier"``, ``[verifier] type = "caption"``):
  symmetric InfoNCE of the caption verifier (:mod:`audioguide.models.caption_verifier`) between
  clips and their captions, same-class pairs masked.

A model with a frame-aligned condition (``model.aligned``) also learns its duration predictor and
content prior against the teacher durations of the rows' ``phoneme_samples``. Every random draw
comes from the explicit ``generator``; conditions are dropped for classifier-free guidance by
:func:`audioguide.training.conditions.draw_keep`.

:func:`make_objective` picks the objective from the recipe; :func:`check_training_recipe` holds
the checks that need the whole recipe before a run starts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import Tensor, nn

from audioguide.core import AudioguideError, prepare
from audioguide.recipes import Recipe
from audioguide.train_config import MeanFlowConfig, TrainConfig
from audioguide.training.conditions import draw_keep
from audioguide.training.data import AudioBatch

Logs = dict[str, float]

__all__ = [
    "AutoencoderObjective",
    "CaptionVerifierObjective",
    "CodecLMObjective",
    "DiffusionObjective",
    "DistillObjective",
    "EncodedClips",
    "FlowObjective",
    "LatentObjective",
    "MeanFlowObjective",
    "Objective",
    "TokenizerObjective",
    "VerifierObjective",
    "check_training_recipe",
    "make_objective",
    "teacher_durations",
]


# ---------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------


class EncodedClips:
    """``batch -> (encoded [B, C, T], frame mask [B, T])`` through a frozen representation.

    Whole clips (no crops) are encoded once each and kept; the rest of a padded row is zeros.
    With crops (``crops=True``) or rows without indices every batch is encoded afresh.
    """

    def __init__(self, encode: Callable[[Tensor], Tensor], hop: int, crops: bool) -> None:
        self.encode, self.hop, self.crops = encode, hop, crops
        self.cache: dict[int, Tensor] = {}

    def __call__(self, batch: AudioBatch) -> tuple[Tensor, Tensor]:
        if self.crops or not batch.indices:
            with torch.no_grad():
                z = self.encode(batch.wav)
            return z, batch.frame_mask(self.hop, z.shape[-1])
        for j, (i, n) in enumerate(zip(batch.indices, batch.lengths.tolist())):
            if i not in self.cache:
                with torch.no_grad():
                    self.cache[i] = self.encode(batch.wav[j, :n][None])[0]
        zs = [self.cache[i] for i in batch.indices]
        z = zs[0].new_zeros(len(zs), zs[0].shape[0], max(z.shape[-1] for z in zs))
        for j, zj in enumerate(zs):
            z[j, :, : zj.shape[-1]] = zj
        return z, batch.frame_mask(self.hop, z.shape[-1])


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


def aligned_symbols(text_ids: Callable, cache: dict[int, Tensor], batch: AudioBatch, mask: Tensor, hop: int) -> tuple[Tensor, Tensor]:
    """The rows' phoneme-symbol ids ``[B, L]`` (pad 0; ``text_ids`` of each row's text, run once per
    row and kept in ``cache``) and their teacher durations in frames ``[B, L]`` (``mask`` ``[B, T]``:
    each row's real frames): what a frame-level phoneme target is made of."""
    for i, t in zip(batch.indices, batch.inputs["text"]):
        if i not in cache:
            cache[i] = text_ids([t])[0][0]
    rows = [cache[i] for i in batch.indices]
    ids = nn.utils.rnn.pad_sequence(rows, batch_first=True)  # pad id 0
    return ids, teacher_durations("text", batch, [len(r) for r in rows], ids.shape[1], mask.sum(dim=1).tolist(), hop)


def _add(loss: Tensor, logs: Logs, extras: dict[str, Tensor]) -> tuple[Tensor, Logs]:
    """``loss`` plus every extra term, each logged under its name."""
    for name, extra in extras.items():
        loss, logs = loss + extra, {**logs, name: float(extra.detach())}
    return loss, logs


class Objective(nn.Module):
    """Base: ``module`` is what is trained; ``forward(batch, generator, step) -> (loss, logs)``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.frozen: tuple[str, ...] = ()

    def forward(self, batch: AudioBatch, generator: torch.Generator, step: int) -> tuple[Tensor, Logs]:
        raise NotImplementedError

    def freeze(self, names: tuple[str, ...]) -> None:
        """Keep the submodules ``names`` of :attr:`module` as they are: no gradients, and eval mode
        whatever :meth:`train` asks, so buffers (running statistics, EMA codebooks) stay too."""
        known = [n for n, _ in self.module.named_children()]
        for name in names:
            try:
                part = self.module.get_submodule(name)
            except AttributeError:
                raise AudioguideError(f"[train] freeze: {type(self.module).__name__} has no submodule {name!r}; "
                                      f"its parts: {', '.join(known)}") from None
            part.requires_grad_(False)
        if names and not any(p.requires_grad for p in self.module.parameters()):
            raise AudioguideError(f"[train] freeze leaves nothing of {type(self.module).__name__} to train")
        self.frozen = tuple(names)
        self.train(self.training)

    def train(self, mode: bool = True) -> "Objective":
        super().train(mode)
        for name in self.frozen:
            self.module.get_submodule(name).eval()
        return self


class AutoencoderObjective(Objective):
    """Our autoencoder's reconstruction objective (mel, STFT, KL, RVQ commitment)."""

    def forward(self, batch, generator, step):
        from audioguide.training.autoencoder import autoencoder_loss

        return autoencoder_loss(self.module, batch.wav, generator)


class _Conditioned(Objective):
    """A generator trained on encoded clips with per-condition dropout (CFG)."""

    def __init__(self, model: nn.Module, encoded: EncodedClips, cfg: TrainConfig) -> None:
        super().__init__(model)
        self.encoded, self.cfg = encoded, cfg

    def conditions(self, batch: AudioBatch, mask: Tensor, generator: torch.Generator):
        """Encoded conditions and dropout flags; for a model with a frame-aligned condition also its
        teacher durations in latent frames (``mask`` ``[B, T]``: each row's real frames)."""
        model, cfg = self.module, self.cfg
        names = list(model.conditioners)
        cond = model.encode({n: batch.inputs[n] for n in names})
        if model.aligned:
            name = model.aligned
            span = getattr(model.conditioners[name], "frames_per_token", None)
            if span:  # tokens of a fixed length (semantic tokens): no teacher durations needed
                durations = cond[f"{name}.mask"].long() * span
            else:  # in content frames: content_stride of them per step of a codec LM
                stride = getattr(model, "content_stride", 1)
                hop = self.encoded.hop // stride
                frames = ((batch.lengths + hop - 1) // hop).tolist()  # each row's real content frames
                tokens = cond[f"{name}.mask"].sum(dim=1).tolist()
                durations = teacher_durations(name, batch, tokens, cond[name].shape[1], frames, hop)
            cond[f"{name}.durations"] = durations.to(cond[name].device)
        keep = draw_keep(names, dict(cfg.dropout), batch.wav.shape[0], generator, cfg.dropout_all, batch.wav.device)
        return cond, keep

    def aligned_losses(self, loss: Tensor, logs: Logs, cond, keep, target: Tensor, mask: Tensor) -> tuple[Tensor, Logs]:
        """Direct supervision of a frame-aligned encoder: durations and Grad-TTS's content prior."""
        if not self.module.aligned:
            return loss, logs
        return _add(loss, logs, self.module.aligned_losses(cond, keep, target, mask))


class CodecLMObjective(_Conditioned):
    """Teacher-forced cross-entropy of a codec LM on its representation's tokens."""

    def forward(self, batch, generator, step):
        from audioguide.training.tokens import codec_lm_loss

        codes, mask = self.encoded(batch)
        cond, keep = self.conditions(batch, mask, generator)
        loss, logs = codec_lm_loss(self.module, codes, cond, keep, mask, self.cfg.input_dropout, generator)
        return self.aligned_losses(loss, logs, cond, keep, codes, mask)


class LatentObjective(_Conditioned):
    """A continuous generator on latents: subclasses give :meth:`loss` of one family."""

    def forward(self, batch, generator, step):
        x0, mask = self.encoded(batch)
        cond, keep = self.conditions(batch, mask, generator)
        # the conditions' step-invariant states, shared by the family's forward and the aligned losses
        cond = prepare(self.module, cond, keep, x0.shape[-1], mask)
        loss, logs = self.loss(x0, mask, cond, keep, generator, step)
        return self.aligned_losses(loss, logs, cond, keep, x0, mask)

    def loss(self, x0: Tensor, mask: Tensor, cond, keep, generator: torch.Generator, step: int) -> tuple[Tensor, Logs]:
        raise NotImplementedError


class FlowObjective(LatentObjective):
    """Conditional flow matching (:func:`audioguide.training.continuous.flow_matching_loss`)."""

    def loss(self, x0, mask, cond, keep, generator, step):
        from audioguide.training.continuous import flow_matching_loss

        return flow_matching_loss(self.module, x0, cond, keep, generator, mask=mask, t_dist=self.cfg.t_dist)


class MeanFlowObjective(LatentObjective):
    """MeanFlow with folded guidance; plain flow matching for ``flow_steps``, then the share of
    ``r < t`` rows ramps up over ``curriculum_steps`` (MeanAudio's pre-training and hand-over)."""

    def loss(self, x0, mask, cond, keep, generator, step):
        from audioguide.training.continuous import flow_to_mean_flow, mean_flow_loss

        cfg = self.cfg
        config = flow_to_mean_flow(cfg.meanflow or MeanFlowConfig(), max(step - cfg.flow_steps, 0), cfg.curriculum_steps)
        if step < cfg.flow_steps:  # pre-training: plain flow matching rows only
            config = dataclasses.replace(config, flow_ratio=1.0)
        return mean_flow_loss(self.module, x0, cond, keep, generator, config, mask=mask)


class DiffusionObjective(LatentObjective):
    """Discrete-time denoising loss on the recipe sampler's schedule, in the model's prediction kind."""

    def __init__(self, model: nn.Module, encoded: EncodedClips, cfg: TrainConfig, schedule) -> None:
        super().__init__(model, encoded, cfg)
        self.schedule = schedule

    def loss(self, x0, mask, cond, keep, generator, step):
        from audioguide.training.continuous import diffusion_loss

        return diffusion_loss(self.module, x0, cond, keep, generator, self.schedule, self.module.kind, mask=mask)


class DistillObjective(_Conditioned):
    """Guidance distillation (``[train.distill]``; Meng et al. 2023, §3.1 stage one, eq. 6-7): the
    model, which takes its ``guidance_embed`` conditions' scales as inputs, regresses in one forward
    the frozen teacher's guided prediction under the recipe's ``[guidance]`` policy at scales drawn
    per row (:func:`audioguide.training.continuous.distillation_loss`; mean-flow models: the guided
    average velocity at ``(r, t)`` drawn as ``[train.meanflow]`` says). Conditions are dropped as in
    any training run, in the student's rows and the teacher's branches alike (what the student's
    other branches see at sampling); the teacher encodes the batch with its own conditioners.

    ``adapters_only`` (Jensen et al. 2025, arXiv 2503.07274) trains the guidance embeddings and
    adapters alone: everything else is frozen, and a model with an aligned condition then skips its
    duration and prior losses (nothing they train can change). The teacher is a submodule (it moves
    with the objective and stays in eval mode without gradients) but not :attr:`module`: it is never
    optimised, saved in the train state or exported.
    """

    def __init__(self, model: nn.Module, teacher: nn.Module, encoded: EncodedClips, cfg: TrainConfig, policy) -> None:
        from audioguide.models.dit import is_guidance_key

        super().__init__(model, encoded, cfg)
        assert cfg.distill is not None
        self.config, self.policy = cfg.distill, policy
        self.teacher = teacher.eval().requires_grad_(False)
        if self.config.adapters_only:
            for name, p in model.named_parameters():
                p.requires_grad_(is_guidance_key(name))

    @classmethod
    def from_recipe(cls, recipe: Recipe, representation: nn.Module, model: nn.Module, encoded: EncodedClips,
                    cfg: TrainConfig, warm_start: bool = True) -> DistillObjective:
        """The objective of ``recipe``'s ``[train.distill]``: the teacher is the recipe's ``[model]``
        without ``guidance_embed``, with the ``teacher`` weights (default the ``[model]`` weights);
        with ``warm_start`` the student starts from the ``[model]`` weights where that file exists
        (and its ``guidance_weights`` over them where that one does), else from the teacher's, its
        guidance embeddings and adapters at their zero initialisation (so it starts as the teacher
        at every scale)."""
        from audioguide.components import load_guidance_weights, local_weights
        from audioguide.registry import CONDITIONERS, MODELS

        assert cfg.distill is not None
        spec = recipe.model
        source = cfg.distill.teacher or spec.weights
        if not source:
            raise AudioguideError(f"{recipe.source}: [train.distill] needs a trained teacher: set its teacher or [model] weights")
        config = dataclasses.replace(spec.config, guidance_embed=(), guidance_adapters=False)
        with torch.random.fork_rng(devices=[]):
            conditioners = {n: CONDITIONERS[c.type](c.config) for n, c in recipe.conditioners}
            teacher = MODELS[spec.type](config, representation.channels, conditioners)
        _load_into(teacher, source, recipe, "teacher")
        if warm_start:
            own = spec.weights if spec.weights and local_weights(spec.weights, recipe) is not None else None
            _load_into(model, own or source, recipe, "model", optional=model.guidance_keys())
            extra = spec.guidance_weights  # an adapter student's own file, where one was trained already
            if own and extra and local_weights(extra, recipe) is not None:
                load_guidance_weights(model, extra, recipe)
        return cls(model, teacher, encoded, cfg, recipe.guidance)

    def train(self, mode: bool = True) -> DistillObjective:
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, batch, generator, step):
        from audioguide.training.continuous import distillation_loss

        x0, mask = self.encoded(batch)
        cond, keep = self.conditions(batch, mask, generator)
        teacher = self.teacher
        with torch.no_grad():
            teacher_cond = teacher.encode({n: batch.inputs[n] for n in teacher.conditioners})
        if self.module.aligned:  # the teacher durations of the batch
            key = f"{self.module.aligned}.durations"
            teacher_cond[key] = cond[key]
        cond = prepare(self.module, cond, keep, x0.shape[-1], mask)
        cfg = self.cfg
        loss, logs = distillation_loss(self.module, teacher, x0, cond, teacher_cond, keep, generator, self.policy,
                                       self.config, mask, cfg.meanflow, cfg.t_dist)
        if self.config.adapters_only:
            return loss, logs
        return self.aligned_losses(loss, logs, cond, keep, x0, mask)


def _load_into(module: nn.Module, source: str, recipe: Recipe, what: str, optional: list[str] | tuple[str, ...] = ()) -> None:
    """Load weights ``source`` (a packaged name, a path beside the recipe, a Hub id) into ``module``;
    keys in ``optional`` may be missing (they keep their initialisation), any other mismatch is a
    one-line error."""
    from audioguide.checkpoints import load_checkpoint
    from audioguide.components import local_weights

    ckpt = load_checkpoint(local_weights(source, recipe) or source)
    try:
        missing, unexpected = module.load_state_dict(ckpt.tensors, strict=False)
    except RuntimeError as e:  # shape mismatches
        lines = str(e).splitlines()
        raise AudioguideError(f"{recipe.source}: [train.distill] {what} weights {ckpt.path} do not fit: "
                              f"{(lines[1] if len(lines) > 1 else lines[0]).strip()}") from None
    missing = [k for k in missing if k not in set(optional)]
    if missing or unexpected:
        raise AudioguideError(
            f"{recipe.source}: [train.distill] {what} weights {ckpt.path} do not fit the [model] "
            f"({len(missing)} missing, {len(unexpected)} unexpected tensors, e.g. {(missing or unexpected)[0]})"
        )


class VerifierObjective(Objective):
    """The content verifier against the corpus's teacher alignments: frame-symbol cross-entropy on
    the encoder's latents, for half of the rows (when the representation has tokens) on their RVQ
    round trip, what a codec LM's tokens decode to. A verifier run always starts from the seeded
    initialisation (a few minutes on a CPU)."""

    def __init__(self, recipe: Recipe, representation: nn.Module, encoded: EncodedClips) -> None:
        from audioguide.registry import CONDITIONERS, VERIFIERS

        spec, text_spec = recipe.verifier, dict(recipe.conditioners)["text"]
        with torch.random.fork_rng(devices=[]):  # seeded from the config, the caller's RNG untouched
            verifier = VERIFIERS[spec.type](spec.config)
            text = CONDITIONERS[text_spec.type](text_spec.config)
        super().__init__(verifier)
        # plain functions, not submodules: only the verifier is trained (and seen by DDP)
        self.encoded, self.text_ids = encoded, text.ids
        self.round_trip = (
            (lambda z: representation.dequantize(representation.quantize(z)))
            if getattr(representation, "n_codebooks", 0)
            else None
        )
        self.ids_of: dict[int, Tensor] = {}  # the G2P runs once per row

    def forward(self, batch, generator, step):
        from audioguide.models.verifier import verifier_loss

        z, mask = self.encoded(batch)
        if self.round_trip is not None:
            trip = (torch.rand(z.shape[0], generator=generator) < 0.5).to(z.device)
            if trip.any():
                with torch.no_grad():
                    z = z.clone()
                    z[trip] = self.round_trip(z[trip])
        ids, durations = aligned_symbols(self.text_ids, self.ids_of, batch, mask, self.encoded.hop)
        return verifier_loss(self.module, z, ids.to(z.device), durations.to(z.device), mask)


class TokenizerObjective(Objective):
    """A semantic tokenizer (:mod:`audioguide.representations.semantic`) against the corpus's teacher
    alignments: frame-phoneme cross-entropy and latent reconstruction through its FSQ tokens, on
    the frozen autoencoder's latents of whole aligned clips. The recipe's ``text`` conditioner gives
    the symbols (``edges = true``: the silences before and after)."""

    def __init__(self, recipe: Recipe, representation: nn.Module, encoded: EncodedClips) -> None:
        from audioguide.registry import CONDITIONERS

        specs = dict(recipe.conditioners)
        if "text" not in specs:
            raise AudioguideError(f"{recipe.source}: a semantic tokenizer learns from phonemes: add [conditioners.text]")
        with torch.random.fork_rng(devices=[]):
            text = CONDITIONERS[specs["text"].type](specs["text"].config)
        super().__init__(representation.trained)
        self.encoded, self.text_ids = encoded, text.ids
        self.ids_of: dict[int, Tensor] = {}  # the G2P runs once per row

    def forward(self, batch, generator, step):
        from audioguide.models.verifier import frame_targets
        from audioguide.representations.semantic import tokenizer_loss

        z, mask = self.encoded(batch)
        ids, durations = aligned_symbols(self.text_ids, self.ids_of, batch, mask, self.encoded.hop)
        targets = frame_targets(ids.to(z.device), durations.to(z.device), z.shape[-1])
        return tokenizer_loss(self.module, z, targets, mask)


class CaptionVerifierObjective(Objective):
    """The caption verifier against the corpus's captions: symmetric InfoNCE over the batch, pairs
    of different rows with one class label masked (neither positive nor negative; rows without a
    ``label`` are grouped by identical caption), see :func:`audioguide.models.caption_verifier.caption_loss`.
    Each row is noised along the flow path with probability ``noised``, ``z_t = (1 - t) z + t eps``,
    ``t ~ U(0, 1)`` (what dynamic guidance shows it mid-sampling), from the explicit generator.
    The frozen text encoder runs once per row (its pooled states are kept). A verifier run always
    starts from the seeded initialisation."""

    noised = 0.5

    def __init__(self, recipe: Recipe, representation: nn.Module, encoded: EncodedClips) -> None:
        from audioguide.registry import VERIFIERS

        spec = recipe.verifier
        with torch.random.fork_rng(devices=[]):  # seeded from the config, the caller's RNG untouched
            verifier = VERIFIERS[spec.type](spec.config)
        super().__init__(verifier)
        self.encoded = encoded  # a plain function, not a submodule: only the verifier is trained
        self.states: dict[int, Tensor] = {}  # the frozen encoder's pooled states per row

    def forward(self, batch, generator, step):
        from audioguide.models.caption_verifier import caption_loss

        z, mask = self.encoded(batch)
        B = z.shape[0]
        t = torch.rand(B, generator=generator) * (torch.rand(B, generator=generator) < self.noised)
        noise = torch.randn(z.shape, generator=generator).to(z.device, z.dtype)
        t = t.to(z.device, z.dtype).view(B, 1, 1)
        z = (1 - t) * z + t * noise
        indices = batch.indices or tuple(range(-B, 0))  # rows without indices: encoded afresh
        new = [(i, c) for i, c in dict(zip(indices, batch.inputs["caption"])).items() if i not in self.states or i < 0]
        if new:
            states = self.module.text_states([c for _, c in new])
            self.states.update({i: s for (i, _), s in zip(new, states)})
        text = torch.stack([self.states[i] for i in indices]).to(z.device)
        labels = batch.labels or (None,) * B
        groups = [("label", lab) if lab is not None else ("caption", cap) for lab, cap in zip(labels, batch.inputs["caption"])]
        return caption_loss(self.module, z, mask, text, groups)


# ---------------------------------------------------------------------------------------------
# From a recipe
# ---------------------------------------------------------------------------------------------


def make_objective(
    recipe: Recipe, representation: nn.Module, model: nn.Module | None, cfg: TrainConfig, warm_start: bool = True
) -> Objective:
    """The recipe's objective; its ``module`` is what to optimise. Freezes the representation
    unless the representation is what is trained, and the module's parts ``[train] freeze`` names.
    ``warm_start``: a distilled student starts from weights (:meth:`DistillObjective.from_recipe`),
    else from its seeded initialisation."""
    objective = _objective(recipe, representation, model, cfg, warm_start)
    objective.freeze(cfg.freeze)
    return objective


def _objective(
    recipe: Recipe, representation: nn.Module, model: nn.Module | None, cfg: TrainConfig, warm_start: bool
) -> Objective:
    if cfg.target == "representation":
        if not any(p.requires_grad for p in representation.parameters()):
            raise AudioguideError(f"representation {recipe.representation.type!r} has nothing to train")
        if hasattr(representation, "trained"):  # a tokenizer over a frozen autoencoder's latents
            representation.eval()
            for p in representation.parameters():
                p.requires_grad_(False)
            representation.trained.requires_grad_(True)
            return TokenizerObjective(recipe, representation, EncodedClips(representation.latents, representation.autoencoder.hop, False))
        return AutoencoderObjective(representation)

    representation.eval()
    for p in representation.parameters():
        p.requires_grad_(False)
    crops, hop = cfg.segment_seconds > 0, representation.hop

    if cfg.target == "verifier":
        verifier = CaptionVerifierObjective if recipe.verifier.type == "caption" else VerifierObjective
        return verifier(recipe, representation, EncodedClips(representation.encode, hop, crops))
    if model.kind == "tokens" and cfg.cca is not None:  # guidance-free fine-tuning (audioguide.training.cca)
        from audioguide.training.cca import CCAObjective

        return CCAObjective.from_recipe(recipe, model, EncodedClips(representation.encode_tokens, hop, crops), cfg)
    if model.kind == "tokens":
        return CodecLMObjective(model, EncodedClips(representation.encode_tokens, hop, crops), cfg)
    latents = EncodedClips(representation.encode, hop, crops)
    if cfg.distill is not None:  # guidance distillation into the model's scale inputs
        return DistillObjective.from_recipe(recipe, representation, model, latents, cfg, warm_start)
    if model.mean_flow:
        return MeanFlowObjective(model, latents, cfg)
    if model.kind == "flow":
        return FlowObjective(model, latents, cfg)
    return DiffusionObjective(model, latents, cfg, recipe.sampler.config.schedule())


def check_training_recipe(recipe: Recipe) -> None:
    """Training-time checks that need the whole recipe: CFG needs trained nulls; crops need unconditioned audio."""
    from audioguide.pipeline import PRIMARY_INPUT
    from audioguide.recipes import RecipeError

    cfg, where = recipe.train, f"{recipe.source}: [train]"
    if cfg.target == "verifier" and cfg.segment_seconds > 0:
        whole = "whole clips, which their captions describe" if recipe.verifier.type == "caption" else "whole aligned clips"
        raise RecipeError(f"{where}: a verifier learns from {whole}; segment_seconds must be 0")
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
    if cfg.distill is not None:
        _check_distill(recipe, f"{where}.distill")
    if cfg.segment_seconds > 0 and PRIMARY_INPUT[recipe.task] in recipe.condition_names:
        raise RecipeError(f"{where}: segment_seconds crops audio but {PRIMARY_INPUT[recipe.task]!r} describes the whole clip; use 0")


def _check_distill(recipe: Recipe, where: str) -> None:
    """``[train.distill]``: a flow or mean-flow model whose ``guidance_embed`` conditions the
    ``[guidance]`` policy guides by scale (nested or independent), no evaluator-bound guider, and
    none of the flow-matching-only keys (the teacher's guidance is the target)."""
    from audioguide.recipes import RecipeError, model_kind
    from audioguide.registry import MODELS

    cfg, spec, policy = recipe.train, recipe.model, recipe.guidance
    scales_of = getattr(MODELS[spec.type], "guidance_scales", None)
    names = scales_of(spec.config) if scales_of else ()
    if model_kind(spec) != "flow":
        raise RecipeError(f"{where}: guidance distillation trains a flow or mean-flow model; [model] predicts {model_kind(spec)!r}")
    if not names:
        raise RecipeError(f"{where}: the student takes its guidance scales as inputs: set [model] guidance_embed = "
                          f"[{', '.join(repr(n) for n in policy.conditions) or '...'}]")
    unguided = [n for n in names if n not in policy.conditions]
    if unguided:
        raise RecipeError(f"{where}: [model] guidance_embed names {unguided[0]!r}, which [guidance] does not guide "
                          f"(its conditions: {', '.join(policy.conditions) or 'none'})")
    if policy.mode not in ("nested", "independent"):
        raise RecipeError(f"{where}: the target is the [guidance] policy at drawn scales; mode {policy.mode!r} has no scale per condition")
    if policy.needs:
        raise RecipeError(f"{where}: [guidance] guiders that need a {' and a '.join(policy.needs)} cannot give training targets")
    if cfg.flow_steps or cfg.curriculum_steps or (cfg.meanflow is not None and cfg.meanflow.guided):
        raise RecipeError(f"{where}: flow_steps, curriculum_steps and [train.meanflow] omega / kappa do not apply to "
                          "distillation (the teacher's guided prediction is the target)")
