"""Autoregressive sampling of multi-codebook codec tokens.

Token sampling is temperature / top-k / nucleus (top-p) sampling from logits; the AR loop follows
the MusicGen "delay" interleaving (Copet et al. 2023, arXiv 2306.05284, §2.2): with ``K``
codebooks, codebook ``k`` runs ``k`` steps behind codebook 0, so one step predicts all ``K``
codebooks at once and ``T`` frames take ``T + K - 1`` steps. Every random draw comes from the
explicit ``torch.Generator`` argument.

Guided sampling of a codec language model (:func:`guided_lm_step`, :func:`sample_codec_lm`) is a
pure function of the model's public decoding interface (:class:`CodecLMLike`) and of
:class:`audioguide.guidance.GuidedLogits`, which holds the guidance math.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from audioguide.guidance import Guidance, GuidedLogits
from audioguide.sampling.common import RowStreams, StepProgress, TokenSampler

StepFn = Callable[[Tensor], Tensor]
"""``step(prev_tokens [B, K]) -> logits [B, K, V]``; the closure owns its KV cache."""


def _check_sampling_args(temperature: float, top_k: int, top_p: float) -> None:
    if not (temperature >= 0.0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 0:
        raise ValueError(f"top_k must be an integer >= 0 (0 = off), got {top_k!r}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must lie in (0, 1] (1 = off), got {top_p!r}")


def sample_next_token(
    logits: Tensor,
    generator: torch.Generator | None,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
) -> Tensor:
    """Draw one token per row of ``logits [..., V]``; returns a LongTensor of shape ``[...]``.

    ``temperature = 0`` is greedy (argmax, no draw). Otherwise the logits are divided by the
    temperature, restricted to the ``top_k`` largest (0 = off) and then to the nucleus of
    Holtzman et al. 2020 (ICLR, §3.1): the smallest set of most probable tokens whose mass is at
    least ``top_p`` (1 = off; the most probable token is always kept), and one token is drawn
    from the renormalised distribution with ``torch.multinomial``.
    """
    _check_sampling_args(temperature, top_k, top_p)
    if logits.ndim < 1 or logits.shape[-1] < 1:
        raise ValueError(f"logits must have shape [..., V] with V >= 1, got {tuple(logits.shape)}")
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    if generator is None:
        raise ValueError("sampling with temperature > 0 needs an explicit torch.Generator")
    scores = logits.reshape(-1, logits.shape[-1]).float() / temperature
    if 0 < top_k < scores.shape[-1]:
        top = scores.topk(top_k, dim=-1).indices
        kept = torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, top, True)
        scores = scores.masked_fill(~kept, -math.inf)
    if top_p < 1.0:
        probs, order = scores.softmax(dim=-1).sort(dim=-1, descending=True)
        mass_before = probs.cumsum(dim=-1) - probs
        kept = torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, order, mass_before < top_p)
        scores = scores.masked_fill(~kept, -math.inf)
    tokens = torch.multinomial(scores.softmax(dim=-1), 1, generator=generator)
    return tokens.reshape(logits.shape[:-1])


def apply_delay_pattern(codes: Tensor, pad_id: int) -> Tensor:
    """``codes [B, K, T] -> [B, K, T + K - 1]``: codebook ``k`` shifted right by ``k``, pads elsewhere."""
    if codes.ndim != 3:
        raise ValueError(f"codes must have shape [B, K, T], got {tuple(codes.shape)}")
    B, K, T = codes.shape
    delayed = codes.new_full((B, K, T + K - 1), pad_id)
    for k in range(K):
        delayed[:, k, k : k + T] = codes[:, k]
    return delayed


def undo_delay_pattern(delayed: Tensor, n_codebooks: int) -> Tensor:
    """Inverse of :func:`apply_delay_pattern`: ``[B, K, L] -> [B, K, L - K + 1]``."""
    K = n_codebooks
    if delayed.ndim != 3 or delayed.shape[1] != K or delayed.shape[2] < K:
        raise ValueError(f"delayed must have shape [B, {K}, L >= {K}], got {tuple(delayed.shape)}")
    T = delayed.shape[2] - K + 1
    return torch.stack([delayed[:, k, k : k + T] for k in range(K)], dim=1)


def sample_delayed(
    step: StepFn,
    batch: int,
    n_codebooks: int,
    n_frames: int | Sequence[int],
    generator: torch.Generator | RowStreams | None,
    bos_id: int,
    pad_id: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    progress: StepProgress | None = None,
) -> Tensor:
    """Generate ``n_frames`` frames of ``n_codebooks`` codebooks with the delay pattern.

    ``n_frames`` is one length for every row or one per row. At step ``s = 0 .. T + K - 2``
    (``T = max(n_frames)``) the loop calls ``step(prev)`` with the previous delayed column
    ``prev [B, K]`` (all ``bos_id`` at ``s = 0``), samples every codebook with
    :func:`sample_next_token`, and forces ``pad_id`` on codebook ``k`` of a row where frame ``s - k``
    lies outside ``[0, n_frames_row)``, so a row's tokens are those it would get alone with its own
    length. Randomness: one ``generator`` for the batch, or :class:`RowStreams` (each group of rows
    draws from its own generator, as it would alone). Tokens live on the generator's device (CPU
    without one). ``progress(s + 1, total)`` after each step. Returns the undelayed codes
    ``[B, K, T]``; a shorter row's frames past its length are pads.
    """
    per_row = [n_frames] * batch if isinstance(n_frames, int) else list(n_frames)
    for name, value in (("batch", batch), ("n_codebooks", n_codebooks), *(("n_frames", f) for f in per_row)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if len(per_row) != batch:
        raise ValueError(f"n_frames has {len(per_row)} lengths for a batch of {batch}")
    _check_sampling_args(temperature, top_k, top_p)
    streams = RowStreams.single(generator, batch) if isinstance(generator, torch.Generator) else generator
    if streams is not None and streams.batch != batch:
        raise ValueError(f"the random streams cover {streams.batch} rows, the batch has {batch}")
    K, T = n_codebooks, max(per_row)
    device = streams.device if streams is not None else torch.device("cpu")
    frame_of_k = -torch.arange(K, device=device)  # frame index is s - k
    ends = torch.tensor(per_row, device=device)[:, None] if min(per_row) != T else T
    prev = torch.full((batch, K), bos_id, dtype=torch.long, device=device)
    delayed = torch.full((batch, K, T + K - 1), pad_id, dtype=torch.long, device=device)
    total = T + K - 1
    for s in range(total):
        logits = step(prev)
        if logits.ndim != 3 or logits.shape[:2] != (batch, K):
            raise ValueError(f"step must return logits [{batch}, {K}, V], got {tuple(logits.shape)}")
        frame = frame_of_k + s
        valid = (frame >= 0) & (frame < ends)
        if streams is None or len(streams.rows) == 1:
            tokens = sample_next_token(logits, None if streams is None else streams.generators[0], temperature, top_k, top_p)
        else:
            tokens = torch.cat([sample_next_token(logits[rows], g, temperature, top_k, top_p) for g, rows in streams.slices()])
        tokens = tokens.to(device)
        prev = torch.where(valid, tokens, torch.full_like(tokens, pad_id))
        delayed[:, :, s] = prev
        if progress is not None:
            progress(s + 1, total)
    return undo_delay_pattern(delayed, K)


# ---------------------------------------------------------------------------------------------
# Guided sampling of a codec language model
# ---------------------------------------------------------------------------------------------


class CodecLMLike(Protocol):
    """The public decoding interface of a codec LM that guided sampling needs (e.g. ``CodecLM``).

    ``prefill(cond, keep)`` runs the condition prefix and returns a mutable cache;
    ``step(cache, tokens [B, K]) -> logits [B, K, V]`` appends one delayed column to it.
    ``condition_names`` are the conditions ``cond`` and ``keep`` carry.
    """

    @property
    def condition_names(self) -> Sequence[str]: ...

    @property
    def n_codebooks(self) -> int: ...

    @property
    def bos_id(self) -> int: ...

    @property
    def pad_id(self) -> int: ...

    def prefill(self, cond: Mapping[str, Tensor], keep: Mapping[str, Tensor]) -> Any: ...

    def step(self, cache: Any, tokens: Tensor) -> Tensor: ...


def _cond_batch(cond: Mapping[str, Tensor], names: Sequence[str]) -> tuple[int, torch.device]:
    """Batch size and device of the condition tensors the model reads."""
    sizes = {cond[name].shape[0] for name in names}
    if len(sizes) != 1:
        raise ValueError(f"condition tensors disagree on the batch size: {sorted(sizes)}")
    return sizes.pop(), cond[names[0]].device


def guided_lm_step(model: CodecLMLike, cond: Mapping[str, Tensor], policy: Guidance) -> StepFn:
    """``step(prev [B, K]) -> guided log-probs [B, K, V]`` for one generation under ``policy``.

    Every guidance branch is one slice of a single batch of ``n_branches * B`` rows laid out
    branch-major (:class:`~audioguide.guidance.GuidedLogits`), sharing one KV cache that is
    prefilled here by ``model.prefill``; the closure owns that cache.
    """
    names = tuple(model.condition_names)
    unknown = set(policy.conditions) - set(names)
    if unknown:
        raise ValueError(f"guidance names conditions this model lacks: {', '.join(sorted(unknown))}")
    gl = GuidedLogits(policy)
    B, device = _cond_batch(cond, names)
    cache = model.prefill({k: gl.expand(v) for k, v in cond.items()}, gl.keep(B, device))

    def step(prev: Tensor) -> Tensor:
        return gl(model.step(cache, gl.expand(prev.to(device))))

    return step


def fuse_prior(step: StepFn, log_prior: Tensor, weight: float) -> StepFn:
    """Shallow fusion of a frame-level prior into a delayed AR loop (Gulcehre et al. 2015, "On
    using monolingual corpora in neural machine translation", arXiv 1503.03535, §4.1: the
    translation model's log-probabilities plus ``beta`` times another model's, per candidate token).

    ``log_prior [B, n, T, V]`` holds log-probabilities of the first ``n`` codebooks of every frame;
    the returned step adds ``weight * log_prior[:, k, s - k]`` to the log-probs of codebook ``k < n``
    at step ``s`` (the delay pattern puts frame ``s - k`` there) and leaves the other codebooks and
    the steps outside ``[0, T)`` alone. Like the step it wraps, the closure counts its own steps.
    """
    if not (weight >= 0.0 and math.isfinite(weight)):
        raise ValueError(f"the prior weight must be a finite number >= 0, got {weight!r}")
    if log_prior.ndim != 4:
        raise ValueError(f"log_prior must have shape [B, n, T, V], got {tuple(log_prior.shape)}")
    n, T = log_prior.shape[1], log_prior.shape[2]
    s = 0

    def step_fused(prev: Tensor) -> Tensor:
        nonlocal s
        out = step(prev)
        ks = [k for k in range(min(n, out.shape[1])) if 0 <= s - k < T]
        if weight and ks:
            out = out.clone()
            for k in ks:
                out[:, k] += weight * log_prior[:, k, s - k].to(out)
        s += 1
        return out

    return step_fused


@torch.no_grad()
def sample_codec_lm(
    model: CodecLMLike,
    cond: Mapping[str, Tensor],
    n_frames: int | Sequence[int],
    policy: Guidance,
    generator: torch.Generator | RowStreams | None,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    prior_weight: float = 0.0,
    progress: StepProgress | None = None,
) -> Tensor:
    """Codes ``[B, K, max(n_frames)]`` sampled from ``model`` with multi-condition CFG on logits.

    Guided log-probs (``sum_i w_i log_softmax(l_i)``, see :class:`~audioguide.guidance.GuidedLogits`)
    from :func:`guided_lm_step` feed :func:`sample_delayed` (delay pattern, temperature, top-k,
    top-p; ``temperature = 0`` is greedy; ``n_frames`` one length or one per row; ``generator`` one
    generator or :class:`RowStreams`). The policy is used as given on every call. With
    ``prior_weight > 0`` the model's frame-level content prior (``model.content_prior(cond, T)``,
    e.g. :meth:`audioguide.models.codec_lm.CodecLM.content_prior`) is fused in by :func:`fuse_prior`
    before the draw.
    """
    step = guided_lm_step(model, cond, policy)
    B, _ = _cond_batch(cond, tuple(model.condition_names))
    if prior_weight:
        prior = getattr(model, "content_prior", None)
        if prior is None:
            raise ValueError("prior_weight > 0 needs a model with a content prior (content_prior)")
        T = n_frames if isinstance(n_frames, int) else max(n_frames)
        step = fuse_prior(step, prior(cond, T), prior_weight)
    return sample_delayed(
        step, B, model.n_codebooks, n_frames, generator, model.bos_id, model.pad_id, temperature, top_k, top_p, progress
    )


# ---------------------------------------------------------------------------------------------
# As recipes name it
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenSamplerConfig:
    """``[sampler]`` of the codec-LM sampler: temperature, top-k, top-p and content-prior fusion."""

    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    prior_weight: float = 0.0  # shallow fusion of the model's content prior (0 = off; see fuse_prior)

    def __post_init__(self) -> None:
        if self.temperature < 0 or self.top_k < 0 or not 0.0 < self.top_p <= 1.0:
            raise ValueError("need temperature >= 0, top_k >= 0 and 0 < top_p <= 1")
        if not (self.prior_weight >= 0 and math.isfinite(self.prior_weight)):
            raise ValueError(f"prior_weight must be a finite number >= 0, got {self.prior_weight}")


AR = TokenSampler(
    TokenSamplerConfig,
    lambda model, cond, policy, frames, cfg, streams, progress=None: sample_codec_lm(
        model, cond, frames, policy, streams, cfg.temperature, cfg.top_k, cfg.top_p, cfg.prior_weight, progress
    ),
)
