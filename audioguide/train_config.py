"""The ``[train]`` table of a recipe: what to train and how (:class:`TrainConfig`, with its
``[train.meanflow]`` sub-table :class:`MeanFlowConfig`).

These configs sit below the recipe layer: a recipe holds them, so loading a recipe to generate
audio does not import the training code. This module imports only the standard library.

    [train]
    target = "model"            # model | representation (our autoencoder) | verifier (the [verifier] table)
    steps = 2000
    batch_size = 16
    lr = 3e-4
    segment_seconds = 4.0       # random crops; 0 = whole clips
    length_window = 4           # batches of similar lengths: drawn from batch_size * 4 neighbours (0 = off)
    balance = 0.5               # rows drawn with weight (rows of their speaker) ** -balance (0 = uniform rows, 1 = uniform speakers)
    balance_by = "speaker"      # the groups balance evens out: speaker | label (a sound corpus's classes)
    input_dropout = 0.2         # codec LMs: teacher-forced input tokens replaced by pad (Tacotron 2's prenet dropout)
    dropout = { text = 0.1, speaker = 0.1 }   # per-condition dropout for CFG
    dropout_all = 0.1
    ema = 0.999                 # exported weights are the EMA (0 = off)
    flow_steps = 900            # mean-flow models: pure flow matching first (MeanAudio's pre-training),
    curriculum_steps = 200      # then the share of r < t rows ramps up to 1 - flow_ratio
    [train.meanflow]            # mean-flow models only (MeanFlowConfig, below)
    omega = 0.3
    kappa = 0.9
    [train.cca]                 # codec LMs only: guidance-free fine-tuning (CCAConfig, below)
    beta = 0.003
    lam = 50.0
    [train.distill]             # guidance distillation into [model] guidance_embed (DistillConfig, below)
    teacher = "speech.safetensors"
    scales = [1.0, 4.0]
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MeanFlowConfig:
    """MeanFlow training (Geng et al. 2025; MeanAudio, Li et al. 2025).

    The defaults fold no guidance in (``omega = 1, kappa = 0``); MeanAudio trains with ``omega = 0.3,
    kappa = 0.9`` (effective scale 3), the shipped speech recipe with ``1.5, 0.5`` (also 3).

    ``flow_ratio``: fraction of the batch with ``r = t`` (plain flow matching rows).
    ``mu``, ``sigma``: logit-normal parameters of the two time draws.
    ``p``, ``c``: adaptive loss weight ``w = 1 / (||delta||^2 + c)^p`` (MeanFlow §4.3).
    ``omega``, ``kappa``: folded guidance, effective CFG scale ``omega / (1 - kappa)``.
    ``guided_conditions``: the conditions guidance is folded on (``()`` = all of ``keep``).
    """

    flow_ratio: float = 0.75
    mu: float = -0.4
    sigma: float = 1.0
    p: float = 1.0
    c: float = 1e-3
    omega: float = 1.0
    kappa: float = 0.0
    guided_conditions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0.0 <= self.flow_ratio <= 1.0:
            raise ValueError(f"flow_ratio must be in [0, 1], got {self.flow_ratio}")
        if not self.sigma > 0 or not self.c > 0 or self.p < 0:
            raise ValueError(f"need sigma > 0, c > 0, p >= 0; got {self.sigma}, {self.c}, {self.p}")
        if not self.omega > 0 or not 0.0 <= self.kappa < 1.0:
            raise ValueError(f"need omega > 0 and 0 <= kappa < 1; got {self.omega}, {self.kappa}")
        object.__setattr__(self, "guided_conditions", tuple(self.guided_conditions))

    @property
    def guided(self) -> bool:
        """Whether guidance is folded into the target at all."""
        return self.omega != 1.0 or self.kappa != 0.0

    @property
    def effective_scale(self) -> float:
        """The CFG scale ``w`` (``u + w (c - u)``) the trained model imitates: ``omega / (1 - kappa)``."""
        return self.omega / (1.0 - self.kappa)


@dataclass(frozen=True)
class CCAConfig:
    """Condition Contrastive Alignment of a codec LM (Chen et al. 2024, arXiv 2410.09347, eq. 12;
    :mod:`audioguide.training.cca`): fine-tune so that sampling without guidance matches CFG.

    ``beta`` scales the log-likelihood ratio against the frozen reference, ``lam`` (the paper's
    lambda) weighs the negative pairs; ``reference`` is the reference's weights (a packaged name, a
    path beside the recipe or a Hub id; ``""``: the recipe's ``[model] weights``), which are also the
    warm start; ``shuffled`` names the conditions a negative takes from another row of the batch
    (``()``: all of them, the paper's ``p(x) p(c)``).
    """

    beta: float = 0.02
    lam: float = 1.0
    reference: str = ""
    shuffled: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not (0.0 < self.beta < float("inf")):
            raise ValueError(f"cca beta must be a finite number > 0, got {self.beta}")
        if not (0.0 <= self.lam < float("inf")):
            raise ValueError(f"cca lam must be a finite number >= 0, got {self.lam}")
        object.__setattr__(self, "shuffled", tuple(self.shuffled))


@dataclass(frozen=True)
class DistillConfig:
    """Guidance distillation (Meng et al. 2023, CVPR, §3.1 stage one, eq. 6-7; adapters: Jensen et
    al. 2025, arXiv 2503.07274; :class:`audioguide.training.objectives.DistillObjective`): the model,
    which takes its ``guidance_embed`` conditions' scales as inputs, learns the teacher's guided
    prediction under the recipe's ``[guidance]`` policy at scales drawn per row and condition
    uniformly from ``scales`` (``[lo, hi]``).

    ``teacher``: the teacher's weights (a packaged name, a path beside the recipe or a Hub id;
    ``""``: the recipe's ``[model] weights``), a model of the recipe's ``[model]`` without
    ``guidance_embed``; a new run also starts from them where the recipe's own weights file does not
    exist yet. ``adapters_only``: train only the guidance embeddings and adapters, the rest frozen
    (scale 1 then stays exactly the teacher's conditional prediction).
    """

    teacher: str = ""
    scales: tuple[float, float] = (1.0, 4.0)
    adapters_only: bool = False

    def __post_init__(self) -> None:
        lo, hi = self.scales
        if not 0.0 <= lo <= hi < float("inf"):
            raise ValueError(f"distill scales must be [lo, hi] with 0 <= lo <= hi, finite; got {list(self.scales)}")
        object.__setattr__(self, "scales", (float(lo), float(hi)))


@dataclass(frozen=True)
class TrainConfig:
    target: str = "model"
    steps: int = 1000
    batch_size: int = 8
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup: int = 100
    grad_clip: float = 1.0
    seed: int = 0
    segment_seconds: float = 0.0
    length_window: int = 0  # > 0: each batch comes from batch_size * length_window clips of neighbouring lengths
    balance: float = 0.0  # group-balanced draws: row weight = (rows of its group) ** -balance
    balance_by: str = "speaker"  # the row field that forms the groups: speaker | label
    input_dropout: float = 0.0  # codec LMs: fraction of teacher-forced input tokens replaced by the pad token
    validation: float = 0.05  # fraction of the manifest held out for validation samples
    log_every: int = 10
    save_every: int = 200
    sample_every: int = 500
    ema: float = 0.0
    dropout: tuple[tuple[str, float], ...] = ()
    dropout_all: float = 0.0
    t_dist: str = "logit-normal"  # flow matching time distribution: logit-normal | uniform
    flow_steps: int = 0  # mean flow: steps of pure flow matching (r = t) before the curriculum starts
    curriculum_steps: int = 0  # mean flow: steps over which r = t (flow matching) fades to the mean-flow mix
    meanflow: MeanFlowConfig | None = None  # from [train.meanflow]
    distill: DistillConfig | None = None  # from [train.distill]: guidance distillation
    cca: CCAConfig | None = None  # from [train.cca]: codec LMs, Condition Contrastive Alignment instead of MLE
    # submodules of the trained module kept exactly as they are (weights, buffers, running statistics),
    # by dotted name: ["encoder", "posterior_proj", "quantizer"] fine-tunes an autoencoder's decoder
    # without moving the latents (or tokens) that generators were trained on
    freeze: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.target not in ("model", "representation", "verifier"):
            raise ValueError(f"target must be model, representation or verifier, got {self.target!r}")
        for name in ("steps", "batch_size", "log_every", "save_every", "sample_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.lr <= 0 or self.weight_decay < 0 or self.warmup < 0 or self.grad_clip < 0:
            raise ValueError("lr must be > 0 and weight_decay, warmup, grad_clip >= 0")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must be in [0, 1), got {self.ema}")
        if not 0.0 <= self.validation < 1.0:
            raise ValueError(f"validation must be in [0, 1), got {self.validation}")
        if self.segment_seconds < 0:
            raise ValueError("segment_seconds must be >= 0")
        if self.length_window < 0:
            raise ValueError(f"length_window must be >= 0, got {self.length_window}")
        if not 0.0 <= self.balance <= 1.0:
            raise ValueError(f"balance must lie in [0, 1], got {self.balance}")
        if self.balance_by not in ("speaker", "label"):
            raise ValueError(f"balance_by must be speaker or label, got {self.balance_by!r}")
        if not 0.0 <= self.input_dropout < 1.0:
            raise ValueError(f"input_dropout must lie in [0, 1), got {self.input_dropout}")
        for name, p in self.dropout + (("all", self.dropout_all),):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"dropout for {name!r} must be in [0, 1], got {p}")
        if self.t_dist not in ("logit-normal", "uniform"):
            raise ValueError(f"t_dist must be logit-normal or uniform, got {self.t_dist!r}")
        object.__setattr__(self, "freeze", tuple(self.freeze))  # TOML gives lists
        if len(set(self.freeze)) != len(self.freeze) or not all(self.freeze):
            raise ValueError(f"freeze must list distinct, non-empty submodule names, got {list(self.freeze)}")
        if self.curriculum_steps < 0 or self.flow_steps < 0:
            raise ValueError("curriculum_steps and flow_steps must be >= 0")
