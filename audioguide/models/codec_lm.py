"""A decoder-only transformer over multi-codebook codec tokens, conditioned in context.

Token layout
------------
``K`` codebooks of ``V = codebook_size`` codes each run with the MusicGen delay pattern (Copet et
al. 2023, arXiv 2306.05284, §2.2, see :mod:`audioguide.sampling.tokens`): one time step of the
model reads one delayed column ``[K]`` and predicts the next. The input at a time step is the sum
of ``K`` codebook embeddings (each codebook has its own table of ``V + 2`` rows: the ``V`` codes,
``bos_id = V`` and ``pad_id = V + 1``) and the ``K`` output heads predict the ``V`` codes only, so
special tokens are never sampled.

In-context conditioning
-----------------------
Every condition sequence of :meth:`Generator.conditions` (with nulls swapped in where ``keep`` is
False) is projected by its own ``Linear`` to ``dim`` and the projections are concatenated, in
conditioner order, into a prefix that precedes the audio steps (VALL-E, Wang et al. 2023, §4.2.1;
VoxInstruct, Zhou et al. 2024, §3). The whole sequence is causal.

Padding and positions (per-row position offsets)
------------------------------------------------
Rows of one batch may have prefixes of different real length (a full text next to a length-1 null
condition). The prefix keeps its padded layout, padded prefix keys (mask False) are excluded from
attention, and every token gets a per-row position id: a real prefix token's position is the
number of real prefix tokens before it, and audio step ``s`` sits at ``n_prefix[b] + s``, where
``n_prefix[b]`` counts the row's real prefix tokens. Positions enter only through rotary
embeddings (RoPE, Su et al. 2021, arXiv 2104.09864, eq. 34), so attention between real tokens
depends only on their position differences, and a row computes the same logits in any batch as it
does alone with its padding removed. A padded query attends to itself as well, so no softmax row is
empty; its output is never read by a real token.

Frame-aligned content (``aligned = "text"``)
--------------------------------------------
Without alignment the model must learn from data where each phoneme of the prefix is spoken,
which on a small corpus it does slowly and brittlely (VALL-E's skipped and repeated words). With
``aligned`` naming a condition, that condition leaves the prefix: its tokens pass through
FastSpeech's FFT blocks (Ren et al. 2019, §3.1), are expanded to frames by token durations (the
length regulator, §3.2, eq. 2; :mod:`audioguide.models.duration`) and the state of frame ``s`` is
added to the input of the step that predicts frame ``s`` of codebook 0 (an autoregressive decoder
fed duration-expanded phoneme states, as in DurIAN, Yu et al. 2019, arXiv 1909.01700, here under
the delay pattern). Steps past the
last frame repeat the last token. Durations travel in ``cond["<aligned>.durations"]``: teacher
durations in training, :meth:`CodecLM.predict_durations` at inference (FastSpeech 2's variance
predictor over the token states plus the pooled other conditions, trained by
:meth:`CodecLM.aligned_losses`). A dropped aligned condition repeats its null token on every frame,
so classifier-free guidance on content works as for any condition. The token encoder, the pooled
projections and the duration predictor are the :class:`~audioguide.models.aligned.AlignedContent`
module (``self.content``) that the DiT shares.

With ``content_stride = s > 1`` the durations count *content frames*, ``s`` to a step (a semantic
token of :mod:`audioguide.representations.semantic` spans 4 latent frames): the states are expanded
to ``s`` times the steps and each step gets the mean of its ``s`` content frames, so a phoneme
shorter than a step still reaches the step it is spoken in instead of being rounded away.

With ``prior_codebooks = n`` a content prior reads the same duration-expanded token states (plus
the pooled speaker and style) and predicts, frame by frame and without looking at any audio token,
the codes of the first ``n`` codebooks; :meth:`CodecLM.aligned_losses` trains it by cross-entropy
on the kept rows. It is the token analogue of Grad-TTS's encoder loss (Popov et al. 2021, eq. 14):
the autoregressive loss alone lets the LM predict a frame by copying the frames before it (at
93.75 frames a second neighbours mostly agree) and learn to read its content slowly, while the
prior gives the token encoder a direct signal of what each phoneme sounds like.

KV cache
--------
:class:`KVCache` holds, per layer, the rotated keys and the values of every token seen so far
(prefix included, padding included), the key validity mask and the next position id per row
``[B]``. It is a static cache in the manner of Llama's reference decoder (Touvron et al. 2023,
``llama/model.py``: ``cache_k`` / ``cache_v`` allocated once at ``max_seq_len`` and written in place
at ``start_pos``) and of transformers' ``StaticCache``: :meth:`CodecLM.prefill` allocates
``[B, H, L + steps, D_h]`` per layer once per generation (``steps``: the decoding steps to come)
and :meth:`CodecLM.step` writes one time step at position ``length`` instead of concatenating, so a
step costs no copy of the past; past the reserved steps the capacity doubles (amortised). Per step
the rotary angles and the attention mask are computed once and shared by every layer; the mask is
an additive ``0 / -inf`` bias over the keys, kept in the cache, and is dropped altogether when no
prefix key is padded.

Guided generation
-----------------
The model knows nothing of guidance or sampling: classifier-free guidance over its branches and the
delayed AR loop are pure functions of its public ``prefill`` / ``step`` / ``bos_id`` / ``pad_id`` /
``n_codebooks`` / ``condition_names`` (:func:`audioguide.sampling.tokens.guided_lm_step` and
:func:`audioguide.sampling.tokens.sample_codec_lm`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from audioguide.conditioners import Conditioner, Encoded
from audioguide.core import Cond, Keep
from audioguide.models.aligned import AlignedContent
from audioguide.models.base import Generator, init_random
from audioguide.models.layers import rope_angles

__all__ = ["CodecLM", "CodecLMConfig", "KVCache", "rotary"]


@dataclass(frozen=True)
class CodecLMConfig:
    """Size of the codec LM. ``codebook_size`` is ``V``, not counting the bos and pad tokens."""

    dim: int = 256
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    codebook_size: int = 1024
    seed: int = 0
    qk_norm: bool = True  # RMS-normalise queries and keys per head before RoPE
    rope_base: float = 10000.0
    aligned: str = ""  # a condition expanded to the frames by token durations and added to the step inputs
    encoder_depth: int = 2  # aligned: FFT blocks over the aligned condition's tokens
    prior_codebooks: int = 0  # aligned: a frame-level content prior over the first n codebooks (0 = off)
    content_stride: int = 1  # aligned: content frames per step (durations count content frames; see the docstring)

    def __post_init__(self) -> None:
        if self.dim <= 0 or self.depth <= 0 or self.heads <= 0:
            raise ValueError("dim, depth and heads must be positive")
        if self.dim % self.heads or (self.dim // self.heads) % 2:
            raise ValueError(f"dim / heads must be an even integer (RoPE), got dim={self.dim}, heads={self.heads}")
        if not (math.isfinite(self.mlp_ratio) and int(self.dim * self.mlp_ratio) >= 1):
            raise ValueError(f"mlp_ratio must give a hidden width >= 1, got {self.mlp_ratio}")
        if self.codebook_size < 1:
            raise ValueError(f"codebook_size must be >= 1, got {self.codebook_size}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if not (math.isfinite(self.rope_base) and self.rope_base > 1.0):
            raise ValueError(f"rope_base must be a finite number > 1, got {self.rope_base}")
        if self.encoder_depth < 0:
            raise ValueError(f"encoder_depth must be >= 0, got {self.encoder_depth}")
        if self.content_stride < 1:
            raise ValueError(f"content_stride must be >= 1, got {self.content_stride}")
        if self.prior_codebooks < 0 or (self.prior_codebooks and not self.aligned):
            raise ValueError(f"prior_codebooks must be >= 0 and needs an aligned condition, got {self.prior_codebooks}")


@dataclass
class KVCache:
    """Keys and values of every token seen so far, per layer (mutable decoding state, preallocated).

    ``keys[i]`` and ``values[i]`` are ``[B, H, capacity, D_h]`` (keys already rotated), of which the
    first ``length`` positions are written; ``valid`` is ``[B, capacity]`` (False for prefix padding,
    True for every step) and ``next_pos`` ``[B]`` the position id of the next token. ``bias`` is
    ``valid`` as an additive attention mask ``[B, 1, 1, capacity]`` (0 or -inf), None when every key
    is valid. With an aligned condition, ``frames`` ``[B, S, D]`` holds what each step adds to its
    input and ``steps`` counts the steps taken. Two copies of weights made once per generation
    serve the steps: ``table`` ``[K * (V + 2), D]``, the ``K`` codebook embeddings stacked, so that a
    step embeds its column in one lookup, and ``head`` ``[D, K * V]``, the output heads' weight
    transposed and contiguous (for batches of 4 rows or more, else None): 8 rows times it is a
    plain GEMM, measured 2.4x faster on CPU (MKL, ``K * V = 8192``) than ``F.linear`` on the
    ``[K * V, D]`` weight, and 1.1-1.6x at 16-64 rows; at 1-2 rows the two are even or ``F.linear``
    is ahead.
    """

    keys: list[Tensor]
    values: list[Tensor]
    valid: Tensor
    next_pos: Tensor
    frames: Tensor | None = None
    steps: int = 0
    length: int = 0
    bias: Tensor | None = None
    table: Tensor | None = None
    head: Tensor | None = None

    @property
    def capacity(self) -> int:
        return self.valid.shape[1]

    def reserve(self, n: int) -> None:
        """Room for ``n`` more tokens: the capacity at least doubles when it runs out (amortised growth)."""
        need = self.length + n
        if need <= self.capacity:
            return
        grown = max(need, 2 * self.capacity)

        def grow(t: Tensor, fill: float | bool | None) -> Tensor:
            shape = (*t.shape[:-2], grown, t.shape[-1]) if fill is None else (*t.shape[:-1], grown)
            out = t.new_empty(shape) if fill is None else t.new_full(shape, fill)
            if fill is None:
                out[..., : self.length, :] = t[..., : self.length, :]
            else:
                out[..., : self.length] = t[..., : self.length]
            return out

        self.keys = [grow(k, None) for k in self.keys]
        self.values = [grow(v, None) for v in self.values]
        self.valid = grow(self.valid, True)
        if self.bias is not None:
            self.bias = grow(self.bias, 0.0)


def rotary(x: Tensor, pos: Tensor, base: float) -> Tensor:
    """Rotary position embedding of ``x [B, H, S, D]`` at per-row positions ``pos [B, S]`` (in float32)."""
    return rotate(x, *rope_table(pos, x.shape[-1], base))


def rope_table(pos: Tensor, width: int, base: float) -> tuple[Tensor, Tensor]:
    """``(cos, sin)`` ``[B, 1, S, width]`` (float32) of per-row positions ``pos [B, S]``, broadcast over
    heads: computed once per forward or step and shared by every layer. ``sin`` carries the sign of
    the rotate-half layout (``-sin`` on the first half), so :func:`rotate` needs no negation."""
    cos, sin = rope_angles(pos.float(), width, base)
    sin = torch.cat([-sin[..., : width // 2], sin[..., width // 2 :]], dim=-1)
    return cos[:, None], sin[:, None]


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """RoPE (Su et al. 2021, eq. 34) in the rotate-half layout of
    :func:`~audioguide.models.layers.apply_rope`, ``x cos + (-x_2, x_1) sin``, with the signed ``sin``
    of :func:`rope_table`: ``(x_2, x_1)`` is ``x`` rolled by half a head. In float32, back in the
    dtype of ``x``."""
    x32 = x.float()
    return torch.addcmul(x32 * cos, x32.roll(x.shape[-1] // 2, dims=-1), sin).to(x.dtype)


def attention_mask(valid: Tensor, n_queries: int) -> Tensor:
    """Boolean mask ``[B, 1, S_q, L]`` (True = attend) for the last ``n_queries`` of ``L`` tokens.

    Causal; keys with ``valid`` False are excluded except that each query always sees itself.
    """
    L = valid.shape[1]
    q_idx = torch.arange(L - n_queries, L, device=valid.device)[:, None]
    k_idx = torch.arange(L, device=valid.device)[None, :]
    causal = k_idx <= q_idx
    allowed = causal & (valid[:, None, :] | (k_idx == q_idx))
    return allowed[:, None]


class Attention(nn.Module):
    """Multi-head causal self-attention with RoPE, optional QK-norm and an external KV cache."""

    def __init__(self, config: CodecLMConfig) -> None:
        super().__init__()
        self.heads, self.head_dim, self.base = config.heads, config.dim // config.heads, config.rope_base
        self.qkv = nn.Linear(config.dim, 3 * config.dim, bias=False)
        self.out = nn.Linear(config.dim, config.dim, bias=False)
        self.q_norm = nn.RMSNorm(self.head_dim) if config.qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(self.head_dim) if config.qk_norm else nn.Identity()

    def forward(
        self, h: Tensor, rope: tuple[Tensor, Tensor], mask: Tensor | None, past: tuple[Tensor, Tensor] | None, start: int = 0
    ) -> Tensor:
        """``h [B, S, D]`` with rotary ``(cos, sin)`` of :func:`rope_table`; ``mask`` ``[B, 1, S, L]``
        (boolean or additive, or None) over the ``L = start + S`` keys. With ``past`` (a layer of a
        :class:`KVCache`, ``[B, H, capacity, D_h]`` each) the new keys and values are written at
        ``start .. start + S - 1`` in place and the queries attend to positions ``0 .. start + S - 1``."""
        B, S, _ = h.shape
        q, k, v = self.qkv(h).view(B, S, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q = rotate(self.q_norm(q), *rope)
        k = rotate(self.k_norm(k), *rope)
        if past is not None:
            end = start + S
            past[0][:, :, start:end] = k
            past[1][:, :, start:end] = v
            k, v = past[0][:, :, :end], past[1][:, :, :end]
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(o.transpose(1, 2).reshape(B, S, -1))


class Block(nn.Module):
    """Pre-norm transformer block: ``h + Attn(LN(h))`` then ``h + MLP(LN(h))``."""

    def __init__(self, config: CodecLMConfig) -> None:
        super().__init__()
        hidden = int(config.dim * config.mlp_ratio)
        self.norm1, self.norm2 = nn.LayerNorm(config.dim), nn.LayerNorm(config.dim)
        self.attn = Attention(config)
        self.mlp = nn.Sequential(nn.Linear(config.dim, hidden), nn.GELU(), nn.Linear(hidden, config.dim))

    def forward(
        self, h: Tensor, rope: tuple[Tensor, Tensor], mask: Tensor | None, past: tuple[Tensor, Tensor] | None, start: int = 0
    ) -> Tensor:
        h = h + self.attn(self.norm1(h), rope, mask, past, start)
        return h + self.mlp(self.norm2(h))


class CodecLM(Generator):
    """Decoder-only codec-token LM with in-context condition prefix (see the module docstring).

    ``CodecLM(config, n_codebooks, conditioners)``; needs at least one conditioner besides the
    aligned one (the prefix gives the batch size and the context of the first step).
    """

    Config = CodecLMConfig
    kind: str = "tokens"

    def __init__(self, config: CodecLMConfig, n_codebooks: int, conditioners: Mapping[str, Conditioner]) -> None:
        if not isinstance(n_codebooks, int) or isinstance(n_codebooks, bool) or n_codebooks < 1:
            raise ValueError(f"n_codebooks must be a positive integer, got {n_codebooks!r}")
        self.aligned = config.aligned
        if self.aligned and self.aligned not in conditioners:
            raise ValueError(f"aligned names {self.aligned!r}, which is not a condition ({', '.join(conditioners) or 'none'})")
        prefixed = {n: c for n, c in conditioners.items() if n != self.aligned}
        if not prefixed:
            raise ValueError("a codec LM needs at least one conditioner (besides an aligned one) for its prefix")
        if config.prior_codebooks > n_codebooks:
            raise ValueError(f"prior_codebooks ({config.prior_codebooks}) exceeds the {n_codebooks} codebooks")
        super().__init__(conditioners)
        self.config, self.n_codebooks = config, n_codebooks
        V, D = config.codebook_size, config.dim
        self.cond_proj = nn.ModuleDict({n: nn.Linear(c.dim, D) for n, c in prefixed.items()})
        self.content = None
        if self.aligned:  # with its own projections of the prefixed conditions for the voiced states
            pooled = {n: c.dim for n, c in prefixed.items()}
            width = conditioners[self.aligned].dim
            self.content = AlignedContent(self.aligned, width, D, config.heads, config.qk_norm, config.encoder_depth, pooled)
            self.moved = self.content.former("content")
            if config.prior_codebooks:
                self.prior = nn.Linear(D, config.prior_codebooks * V)
        self.embed = nn.ModuleList(nn.Embedding(V + 2, D) for _ in range(n_codebooks))
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(D)
        self.heads = nn.Linear(D, n_codebooks * V)  # the K output heads, stacked
        init_random(self, config.seed, self.moved)
        self._unit_norms()

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def content_stride(self) -> int:
        """Content frames (what the aligned durations count) per step."""
        return self.config.content_stride

    def _expand(self, states: Tensor, durations: Tensor, kept: Tensor | None, steps: int, mask: Tensor) -> Tensor:
        """The length regulator to ``steps`` steps: ``content_stride`` content frames each, averaged."""
        s = self.config.content_stride
        frames = self.content.regulate(states, durations, kept, steps * s, mask)
        return frames if s == 1 else frames.view(frames.shape[0], steps, s, frames.shape[-1]).mean(2)

    @property
    def condition_names(self) -> tuple[str, ...]:
        """Names of the conditions in ``cond`` / ``keep``, in conditioner (prefix) order."""
        return tuple(self.conditioners)

    @property
    def bos_id(self) -> int:
        return self.config.codebook_size

    @property
    def pad_id(self) -> int:
        return self.config.codebook_size + 1

    def _unit_norms(self) -> None:
        """Norm gains to 1 and norm biases to 0 after :func:`init_random` (deterministic, no draw)."""
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, (nn.LayerNorm, nn.RMSNorm)):
                    if m.weight is not None:
                        m.weight.fill_(1.0)
                    if getattr(m, "bias", None) is not None:
                        m.bias.zero_()

    # -- pieces ------------------------------------------------------------------------------

    def prefix(self, cond: Cond, keep: Keep) -> tuple[Tensor, Tensor]:
        """Projected, concatenated condition prefix ``[B, L, D]`` and its validity mask ``[B, L]``."""
        return self._prefix(self.conditions(cond, keep))

    def _prefix(self, encoded: Mapping[str, Encoded]) -> tuple[Tensor, Tensor]:
        names = [n for n in encoded if n in self.cond_proj]
        embs = [self.cond_proj[n](encoded[n].emb) for n in names]
        masks = [encoded[n].mask.to(torch.bool) for n in names]
        return torch.cat(embs, dim=1), torch.cat(masks, dim=1)

    # -- the frame-aligned condition -------------------------------------------------------------

    def _frames(self, cond: Cond, keep: Keep, encoded: Mapping[str, Encoded], steps: int) -> Tensor:
        """What the aligned condition adds to each of ``steps`` inputs: ``[B, steps, dim]``."""
        enc = encoded[self.aligned]
        return self._expand(self.content.encode(enc), self.content.durations(cond), keep.get(self.aligned), steps, enc.mask)

    @torch.no_grad()
    def predict_durations(self, cond: Cond, pace: float = 1.0, frames: int | None = None) -> Tensor:
        """Durations ``[B, L]`` of the aligned tokens, all conditions kept: see :meth:`AlignedContent.predict_durations`."""
        if not self.aligned:
            raise ValueError("this codec LM has no aligned condition")
        return self.content.predict_durations(self.conditions(cond, {}), pace, frames)

    def aligned_losses(
        self, cond: Cond, keep: Keep, codes: Tensor | None = None, frame_mask: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Direct supervision of the aligned encoder, over the rows where the aligned condition is kept:

        * ``duration``: the duration predictor's MSE on ``log(1 + d)`` against the teacher's
          ``cond["<aligned>.durations"]`` (FastSpeech §3.3);
        * ``prior`` (with ``prior_codebooks`` and ``codes [B, K, T]``, undelayed): the content
          prior's cross-entropy on the codes of the first ``prior_codebooks`` codebooks of every real
          frame (``frame_mask [B, T]``), mean over those codebooks (see the module docstring).
        """
        encoded = self.conditions(cond, keep)
        mask = encoded[self.aligned].mask
        kept = self.content.kept(keep, mask)
        voiced = self.content.voiced(encoded)
        durations = self.content.durations(cond)
        log_d = self.content.log_durations(encoded, voiced)
        out = {"duration": self.content.duration_loss(log_d, durations, mask, kept)}
        n = self.config.prior_codebooks
        if n and codes is not None:
            B, _, T = codes.shape
            logits = self._prior_logits(voiced, durations, kept, T, mask)
            ce = F.cross_entropy(logits.permute(0, 3, 1, 2).float(), codes[:, :n].transpose(1, 2).long(), reduction="none")
            real = torch.ones(B, T, dtype=torch.bool, device=codes.device) if frame_mask is None else frame_mask.bool()
            w = (real & kept[:, None].to(real.device)).to(ce.dtype)[:, :, None]  # [B, T, 1]
            out["prior"] = (ce * w).sum() / (w.sum() * n).clamp_min(1.0)
        return out

    @torch.no_grad()
    def content_prior(self, cond: Cond, frames: int) -> Tensor:
        """The content prior's log-probabilities ``[B, n, frames, V]`` over the first
        ``n = prior_codebooks`` codebooks of every frame, all conditions kept, with the durations of
        ``cond["<aligned>.durations"]`` (frames past their sum repeat the last token's state).
        Sampling can fuse it with the LM's guided log-probs (:func:`audioguide.sampling.tokens.fuse_prior`).
        """
        n = self.config.prior_codebooks
        if not n:
            raise ValueError("this codec LM has no content prior (prior_codebooks = 0)")
        encoded = self.conditions(cond, {})
        voiced = self.content.voiced(encoded)
        mask = encoded[self.aligned].mask
        return self._prior_logits(voiced, self.content.durations(cond), None, frames, mask).transpose(1, 2).float().log_softmax(-1)

    def _prior_logits(self, voiced: Tensor, durations: Tensor, kept: Tensor | None, frames: int, mask: Tensor) -> Tensor:
        """The content prior over ``frames`` frames of the duration-expanded ``voiced`` states
        (``mask``: the real tokens): logits ``[B, frames, prior_codebooks, V]``."""
        logits = self.prior(self._expand(voiced, durations, kept, frames, mask))
        return logits.view(logits.shape[0], frames, self.config.prior_codebooks, self.codebook_size)

    def embed_tokens(self, tokens: Tensor) -> Tensor:
        """``tokens [B, K, S] -> [B, S, D]``: the sum of the ``K`` codebook embeddings per step."""
        if tokens.ndim != 3 or tokens.shape[1] != self.n_codebooks:
            raise ValueError(f"tokens must have shape [B, {self.n_codebooks}, S], got {tuple(tokens.shape)}")
        return sum(table(tokens[:, k]) for k, table in enumerate(self.embed))

    def logits(self, h: Tensor) -> Tensor:
        """Final norm and the ``K`` heads: ``h [B, S, D] -> [B, K, S, V]``."""
        B, S, _ = h.shape
        out = self.heads(self.norm(h)).view(B, S, self.n_codebooks, self.codebook_size)
        return out.permute(0, 2, 1, 3)

    def _run(self, h: Tensor, pos: Tensor, mask: Tensor | None, cache: KVCache | None = None) -> Tensor:
        """The blocks over ``h [B, S, D]`` at positions ``pos [B, S]``: the rotary angles once for all
        layers; with ``cache``, keys and values are written at ``cache.length ..`` (room reserved)."""
        rope = rope_table(pos, self.config.dim // self.config.heads, self.config.rope_base)
        start = 0 if cache is None else cache.length
        for i, block in enumerate(self.blocks):
            h = block(h, rope, mask, None if cache is None else (cache.keys[i], cache.values[i]), start)
        return h

    @staticmethod
    def _prefix_positions(mask: Tensor) -> tuple[Tensor, Tensor]:
        """Per-row positions of prefix tokens ``[B, L]`` and the count of real ones ``[B]``."""
        n = mask.long().cumsum(1)
        return (n - 1).clamp_min(0), n[:, -1] if mask.shape[1] else n.new_zeros(mask.shape[0])

    # -- teacher-forced forward ----------------------------------------------------------------

    def forward(self, codes_in: Tensor, cond: Cond, keep: Keep) -> Tensor:
        """Teacher-forced logits ``[B, K, S, V]`` for delayed input columns ``codes_in [B, K, S]``.

        Column ``s`` of the output predicts delayed column ``s`` given inputs ``0..s`` (input 0 is
        normally all ``bos_id``); one causal pass over prefix + steps.
        """
        x = self.embed_tokens(codes_in)
        encoded = self.conditions(cond, keep)
        pre, mask = self._prefix(encoded)
        B, S = x.shape[0], x.shape[1]
        if pre.shape[0] != B:
            raise ValueError(f"conditions have batch {pre.shape[0]}, codes have batch {B}")
        if self.aligned:
            x = x + self._frames(cond, keep, encoded, S)
        pre_pos, n_prefix = self._prefix_positions(mask)
        steps = n_prefix[:, None] + torch.arange(S, device=x.device)
        valid = torch.cat([mask, mask.new_ones(B, S)], dim=1)
        allowed = attention_mask(valid, valid.shape[1])
        h = self._run(torch.cat([pre, x.to(pre.dtype)], dim=1), torch.cat([pre_pos, steps], 1), allowed)
        return self.logits(h[:, mask.shape[1] :])

    # -- cached decoding -----------------------------------------------------------------------

    def prefill(self, cond: Cond, keep: Keep, steps: int | None = None) -> KVCache:
        """Run the condition prefix once and return the cache the steps extend.

        The cache is allocated here for the prefix and ``steps`` decoding steps (default: the
        ``sum(durations) + K - 1`` steps of an aligned condition, else 64; more steps grow it). With
        an aligned condition the frame states of all ``sum(durations) + K - 1`` steps are computed
        here too, once per generation.
        """
        if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 0):
            raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
        encoded = self.conditions(cond, keep)
        pre, mask = self._prefix(encoded)
        pos, n_prefix = self._prefix_positions(mask)
        frames = None
        if self.aligned:
            total = -(-int(self.content.durations(cond).sum(dim=1).max()) // self.config.content_stride)
            frames = self._frames(cond, keep, encoded, total + self.n_codebooks - 1)
        B, L = mask.shape
        capacity = L + (steps if steps is not None else 64 if frames is None else frames.shape[1])
        H, D_h = self.config.heads, self.config.dim // self.config.heads
        shape = (B, H, capacity, D_h)
        valid = mask.new_ones(B, capacity)
        valid[:, :L] = mask
        bias = None
        if not bool(mask.all()):  # padded prefix keys: an additive mask, built once per generation
            bias = torch.zeros(B, 1, 1, capacity, dtype=pre.dtype, device=pre.device)
            bias[:, 0, 0, :L].masked_fill_(~mask, -math.inf)
        cache = KVCache(
            [pre.new_empty(shape) for _ in self.blocks], [pre.new_empty(shape) for _ in self.blocks],
            valid, n_prefix, frames, bias=bias, table=torch.cat([table.weight for table in self.embed]),
            head=self.heads.weight.t().contiguous() if B >= 4 else None,
        )
        self._run(pre, pos, attention_mask(mask, L), cache)
        cache.length = L
        return cache

    def step(self, cache: KVCache, tokens: Tensor) -> Tensor:
        """Logits ``[B, K, V]`` after one more delayed column ``tokens [B, K]``; writes it into ``cache``.

        The new token attends to every valid key so far and to itself: the mask is the cache's
        bias up to the new position (None without prefix padding), one for all layers.
        """
        if tokens.ndim != 2 or tokens.shape != (cache.valid.shape[0], self.n_codebooks):
            raise ValueError(f"tokens must have shape [{cache.valid.shape[0]}, {self.n_codebooks}], got {tuple(tokens.shape)}")
        if cache.table is None:
            x = self.embed_tokens(tokens[:, :, None])
        else:  # embed_tokens in one lookup: codebook k's rows start at k (V + 2)
            rows = self.codebook_size + 2
            index = tokens + torch.arange(0, self.n_codebooks * rows, rows, device=tokens.device)
            # a token outside its table must not read the next one: index -1 fails as nn.Embedding would
            index = index.masked_fill((tokens < 0) | (tokens >= rows), -1)
            x = F.embedding(index, cache.table).sum(dim=1, keepdim=True)
        if cache.frames is not None:  # past the last frame the last token repeats
            x = x + cache.frames[:, min(cache.steps, cache.frames.shape[1] - 1)][:, None]
        cache.reserve(1)
        n = cache.length + 1
        mask = None if cache.bias is None else cache.bias[..., :n]
        h = self._run(x.to(cache.keys[0].dtype), cache.next_pos[:, None], mask, cache)
        cache.length, cache.next_pos, cache.steps = n, cache.next_pos + 1, cache.steps + 1
        if cache.head is None:
            return self.logits(h)[:, :, 0]
        out = torch.addmm(self.heads.bias, self.norm(h[:, 0]), cache.head)  # self.logits, one step
        return out.view(h.shape[0], self.n_codebooks, self.codebook_size)
