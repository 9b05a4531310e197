"""Recipes: small TOML files that assemble a generator from registered parts.

A recipe is read into frozen dataclasses. Every table is checked against the dataclass it
becomes: an unknown key, an unknown component type or an out-of-range value is a one-line
:class:`RecipeError` naming the file, the table and key, and the valid choices. Example::

    name = "my-tts"
    task = "tts"                       # tts | t2a
    description = "one line for `audioguide recipes`"

    [representation]                   # see registry.REPRESENTATIONS
    type = "frames"

    [conditioners.text]                # one table per condition; names are the task's inputs
    type = "characters"

    [model]                            # see registry.MODELS
    type = "toy-flow"
    weights = "tts.safetensors"        # optional: packaged name, path, directory, or Hub repo id

    [sampler]                          # see registry.SAMPLERS
    type = "euler"
    steps = 16

    [guidance]                         # audioguide.guidance.Guidance
    scales = { text = 3.0 }
    rescale = 0.7

    [verifier]                         # optional, see registry.VERIFIERS: best-of-N reranking, feedback guidance
    type = "phones"                    # phones (speech) | caption (t2a)
    weights = "verifier-speech.safetensors"
    candidates = 4                     # samples drawn per sentence; the verifier keeps one (1 = off)

    [acoustic]                         # optional: a codec LM's semantic tokens rendered by another recipe
    recipe = "speech-acoustic"         # a task = "acoustic" recipe (tokens + speaker + style -> latents)

    [duration]
    seconds_per_char = 0.07

    [defaults]                         # inputs used when a call gives none but the text
    speaker = "ava"

A recipe may start from another: ``extends = "sound"`` (a built-in name) or ``extends =
"base.toml"`` (a path relative to the extending file) takes the other recipe's document and lays
this one over it, table by table and key by key, so that a variant writes only what it changes::

    extends = "sound"
    name = "sound-fast"
    [sampler]
    steps = 4                          # type, schedule and shift stay the base's

``name`` and ``description`` are never inherited. A table whose ``type`` differs from the base's
replaces the base's table whole (another sampler keeps none of the old one's keys), and so do
``[guidance] scales`` and ``[train] dropout`` (a value per condition: the child's list is the
list); a table set to ``false`` (``[guidance] gedi = false``, ``verifier = false``) is removed;
any other table is merged, so a key can be overridden but not removed. Relative paths the base
gives (weights, a teacher, an acoustic recipe) keep pointing where they pointed from the base's
folder. :attr:`Recipe.bases` lists the files read, so a render job's identity covers them.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

from audioguide.core import AudioguideError
from audioguide.guidance import GUIDERS, CFGTerm, Guidance, GuidanceError, check_policy
from audioguide.registry import CONDITIONERS, MODELS, REPRESENTATIONS, SAMPLERS, VERIFIERS
from audioguide.train_config import DistillConfig, MeanFlowConfig, TrainConfig

BUILTIN_DIR = Path(__file__).parent / "recipes"
WEIGHTS_DIR = Path(__file__).parent / "weights"  # packaged weight files, found by name before a recipe's folder
TASKS: dict[str, tuple[str, ...]] = {
    # the inputs a condition of each task may name; the first is what the task's texts are
    "tts": ("text", "speaker", "style"),
    "t2a": ("caption",),
    # the acoustic stage of a staged speech recipe: semantic tokens (from its codec LM) in a voice
    "acoustic": ("tokens", "speaker", "style"),
}


MAX_CANDIDATES = 16  # samples per sentence that reranking may draw
MAX_STEPS = 1000  # sampler steps of one call: the recipes use 1-32; more only burns minutes


class RecipeError(AudioguideError):
    """A recipe that cannot be used; the message names file, key and valid choices."""


@dataclass(frozen=True)
class Component:
    """A registered component: its registry name, its validated config, optional weights.

    ``weights`` (the ``weights`` key of the component's table) is a packaged file name, a path
    relative to the recipe, a directory, or a Hub repo id; see :mod:`audioguide.checkpoints`.
    ``guidance_weights`` (``[model]`` only): a second file holding just the model's guidance-scale
    embeddings and adapters (an adapter-only distilled student, Jensen et al. 2025), loaded over
    ``weights``, which then need not hold them: one base file serves the plain and the distilled
    recipe.
    """

    type: str
    config: Any
    weights: str | None = None
    guidance_weights: str | None = None


@dataclass(frozen=True)
class Duration:
    """How long to generate: speech scales with the text, sound takes ``seconds``."""

    seconds_per_char: float = 0.07
    min_seconds: float = 0.5
    max_seconds: float = 30.0
    seconds: float = 4.0

    def __post_init__(self) -> None:
        if not 0 < self.min_seconds <= self.max_seconds:
            raise ValueError("need 0 < min_seconds <= max_seconds")
        if not (0 < self.seconds_per_char < math.inf):
            raise ValueError(f"seconds_per_char must be a finite number > 0, got {self.seconds_per_char}")
        if not self.min_seconds <= self.seconds <= self.max_seconds:
            raise ValueError(f"seconds must be in [min_seconds, max_seconds] = [{self.min_seconds}, {self.max_seconds}]")


@dataclass(frozen=True)
class Acoustic:
    """``[acoustic]``: the stage that renders a codec LM's semantic tokens in a voice, a recipe of
    task ``acoustic`` (its name or path); its conditions other than the tokens are the LM's inputs."""

    recipe: str

    def __post_init__(self) -> None:
        if not self.recipe:
            raise ValueError("recipe must name a recipe")


@dataclass(frozen=True)
class Recipe:
    name: str
    task: str
    description: str
    representation: Component
    conditioners: tuple[tuple[str, Component], ...]
    model: Component | None  # None: the recipe only trains a representation or a verifier
    sampler: Component | None
    guidance: Guidance
    duration: Duration
    random_weights: bool
    source: Path
    train: TrainConfig = TrainConfig()
    defaults: tuple[tuple[str, str], ...] = ()  # (condition, input) used when a call gives only the text
    verifier: Component | None = None  # a content verifier that ranks candidates (audioguide.models.verifier)
    candidates: int = 1  # samples drawn per sentence when there is a verifier; it keeps the best (1 = off)
    acoustic: Acoustic | None = None  # a second stage rendering a codec LM's semantic tokens
    bases: tuple[Path, ...] = ()  # the files ``extends`` laid this recipe over, nearest first

    @property
    def condition_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.conditioners)


# ---------------------------------------------------------------------------------------------
# Validation of TOML tables against dataclasses
# ---------------------------------------------------------------------------------------------


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise RecipeError(f"{where} must be a table")
        return build(hint, value, where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise RecipeError(f"{where} must be an array")
        item = args[0]
        if len(args) != 2 or args[1] is not Ellipsis:
            if len(value) != len(args):
                raise RecipeError(f"{where} must have {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, where) for v, a in zip(value, args))
        return tuple(_coerce(v, item, where) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{where} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RecipeError(f"{where} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise RecipeError(f"{where} must be a string, got {value!r}")
        return value
    return value


def build(cls: type, table: Mapping[str, Any], where: str, **preset: Any) -> Any:
    """Build dataclass ``cls`` from a TOML table; unknown keys and bad values are RecipeErrors."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls) if f.name not in preset and f.init]
    for key in table:
        if key not in names:
            raise RecipeError(f"{where}: unknown key {key!r}; valid keys: {', '.join(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in table.items()}
    missing = [f.name for f in fields(cls) if f.name not in kwargs and f.name not in preset
               and f.default is MISSING and f.default_factory is MISSING]
    if missing:
        raise RecipeError(f"{where}: missing key {missing[0]!r}")
    try:
        return cls(**kwargs, **preset)
    except (ValueError, TypeError) as e:
        raise RecipeError(f"{where}: {e}") from None


def _component(table: Any, registry: Mapping[str, Any], where: str, weights_note: str = "",
               guidance_weights: bool = False) -> Component:
    if not isinstance(table, Mapping):
        raise RecipeError(f"{where} must be a table")
    kind = table.get("type")
    if kind not in registry:
        shown = "missing" if kind is None else repr(kind)
        raise RecipeError(f"{where}.type is {shown}; valid choices: {', '.join(sorted(registry))}")
    cls = registry[kind]
    files = ("type", "weights", "guidance_weights") if guidance_weights else ("type", "weights")
    rest = {k: v for k, v in table.items() if k not in files}
    if "weights" in table and weights_note:
        raise RecipeError(f"{where}: no 'weights' here: {weights_note}")
    weights = _coerce(table["weights"], str, f"{where}.weights") if "weights" in table else None
    config = build(cls.Config, rest, f"{where} ({kind})")
    extra = None
    if "guidance_weights" in table and guidance_weights:
        extra = _coerce(table["guidance_weights"], str, f"{where}.guidance_weights")
        if not getattr(cls, "guidance_scales", lambda c: ())(config):
            raise RecipeError(f"{where}: guidance_weights holds guidance-scale inputs; set guidance_embed to have them")
        if weights is None:
            raise RecipeError(f"{where}: guidance_weights goes over the model's weights; set weights too")
    return Component(kind, config, weights, extra)


def _guidance(table: Mapping[str, Any], where: str) -> Guidance:
    table = dict(table)
    scales = table.pop("scales", {})
    if not isinstance(scales, Mapping):
        raise RecipeError(f"{where}.scales must be a table of condition = scale")
    parsed = tuple((name, _coerce(w, float, f"{where}.scales.{name}")) for name, w in scales.items())
    terms = []
    for i, term in enumerate(table.pop("terms", [])):
        terms.append(build(_TermTable, term, f"{where}.terms[{i}]").to_term())
    if terms and table.get("mode") != "terms":
        raise RecipeError(f"{where}: 'terms' needs mode = \"terms\"")
    if table.get("mode") == "terms" and parsed:
        raise RecipeError(f"{where}: mode \"terms\" takes its weights from 'terms', not 'scales'")
    # Guiders that take an evaluator per generation (Guider.needs) are built from their own table,
    # [guidance.<name>], into the policy's `guiders`; the pipeline binds their evaluator.
    extra = []
    for name in [k for k in table if k in GUIDERS and GUIDERS[k].needs is not None]:
        params = table.pop(name)
        if not isinstance(params, Mapping):
            raise RecipeError(f"{where}.{name} must be a table")
        extra.append(build(GUIDERS[name], params, f"{where}.{name}"))
    return build(Guidance, table, where, scales=parsed, custom_terms=tuple(terms), guiders=tuple(extra))


def _train(table: Mapping[str, Any], where: str, default_target: str) -> TrainConfig:
    if not isinstance(table, Mapping):
        raise RecipeError(f"{where} must be a table")
    table = {"target": default_target, **table}
    dropout = table.pop("dropout", {})
    if not isinstance(dropout, Mapping):
        raise RecipeError(f"{where}.dropout must be a table of condition = probability")
    parsed = tuple((n, _coerce(p, float, f"{where}.dropout.{n}")) for n, p in dropout.items())
    meanflow = table.pop("meanflow", None)
    if meanflow is not None:
        meanflow = build(MeanFlowConfig, meanflow, f"{where}.meanflow")
    distill = table.pop("distill", None)
    if distill is not None:
        if not isinstance(distill, Mapping):
            raise RecipeError(f"{where}.distill must be a table")
        distill = build(DistillConfig, distill, f"{where}.distill")
    return build(TrainConfig, table, where, dropout=parsed, meanflow=meanflow, distill=distill)


@dataclass(frozen=True)
class _TermTable:
    keep: tuple[str, ...]
    weight: float

    def to_term(self) -> CFGTerm:
        return CFGTerm(frozenset(self.keep), self.weight)


_TOP = ("name", "task", "description", "extends", "random_weights", "representation", "conditioners",
        "model", "sampler", "guidance", "duration", "train", "defaults", "verifier", "acoustic")


def _defaults(table: Any, names: list[str], task: str, where: str) -> tuple[tuple[str, str], ...]:
    """``[defaults]``: a default input per secondary condition (never the task's primary input)."""
    if not isinstance(table, Mapping):
        raise RecipeError(f"{where} must be a table")
    valid = [n for n in names if n != TASKS[task][0]]
    out = []
    for key, value in table.items():
        if key not in valid:
            raise RecipeError(f"{where}: unknown key {key!r}; valid keys: {', '.join(valid) or 'none'}")
        out.append((key, _coerce(value, str, f"{where} {key}")))
    return tuple(out)


def parse_recipe(data: Mapping[str, Any], source: Path, bases: tuple[Path, ...] = ()) -> Recipe:
    """Validate a parsed TOML document into a :class:`Recipe` (``extends`` already resolved:
    :func:`load_recipe` does that; ``bases`` are the files it read)."""
    where = str(source)
    if "extends" in data:
        raise RecipeError(f"{where}: extends is resolved when the recipe is loaded from a file (load_recipe)")
    for key in data:
        if key not in _TOP:
            raise RecipeError(f"{where}: unknown key {key!r}; valid keys: {', '.join(_TOP)}")
    if "task" not in data:
        raise RecipeError(f"{where}: missing key 'task'")
    if "representation" not in data:
        raise RecipeError(f"{where}: missing [representation]")
    if ("model" in data) != ("sampler" in data):
        raise RecipeError(f"{where}: [model] and [sampler] go together (a recipe without both only trains a representation or a verifier)")
    task = data["task"]
    if task not in TASKS:
        raise RecipeError(f"{where}: task is {task!r}; valid choices: {', '.join(TASKS)}")
    conds = data.get("conditioners", {})
    if not isinstance(conds, Mapping):
        raise RecipeError(f"{where}: [conditioners] must be a table of tables")
    conditioners = []
    for name, table in conds.items():
        if name not in TASKS[task]:
            raise RecipeError(
                f"{where}: [conditioners.{name}] is not an input of task {task!r}; valid names: {', '.join(TASKS[task])}"
            )
        conditioners.append((name, _component(
            table, CONDITIONERS, f"{where}: [conditioners.{name}]", "a conditioner's weights are part of the [model] weights"
        )))
    model = _component(data["model"], MODELS, f"{where}: [model]", guidance_weights=True) if "model" in data else None
    sampler = _component(data["sampler"], SAMPLERS, f"{where}: [sampler]", "samplers have no weights") if "sampler" in data else None
    guidance = _guidance(data.get("guidance", {}), f"{where}: [guidance]")
    verifier, candidates = None, 1
    if "verifier" in data:
        table = data["verifier"]
        if not isinstance(table, Mapping):
            raise RecipeError(f"{where}: [verifier] must be a table")
        candidates = _coerce(table.get("candidates", 1), int, f"{where}: [verifier] candidates")
        if not 1 <= candidates <= MAX_CANDIDATES:
            raise RecipeError(f"{where}: [verifier] candidates must lie in [1, {MAX_CANDIDATES}], got {candidates}")
        kind = VERIFIERS.get(table.get("type"))
        valid = ["type", "weights", "candidates", *(f.name for f in fields(kind.Config))] if kind else []
        unknown = [k for k in table if valid and k not in valid]
        if unknown:
            raise RecipeError(f"{where}: [verifier]: unknown key {unknown[0]!r}; valid keys: {', '.join(valid)}")
        verifier = _component({k: v for k, v in table.items() if k != "candidates"}, VERIFIERS, f"{where}: [verifier]")
    recipe = Recipe(
        name=_coerce(data.get("name", source.stem), str, f"{where}: name"),
        task=task,
        description=_coerce(data.get("description", ""), str, f"{where}: description"),
        representation=_component(data["representation"], REPRESENTATIONS, f"{where}: [representation]"),
        conditioners=tuple(conditioners),
        model=model,
        sampler=sampler,
        guidance=guidance,
        duration=build(Duration, data.get("duration", {}), f"{where}: [duration]"),
        random_weights=_coerce(data.get("random_weights", False), bool, f"{where}: random_weights"),
        source=source,
        train=_train(data.get("train", {}), f"{where}: [train]", "model" if model is not None else "representation"),
        defaults=_defaults(data.get("defaults", {}), [n for n, _ in conditioners], task, f"{where}: [defaults]"),
        verifier=verifier,
        candidates=candidates,
        acoustic=build(Acoustic, data["acoustic"], f"{where}: [acoustic]") if "acoustic" in data else None,
        bases=bases,
    )
    check_compatible(recipe, where)
    return recipe


def check_compatible(recipe: Recipe, where: str) -> None:
    """Cross-component checks: guided conditions exist, the sampler fits the model, CFG++ scales."""
    names = recipe.condition_names
    for cond, _ in recipe.train.dropout:
        if cond not in names:
            raise RecipeError(f"{where}: [train] dropout names condition {cond!r}; the recipe's conditioners are {', '.join(names) or 'none'}")
    check_verifier(recipe, where)
    if recipe.acoustic is not None and (recipe.representation.type != "semantic" or recipe.model is None
                                        or model_kind(recipe.model) != "tokens"):
        raise RecipeError(f"{where}: [acoustic] renders a codec LM's semantic tokens: it needs [representation] type = \"semantic\" "
                          "and a codec-lm [model]")
    if recipe.model is None or recipe.sampler is None:
        if recipe.train.target == "model":
            raise RecipeError(f"{where}: [train] target is 'model' but the recipe has no [model]")
        return
    for cond in recipe.guidance.conditions:
        if cond not in names:
            raise RecipeError(
                f"{where}: [guidance] names condition {cond!r} but the recipe's conditioners are {', '.join(names) or 'none'}"
            )
    sampler = SAMPLERS[recipe.sampler.type]
    kind = model_kind(recipe.model)
    if kind not in sampler.kinds:
        raise RecipeError(
            f"{where}: sampler {recipe.sampler.type!r} needs a model predicting {' or '.join(sampler.kinds)}, "
            f"but [model] predicts {kind!r}"
        )
    mean_flow = getattr(recipe.model.config, "mean_flow", False)
    if sampler.mean_flow and not mean_flow:
        raise RecipeError(f"{where}: sampler 'meanflow' needs a mean-flow model (mean_flow = true)")
    sampler_cfg = recipe.sampler.config
    if getattr(sampler_cfg, "prior_weight", 0.0) > 0 and not getattr(recipe.model.config, "prior_codebooks", 0):
        raise RecipeError(f"{where}: [sampler] prior_weight fuses the model's content prior, but [model] has none (prior_codebooks = 0)")
    if getattr(sampler_cfg, "eta", 0.0) > 0 and recipe.sampler.type != "ddim":
        raise RecipeError(f"{where}: [sampler] eta only applies to 'ddim', not {recipe.sampler.type!r}")
    if kind == "eps" and getattr(sampler_cfg, "zero_terminal_snr", False):
        raise RecipeError(f"{where}: an eps-prediction model cannot start from pure noise (zero terminal SNR); "
                          "use kind = \"v\" or zero_terminal_snr = false")
    train = recipe.train
    if not mean_flow and (train.meanflow is not None or train.curriculum_steps or train.flow_steps):
        raise RecipeError(f"{where}: [train] meanflow, flow_steps and curriculum_steps apply only to mean-flow models")
    if train.cca is not None:  # Condition Contrastive Alignment (audioguide.training.cca)
        if kind != "tokens" or train.target != "model":
            raise RecipeError(f"{where}: [train.cca] fine-tunes a codec LM (target = \"model\"); [model] is {recipe.model.type!r}")
        unknown = [n for n in train.cca.shuffled if n not in names]
        if unknown:
            raise RecipeError(f"{where}: [train.cca] shuffled names {unknown[0]!r}; conditions: {', '.join(names)}")
        if train.dropout or train.dropout_all or train.input_dropout:
            raise RecipeError(f"{where}: [train.cca] compares exact likelihoods of whole conditions; "
                              "dropout, dropout_all and input_dropout do not apply")
    if (kind != "flow" or mean_flow) and train.t_dist != "logit-normal":
        raise RecipeError(f"{where}: [train] t_dist applies only to flow-matching models")
    check_guidance(recipe, recipe.guidance, where)


def check_verifier(recipe: Recipe, where: str) -> None:
    """A verifier reads the representation's latents. A phone verifier (``type = "phones"``) also
    reads the frame alignment of an edged phoneme ``text`` condition: in training the corpus's, in
    generation the model's predicted durations. A caption verifier (``type = "caption"``) reads a
    ``t2a`` recipe's caption through the caption conditioner's frozen text encoder."""
    if recipe.train.target == "verifier" and recipe.verifier is None:
        raise RecipeError(f"{where}: [train] target is 'verifier' but the recipe has no [verifier]")
    if recipe.verifier is None:
        return
    if recipe.verifier.type == "caption":
        _check_caption_verifier(recipe, where)
        return
    text = dict(recipe.conditioners).get("text")
    if text is None or text.type != "phonemes" or not text.config.edges:
        raise RecipeError(f"{where}: [verifier] hears phonemes: it needs [conditioners.text] of type 'phonemes' with edges = true")
    if recipe.representation.type != "autoencoder":
        raise RecipeError(f"{where}: [verifier] reads our autoencoder's latents; the representation is {recipe.representation.type!r}")
    channels = recipe.representation.config.channels
    if recipe.verifier.config.channels != channels:
        raise RecipeError(f"{where}: [verifier] channels is {recipe.verifier.config.channels} but the representation's latents have {channels}")
    if recipe.model is not None and getattr(recipe.model.config, "aligned", "") != "text":
        raise RecipeError(f"{where}: [verifier] ranks candidates by their phoneme alignment; [model] must set aligned = \"text\"")
    if recipe.model is not None and recipe.verifier.weights is None and not recipe.random_weights:
        raise RecipeError(f"{where}: [verifier] needs weights (an untrained verifier would choose at random)")


def _check_caption_verifier(recipe: Recipe, where: str) -> None:
    """A caption verifier judges latents against a ``t2a`` recipe's caption, embedded by the frozen
    encoder of its ``pretrained-text`` caption conditioner."""
    spec = recipe.verifier
    assert spec is not None
    if recipe.task != "t2a":
        raise RecipeError(f"{where}: [verifier] type 'caption' judges sounds against their caption; task is {recipe.task!r}, not 't2a'")
    caption = dict(recipe.conditioners).get("caption")
    if caption is None or caption.type != "pretrained-text":
        raise RecipeError(f"{where}: [verifier] type 'caption' reuses the caption conditioner's text encoder: "
                          "it needs [conditioners.caption] of type 'pretrained-text'")
    if spec.config.source != caption.config.source:
        raise RecipeError(f"{where}: [verifier] source is {spec.config.source!r} but [conditioners.caption] "
                          f"reads {caption.config.source!r}; they must be the same text encoder")
    channels = getattr(recipe.representation.config, "channels", None)
    if channels is not None and spec.config.channels != channels:
        raise RecipeError(f"{where}: [verifier] channels is {spec.config.channels} but the representation's latents have {channels}")
    if recipe.model is not None and spec.weights is None and not recipe.random_weights:
        raise RecipeError(f"{where}: [verifier] needs weights (an untrained verifier would choose at random)")


def model_kind(model: Component) -> str:
    """``"tokens"`` for codec LMs, else the continuous model's prediction kind."""
    cls = MODELS[model.type]
    return "tokens" if cls.kind == "tokens" else getattr(model.config, "kind", cls.kind)


def check_guidance(recipe: Recipe, policy: Guidance, where: str) -> None:
    """What the recipe's sampler and model allow of ``policy`` (:func:`audioguide.guidance.check_policy`:
    each guider's own rule, CFG++ scales in [0, 1]), a :class:`GuidanceError` turned into a RecipeError."""
    sampler, model = SAMPLERS[recipe.sampler.type], MODELS[recipe.model.type]
    scales_of = getattr(model, "guidance_scales", None)  # the conditions whose scale the model takes as input
    try:
        check_policy(policy, kind=model_kind(recipe.model), cfgpp=sampler.cfgpp, mean_flow=sampler.mean_flow,
                     perturbs=model.perturbations(recipe.model.config),
                     guidance_inputs=scales_of(recipe.model.config) if scales_of else ())
    except GuidanceError as e:
        raise RecipeError(f"{where}: {e}") from None


def call_policy(
    recipe: Recipe,
    guidance: Guidance | None = None,
    scales: Mapping[str, float] | None = None,
    cfg: float | None = None,
    rescale: float | None = None,
) -> Guidance:
    """The policy of one call: ``guidance`` (default the recipe's) with the call's overrides
    (:meth:`Guidance.override`) applied and checked against the recipe's sampler and model."""
    try:
        policy = (guidance or recipe.guidance).override(cfg=cfg, scales=scales, rescale=rescale)
    except GuidanceError as e:
        raise RecipeError(f"guidance: {e}") from None
    check_guidance(recipe, policy, "guidance")
    return policy


def sampler_config(recipe: Recipe, steps: int | None = None) -> Any:
    """The recipe's sampler config, with ``steps`` replaced when given (checked by the config)."""
    config = recipe.sampler.config
    if steps is None:
        return config
    if not hasattr(config, "steps"):
        raise RecipeError(f"sampler {recipe.sampler.type!r} has no steps to set")
    if isinstance(steps, int) and steps > MAX_STEPS:
        raise RecipeError(f"steps must be at most {MAX_STEPS}, got {steps}")
    try:
        return dataclasses.replace(config, steps=steps)
    except ValueError as e:
        raise RecipeError(f"sampler: {e}") from None


# ---------------------------------------------------------------------------------------------
# Finding recipes
# ---------------------------------------------------------------------------------------------


def builtin_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.toml"))


def recipe_path(name_or_path: str | Path) -> Path:
    """A built-in recipe name or a path to a TOML file."""
    p = Path(name_or_path).expanduser()
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise RecipeError(f"recipe file not found: {p}")
        return p
    builtin = BUILTIN_DIR / f"{name_or_path}.toml"
    if builtin.is_file():
        return builtin
    raise RecipeError(f"unknown recipe {str(name_or_path)!r}; built-in recipes: {', '.join(builtin_names())}")


MAX_EXTENDS = 8  # bases in one chain of ``extends``
_PATH_KEYS = frozenset({"weights", "guidance_weights", "teacher", "reference", "recipe"})  # values that may be paths
_FILE_SUFFIXES = (".safetensors", ".toml", ".pt", ".bin", ".ckpt")
_WHOLE_VALUES = frozenset({("guidance", "scales"), ("train", "dropout")})  # a value per condition: replaced whole


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{path}: invalid TOML: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise RecipeError(f"cannot read recipe {path}: {e}") from None


def _base_path(value: Any, child: Path) -> Path:
    """What ``extends`` names (resolved): a path ending in .toml, relative to the extending file,
    or a built-in recipe."""
    if not isinstance(value, str) or not value:
        raise RecipeError(f"{child}: extends must name a built-in recipe or a .toml file, got {value!r}")
    if value.endswith(".toml"):
        path = (child.parent / Path(value).expanduser()).resolve()
        if not path.is_file():
            raise RecipeError(f"{child}: extends {value!r}: recipe file not found: {path}")
        return path
    path = BUILTIN_DIR / f"{value}.toml"
    if not path.is_file():
        raise RecipeError(f"{child}: extends {value!r}: no such built-in recipe; built-in recipes: {', '.join(builtin_names())}")
    return path.resolve()


def _is_relative_file(key: str, value: Any, base_dir: Path) -> bool:
    """Whether ``value`` under ``key`` is a path relative to the base's folder: it exists there, or
    it names a file (weights, a recipe) that is not packaged; a packaged weight name, a built-in
    recipe name and a Hub id are not."""
    if key not in _PATH_KEYS or not isinstance(value, str) or not value or "://" in value or Path(value).is_absolute():
        return False
    if (WEIGHTS_DIR / value).exists():
        return False
    if key == "recipe":
        return value.endswith(".toml")
    return (base_dir / value).exists() or value.endswith(_FILE_SUFFIXES)


def _rebase(table: Mapping[str, Any], base_dir: Path) -> dict[str, Any]:
    """``table`` with the relative paths it names (weights, teacher, reference, an acoustic recipe)
    made absolute from the base's folder, trained yet or not, so that they mean from the extending
    file what they meant from the base."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, Mapping):
            value = _rebase(value, base_dir)
        elif _is_relative_file(key, value, base_dir):
            value = str((base_dir / value).resolve())
        out[key] = value
    return out


def _lay_over(base: Mapping[str, Any], child: Mapping[str, Any], at: tuple[str, ...] = ()) -> dict[str, Any]:
    """``child`` laid over ``base``: tables merge key by key, except that a table whose ``type``
    differs from the base's replaces it whole, and so do the per-condition values ``scales`` and
    ``dropout``; a table set to ``false`` is removed; every other value replaces the base's."""
    out = dict(base)
    for key, value in child.items():
        old = out.get(key)
        if value is False and isinstance(old, Mapping):
            del out[key]
        elif (isinstance(value, Mapping) and isinstance(old, Mapping) and (*at, key) not in _WHOLE_VALUES
                and value.get("type", old.get("type")) == old.get("type")):
            out[key] = _lay_over(old, value, (*at, key))
        else:
            out[key] = value
    return out


def _resolve_extends(data: Mapping[str, Any], path: Path, chain: tuple[Path, ...] = ()) -> tuple[dict[str, Any], tuple[Path, ...]]:
    """The document ``data`` (read from ``path``; ``chain``: the files that extend it) with its
    ``extends`` chain laid under it, and the files of that chain, nearest first. A cycle or a chain
    longer than :data:`MAX_EXTENDS` is an error."""
    if "extends" not in data:
        return dict(data), ()
    chain = (*chain, path.resolve())
    base_path = _base_path(data["extends"], path)
    if base_path in chain:
        raise RecipeError(f"{path}: extends {data['extends']!r} makes a cycle: {' -> '.join(str(p) for p in (*chain, base_path))}")
    if len(chain) > MAX_EXTENDS:
        raise RecipeError(f"{path}: more than {MAX_EXTENDS} recipes in one extends chain")
    base, further = _resolve_extends(_read_toml(base_path), base_path, chain)
    base = {k: v for k, v in base.items() if k not in ("name", "description")}
    if base_path.parent != path.parent.resolve():
        base = _rebase(base, base_path.parent)
    child = {k: v for k, v in data.items() if k != "extends"}
    return _lay_over(base, child), (base_path, *further)


def load_recipe(name_or_path: str | Path) -> Recipe:
    """The recipe a built-in name or a TOML path names, its ``extends`` chain resolved. An error
    in a recipe that extends others names them too, since the faulty key may come from a base."""
    path = recipe_path(name_or_path)
    data, bases = _resolve_extends(_read_toml(path), path)
    try:
        return parse_recipe(data, path, bases)
    except RecipeError as e:
        if not bases:
            raise
        raise RecipeError(f"{e} (laid over {', '.join(str(b) for b in bases)})") from None


def builtin_recipes() -> list[Recipe]:
    return [load_recipe(BUILTIN_DIR / f"{n}.toml") for n in builtin_names()]
