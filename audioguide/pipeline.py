"""The Python API: load a recipe once, call it on many texts, get waveforms and a sample rate.

    >>> from audioguide import Pipeline
    >>> tts = Pipeline.from_recipe("random-tts")
    >>> audio = tts(["Hello there.", "A second sentence."], seed=7)
    >>> audio.sample_rate, audio[0].shape

Generation of one input, in order:
  1. encode the input's conditions once (text, speaker, caption, ...);
  2. choose the number of latent frames (speech: from the text; sound: ``seconds``);
  3. draw the starting noise from ``torch.Generator(seed + index)``;
  4. bind model, conditions and guidance policy into a :class:`~audioguide.guidance.GuidedField`;
  5. run the recipe's sampler over it;
  6. decode the latents to a waveform and trim it to the requested length.
Input ``i`` of a call with ``seed`` always equals a single call on that input with ``seed + i``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from audioguide.checkpoints import load_checkpoint
from audioguide.core import Audio, AudioguideError, make_generator
from audioguide.guidance import Guidance, GuidedField
from audioguide.recipes import Recipe, RecipeError, check_scales, load_recipe
from audioguide.registry import CONDITIONERS, MODELS, REPRESENTATIONS, SAMPLERS

WEIGHTS_DIR = Path(__file__).parent / "weights"
PRIMARY_INPUT = {"tts": "text", "t2a": "caption"}

StepCallback = Callable[[int, int], None]
"""``callback(step, total)`` after each sampler step."""


class Pipeline:
    """A generator assembled from a :class:`~audioguide.recipes.Recipe`, ready to call."""

    def __init__(self, recipe: Recipe, device: str | torch.device = "cpu", weights: str | None = None) -> None:
        self.recipe = recipe
        self.device = torch.device(device)
        rep = recipe.representation
        self.representation = REPRESENTATIONS[rep.type](rep.config)
        conditioners = {n: CONDITIONERS[c.type](c.config) for n, c in recipe.conditioners}
        self.model = MODELS[recipe.model.type](recipe.model.config, self.representation.channels, conditioners)
        source = weights or recipe.weights
        if source is not None:
            self._load(source)
        elif not recipe.random_weights:
            raise RecipeError(f"{recipe.source}: no weights given and random_weights is not set")
        self.model.to(self.device).eval()
        self.representation.to(self.device).eval()

    @classmethod
    def from_recipe(
        cls, recipe: str | Path | Recipe, device: str | torch.device = "cpu", weights: str | None = None
    ) -> Pipeline:
        return cls(recipe if isinstance(recipe, Recipe) else load_recipe(recipe), device, weights)

    @property
    def sample_rate(self) -> int:
        return self.representation.sample_rate

    @property
    def task(self) -> str:
        return self.recipe.task

    def _load(self, source: str) -> None:
        packaged = WEIGHTS_DIR / source
        relative = self.recipe.source.parent / source
        path = packaged if packaged.exists() else relative if relative.exists() else source
        ckpt = load_checkpoint(path)
        missing, unexpected = self.model.load_state_dict(ckpt.tensors, strict=False)
        if missing or unexpected:
            raise AudioguideError(
                f"checkpoint {ckpt.path} does not fit recipe {self.recipe.name!r} "
                f"({len(missing)} missing, {len(unexpected)} unexpected tensors, e.g. {(missing or unexpected)[0]})"
            )

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
        check_scales(policy, SAMPLERS[self.recipe.sampler.type].cfgpp, "guidance")
        return policy

    def sampler_config(self, steps: int | None = None):
        cfg = self.recipe.sampler.config
        if steps is None:
            return cfg
        try:
            return dataclasses.replace(cfg, steps=steps)
        except ValueError as e:
            raise AudioguideError(f"sampler: {e}") from None

    def seconds_for(self, text: str, seconds: float | None = None) -> float:
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

    def check_texts(self, texts: Sequence[str]) -> None:
        """Fail early, with a one-line error, on input the conditioners cannot take."""
        if not texts:
            raise AudioguideError("nothing to generate: no texts given")
        field = PRIMARY_INPUT[self.task]
        for name, conditioner in self.model.conditioners.items():
            if name == field:
                conditioner(list(texts))

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
        callback: StepCallback | None = None,
    ) -> Audio:
        """Generate one waveform per text (a prompt, for ``t2a`` recipes).

        ``scales`` overrides per-condition guidance scales, ``cfg`` sets every scale at once,
        ``rescale`` the CFG-rescale phi, ``steps`` the sampler's steps; all are validated.
        """
        texts = [texts] if isinstance(texts, str) else list(texts)
        self.check_texts(texts)
        policy = self.policy(guidance, scales, cfg, rescale)
        sampler_cfg = self.sampler_config(steps)
        durations = [self.seconds_for(t, seconds) for t in texts]
        waves = [
            self._generate(text, secs, seed + i, policy, sampler_cfg, callback)
            for i, (text, secs) in enumerate(zip(texts, durations))
        ]
        return Audio(tuple(waves), self.sample_rate)

    def _generate(self, text, seconds, seed, policy, sampler_cfg, callback) -> np.ndarray:
        sampler = SAMPLERS[self.recipe.sampler.type]
        rep = self.representation
        cond = self.model.encode({PRIMARY_INPUT[self.task]: [text]})
        generator = make_generator(seed, self.device)
        frames = rep.frames_for(seconds)
        x = torch.randn((1, rep.channels, frames), generator=generator, device=self.device)
        field = GuidedField(self.model, cond, policy, self.model.kind, sampler.alpha_sigma(sampler_cfg))
        total = sampler_cfg.steps
        step_cb = None if callback is None else (lambda i, t, x: callback(i + 1, total))
        z = sampler.run(field, x, sampler_cfg, generator, step_cb)
        wav = rep.decode(z)[0, : int(round(seconds * rep.sample_rate))]
        if not torch.isfinite(wav).all():
            raise AudioguideError(f"generation produced non-finite audio for {text[:40]!r} (try fewer steps or a lower scale)")
        return wav.float().cpu().numpy()
