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

With ``prior_codebooks = n`` a content prior reads the same duration-expanded token states (plus
the pooled speaker and style) and predicts, frame by frame and without looking at any audio token,
the codes of the first ``n`` codebooks; :meth:`CodecLM.aligned_losses` trains it by cross-entropy
on the kept rows. It is the token analogue of Grad-TTS's encoder loss (Popov et al. 2021, eq. 14):
the autoregressive loss alone lets the LM predict a frame by copying the frames before it (at
93.75 frames a second neighbours mostly agree) and learn to read its content slowly, while the
prior gives the token encoder a direct signal of what each phoneme sounds like.

KV cache
--------
:class:`KVCache` holds, per layer, the rotated keys and the values ``[B, H, L, D_h]`` of every token
seen so far (prefix included, padding included), the key validity mask ``[B, L]`` and the next
position id per row ``[B]``. :meth:`CodecLM.prefill` fills it from the conditions and
:meth:`CodecLM.step` appends one time step to it.

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
from audioguide.models.layers import apply_rope, rope_angles

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
        if self.prior_codebooks < 0 or (self.prior_codebooks and not self.aligned):
            raise ValueError(f"prior_codebooks must be >= 0 and needs an aligned condition, got {self.prior_codebooks}")


@dataclass
class KVCache:
    """Keys and values of every token seen so far, per layer (mutable decoding state).

    ``keys[i]`` and ``values[i]`` are ``[B, H, L, D_h]`` (keys already rotated), ``valid`` is
    ``[B, L]`` (False for prefix padding) and ``next_pos`` ``[B]`` the position id of the next token.
    With an aligned condition, ``frames`` ``[B, S, D]`` holds what each step adds to its input and
    ``steps`` counts the steps taken.
    """

    keys: list[Tensor]
    values: list[Tensor]
    valid: Tensor
    next_pos: Tensor
    frames: Tensor | None = None
    steps: int = 0

    @property
    def length(self) -> int:
        return self.valid.shape[1]


def rotary(x: Tensor, pos: Tensor, base: float) -> Tensor:
    """Rotary position embedding of ``x [B, H, S, D]`` at per-row positions ``pos [B, S]`` (in float32)."""
    cos, sin = rope_angles(pos.float(), x.shape[-1], base)
    return apply_rope(x.float(), cos[:, None], sin[:, None]).to(x.dtype)


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
        self, h: Tensor, pos: Tensor, valid: Tensor, past: tuple[Tensor, Tensor] | None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """``h [B, S, D]`` at positions ``pos [B, S]``; ``valid [B, L_past + S]``. Returns output and ``(k, v)``."""
        B, S, _ = h.shape
        q, k, v = self.qkv(h).view(B, S, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q = rotary(self.q_norm(q), pos, self.base)
        k = rotary(self.k_norm(k), pos, self.base)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask(valid, S))
        return self.out(o.transpose(1, 2).reshape(B, S, -1)), (k, v)


class Block(nn.Module):
    """Pre-norm transformer block: ``h + Attn(LN(h))`` then ``h + MLP(LN(h))``."""

    def __init__(self, config: CodecLMConfig) -> None:
        super().__init__()
        hidden = int(config.dim * config.mlp_ratio)
        self.norm1, self.norm2 = nn.LayerNorm(config.dim), nn.LayerNorm(config.dim)
        self.attn = Attention(config)
        self.mlp = nn.Sequential(nn.Linear(config.dim, hidden), nn.GELU(), nn.Linear(hidden, config.dim))

    def forward(
        self, h: Tensor, pos: Tensor, valid: Tensor, past: tuple[Tensor, Tensor] | None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        a, kv = self.attn(self.norm1(h), pos, valid, past)
        h = h + a
        return h + self.mlp(self.norm2(h)), kv


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
        return self.content.regulate(self.content.encode(enc), self.content.durations(cond), keep.get(self.aligned), steps, enc.mask)

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
        logits = self.prior(self.content.regulate(voiced, durations, kept, frames, mask))
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

    def _run(
        self, h: Tensor, pos: Tensor, valid: Tensor, past: KVCache | None
    ) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        kvs = []
        for i, block in enumerate(self.blocks):
            h, kv = block(h, pos, valid, None if past is None else (past.keys[i], past.values[i]))
            kvs.append(kv)
        return h, kvs

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
        h, _ = self._run(torch.cat([pre, x.to(pre.dtype)], dim=1), torch.cat([pre_pos, steps], 1), valid, None)
        return self.logits(h[:, mask.shape[1] :])

    # -- cached decoding -----------------------------------------------------------------------

    def prefill(self, cond: Cond, keep: Keep) -> KVCache:
        """Run the condition prefix once and return the cache the steps extend.

        With an aligned condition the frame states of all ``sum(durations) + K - 1`` steps are
        computed here too, once per generation.
        """
        encoded = self.conditions(cond, keep)
        pre, mask = self._prefix(encoded)
        pos, n_prefix = self._prefix_positions(mask)
        _, kvs = self._run(pre, pos, mask, None)
        frames = None
        if self.aligned:
            total = int(self.content.durations(cond).sum(dim=1).max())
            frames = self._frames(cond, keep, encoded, total + self.n_codebooks - 1)
        return KVCache([k for k, _ in kvs], [v for _, v in kvs], mask, n_prefix, frames)

    def step(self, cache: KVCache, tokens: Tensor) -> Tensor:
        """Logits ``[B, K, V]`` after one more delayed column ``tokens [B, K]``; appends it to ``cache``."""
        if tokens.ndim != 2 or tokens.shape[0] != cache.valid.shape[0]:
            raise ValueError(f"tokens must have shape [{cache.valid.shape[0]}, K], got {tuple(tokens.shape)}")
        x = self.embed_tokens(tokens[:, :, None])
        if cache.frames is not None:  # past the last frame the last token repeats
            x = x + cache.frames[:, min(cache.steps, cache.frames.shape[1] - 1)][:, None]
        valid = torch.cat([cache.valid, cache.valid.new_ones(x.shape[0], 1)], dim=1)
        h, kvs = self._run(x.to(cache.keys[0].dtype), cache.next_pos[:, None], valid, cache)
        cache.keys, cache.values = [k for k, _ in kvs], [v for _, v in kvs]
        cache.valid, cache.next_pos, cache.steps = valid, cache.next_pos + 1, cache.steps + 1
        return self.logits(h)[:, :, 0]
