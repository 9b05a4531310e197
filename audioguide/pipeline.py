"""The Python API: load a recipe once, call it on many texts, get waveforms and a sample rate.

    >>> from audioguide import Pipeline
    >>> tts = Pipeline.from_recipe("random-tts")
    >>> audio = tts(["Hello there.", "A second sentence."], seed=7)
    >>> audio.sample_rate, audio[0].shape

Generation of one input, in order:
  1. encode the input's conditions once (text, speaker, caption, ...);
  2. choose the number of latent frames (sound: ``seconds``; speech: from the model's predicted
     phoneme durations where it has them, else from the text's length);
  3. draw the starting noise from ``torch.Generator(seed + index)``;
  4. bind model, conditions and guidance policy into a :class:`~audioguide.guidance.GuidedField`;
  5. run the recipe's sampler over it;
  6. decode the latents to a waveform and trim it to the requested length.
Input ``i`` of a call with ``seed`` always equals a single call on that input with ``seed + i``.

Speech longer than one sentence is split into sentences (:func:`split_sentences`), generated one
by one with the same voice and seed, and joined with short pauses (:func:`join_speech`).
Secondary inputs (speaker, style) that a call does not give are absent: their conditioner's null
condition, with guidance on them off. A call that gives only texts uses the recipe's
``[defaults]`` (e.g. the default voice).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from audioguide.checkpoints import load_checkpoint
from audioguide.core import Audio, AudioguideError, make_generator
from audioguide.guidance import Guidance, GuidedField
from audioguide.models.base import with_negative
from audioguide.recipes import MAX_CANDIDATES, TASKS, Recipe, RecipeError, check_policy, load_recipe, model_kind
from audioguide.registry import CONDITIONERS, MODELS, REPRESENTATIONS, SAMPLERS, VERIFIERS

WEIGHTS_DIR = Path(__file__).parent / "weights"
PRIMARY_INPUT = {task: inputs[0] for task, inputs in TASKS.items()}  # what the texts of a call are

StepCallback = Callable[[int, int], None]
"""``callback(step, total)`` after each sampler step."""

SENTENCE_END = re.compile(r"(?<=[.!?;])\s+(?=\S)")
PAUSE_SECONDS = 0.18  # between joined sentences
FADE_SECONDS = 0.01


def split_sentences(text: str, max_chars: int = 220) -> list[str]:
    """Split ``text`` after ``. ! ? ;``; a piece longer than ``max_chars`` is split again at commas,
    then at spaces. Whitespace-only pieces are dropped."""
    out: list[str] = []
    for piece in SENTENCE_END.split(text.strip()):
        while len(piece) > max_chars:
            comma, space = piece.rfind(", ", 0, max_chars), piece.rfind(" ", 0, max_chars)
            cut = comma + 1 if comma > 0 else space if space > 0 else max_chars
            out.append(piece[:cut].strip())
            piece = piece[cut:].strip()
        if piece.strip():
            out.append(piece.strip())
    return out


def join_speech(waves: Sequence[np.ndarray], sample_rate: int, pause: float = PAUSE_SECONDS) -> np.ndarray:
    """Concatenate sentence waveforms with ``pause`` seconds of silence, each faded in and out over
    10 ms so that no join clicks."""
    fade = int(FADE_SECONDS * sample_rate)
    gap = np.zeros(int(pause * sample_rate), dtype=np.float32)
    parts = []
    for i, w in enumerate(waves):
        w = np.array(w, dtype=np.float32)
        n = min(fade, len(w) // 2)
        if n:
            ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
            w[:n] *= ramp
            w[-n:] *= ramp[::-1]
        parts.extend([gap, w] if i else [w])
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def local_weights(source: str, recipe: Recipe, user: bool = False) -> Path | None:
    """The local file or directory a weights ``source`` names: a path as given (a user's option:
    relative to the working directory first), a packaged weight file name, or a path relative to
    the recipe; None if there is none (a Hub id, or weights not trained yet)."""
    candidates = [WEIGHTS_DIR / source, recipe.source.parent / source]
    if user:
        candidates.insert(0, Path(source))
    return next((c for c in candidates if c.exists()), None)


def _load_weights(module: torch.nn.Module, source: str, recipe: Recipe, what: str, user: bool = False) -> None:
    """Load ``source`` into ``module``: a local file (:func:`local_weights`) or a Hub id."""
    ckpt = load_checkpoint(local_weights(source, recipe, user) or source)
    try:
        missing, unexpected = module.load_state_dict(ckpt.tensors, strict=False)
    except RuntimeError as e:  # shape mismatches
        reason = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise AudioguideError(f"checkpoint {ckpt.path} does not fit the {what} of recipe {recipe.name!r}: {reason}") from None
    if missing or unexpected:
        raise AudioguideError(
            f"checkpoint {ckpt.path} does not fit the {what} of recipe {recipe.name!r} "
            f"({len(missing)} missing, {len(unexpected)} unexpected tensors, e.g. {(missing or unexpected)[0]})"
        )


def build_components(recipe: Recipe, model_weights: str | None = None, require_weights: bool = True, load_model: bool = True):
    """Build ``(representation, model)`` from a recipe and load their weights.

    ``model_weights`` (a user's option) overrides the recipe's ``[model] weights``. Unless the recipe
    declares ``random_weights``, a model or trainable representation without weights is an error
    (when ``require_weights``; otherwise, as for training, a model whose packaged or recipe-relative
    weight file does not exist yet starts from its seeded initialisation; ``load_model=False``
    always starts the model there, for training from scratch). Construction leaves
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
    if rep_spec.weights:
        _load_weights(representation, rep_spec.weights, recipe, "representation")
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
    if model_weights is not None:
        _load_weights(model, model_weights, recipe, "model", user=True)
    elif model_spec.weights is not None and (strict or local_weights(model_spec.weights, recipe) is not None):
        _load_weights(model, model_spec.weights, recipe, "model")
    elif strict:
        raise RecipeError(f"{recipe.source}: [model] has no weights and random_weights is not set")
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


class Pipeline:
    """A generator assembled from a :class:`~audioguide.recipes.Recipe`, ready to call."""

    def __init__(self, recipe: Recipe, representation, model, verifier=None) -> None:
        self.recipe = recipe
        self.representation, self.model = representation.eval(), model.eval()
        self.verifier = None if verifier is None else verifier.eval()
        self.device = next(model.parameters(), torch.empty(0)).device

    @classmethod
    def from_recipe(
        cls, recipe: str | Path | Recipe, device: str | torch.device = "cpu", weights: str | None = None
    ) -> Pipeline:
        """Build from a recipe name, path or object; ``weights`` overrides the model's weights."""
        recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
        if recipe.model is None:
            raise RecipeError(f"{recipe.source}: recipe {recipe.name!r} has no [model]; it only trains a {recipe.train.target}")
        representation, model = build_components(recipe, weights)
        verifier = build_verifier(recipe)
        return cls(recipe, representation.to(device), model.to(device), None if verifier is None else verifier.to(device))

    @classmethod
    def from_components(cls, recipe: Recipe, representation, model, verifier=None) -> Pipeline:
        """Wrap already-built components (e.g. a model being trained) where they are, without copying
        or moving them (they are put in eval mode). Without a verifier, one candidate per sentence."""
        return cls(recipe, representation, model, verifier)

    @property
    def sample_rate(self) -> int:
        return self.representation.sample_rate

    @property
    def task(self) -> str:
        return self.recipe.task

    # -- per-call options ------------------------------------------------------------------------

    def policy(
        self,
        guidance: Guidance | None = None,
        scales: Mapping[str, float] | None = None,
        cfg: float | None = None,
        rescale: float | None = None,
    ) -> Guidance:
        """The recipe's guidance policy with this call's overrides applied (and validated)."""
        policy = guidance or self.recipe.guidance
        try:
            if cfg is not None:
                policy = policy.with_scales(**{name: cfg for name in policy.conditions})
            if scales:
                policy = policy.with_scales(**scales)
            if rescale is not None:
                policy = dataclasses.replace(policy, rescale=rescale)
        except ValueError as e:
            raise AudioguideError(f"guidance: {e}") from None
        check_policy(policy, self.recipe.sampler.type, model_kind(self.recipe.model), "guidance")
        return policy

    def _without(self, policy: Guidance, absent: Sequence[str]) -> Guidance:
        """No guidance on absent conditions (their conditional and null branches are the same)."""
        off = {n: 1.0 for n in absent if n in policy.conditions}
        return policy.with_scales(**off) if off else policy

    def sampler_config(self, steps: int | None = None):
        cfg = self.recipe.sampler.config
        if steps is None:
            return cfg
        if not hasattr(cfg, "steps"):
            raise AudioguideError(f"sampler {self.recipe.sampler.type!r} has no steps to set")
        try:
            return dataclasses.replace(cfg, steps=steps)
        except ValueError as e:
            raise AudioguideError(f"sampler: {e}") from None

    def candidates_for(self, candidates: int | None = None) -> int:
        """Samples drawn per sentence: ``candidates`` checked, else the recipe's (1 without a verifier)."""
        if candidates is None:
            return self.recipe.candidates if self.verifier is not None else 1
        if isinstance(candidates, bool) or not isinstance(candidates, int) or not 1 <= candidates <= MAX_CANDIDATES:
            raise AudioguideError(f"candidates must be an integer in [1, {MAX_CANDIDATES}], got {candidates!r}")
        if candidates > 1 and self.verifier is None:
            raise AudioguideError(f"recipe {self.recipe.name!r} has no [verifier] to choose among candidates; use 1")
        return candidates

    def seconds_for(self, text: str, seconds: float | None = None) -> float:
        """Seconds to generate: ``seconds`` checked against the recipe's range, else the recipe's
        estimate (sound: its ``seconds``; speech: by characters)."""
        d = self.recipe.duration
        if seconds is None:
            if self.task == "t2a":
                return d.seconds
            return min(max(len(text) * d.seconds_per_char, d.min_seconds), d.max_seconds)
        if not d.min_seconds <= seconds <= d.max_seconds:
            raise AudioguideError(
                f"seconds must be in [{d.min_seconds:g}, {d.max_seconds:g}] for recipe {self.recipe.name!r}, got {seconds:g}"
            )
        return seconds

    def check_texts(
        self,
        texts: Sequence[str],
        inputs: Mapping[str, str] | None = None,
        negative: str | None = None,
        seconds: float | None = None,
    ) -> None:
        """Fail early, with a one-line error, on input the conditioners cannot take. Long speech is
        checked sentence by sentence, as it is generated (:meth:`pieces`)."""
        if not texts:
            raise AudioguideError("nothing to generate: no texts given")
        primary = PRIMARY_INPUT[self.task]
        for name, values in self._inputs(texts, inputs).items():
            if name == primary and values is not None:
                values = [p for text in values for p in self.pieces(text, seconds)]
            if values is not None:
                self.model.conditioners[name].check(values)
        if negative is not None:
            if getattr(self.model, "aligned", "") == primary:
                raise AudioguideError(f"recipe {self.recipe.name!r} aligns its {primary} to the audio; it takes no negative prompt")
            try:
                self.model.conditioners[primary].check([negative])
            except AudioguideError as e:
                raise AudioguideError(f"negative prompt: {e}") from None

    def pieces(self, text: str, seconds: float | None = None) -> list[str]:
        """What one text is generated as: its sentences for speech of free length
        (:func:`split_sentences`), else the text exactly as given."""
        pieces = split_sentences(text) if self.task == "tts" and seconds is None else []
        return pieces if len(pieces) >= 2 else [text]

    def _inputs(self, texts: Sequence[str], inputs: Mapping[str, str] | None) -> dict[str, list[str] | None]:
        """Every conditioner's input per text: the texts themselves, ``inputs`` for the others (the
        recipe's ``[defaults]`` when ``inputs`` is empty), None for an absent one."""
        primary = PRIMARY_INPUT[self.task]
        extra = {k: v for k, v in (inputs or {}).items() if v is not None}
        for name in extra:
            if name not in self.model.conditioners or name == primary:
                others = [n for n in self.model.conditioners if n != primary]
                raise AudioguideError(f"recipe {self.recipe.name!r} takes no input {name!r}; it takes {', '.join(others) or 'none'}")
        if not extra:
            extra = dict(self.recipe.defaults)
        out: dict[str, list[str] | None] = {}
        for name in self.model.conditioners:
            if name == primary:
                out[name] = list(texts)
            else:
                out[name] = [extra[name]] * len(texts) if name in extra else None
        return out

    # -- generation --------------------------------------------------------------------------------

    @torch.inference_mode()
    def __call__(
        self,
        texts: str | Sequence[str],
        *,
        seed: int = 0,
        steps: int | None = None,
        guidance: Guidance | None = None,
        scales: Mapping[str, float] | None = None,
        cfg: float | None = None,
        rescale: float | None = None,
        seconds: float | None = None,
        inputs: Mapping[str, str] | None = None,
        negative: str | None = None,
        callback: StepCallback | None = None,
        candidates: int | None = None,
    ) -> Audio:
        """Generate one waveform per text (a prompt, for ``t2a`` recipes).

        ``scales`` overrides per-condition guidance scales, ``cfg`` sets every scale at once,
        ``rescale`` the CFG-rescale phi, ``steps`` the sampler's steps; all are validated.
        ``inputs`` gives the other conditions for every text (e.g. ``{"speaker": "ava"}``).
        ``negative`` is a negative prompt for the primary condition (the caption of a ``t2a``
        recipe): guidance on that condition steers from it instead of from the null condition, so
        it needs that condition's scale away from 1 (an error otherwise: it would do nothing).
        ``candidates`` (default: the recipe's ``[verifier] candidates``) draws that many samples of
        every sentence in one batch and keeps the one the recipe's verifier hears best
        (:mod:`audioguide.models.verifier`); 1 is plain sampling.
        """
        texts = [texts] if isinstance(texts, str) else list(texts)
        self.check_texts(texts, inputs, negative, seconds)
        policy = self.policy(guidance, scales, cfg, rescale)
        sampler_cfg = self.sampler_config(steps)
        n = self.candidates_for(candidates)
        aligned, primary = getattr(self.model, "aligned", ""), PRIMARY_INPUT[self.task]
        if negative is not None and dict(policy.scales).get(primary, 1.0) == 1.0 and not policy.custom_terms:
            raise AudioguideError(f"a negative prompt acts through guidance on the {primary}, whose scale is 1 (no guidance); "
                                  "set a scale above 1 (--cfg)")
        waves = []
        for i, text in enumerate(texts):
            conditions = self._inputs([text], inputs)
            call_policy = self._without(policy, [n for n, v in conditions.items() if v is None])
            pieces = self.pieces(text, seconds)
            parts = [
                # aligned speech takes its length from predicted durations unless seconds are given
                self._generate(p, {**conditions, primary: [p]}, None if aligned and seconds is None else self.seconds_for(p, seconds),
                               seed + i, call_policy, sampler_cfg, callback, negative, n)
                for p in pieces
            ]
            waves.append(parts[0] if len(parts) == 1 else join_speech(parts, self.sample_rate))
        return Audio(tuple(waves), self.sample_rate)

    def _length(self, cond: dict, seconds: float | None) -> tuple[int, float]:
        """Latent frames and seconds to generate; for a model with a frame-aligned condition, its
        predicted durations (scaled to ``seconds`` when given) go into ``cond``."""
        rep, aligned = self.representation, getattr(self.model, "aligned", "")
        if not aligned:
            return rep.frames_for(seconds), seconds
        d = self.recipe.duration
        predicted = self.model.predict_durations(cond, frames=None if seconds is None else rep.frames_for(seconds))
        if seconds is None and int(predicted.sum()) > rep.frames_for(d.max_seconds):
            raise AudioguideError(f"this sentence would last over {d.max_seconds:g} s; split it")
        predicted[:, -1] += max(1 - int(predicted.sum()), 0)  # never zero frames
        cond[f"{aligned}.durations"] = predicted
        frames = int(predicted.sum())
        return frames, frames * rep.hop / rep.sample_rate

    def _generate(self, text, inputs, seconds, seed, policy, sampler_cfg, callback, negative=None, n=1) -> np.ndarray:
        samples, seconds = self._draw(inputs, seconds, seed, policy, sampler_cfg, callback, negative, n)
        if n > 1:
            samples = samples[self._best(text, self._latents(samples))][None]
        return self._finish(self._decode(samples)[0], seconds, text)

    def _draw(self, inputs, seconds, seed, policy, sampler_cfg, callback=None, negative=None, n=1):
        """``n`` samples of one piece in one batch, and their length in seconds: codes ``[n, K, T]``
        from a codec LM, latents ``[n, C, T]`` otherwise."""
        sampler = SAMPLERS[self.recipe.sampler.type]
        rep = self.representation
        cond = self.model.encode(inputs)
        if negative is not None:
            primary = PRIMARY_INPUT[self.task]
            cond = with_negative(cond, primary, self.model.conditioners[primary]([negative]))
        generator = make_generator(seed, self.device)
        frames, seconds = self._length(cond, seconds)
        if n > 1:  # n candidates of the same sentence, one batch
            cond = {k: v.repeat(n, *([1] * (v.ndim - 1))) for k, v in cond.items()}
        if sampler.tokens:
            return sampler.run(self.model, cond, policy, frames, sampler_cfg, generator), seconds
        x = torch.randn((n, rep.channels, frames), generator=generator, device=self.device)
        field = GuidedField(self.model, cond, policy, self.model.kind, sampler.alpha_sigma(sampler_cfg))
        total = sampler_cfg.steps
        step_cb = None if callback is None else (lambda i, t, x: callback(i + 1, total))
        return sampler.run(field, x, sampler_cfg, generator, step_cb), seconds

    def _latents(self, samples: torch.Tensor) -> torch.Tensor:
        """What the verifier reads of :meth:`_draw`'s samples: latents (codes dequantised)."""
        return self.representation.dequantize(samples) if SAMPLERS[self.recipe.sampler.type].tokens else samples

    def _decode(self, samples: torch.Tensor) -> torch.Tensor:
        """Waveforms ``[n, S]`` of :meth:`_draw`'s samples."""
        rep = self.representation
        return rep.decode_tokens(samples) if SAMPLERS[self.recipe.sampler.type].tokens else rep.decode(samples)

    def _scores(self, text: str, z: torch.Tensor) -> torch.Tensor | None:
        """The verifier's score ``[n]`` of each candidate latents ``z [n, C, T]`` for the aligned
        phonemes of ``text``; None with fewer frames than symbols (a forced, very fast pace)."""
        ids, _ = self.model.conditioners[self.model.aligned].ids([text])
        return None if ids.shape[1] > z.shape[-1] else self.verifier.score(z, ids[0])

    def _best(self, text: str, z: torch.Tensor) -> int:
        """Index of the candidate latents ``z [n, C, T]`` whose aligned phonemes the verifier hears best."""
        scores = self._scores(text, z)
        if scores is None:  # no choice to make
            return 0
        finite = torch.isfinite(z).flatten(1).all(1) & torch.isfinite(scores)
        return int(scores.masked_fill(~finite, -1.0).argmax())  # a failed candidate is never chosen

    def _finish(self, wav: torch.Tensor, seconds: float, text: str) -> np.ndarray:
        wav = wav[: int(round(seconds * self.sample_rate))]
        if not torch.isfinite(wav).all():
            raise AudioguideError(f"generation produced non-finite audio for {text[:40]!r} (try fewer steps or a lower scale)")
        return wav.float().cpu().numpy()
