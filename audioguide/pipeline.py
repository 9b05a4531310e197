"""The Python API: load a recipe once, call it on many texts, get waveforms and a sample rate.

    >>> from audioguide import Pipeline
    >>> tts = Pipeline.from_recipe("random-tts")
    >>> audio = tts(["Hello there.", "A second sentence."], seed=7)
    >>> audio.sample_rate, audio[0].shape

A call is three public stages, which scripts, benchmarks, rendering and the CLI use directly:

1. :meth:`Pipeline.prepare` (texts or prompts -> :class:`Plan`): check every input, resolve the
   call's guidance policy, sampler settings and candidates, split long speech into sentences
   (:func:`split_sentences`) and encode each piece's conditions once; choose its length (sound:
   ``seconds``; aligned speech: the model's predicted phoneme durations; else from the text's
   length). Each piece of text ``i`` carries the seed ``seed + i``.
2. :meth:`Pipeline.draw` (plan -> samples): the recipe's sampler over the guided model, latents
   ``[n, C, T]`` or codec tokens ``[n, K, T]`` per piece (``n`` candidates). Pieces are drawn
   ``batch_size`` at a time in one batch each, padded to the longest with a frame mask; every piece
   draws its noise (and a codec LM its tokens) from its own ``torch.Generator(seed)``, so a piece
   drawn in a batch gets the audio it gets alone, to float rounding of the batched forward.
   ``batch_size = 1`` (the default of a call) draws each piece alone: bit-for-bit reproducible
   whatever else the call contains.
3. :meth:`Pipeline.decode` (samples -> waveforms) with, between draw and decode,
   :meth:`Pipeline.choose`: the recipe's verifier keeps the best of ``n`` candidates
   (:meth:`Pipeline.scores`).

:meth:`Pipeline.generate` runs ``draw -> choose -> decode`` on a plan, trims each piece to its length
and joins a text's sentences with short pauses (:func:`join_speech`); ``__call__`` is
``generate(prepare(...))``. Input ``i`` of a call with
``seed`` always equals a single call on that input with ``seed + i``. Secondary inputs (speaker,
style) that a call does not give are absent: their conditioner's null condition, with guidance on
them off. A call that gives only texts uses the recipe's ``[defaults]`` (e.g. the default voice).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from audioguide.components import build_components, build_verifier
from audioguide.core import Audio, AudioguideError, check_seed, make_generator
from audioguide.guidance import Guidance
from audioguide.models.base import with_negative
from audioguide.recipes import MAX_CANDIDATES, TASKS, Recipe, RecipeError, call_policy, load_recipe, sampler_config
from audioguide.registry import SAMPLERS
from audioguide.sampling import RowStreams

PRIMARY_INPUT = {task: inputs[0] for task, inputs in TASKS.items()}  # what the texts of a call are

StepCallback = Callable[[int, int], None]
"""``callback(step, total)`` after each sampler step of a batch."""

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


@dataclass(frozen=True)
class Piece:
    """One unit of drawing: a sentence of a text (or a whole prompt) and all that decides its samples.

    ``cond`` holds its encoded conditions (batch 1; for an aligned model the predicted durations,
    ``<name>.durations``; a negative prompt as ``<name>.negative``); ``policy`` is the call's with
    guidance off on the conditions this piece lacks; ``frames`` latent frames are drawn and
    ``seconds`` of the decoded waveform kept.
    """

    index: int  # which text of the call it belongs to
    text: str  # its primary input (the sentence, or the prompt)
    seed: int
    cond: Mapping[str, Tensor]
    policy: Guidance
    frames: int
    seconds: float


@dataclass(frozen=True)
class Plan:
    """What :meth:`Pipeline.prepare` returns: a call's pieces and the settings they share."""

    pieces: tuple[Piece, ...]
    texts: int  # how many texts the call had
    sampler: Any  # the sampler config, with the call's steps
    candidates: int  # samples drawn per piece (the verifier keeps one)


class Pipeline:
    """A generator assembled from a :class:`~audioguide.recipes.Recipe`, ready to call."""

    def __init__(self, recipe: Recipe, representation, model, verifier=None) -> None:
        self.recipe = recipe
        self.representation, self.model = representation.eval(), model.eval()
        self.verifier = None if verifier is None else verifier.eval()
        self.device = next(model.parameters(), torch.empty(0)).device
        self.sampler = SAMPLERS[recipe.sampler.type]

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
        """The recipe's guidance policy with this call's overrides applied and checked
        (:func:`audioguide.recipes.call_policy`)."""
        return call_policy(self.recipe, guidance, scales, cfg, rescale)

    def sampler_config(self, steps: int | None = None):
        """The recipe's sampler config with ``steps`` (checked) when given."""
        return sampler_config(self.recipe, steps)

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

    def steps_for(self, steps: int | None = None) -> int | None:
        """Sampler steps of one draw (the recipe's, or ``steps`` checked); None for a codec LM,
        whose steps follow the length (frames + codebooks - 1)."""
        return self.sampler.steps(self.sampler_config(steps))

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
        return {name: list(texts) if name == primary else [extra[name]] * len(texts) if name in extra else None
                for name in self.model.conditioners}

    # -- stage 1: prepare ------------------------------------------------------------------------

    @torch.inference_mode()
    def prepare(
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
        candidates: int | None = None,
    ) -> Plan:
        """Check a call's inputs and options and encode every piece's conditions (see :meth:`__call__`
        for the options). Nothing random happens here."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        self.check_texts(texts, inputs, negative, seconds)
        policy = self.policy(guidance, scales, cfg, rescale)
        config = self.sampler_config(steps)
        n = self.candidates_for(candidates)
        primary = PRIMARY_INPUT[self.task]
        if negative is not None and dict(policy.scales).get(primary, 1.0) == 1.0 and not policy.custom_terms:
            raise AudioguideError(f"a negative prompt acts through guidance on the {primary}, whose scale is 1 (no guidance); "
                                  "set a scale above 1 (--cfg)")
        check_seed(seed), check_seed(seed + len(texts) - 1)  # every piece's seed is valid before any work
        negative_enc = None if negative is None else self.model.conditioners[primary]([negative])
        pieces = []
        for i, text in enumerate(texts):
            conditions = self._inputs([text], inputs)
            absent = {name: 1.0 for name, v in conditions.items() if v is None and name in policy.conditions}
            piece_policy = policy.override(scales=absent) if absent else policy
            for p in self.pieces(text, seconds):
                cond = self.model.encode({**conditions, primary: [p]})
                if negative_enc is not None:
                    cond = with_negative(cond, primary, negative_enc)
                # aligned speech takes its length from predicted durations unless seconds are given
                length = None if self.model.aligned and seconds is None else self.seconds_for(p, seconds)
                frames, kept = self._length(cond, length)
                pieces.append(Piece(i, p, seed + i, cond, piece_policy, frames, kept))
        return Plan(tuple(pieces), len(texts), config, n)

    def _length(self, cond: dict, seconds: float | None) -> tuple[int, float]:
        """Latent frames and seconds to generate; for a model with a frame-aligned condition, its
        predicted durations (scaled to ``seconds`` when given) go into ``cond``."""
        rep, aligned = self.representation, self.model.aligned
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

    # -- stage 2: draw ---------------------------------------------------------------------------

    def batches(self, plan: Plan, batch_size: int = 1) -> list[list[int]]:
        """Which pieces :meth:`draw` draws together: up to ``batch_size`` pieces of one policy, of
        similar length (longest first). A policy whose guidance reduces over frames (rescale, APG,
        CFG-Zero*, adaptive) would see another piece's padding, so its batches hold equal lengths only."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise AudioguideError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        groups: dict[tuple, list[int]] = {}
        for i, piece in enumerate(plan.pieces):
            groups.setdefault((piece.policy, None if self.sampler.pads(piece.policy) else piece.frames), []).append(i)
        out = []
        for members in groups.values():
            members = sorted(members, key=lambda i: -plan.pieces[i].frames) if batch_size > 1 else members
            out += [members[k : k + batch_size] for k in range(0, len(members), batch_size)]
        return sorted(out, key=lambda b: b[0])

    @torch.inference_mode()
    def draw(self, plan: Plan, *, batch_size: int = 1, callback: StepCallback | None = None) -> list[Tensor]:
        """Samples of every piece of ``plan``, in order: ``[n, C, frames]`` latents (codec tokens
        ``[n, K, frames]`` for a codec LM), ``n = plan.candidates``. Pieces are drawn
        :meth:`batches` at a time; ``callback(step, total)`` after every sampler step."""
        n, out = plan.candidates, [None] * len(plan.pieces)
        for batch in self.batches(plan, batch_size):
            pieces = [plan.pieces[i] for i in batch]
            cond = _stack([p.cond for p in pieces], n)
            frames = [p.frames for p in pieces]
            streams = RowStreams(tuple(make_generator(p.seed, self.device) for p in pieces), (n,) * len(pieces), tuple(frames))
            samples = self.sampler.draw(self.model, cond, pieces[0].policy, plan.sampler, frames, streams,
                                        self.representation.channels, callback)
            for k, (i, f) in enumerate(zip(batch, frames)):
                out[i] = samples[k * n : (k + 1) * n, :, :f]
        return out

    # -- choosing among candidates, decoding -----------------------------------------------------

    def latents(self, samples: Tensor) -> Tensor:
        """What the verifier reads of a piece's samples: latents ``[n, C, T]`` (codes dequantised)."""
        return self.sampler.latents(self.representation, samples)

    @torch.inference_mode()
    def scores(self, piece: Piece, samples: Tensor) -> Tensor | None:
        """The verifier's score ``[n]`` of each of a piece's samples for the aligned phonemes of its
        text; None with fewer frames than symbols (a forced, very fast pace)."""
        if self.verifier is None:
            raise AudioguideError(f"recipe {self.recipe.name!r} has no [verifier] to score candidates")
        z = self.latents(samples)
        ids, _ = self.model.conditioners[self.model.aligned].ids([piece.text])
        return None if ids.shape[1] > z.shape[-1] else self.verifier.score(z, ids[0])

    def best(self, piece: Piece, samples: Tensor) -> int:
        """Index of the sample whose aligned phonemes the verifier hears best (0 with one sample);
        a sample with non-finite latents or score is never chosen."""
        if samples.shape[0] == 1:
            return 0
        scores = self.scores(piece, samples)
        if scores is None:  # no choice to make
            return 0
        finite = torch.isfinite(self.latents(samples)).flatten(1).all(1) & torch.isfinite(scores)
        return int(scores.masked_fill(~finite, -1.0).argmax())

    def choose(self, plan: Plan, samples: Sequence[Tensor]) -> list[Tensor]:
        """One sample ``[1, ...]`` per piece: the verifier's choice among its candidates."""
        return [s if s.shape[0] == 1 else s[self.best(p, s)][None] for p, s in zip(plan.pieces, samples)]

    @torch.inference_mode()
    def decode(self, samples: Tensor) -> Tensor:
        """Waveforms ``[n, S]`` of one piece's samples (latents, or codes of a codec LM)."""
        return self.sampler.decode(self.representation, samples)

    def _finish(self, piece: Piece, wav: Tensor) -> np.ndarray:
        wav = wav[: int(round(piece.seconds * self.sample_rate))]
        if not torch.isfinite(wav).all():
            raise AudioguideError(f"generation produced non-finite audio for {piece.text[:40]!r} (try fewer steps or a lower scale)")
        return wav.float().cpu().numpy()

    # -- all stages ------------------------------------------------------------------------------

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
        batch_size: int = 1,
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
        (:mod:`audioguide.models.verifier`); 1 is plain sampling. ``batch_size`` pieces share each
        forward pass (:meth:`draw`); 1 draws each alone, bit-for-bit as a call on it alone.
        """
        plan = self.prepare(texts, seed=seed, steps=steps, guidance=guidance, scales=scales, cfg=cfg, rescale=rescale,
                            seconds=seconds, inputs=inputs, negative=negative, candidates=candidates)
        return self.generate(plan, batch_size=batch_size, callback=callback)

    def generate(self, plan: Plan, *, batch_size: int = 1, callback: StepCallback | None = None) -> Audio:
        """The audio of a prepared call: :meth:`draw`, :meth:`choose`, :meth:`decode`, then each
        piece trimmed to its length and a text's sentences joined (:func:`join_speech`)."""
        chosen = self.choose(plan, self.draw(plan, batch_size=batch_size, callback=callback))
        parts: list[list[np.ndarray]] = [[] for _ in range(plan.texts)]
        for piece, sample in zip(plan.pieces, chosen):
            parts[piece.index].append(self._finish(piece, self.decode(sample)[0]))
        return Audio(tuple(p[0] if len(p) == 1 else join_speech(p, self.sample_rate) for p in parts), self.sample_rate)


def _stack(conds: Sequence[Mapping[str, Tensor]], n: int) -> dict[str, Tensor]:
    """Condition tensors of several pieces (batch 1 each) as one batch, each piece's row repeated
    ``n`` times; sequences are zero-padded (masks False, durations 0) to the longest along dim 1."""
    out = {}
    for key in conds[0]:
        parts = [c[key] for c in conds]
        if len(parts) > 1 and parts[0].ndim > 1:
            length = max(p.shape[1] for p in parts)
            parts = [F.pad(p, (0, 0) * (p.ndim - 2) + (0, length - p.shape[1])) for p in parts]
        stacked = parts[0] if len(parts) == 1 else torch.cat(parts)
        out[key] = stacked if n == 1 else stacked.repeat_interleave(n, dim=0)
    return out
