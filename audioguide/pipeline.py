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
   whatever else the call contains. Feedback guidance (``[guidance.dynamic]``) gets the recipe's
   verifier bound as its evaluator for each batch's pieces (:meth:`Pipeline.evaluators`): the
   phoneme content verifier for speech, the caption verifier for sound.
3. :meth:`Pipeline.decode` (samples -> waveforms) with, between draw and decode,
   :meth:`Pipeline.choose`: the recipe's verifier keeps the best of ``n`` candidates
   (:meth:`Pipeline.scores`).

:meth:`Pipeline.generate` runs ``draw -> choose -> decode`` on a plan, trims each piece to its length
and joins a text's sentences with short pauses (:func:`join_speech`); ``__call__`` is
``generate(prepare(...))``; :meth:`Pipeline.stream` (:meth:`Pipeline.chunks` of a prepared plan) yields
a text's audio sentence by sentence instead, as each finishes, in chunks that concatenate to the
call's waveform. Input ``i`` of a call with
``seed`` always equals a single call on that input with ``seed + i``. Secondary inputs (speaker,
style) that a call does not give are absent: their conditioner's null condition, with guidance on
them off. A call that gives only texts uses the recipe's ``[defaults]`` (e.g. the default voice).
"""

from __future__ import annotations

import dataclasses
import numbers
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from audioguide.components import build_components, build_verifier
from audioguide.core import Audio, AudioguideError, check_seed, clean_text, make_generator
from audioguide.guidance import Conjunction, Evaluator, Guidance
from audioguide.models.base import with_negative, with_parts
from audioguide.recipes import MAX_CANDIDATES, TASKS, Recipe, RecipeError, call_policy, load_recipe, sampler_config
from audioguide.registry import SAMPLERS
from audioguide.sampling import RowStreams

PRIMARY_INPUT = {task: inputs[0] for task, inputs in TASKS.items()}  # what the texts of a call are

StepCallback = Callable[[int, int], None]
"""``callback(step, total)`` after each sampler step of a batch."""

SENTENCE_END = re.compile(r"(?<=[.!?;])\s+(?=\S)")
PAUSE_SECONDS = 0.18  # between joined sentences
FADE_SECONDS = 0.01
MIN_SPEED, MAX_SPEED = 0.25, 4.0  # speed of speech, as OpenAI's speech API bounds it
MAX_PARTS = 4  # a prompt and its parts (:class:`~audioguide.guidance.Conjunction`)


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
    10 ms so that no join clicks (:func:`join_part` of each, in order)."""
    parts = [join_part(w, sample_rate, first=i == 0, pause=pause) for i, w in enumerate(waves)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def join_part(wave: np.ndarray, sample_rate: int, first: bool, pause: float = PAUSE_SECONDS) -> np.ndarray:
    """One sentence as :func:`join_speech` places it: faded in and out over 10 ms, after ``pause``
    seconds of silence unless it is the ``first``. Streaming yields these, so a stream's chunks
    concatenate to the joined waveform."""
    fade = int(FADE_SECONDS * sample_rate)
    w = np.array(wave, dtype=np.float32)
    n = min(fade, len(w) // 2)
    if n:
        ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
        w[:n] *= ramp
        w[-n:] *= ramp[::-1]
    return w if first else np.concatenate([np.zeros(int(pause * sample_rate), dtype=np.float32), w])


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
    inputs: tuple[tuple[str, str | None], ...] = ()  # its other inputs as given (speaker, style; None: absent)
    weights: tuple[float, ...] = ()  # a prompt in parts: each part's weight (:class:`~audioguide.guidance.Conjunction`)


@dataclass(frozen=True)
class Plan:
    """What :meth:`Pipeline.prepare` returns: a call's pieces and the settings they share."""

    pieces: tuple[Piece, ...]
    texts: int  # how many texts the call had
    sampler: Any  # the sampler config, with the call's steps
    candidates: int  # samples drawn per piece (the verifier keeps one)

    @classmethod
    def concat(cls, plans: Sequence[Plan]) -> Plan:
        """One plan of several (e.g. one per manifest row, each with its own seed and inputs): text
        ``i`` of the result is the ``i``-th text over ``plans`` in order; sampler settings and
        candidates must agree."""
        if not plans:
            raise ValueError("Plan.concat needs at least one plan")
        first, pieces, offset = plans[0], [], 0
        for plan in plans:
            if (plan.sampler, plan.candidates) != (first.sampler, first.candidates):
                raise ValueError("plans with different sampler settings or candidates cannot share a plan")
            pieces += [dataclasses.replace(p, index=p.index + offset) for p in plan.pieces]
            offset += plan.texts
        return cls(tuple(pieces), offset, first.sampler, first.candidates)


class Pipeline:
    """A generator assembled from a :class:`~audioguide.recipes.Recipe`, ready to call."""

    def __init__(self, recipe: Recipe, representation, model, verifier=None, acoustic: Pipeline | None = None) -> None:
        self.recipe = recipe
        self.representation, self.model = representation.eval(), model.eval()
        self.verifier = None if verifier is None else verifier.eval()
        self.device = next(model.parameters(), torch.empty(0)).device
        self.sampler = SAMPLERS[recipe.sampler.type]
        self.acoustic = acoustic
        if acoustic is not None:
            _check_acoustic(self, acoustic)

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
        acoustic = None
        if recipe.acoustic is not None:  # the second stage: semantic tokens -> latents, in the voice
            source = recipe.source.parent / recipe.acoustic.recipe
            acoustic = cls.from_recipe(source if source.suffix == ".toml" and source.exists() else recipe.acoustic.recipe, device)
        return cls(recipe, representation.to(device), model.to(device), None if verifier is None else verifier.to(device), acoustic)

    @classmethod
    def from_components(cls, recipe: Recipe, representation, model, verifier=None, acoustic: Pipeline | None = None) -> Pipeline:
        """Wrap already-built components (e.g. a model being trained) where they are, without copying
        or moving them (they are put in eval mode). Without a verifier, one candidate per sentence;
        ``acoustic``: the pipeline that renders a codec LM's semantic tokens (``[acoustic]``)."""
        return cls(recipe, representation, model, verifier, acoustic)

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

    def seconds_for(self, text: str, seconds: float | None = None, pace: float = 1.0) -> float:
        """Seconds to generate: ``seconds`` checked against the recipe's range, else the recipe's
        estimate (sound: its ``seconds``; speech: by characters, times ``pace``)."""
        d = self.recipe.duration
        if seconds is None:
            if self.task == "t2a":
                return d.seconds
            return min(max(len(text) * d.seconds_per_char * pace, d.min_seconds), d.max_seconds)
        if not d.min_seconds <= seconds <= d.max_seconds:
            raise AudioguideError(
                f"seconds must be in [{d.min_seconds:g}, {d.max_seconds:g}] for recipe {self.recipe.name!r}, got {seconds:g}"
            )
        return seconds

    def pace_for(self, speed: float | None = None, seconds: float | None = None) -> float:
        """How much longer than its natural pace speech is drawn: ``1 / speed``, with ``speed`` in
        [0.25, 4] (the range of OpenAI's speech API; 2 speaks twice as fast), 1 when None."""
        if speed is None:
            return 1.0
        if isinstance(speed, bool) or not isinstance(speed, int | float) or not MIN_SPEED <= speed <= MAX_SPEED:
            raise AudioguideError(f"speed must be a number in [{MIN_SPEED:g}, {MAX_SPEED:g}], got {speed!r}")
        if self.task != "tts":
            raise AudioguideError(f"speed applies to speech; recipe {self.recipe.name!r} is {self.task}: set its seconds")
        if seconds is not None:
            raise AudioguideError("give speed or seconds, not both")
        return 1.0 / float(speed)

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
        checked sentence by sentence, as it is generated (:meth:`pieces`); texts are checked as
        they are read, without control characters (:func:`~audioguide.core.clean_text`)."""
        self._check(*_cleaned(texts, inputs, negative), seconds)

    def _check(self, texts: Sequence[str], inputs: Mapping[str, str] | None, negative: str | None,
               seconds: float | None) -> None:
        """:meth:`check_texts` of texts already cleaned."""
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
        speed: float | None = None,
        parts: Sequence[str] | None = None,
        part_weights: Sequence[float] | None = None,
    ) -> Plan:
        """Check a call's inputs and options and encode every piece's conditions; nothing random
        happens here. Text ``i`` is drawn with ``seed + i``.

        ``scales`` overrides per-condition guidance scales, ``cfg`` sets every scale at once,
        ``rescale`` the CFG-rescale phi, ``guidance`` replaces the recipe's policy, ``steps`` the
        sampler's steps; all are validated. ``seconds`` sets the length (speech: scales the
        predicted durations to it). ``inputs`` gives the other conditions for every text (e.g.
        ``{"speaker": "ava"}``). ``negative`` is a negative prompt for the primary condition (the
        caption of a ``t2a`` recipe): guidance on that condition steers from it instead of from the
        null condition, so it needs that condition's scale away from 1 (an error otherwise: it
        would do nothing). ``candidates`` (default: the recipe's ``[verifier] candidates``) draws
        that many samples of every sentence in one batch and keeps the one the recipe's verifier
        hears best (:mod:`audioguide.models.verifier`); 1 is plain sampling. ``speed`` (speech,
        0.25-4, as OpenAI's speech API) scales the predicted durations by ``1 / speed``. ``parts``
        (t2a) are more prompts drawn together with every text, as one sound that has them all:
        Composable Diffusion's conjunction (:class:`~audioguide.guidance.Conjunction`), each part
        guided at its weight times the caption's scale; ``part_weights`` gives a weight per part, the
        text's first (default: 1 each, the paper's; a smaller weight makes a part quieter). Control
        characters and terminal escapes in any text are dropped first.
        """
        texts = [texts] if isinstance(texts, str) else list(texts)
        texts, inputs, negative = _cleaned(texts, inputs, negative)
        self._check(texts, inputs, negative, seconds)
        parts, weights = self._parts(parts, part_weights)
        pace = self.pace_for(speed, seconds)
        policy = self.policy(guidance, scales, cfg, rescale)
        self.evaluators(policy)  # feedback guidance the pipeline cannot serve fails here, before any work
        config = self.sampler_config(steps)
        n = self.candidates_for(candidates)
        if parts and (policy.needs or n > 1):  # both judge a sample against the prompt alone
            raise AudioguideError("prompt parts cannot be combined with " + ("feedback guidance" if policy.needs else "candidates > 1")
                                  + ": its judge hears the prompt alone, not its parts")
        primary = PRIMARY_INPUT[self.task]
        if negative is not None and dict(policy.scales).get(primary, 1.0) == 1.0 and not policy.custom_terms:
            raise AudioguideError(f"a negative prompt acts through guidance on the {primary}, whose scale is 1 (no guidance); "
                                  "set a scale above 1 (--cfg)")
        check_seed(seed), check_seed(seed + len(texts) - 1)  # every piece's seed is valid before any work
        negative_enc = None if negative is None else self.model.conditioners[primary]([negative])
        parts_enc = [self.model.conditioners[primary]([p]) for p in parts]
        pieces = []
        for i, text in enumerate(texts):
            conditions = self._inputs([text], inputs)
            absent = {name: 1.0 for name, v in conditions.items() if v is None and name in policy.conditions}
            piece_policy = policy.override(scales=absent) if absent else policy
            for p in self.pieces(text, seconds):
                cond = self.model.encode({**conditions, primary: [p]})
                if negative_enc is not None:
                    cond = with_negative(cond, primary, negative_enc)
                if parts_enc:
                    cond = with_parts(cond, primary, parts_enc)
                # aligned speech takes its length from predicted durations unless seconds are given
                length = None if self.model.aligned and seconds is None else self.seconds_for(p, seconds, pace)
                frames, kept = self._length(cond, length, pace)
                given = tuple((name, None if v is None else v[0]) for name, v in conditions.items() if name != primary)
                pieces.append(Piece(i, p, seed + i, cond, piece_policy, frames, kept, given, weights))
        return Plan(tuple(pieces), len(texts), config, n)

    def _parts(self, parts: Sequence[str] | None, weights: Sequence[float] | None) -> tuple[list[str], tuple[float, ...]]:
        """A call's prompt parts (cleaned and checked) and the weight of every part, the text's first;
        ``((), ())`` without parts."""
        if isinstance(parts, str):
            raise AudioguideError("parts must be a list of prompts, not one string")
        if parts is None:
            if weights is not None:
                raise AudioguideError("part weights need parts")
            return [], ()
        parts = [clean_text(p) if isinstance(p, str) else p for p in parts]
        if not parts:
            raise AudioguideError("parts is empty: give at least one more prompt, or none")
        if self.task != "t2a" or self.model.kind == "tokens":
            raise AudioguideError(f"prompt parts are for text-to-audio recipes drawn by a continuous model; recipe {self.recipe.name!r} "
                                  f"is {self.task} ({self.model.kind})")
        if len(parts) > MAX_PARTS - 1:
            raise AudioguideError(f"at most {MAX_PARTS - 1} parts besides the prompt, got {len(parts)}")
        primary = PRIMARY_INPUT[self.task]
        try:
            self.model.conditioners[primary].check(parts)
        except AudioguideError as e:
            raise AudioguideError(f"part: {e}") from None
        if weights is None:
            weights = [1.0] * (len(parts) + 1)
        weights = list(weights)
        if len(weights) != len(parts) + 1:
            raise AudioguideError(f"give one weight per part, the prompt's first: {len(parts) + 1}, got {len(weights)}")
        if not all(isinstance(w, numbers.Real) and not isinstance(w, bool) and 0.0 < w <= 4.0 for w in weights):
            raise AudioguideError(f"part weights must be numbers in (0, 4], got {weights}")
        return parts, tuple(float(w) for w in weights)

    def _length(self, cond: dict, seconds: float | None, pace: float = 1.0) -> tuple[int, float]:
        """Latent frames and seconds to generate; for a model with a frame-aligned condition, its
        predicted durations (times ``pace``, or scaled to ``seconds`` when given) go into ``cond``."""
        rep, aligned = self.representation, self.model.aligned
        if not aligned:
            return rep.frames_for(seconds), seconds
        d = self.recipe.duration
        span = getattr(self.model.conditioners[aligned], "frames_per_token", None)
        stride = getattr(self.model, "content_stride", 1)  # content frames per frame drawn
        if span:  # tokens of a fixed span (an acoustic stage's semantic tokens)
            predicted = cond[f"{aligned}.mask"].long() * span
        else:
            predicted = self.model.predict_durations(cond, pace=pace, frames=None if seconds is None else rep.frames_for(seconds) * stride)
            if seconds is None and int(predicted.sum()) > rep.frames_for(d.max_seconds) * stride:
                raise AudioguideError(f"this sentence would last over {d.max_seconds:g} s; split it")
            predicted[:, -1] += max(1 - int(predicted.sum()), 0)  # never zero frames
        cond[f"{aligned}.durations"] = predicted
        frames = -(-int(predicted.sum()) // stride)
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
            key = (piece.policy, piece.weights, tuple(sorted(piece.cond)), None if self.sampler.pads(piece.policy) else piece.frames)
            groups.setdefault(key, []).append(i)
        out = []
        for members in groups.values():
            members = sorted(members, key=lambda i: -plan.pieces[i].frames) if batch_size > 1 else members
            out += [members[k : k + batch_size] for k in range(0, len(members), batch_size)]
        return sorted(out, key=lambda b: b[0])

    @torch.inference_mode()
    def draw(self, plan: Plan, *, batch_size: int = 1, callback: StepCallback | None = None) -> list[Tensor]:
        """Samples of every piece of ``plan``, in order: ``[n, C, frames]`` latents (codec tokens
        ``[n, K, frames]`` for a codec LM), ``n = plan.candidates``. Pieces are drawn
        :meth:`batches` at a time (:meth:`draw_batch`); ``callback(step, total)`` after every
        sampler step."""
        out: list[Tensor] = [None] * len(plan.pieces)  # type: ignore[list-item]
        for batch in self.batches(plan, batch_size):
            for i, samples in zip(batch, self.draw_batch(plan, batch, callback)):
                out[i] = samples
        return out

    @torch.inference_mode()
    def draw_batch(self, plan: Plan, batch: Sequence[int], callback: StepCallback | None = None) -> list[Tensor]:
        """Samples of the pieces ``batch`` (indices into ``plan.pieces``, one policy) in one batch,
        padded to the longest and masked; each piece draws from its own ``torch.Generator(seed)``."""
        n, pieces = plan.candidates, [plan.pieces[i] for i in batch]
        if len({(p.policy, p.weights) for p in pieces}) != 1:
            raise AudioguideError("pieces of one batch must share a guidance policy and prompt parts (see Pipeline.batches)")
        cond = _stack([p.cond for p in pieces], n)
        frames = [p.frames for p in pieces]
        streams = RowStreams(tuple(make_generator(p.seed, self.device) for p in pieces), (n,) * len(pieces), tuple(frames))
        policy = pieces[0].policy
        if policy.needs:  # feedback guidance: its evaluator judges this batch's pieces
            policy = policy.bind(self.evaluators(policy, pieces, n))
        model = self.model if not pieces[0].weights else Conjunction(self.model, PRIMARY_INPUT[self.task], pieces[0].weights)
        samples = self.sampler.draw(model, cond, policy, plan.sampler, frames, streams,
                                    self.representation.channels, callback)
        return [samples[k * n : (k + 1) * n, :, :f] for k, f in enumerate(frames)]

    @property
    def verifier_reads(self) -> str | None:
        """What the verifier judges samples against: ``"text"`` (a phone verifier: the aligned
        phonemes of the text), ``"caption"`` (a caption verifier), None without a verifier."""
        return None if self.verifier is None else getattr(self.verifier, "reads", "text")

    def evaluators(self, policy: Guidance, pieces: Sequence[Piece] = (), n: int = 1) -> dict[str, Evaluator]:
        """What ``policy``'s feedback guiders need bound (``policy.needs``) to draw ``pieces`` in one
        batch of ``n`` rows each: ``"verifier"``, the recipe's verifier: the content verifier of a
        model with aligned phonemes (:meth:`verifier_evaluator`; a codec LM's GeDi judge,
        :meth:`verifier_judge`) or the caption verifier of a ``t2a`` recipe
        (:meth:`caption_evaluator`). A need the pipeline cannot meet (a recipe without a
        ``[verifier]``) is a one-line error; with no pieces, that is all it checks."""
        out = {}
        for need in policy.needs:
            users = ", ".join(g.key for g in policy.methods if g.needs == need)
            if need != "verifier":
                raise AudioguideError(f"{users} guidance needs a {need!r}, which the pipeline cannot provide")
            if self.verifier_reads == "caption" and self.model.kind != "tokens":
                out[need] = self.caption_evaluator(pieces, n)
                continue
            if self.verifier_reads == "caption":  # GeDi judges a codec LM's tokens by their phonemes
                raise AudioguideError(f"{users} guidance needs a phone verifier of the frames' phonemes; "
                                      f"recipe {self.recipe.name!r} has a caption verifier")
            if self.verifier is None and self.task == "t2a":
                raise AudioguideError(f"{users} guidance needs the recipe's [verifier] (type \"caption\", e.g. recipe "
                                      f"sound-dynamic); recipe {self.recipe.name!r} has none")
            if self.verifier is None or not self.model.aligned:
                raise AudioguideError(f"{users} guidance needs the recipe's [verifier] and a model with aligned phonemes; "
                                      f"recipe {self.recipe.name!r} has {'none' if self.verifier is None else 'no alignment'}")
            # a codec LM's guiders judge candidate tokens (GeDi), a continuous model's judge estimates
            out[need] = self.verifier_judge(pieces, n) if self.model.kind == "tokens" else self.verifier_evaluator(pieces, n)
        return out

    def caption_evaluator(self, pieces: Sequence[Piece], n: int = 1) -> Evaluator:
        """The recipe's caption verifier as the feedback evaluator of ``pieces`` drawn in one batch,
        ``n`` rows each (row ``i`` is piece ``i // n``): ``evaluate(z [N, C, T], rows [N]) -> [N]``,
        the cosine of each estimate's audio embedding (its piece's frames only) and the embedding
        of its piece's caption (:meth:`~audioguide.models.caption_verifier.CaptionVerifier.score`,
        in ``[-1, 1]``); all rows in one forward. The captions are embedded once, here."""
        assert self.verifier is not None
        text = self.verifier.embed_text([p.text for p in pieces]) if pieces else None
        frames = torch.tensor([p.frames for p in pieces], dtype=torch.long)

        def evaluate(z: Tensor, rows: Tensor) -> Tensor:
            piece = (rows // n).cpu()
            z = self.latents(z)
            mask = torch.arange(z.shape[-1])[None] < frames[piece][:, None].clamp(max=z.shape[-1])
            return self.verifier.score(z, text[piece.to(text.device)], mask.to(z.device)).to(z.device)

        return evaluate

    def verifier_evaluator(self, pieces: Sequence[Piece], n: int = 1) -> Evaluator:
        """The recipe's verifier as the feedback evaluator of ``pieces`` drawn in one batch, ``n`` rows
        each (row ``i`` is piece ``i // n``): ``evaluate(z [N, C, T], rows [N]) -> [N]`` scores each
        estimate, cut to its piece's frames, for the aligned phonemes of the piece's text, as
        :meth:`scores` does (:meth:`~audioguide.models.verifier.PhoneVerifier.score`, in ``[0, 1]``);
        0 for a piece with fewer frames than symbols."""
        assert self.verifier is not None
        symbols = [self.model.conditioners[self.model.aligned].ids([p.text])[0][0] for p in pieces]
        frames = [p.frames for p in pieces]

        def evaluate(z: Tensor, rows: Tensor) -> Tensor:
            out = torch.zeros(len(rows), device=z.device)
            piece = rows // n
            for k in piece.unique().tolist():
                sel = (piece == k).nonzero().squeeze(1)
                zk = self.latents(z[sel, :, : frames[k]])
                if symbols[k].shape[0] <= zk.shape[-1]:
                    out[sel] = self.verifier.score(zk, symbols[k]).to(out.dtype)
            return out

        return evaluate

    def verifier_judge(self, pieces: Sequence[Piece], n: int = 1):
        """The recipe's verifier as GeDi's discriminator of a codec LM's candidate tokens for
        ``pieces`` drawn in one batch, ``n`` rows each: the log-posterior of the phoneme each piece's
        predicted durations put on the frame being started, read from the candidate frame's latents
        (:class:`~audioguide.sampling.tokens.VerifierJudge`)."""
        from audioguide.sampling.tokens import VerifierJudge

        aligned = self.model.conditioners[self.model.aligned]
        return VerifierJudge.for_pieces(
            self.verifier, self.representation.dequantize, [aligned.ids([p.text])[0] for p in pieces],
            [p.cond[f"{self.model.aligned}.durations"] for p in pieces], [p.frames for p in pieces], n)

    # -- choosing among candidates, decoding -----------------------------------------------------

    def latents(self, samples: Tensor) -> Tensor:
        """What the verifier reads of a piece's samples: latents ``[n, C, T]`` (codes dequantised)."""
        return self.sampler.latents(self.representation, samples)

    @torch.inference_mode()
    def scores(self, piece: Piece, samples: Tensor) -> Tensor | None:
        """The verifier's score ``[n]`` of each of a piece's samples for the aligned phonemes of its
        text (a caption verifier: for its caption); None with fewer frames than symbols (a forced,
        very fast pace)."""
        if self.verifier is None:
            raise AudioguideError(f"recipe {self.recipe.name!r} has no [verifier] to score candidates")
        z = self.latents(samples)
        if self.verifier_reads == "caption":
            return self.verifier.score(z, piece.text)
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
    def decode(self, samples: Tensor, piece: Piece | None = None) -> Tensor:
        """Waveforms ``[n, S]`` of one piece's samples (latents, or codes of a codec LM); a recipe
        with an ``[acoustic]`` stage renders its semantic tokens in ``piece``'s voice (:meth:`render`)."""
        if self.acoustic is not None:
            if piece is None:
                raise AudioguideError(f"recipe {self.recipe.name!r} renders its tokens in a voice: decode needs the piece")
            return torch.cat([self.acoustic.decode(z) for z in self.render(piece, samples)])
        return self.sampler.decode(self.representation, samples)

    @torch.inference_mode()
    def render(self, piece: Piece, codes: Tensor) -> list[Tensor]:
        """The acoustic stage (``[acoustic]``): latents ``[1, C, 4 T]`` of each of a piece's semantic
        token samples ``codes [n, 1, T]``, drawn by the acoustic recipe's sampler from the tokens and
        the piece's other inputs as the LM's call resolved them (speaker, style; a style the call did not
        give is absent here too), sample ``j`` with seed ``piece.seed + j``."""
        assert self.acoustic is not None
        from audioguide.conditioners.tokens import token_text

        a = self.acoustic
        given = {k: v for k, v in piece.inputs if k in a.model.conditioners}
        plan = a.prepare([token_text(c[0]) for c in codes], seed=piece.seed, inputs=given)
        return a.draw(plan)

    def _finish(self, piece: Piece, wav: Tensor) -> np.ndarray:
        wav = wav[: int(round(piece.seconds * self.sample_rate))]
        if not torch.isfinite(wav).all():
            raise AudioguideError(f"generation produced non-finite audio for {piece.text[:40]!r} (try fewer steps or a lower scale)")
        return wav.float().cpu().numpy()

    # -- all stages ------------------------------------------------------------------------------

    def __call__(
        self, texts: str | Sequence[str], *, batch_size: int = 1, callback: StepCallback | None = None, **options: Any
    ) -> Audio:
        """Generate one waveform per text (a prompt, for ``t2a`` recipes): :meth:`generate` of
        :meth:`prepare` (whose keywords, ``seed``, ``steps``, ``cfg``, ``scales``, ``rescale``,
        ``guidance``, ``seconds``, ``inputs``, ``negative``, ``candidates``, ``speed``, ``parts``, ``part_weights``, are this
        call's ``options``). ``batch_size`` pieces share each forward pass (:meth:`draw`); 1 draws
        each alone, bit-for-bit as a call on it alone. ``callback(step, total)`` after every
        sampler step.
        """
        return self.generate(self.prepare(texts, **options), batch_size=batch_size, callback=callback)

    def stream(self, text: str, *, callback: StepCallback | None = None, **options) -> Iterator[np.ndarray]:
        """Waveform chunks of one text as its sentences finish, for audio that must start at once.

        ``options`` are those of :meth:`__call__` (but ``batch_size``: each sentence is drawn alone).
        The inputs are checked and encoded here, before the first chunk (:meth:`prepare`), so bad
        input raises at the call, not mid-stream; then :meth:`chunks`. Concatenated, the chunks are
        exactly ``self(text, **options)[0]``.
        """
        if not isinstance(text, str):
            raise AudioguideError("stream takes one text (a string); call the pipeline for several")
        return self.chunks(self.prepare(text, **options), callback=callback)

    def chunks(self, plan: Plan, *, callback: StepCallback | None = None) -> Iterator[np.ndarray]:
        """The audio of a prepared one-text plan, piece by piece: each sentence is drawn, chosen,
        decoded and trimmed alone, then yielded as :func:`join_speech` places it (faded, after the
        pause unless first; a text of one piece as :meth:`generate` gives it, unfaded)."""
        if plan.texts != 1:
            raise AudioguideError(f"a stream is one text; this plan has {plan.texts}")

        def pieces() -> Iterator[np.ndarray]:
            for k, piece in enumerate(plan.pieces):
                one = Plan((piece,), 1, plan.sampler, plan.candidates)
                wave = self.assemble(one, self.draw(one, callback=callback), 0)
                yield wave if len(plan.pieces) == 1 else join_part(wave, self.sample_rate, first=k == 0)

        return pieces()

    def generate(self, plan: Plan, *, batch_size: int = 1, callback: StepCallback | None = None) -> Audio:
        """The audio of a prepared call: :meth:`draw`, then :meth:`assemble` of every text."""
        samples = self.draw(plan, batch_size=batch_size, callback=callback)
        return Audio(tuple(self.assemble(plan, samples, i) for i in range(plan.texts)), self.sample_rate)

    def assemble(self, plan: Plan, samples: Sequence[Tensor | None], text: int) -> np.ndarray:
        """The waveform of text ``text`` of ``plan`` from its pieces' samples (``samples`` aligned
        with ``plan.pieces``; other texts' may be None): :meth:`choose`, :meth:`decode`, each piece
        trimmed to its length, sentences joined (:func:`join_speech`)."""
        mine = [(p, s) for p, s in zip(plan.pieces, samples) if p.index == text]
        if not mine or any(s is None for _, s in mine):
            raise AudioguideError(f"text {text} of the plan has pieces that were not drawn")
        pieces, drawn = [p for p, _ in mine], [s for _, s in mine]
        chosen = self.choose(Plan(tuple(pieces), 1, plan.sampler, plan.candidates), drawn)
        waves = [self._finish(p, self.decode(c, p)[0]) for p, c in zip(pieces, chosen)]
        return waves[0] if len(waves) == 1 else join_speech(waves, self.sample_rate)


def _check_acoustic(pipe: Pipeline, acoustic: Pipeline) -> None:
    """The acoustic stage renders exactly the LM's tokens at the LM's rate and sample rate."""
    name, rep = acoustic.recipe.name, pipe.representation
    if acoustic.task != "acoustic":
        raise RecipeError(f"[acoustic] recipe {name!r} is a {acoustic.task} recipe; it must be task = \"acoustic\"")
    aligned = acoustic.model.aligned
    tokens = acoustic.model.conditioners[aligned] if aligned else None
    size = getattr(tokens, "size", None)
    if size != pipe.model.codebook_size:
        raise RecipeError(f"[acoustic] recipe {name!r} reads {size} token ids; recipe {pipe.recipe.name!r} draws {pipe.model.codebook_size}")
    if acoustic.sample_rate != pipe.sample_rate or tokens.frames_per_token * acoustic.representation.hop != rep.hop:
        raise RecipeError(f"[acoustic] recipe {name!r} renders {tokens.frames_per_token * acoustic.representation.hop} samples per token at "
                          f"{acoustic.sample_rate} Hz; recipe {pipe.recipe.name!r} draws one token per {rep.hop} samples at {pipe.sample_rate} Hz")


def _cleaned(texts: Sequence[str], inputs: Mapping[str, str] | None, negative: str | None):
    """A call's texts, other inputs and negative prompt without control characters and terminal
    escapes (:func:`~audioguide.core.clean_text`); anything not a string is left for the checks."""
    def clean(v):
        return clean_text(v) if isinstance(v, str) else v

    return ([clean(t) for t in texts], None if inputs is None else {k: clean(v) for k, v in inputs.items()},
            clean(negative))


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
