"""Autoregressive sampling of multi-codebook codec tokens.

Token sampling is temperature / top-k / nucleus (top-p) sampling from logits; the AR loop follows
the MusicGen "delay" interleaving (Copet et al. 2023, arXiv 2306.05284, §2.2): with ``K``
codebooks, codebook ``k`` runs ``k`` steps behind codebook 0, so one step predicts all ``K``
codebooks at once and ``T`` frames take ``T + K - 1`` steps. Every random draw comes from the
explicit ``torch.Generator`` argument.

Guided sampling of a codec language model (:func:`guided_lm_step`, :func:`sample_codec_lm`) is a
pure function of the model's public decoding interface (:class:`CodecLMLike`) and of
:class:`audioguide.guidance.GuidedLogits`, which holds the guidance math. GeDi-style token
guidance (:class:`audioguide.guidance.GeDi`) takes its discriminator from here: the content
verifier judging each candidate of the frame being started (:class:`VerifierJudge`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from audioguide.guidance import Guidance, GuidedLogits, TokenStep
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
    from the renormalised distribution (``torch.multinomial`` over the vocabulary; among the top k
    as follows).

    With ``0 < top_k < V`` the draw is over the ``top_k`` largest values only: ``torch.topk``, the
    softmax of those ``k`` values (the nucleus taken within them, in their descending order), one
    draw among the ``k`` and the drawn slot mapped back to its token through the top-k indices, as
    audiocraft's ``sample_top_p`` maps a draw over sorted probabilities back (MusicGen, Copet et al.
    2023; ``audiocraft/utils/utils.py``; its ``sample_top_k`` masks the full vocabulary instead). The
    same distribution as masking the other ``V - k`` logits to ``-inf``, at a cost of ``k`` rather
    than ``V`` per row. The draw is by inversion (:func:`_draw_slot`: one uniform per row against the
    cumulative probabilities) rather than ``torch.multinomial``, which draws one exponential per
    candidate. Same generator state, same tokens.
    """
    _check_sampling_args(temperature, top_k, top_p)
    if logits.ndim < 1 or logits.shape[-1] < 1:
        raise ValueError(f"logits must have shape [..., V] with V >= 1, got {tuple(logits.shape)}")
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    if generator is None:
        raise ValueError("sampling with temperature > 0 needs an explicit torch.Generator")
    scores = logits.reshape(-1, logits.shape[-1]).float()
    if 0 < top_k < scores.shape[-1]:
        # the nucleus needs the k values in descending order; without it any order draws alike
        values, indices = scores.topk(top_k, dim=-1, sorted=top_p < 1.0)
        probs = (values / temperature).softmax(dim=-1)
        if top_p < 1.0:
            mass_before = probs.cumsum(dim=-1) - probs
            probs = probs.masked_fill(mass_before >= top_p, 0.0)
        return indices.gather(-1, _draw_slot(probs, generator)).reshape(logits.shape[:-1])
    scores = scores / temperature
    if top_p < 1.0:
        probs, order = scores.softmax(dim=-1).sort(dim=-1, descending=True)
        mass_before = probs.cumsum(dim=-1) - probs
        kept = torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, order, mass_before < top_p)
        scores = scores.masked_fill(~kept, -math.inf)
    tokens = torch.multinomial(scores.softmax(dim=-1), 1, generator=generator)
    return tokens.reshape(logits.shape[:-1])


def _draw_slot(weights: Tensor, generator: torch.Generator) -> Tensor:
    """One index per row of ``weights [N, k]`` (>= 0, not necessarily normalised, some > 0) drawn
    with probability proportional to its weight, by inversion of the discrete distribution function
    (Devroye 1986, "Non-Uniform Random Variate Generation", ch. III, the inversion method; the
    search here is binary): ``u ~ U[0, 1)`` from ``generator``, the first index whose cumulative
    weight exceeds ``u`` times the total. Returns ``[N, 1]``.

    A zero weight is never drawn: its cumulative weight equals its predecessor's, and a ``u`` that
    rounds up to the total is mapped to the last index with weight.
    """
    cdf = weights.cumsum(dim=-1)
    total = cdf[:, -1:]
    u = torch.rand(total.shape, generator=generator, dtype=cdf.dtype, device=cdf.device) * total
    last = (cdf < total).sum(dim=-1, keepdim=True)  # the first index at the total: the last with weight
    return torch.minimum(torch.searchsorted(cdf, u, right=True), last)


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
    total = T + K - 1
    frame = torch.arange(total, device=device) - torch.arange(K, device=device)[:, None]  # [K, total]: s - k
    ends = torch.tensor(per_row, device=device)[:, None, None] if min(per_row) != T else T
    valid = ((frame >= 0) & (frame < ends)).unbind(-1)  # per step: [K] or [B, K]
    prev = torch.full((batch, K), bos_id, dtype=torch.long, device=device)
    delayed = torch.full((batch, K, total), pad_id, dtype=torch.long, device=device)
    for s in range(total):
        logits = step(prev)
        if logits.ndim != 3 or logits.shape[:2] != (batch, K):
            raise ValueError(f"step must return logits [{batch}, {K}, V], got {tuple(logits.shape)}")
        if streams is None or len(streams.rows) == 1:
            tokens = sample_next_token(logits, None if streams is None else streams.generators[0], temperature, top_k, top_p)
        else:
            tokens = torch.cat([sample_next_token(logits[rows], g, temperature, top_k, top_p) for g, rows in streams.slices()])
        tokens = tokens.to(device)
        prev = torch.where(valid[s], tokens, pad_id)
        delayed[:, :, s] = prev
        if progress is not None:
            progress(s + 1, total)
    return undo_delay_pattern(delayed, K)


# ---------------------------------------------------------------------------------------------
# Guided sampling of a codec language model
# ---------------------------------------------------------------------------------------------


class CodecLMLike(Protocol):
    """The public decoding interface of a codec LM that guided sampling needs (e.g. ``CodecLM``).

    ``prefill(cond, keep, steps)`` runs the condition prefix and returns a mutable cache with room
    for ``steps`` more columns (None: the model's default);
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

    def prefill(self, cond: Mapping[str, Tensor], keep: Mapping[str, Tensor], steps: int | None = None) -> Any: ...

    def step(self, cache: Any, tokens: Tensor) -> Tensor: ...


def _cond_batch(cond: Mapping[str, Tensor], names: Sequence[str]) -> tuple[int, torch.device]:
    """Batch size and device of the condition tensors the model reads."""
    sizes = {cond[name].shape[0] for name in names}
    if len(sizes) != 1:
        raise ValueError(f"condition tensors disagree on the batch size: {sorted(sizes)}")
    return sizes.pop(), cond[names[0]].device


def guided_lm_step(model: CodecLMLike, cond: Mapping[str, Tensor], policy: Guidance, steps: int | None = None) -> StepFn:
    """``step(prev [B, K]) -> guided log-probs [B, K, V]`` for one generation under ``policy``.

    Every guidance branch is one slice of a single batch of ``n_branches * B`` rows laid out
    branch-major (:class:`~audioguide.guidance.GuidedLogits`), sharing one KV cache that is
    prefilled here by ``model.prefill``, with room for ``steps`` steps (None: the model's default;
    it grows past them); the closure owns that cache. It also keeps the columns
    drawn so far and gives every step's :class:`~audioguide.guidance.TokenStep` to the guided
    logits, for guiders that judge candidate tokens in their context (:class:`~audioguide.guidance.GeDi`).
    """
    names = tuple(model.condition_names)
    unknown = set(policy.conditions) - set(names)
    if unknown:
        raise ValueError(f"guidance names conditions this model lacks: {', '.join(sorted(unknown))}")
    gl = GuidedLogits(policy)
    B, device = _cond_batch(cond, names)
    cache = model.prefill({k: gl.expand(v) for k, v in cond.items()}, gl.keep(B, device), steps)
    drawn, s = _Columns(), 0

    def step(prev: Tensor) -> Tensor:
        nonlocal s
        prev = prev.to(device)
        if s:  # prev is the column drawn at step s - 1 (the bos column before the first step)
            drawn.append(prev)
        out = gl(model.step(cache, gl.expand(prev)), TokenStep(s, drawn.view(prev)))
        s += 1
        return out

    return step


class _Columns:
    """The delayed columns ``[B, K]`` drawn so far, as one ``[B, K, s]`` tensor (capacity doubled as needed)."""

    def __init__(self) -> None:
        self.buffer: Tensor | None = None
        self.count = 0

    def append(self, column: Tensor) -> None:
        if self.buffer is None:
            self.buffer = column.new_empty(*column.shape, 64)
        elif self.count == self.buffer.shape[-1]:
            self.buffer = torch.cat([self.buffer, torch.empty_like(self.buffer)], dim=-1)
        self.buffer[..., self.count] = column
        self.count += 1

    def view(self, like: Tensor) -> Tensor:
        """``[B, K, s]``; ``like`` (a column) gives the shape while none is drawn."""
        if self.buffer is None:
            return like.new_empty(*like.shape, 0)
        return self.buffer[..., : self.count]


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


# ---------------------------------------------------------------------------------------------
# GeDi's discriminator: the content verifier on the latents of candidate frames
# ---------------------------------------------------------------------------------------------


def verifier_context(verifier: nn.Module) -> int:
    """Frames a convolutional verifier reads up to and including its last one, ``1 + sum((kernel -
    1) // 2 * dilation)`` (its receptive field to the left), from ``verifier.config``."""
    config = getattr(verifier, "config", None)
    kernel, dilations = getattr(config, "kernel", None), getattr(config, "dilations", None)
    if kernel is None or dilations is None:
        raise ValueError("the verifier declares no kernel and dilations; give the judge its window")
    return 1 + (kernel - 1) // 2 * sum(dilations)


def last_frame_logits(verifier: nn.Module, before: Tensor | None, candidates: Tensor) -> Tensor:
    """``verifier(cat(before, c))[:, -1]`` for every last frame ``c`` of ``candidates [r, k, C]``
    after the context ``before [r, C, w]`` (or none): logits ``[r, k, symbols]`` of a
    :class:`~audioguide.models.verifier.PhoneVerifier` (1x1 projection, residual blocks
    ``x + MLP(LN(dwconv(x)))``, LayerNorm, head), the same numbers as its forward.

    The context is run once per row; per candidate only the positions the last frame changes and
    the last frame's output still needs are computed, block by block: after block ``l`` the last
    ``S_l + 1`` positions, ``S_l = min(R_l, N_l)``, ``R_l`` the summed radii of blocks ``1..l`` (what
    the last frame reaches) and ``N_l`` those of blocks ``l+1..L`` (what the output reads). For the
    shipped verifier (kernel 5, dilations 1 2 4 1 2 4): 48 of the 174 positions a full forward of
    its 29-frame window computes."""
    r, k, C = candidates.shape
    f = 0 if before is None else before.shape[-1]  # the last frame's position
    x = candidates.new_zeros(r, C, f + 1)
    if before is not None:
        x[..., :f] = before
    shared = [verifier.proj_in(x.to(verifier.proj_in.weight.dtype))]  # the last frame's value is never read
    for block in verifier.blocks:
        shared.append(block(shared[-1]))
    radii = [block.dw.dilation[0] * (block.dw.kernel_size[0] - 1) // 2 for block in verifier.blocks]
    reach, needs = [0], [sum(radii)]
    for radius in radii:
        reach.append(reach[-1] + radius)
        needs.append(needs[-1] - radius)
    suffix = [min(a, b, f) for a, b in zip(reach, needs)]
    D = shared[0].shape[1]
    h = verifier.proj_in(candidates.reshape(r * k, C, 1).to(shared[0])).view(r, k, D, 1)  # positions f - suffix[0] .. f
    for l, block in enumerate(verifier.blocks, 1):
        start, radius, was = f - suffix[l], radii[l - 1], f - suffix[l - 1]
        lo = start - radius
        inp = h.new_zeros(r, k, D, f + radius - lo + 1)  # positions lo .. f + radius, zeros outside 0 .. f
        if was > max(lo, 0):
            inp[..., max(lo, 0) - lo : was - lo] = shared[l - 1][:, None, :, max(lo, 0) : was]
        inp[..., max(was, lo) - lo : f - lo + 1] = h[..., max(was, lo) - was :]
        y = F.conv1d(inp.flatten(0, 1), block.dw.weight, block.dw.bias, dilation=block.dw.dilation, groups=D)
        rest = inp[..., start - lo : f - lo + 1].flatten(0, 1)
        h = (rest + block.mlp(block.norm(y.transpose(1, 2))).transpose(1, 2)).view(r, k, D, -1)
    return verifier.head(verifier.norm(h[..., -1]))


class VerifierJudge:
    """GeDi's discriminator (:data:`~audioguide.guidance.TokenJudge`, :class:`~audioguide.guidance.GeDi`)
    from a frame-level phoneme verifier (:class:`audioguide.models.verifier.PhoneVerifier`):
    for each codebook-0 candidate ``v`` of frame ``s``, ``log p(y_s | z)`` at the last frame of the
    latents ``z`` of frames ``s - W + 1 .. s``, ``y_s`` being the symbol the alignment puts on frame
    ``s`` (``targets [B, T]``, -1 past a row's frames; :meth:`for_pieces`).

    ``z`` is what the verifier reads of codes: ``dequantize`` (codes ``[N, k, T]`` of the first
    ``k`` codebooks -> latents ``[N, C, T]``, the sum of their RVQ codewords, as
    ``Autoencoder.dequantize``). Frame ``s`` is the candidate's codebook-0 codeword; a frame ``j``
    before it has the codebooks the delay pattern has drawn (codebook ``k`` of frame ``j`` comes at
    step ``j + k``, so frames ``s - K + 1 .. s - 1`` have their first ``s - j``: the residual
    quantizer's coarser approximations). No frame after ``s`` exists yet: the verifier hears the
    window as a clip that ends at frame ``s``, and ``window`` ``W`` (default
    :func:`verifier_context`, its receptive field to the left) makes that exactly what it says at
    frame ``s`` of the whole prefix. Rows past their frames get 0 (not judged); None when no row
    has frame ``s``. Cost per step: the context once per row, and for a
    :class:`~audioguide.models.verifier.PhoneVerifier` only what each candidate changes
    (:func:`last_frame_logits`; any other verifier runs its forward on ``rows * k`` windows).
    """

    def __init__(
        self, verifier: nn.Module, dequantize: Callable[[Tensor], Tensor], targets: Tensor, window: int | None = None
    ) -> None:
        if targets.ndim != 2:
            raise ValueError(f"targets must be frame symbols [B, T], got shape {tuple(targets.shape)}")
        from audioguide.models.verifier import PhoneVerifier

        self.verifier, self.dequantize, self.targets = verifier, dequantize, targets.long()
        self.window = verifier_context(verifier) if window is None else window
        self.incremental = isinstance(verifier, PhoneVerifier)  # last_frame_logits; any other: its forward
        if self.window < 1:
            raise ValueError(f"window must be >= 1 frame, got {self.window}")

    @classmethod
    def for_pieces(
        cls, verifier: nn.Module, dequantize: Callable[[Tensor], Tensor], ids: Sequence[Tensor],
        durations: Sequence[Tensor], frames: Sequence[int], rows: int = 1,
    ) -> VerifierJudge:
        """The judge of pieces drawn in one batch, ``rows`` consecutive rows each: piece ``i`` says
        the symbols ``ids[i] [1, L]`` for ``durations[i] [1, L]`` frames each over ``frames[i]`` frames."""
        from audioguide.models.verifier import frame_targets

        per_row = [frame_targets(i.long(), d.long().to(i.device), f)[0] for i, d, f in zip(ids, durations, frames) for _ in range(rows)]
        T = max(frames, default=0)
        targets = torch.full((len(per_row), T), -1, dtype=torch.long)
        for b, t in enumerate(per_row):
            targets[b, : t.shape[0]] = t.cpu()
        return cls(verifier, dequantize, targets)

    def _context(self, drawn: Tensor, s: int) -> Tensor | None:
        """Latents ``[r, C, w]`` of the frames ``max(0, s - W + 1) .. s - 1`` from the columns drawn so far."""
        K, lo = drawn.shape[1], max(0, s - self.window + 1)
        complete = s - K + 1  # frames before it have all K codebooks
        parts = []
        if complete > lo:
            parts.append(self.dequantize(torch.stack([drawn[:, k, lo + k : complete + k] for k in range(K)], dim=1)))
        for j in range(max(lo, complete), s):  # frame j has its first s - j codebooks
            parts.append(self.dequantize(torch.stack([drawn[:, k, j + k] for k in range(s - j)], dim=1)[..., None]))
        return torch.cat(parts, dim=-1) if parts else None

    def __call__(self, context: TokenStep, candidates: Tensor) -> Tensor | None:
        s, targets = context.step, self.targets
        if s >= targets.shape[1]:
            return None
        want = targets[:, s].to(candidates.device)
        rows = (want >= 0).nonzero().squeeze(1)
        if not len(rows):
            return None
        k = candidates.shape[1]
        z = self.dequantize(candidates[rows].reshape(-1, 1, 1))  # [r * k, C, 1]: codebook 0 of frame s
        before = self._context(context.drawn[rows.to(context.drawn.device)], s)
        if self.incremental:
            logits = last_frame_logits(self.verifier, before, z.view(len(rows), k, -1))
        else:
            if before is not None:
                z = torch.cat([before.repeat_interleave(k, dim=0), z.to(before)], dim=-1)
            logits = self.verifier(z)[:, -1]
        logp = logits.reshape(len(rows) * k, -1).float().log_softmax(dim=-1)  # [r * k, symbols]
        judged = logp.gather(-1, want[rows].repeat_interleave(k)[:, None].to(logp.device)).view(len(rows), k)
        out = torch.zeros(candidates.shape, dtype=judged.dtype, device=candidates.device)
        out[rows] = judged.to(out.device)
        return out


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
    lengths = [n_frames] if isinstance(n_frames, int) else list(n_frames)
    sized = lengths and all(isinstance(f, int) and not isinstance(f, bool) and f > 0 for f in lengths)
    # the KV cache is allocated for all T + K - 1 steps (bad lengths: sample_delayed says what is wrong)
    step = guided_lm_step(model, cond, policy, steps=max(lengths) + model.n_codebooks - 1 if sized else None)
    B, _ = _cond_batch(cond, tuple(model.condition_names))
    if prior_weight:
        prior = getattr(model, "content_prior", None)
        if prior is None:
            raise ValueError("prior_weight > 0 needs a model with a content prior (content_prior)")
        T = n_frames if isinstance(n_frames, int) else max(lengths)
        step = fuse_prior(step, prior(cond, T), prior_weight)
    frames = n_frames if isinstance(n_frames, int) else lengths
    return sample_delayed(
        step, B, model.n_codebooks, frames, generator, model.bos_id, model.pad_id, temperature, top_k, top_p, progress
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
