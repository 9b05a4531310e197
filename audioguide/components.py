"""A recipe's parts, built and loaded: representation, model (with its conditioners) and verifier.

:func:`build_components` is what :class:`audioguide.pipeline.Pipeline` generates with and what
training trains; weights come from a packaged file, a path beside the recipe, a user's path or a
Hub id (:mod:`audioguide.checkpoints`). Construction never touches torch's global RNG: initial
weights come from each component's own seeded generator.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import torch

from audioguide.checkpoints import load_checkpoint
from audioguide.core import AudioguideError
from audioguide.recipes import WEIGHTS_DIR, Recipe, RecipeError
from audioguide.registry import CONDITIONERS, MODELS, REPRESENTATIONS, VERIFIERS


def local_weights(source: str, recipe: Recipe, user: bool = False) -> Path | None:
    """The local file or directory a weights ``source`` names: a path as given (a user's option:
    relative to the working directory first), a packaged weight file name, or a path relative to
    the recipe; None if there is none (a Hub id, or weights not trained yet)."""
    candidates = [WEIGHTS_DIR / source, recipe.source.parent / source]
    if user:
        candidates.insert(0, Path(source))
    return next((c for c in candidates if c.exists()), None)


def _load_weights(module: torch.nn.Module, source: str, recipe: Recipe, what: str, user: bool = False,
                  grow: bool = False, optional: Collection[str] = ()) -> set[str]:
    """Load ``source`` into ``module``: a local file (:func:`local_weights`) or a Hub id (a user's
    ``source`` only when written ``hf://owner/name``: otherwise a missing path is "not found").
    ``grow`` (a training warm start) lets named-voice tables take voices added at the end of the
    recipe's list (:meth:`SpeakerId.grown`). Keys in ``optional`` may be missing from the file
    (they keep what they held); any other mismatch is an error. Returns the optional keys missing."""
    ckpt = load_checkpoint(local_weights(source, recipe, user) or source, local=user)
    tensors = ckpt.tensors
    if grow:
        from audioguide.conditioners.speaker import SpeakerId

        tensors = dict(tensors)
        for name, sub in module.named_modules():
            key = f"{name}.table.weight"
            if isinstance(sub, SpeakerId) and key in tensors:
                tensors[key] = sub.grown(tensors[key])
    try:
        missing, unexpected = module.load_state_dict(tensors, strict=False)
    except RuntimeError as e:  # shape mismatches
        reason = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise AudioguideError(f"checkpoint {ckpt.path} does not fit the {what} of recipe {recipe.name!r}: {reason}") from None
    optional = set(optional)
    skipped = {k for k in missing if k in optional}
    missing = [k for k in missing if k not in optional]
    if missing or unexpected:
        raise AudioguideError(
            f"checkpoint {ckpt.path} does not fit the {what} of recipe {recipe.name!r} "
            f"({len(missing)} missing, {len(unexpected)} unexpected tensors, e.g. {(missing or unexpected)[0]})"
        )
    return skipped


def load_guidance_weights(model: torch.nn.Module, source: str, recipe: Recipe) -> None:
    """Load a ``[model] guidance_weights`` file (a local file, a packaged name or a Hub id) into
    ``model``: its guidance-scale embeddings and adapters, all of them and nothing else."""
    keys = set(model.guidance_keys())
    others = [k for k in model.state_dict() if k not in keys]
    if _load_weights(model, source, recipe, "guidance-scale inputs", optional=others) != set(others):
        raise AudioguideError(f"checkpoint {source} holds more than guidance-scale inputs; the model's weights go in [model] weights")


def build_components(recipe: Recipe, model_weights: str | None = None, require_weights: bool = True, load_model: bool = True):
    """Build ``(representation, model)`` from a recipe and load their weights.

    ``model_weights`` (a user's option) overrides the recipe's ``[model] weights``. Unless the recipe
    declares ``random_weights``, a model or trainable representation without weights is an error
    (when ``require_weights``; otherwise, as for training, a model whose packaged or recipe-relative
    weight file does not exist yet starts from its seeded initialisation; ``load_model=False``
    always starts the model there, for training from scratch; with weights, such a warm start grows
    named-voice tables for voices added at the end of the recipe's list). Construction leaves
    torch's global RNG as it was: initial weights come from each component's own seeded generator.
    """
    with torch.random.fork_rng(devices=[]):
        return _build(recipe, model_weights, require_weights, load_model)


def _construct(recipe: Recipe, table: str, make):
    """``make()``, with a size torch cannot allocate (``hidden = 10**17``) a one-line RecipeError."""
    try:
        return make()
    except (RuntimeError, MemoryError, OverflowError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise RecipeError(f"{recipe.source}: cannot build {table}: {first}") from None


def _build(recipe: Recipe, model_weights: str | None, require_weights: bool, load_model: bool = True):
    rep_spec, model_spec = recipe.representation, recipe.model
    strict = require_weights and not recipe.random_weights
    representation = _construct(recipe, "[representation]", lambda: REPRESENTATIONS[rep_spec.type](rep_spec.config))
    for part, source in getattr(representation, "parts", {}).items():  # parts with weights of their own
        _load_weights(getattr(representation, part), source, recipe, f"representation's {part}")
    trained = getattr(representation, "trained", representation)  # what the recipe's weights hold
    if rep_spec.weights and (strict or local_weights(rep_spec.weights, recipe) is not None):
        _load_weights(trained, rep_spec.weights, recipe, "representation")
    elif strict and model_spec is not None and getattr(representation, "trainable", False):
        raise RecipeError(f"{recipe.source}: [representation] {rep_spec.type!r} has no weights and random_weights is not set")
    if model_spec is None:
        return representation, None
    conditioners = {n: CONDITIONERS[c.type](c.config) for n, c in recipe.conditioners}
    cls = MODELS[model_spec.type]
    if cls.kind == "tokens":
        if not representation.n_codebooks:
            raise RecipeError(f"{recipe.source}: [model] {model_spec.type!r} needs a tokenizing representation, not {rep_spec.type!r}")
        if model_spec.config.codebook_size != representation.codebook_size:
            raise RecipeError(
                f"{recipe.source}: [model] codebook_size is {model_spec.config.codebook_size} but the representation's is "
                f"{representation.codebook_size}"
            )
        model = _construct(recipe, "[model]", lambda: cls(model_spec.config, representation.n_codebooks, conditioners))
    else:
        model = _construct(recipe, "[model]", lambda: cls(model_spec.config, representation.channels, conditioners))
    if not load_model:
        return representation, model
    extra = model_spec.guidance_weights
    optional = model.guidance_keys() if extra else ()  # what the guidance file brings
    if model_weights is not None:
        lacking = _load_weights(model, model_weights, recipe, "model", user=True, optional=optional)
    elif model_spec.weights is not None and (strict or local_weights(model_spec.weights, recipe) is not None):
        lacking = _load_weights(model, model_spec.weights, recipe, "model", grow=not require_weights, optional=optional)
    elif strict:
        raise RecipeError(f"{recipe.source}: [model] has no weights and random_weights is not set")
    else:
        return representation, model
    # A user's full file (a student trained whole) keeps its own; otherwise the guidance file goes over.
    if lacking and (strict or local_weights(extra, recipe) is not None):
        load_guidance_weights(model, extra, recipe)
    return representation, model


def build_verifier(recipe: Recipe):
    """The recipe's content verifier with its weights (None without a ``[verifier]`` table); a
    ``random_weights`` recipe without verifier weights gets the seeded initialisation."""
    spec = recipe.verifier
    if spec is None:
        return None
    with torch.random.fork_rng(devices=[]):
        verifier = _construct(recipe, "[verifier]", lambda: VERIFIERS[spec.type](spec.config))
    if spec.weights is not None and not (recipe.random_weights and local_weights(spec.weights, recipe) is None):
        _load_weights(verifier, spec.weights, recipe, "verifier")
    return verifier
