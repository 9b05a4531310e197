"""A Diffusion Transformer over 1-D latent sequences.

Peebles & Xie 2023, "Scalable Diffusion Models with Transformers" (DiT): a stack of transformer
blocks whose LayerNorms are modulated by a conditioning vector (adaLN, §3.2), with every residual
branch gated and the modulation and output projection initialised to zero ("adaLN-Zero", §3.2),
so that each block starts as the identity and the network's initial output is exactly zero.

Conditioning
------------
* Patches (``patch = p``): ``p`` consecutive latent frames form one transformer token (DiT's
  patchify, §3.1, in one dimension), so attention costs ``p^2`` times less; the output layer
  predicts the ``p`` frames of each token. A clip is padded to whole patches and cut back.
* Time: sinusoidal features of ``t`` (Vaswani et al. 2017, §3.5) through a two-layer MLP; a
  mean-flow model (Geng et al. 2025, MeanFlow, §4) also embeds the interval length ``t - r`` with
  its own MLP and adds it (``r`` defaults to ``t``, i.e. the instantaneous velocity).
* Pooled conditions (``pool = True``): the masked mean of each condition, through its own Linear,
  is added to the adaLN vector; this carries global conditions such as a speaker embedding.
* Sequence conditions: ``cond_mode = "cross"`` attends from the frames to the concatenated
  condition sequences (each projected by its own Linear from the conditioner's width, keys masked
  by the conditions' masks; PixArt-alpha style cross-attention, gated like the other branches);
  ``cond_mode = "prefix"`` prepends the projected condition tokens to the frames (in-context
  conditioning, DiT §3.2) and drops them again after the last block.

* Frame-aligned condition (``aligned = "text"``): that condition's tokens (phonemes) pass through
  ``encoder_depth`` transformer blocks with convolutional feed-forwards (FastSpeech's FFT blocks,
  Ren et al. 2019, §3.1), are expanded to the frames by per-token durations (the length regulator,
  :mod:`audioguide.models.duration`) and added to the frame inputs, the way FastSpeech and
  Grad-TTS (Popov et al. 2021, §3) condition a decoder on aligned text. The encoder and the
  duration predictor are the :class:`~audioguide.models.aligned.AlignedContent` module
  (``self.content``) that the codec LM shares. The durations travel in
  ``cond["<name>.durations"]`` ``[B, L]`` (teacher durations in training); a duration predictor
  on the encoded tokens plus the pooled other conditions (speaker, style, through the projections
  that also pool them into the adaLN vector) supplies them at inference
  (:meth:`DiT.predict_durations`). A dropped aligned condition is its null token on
  every frame, so classifier-free guidance on content works as on any condition. With
  ``prior_input`` the frames also read the prior mean ``mu`` (the regulated tokens with the pooled
  speaker and style, projected to the latent channels and trained towards the latents, Grad-TTS
  eq. 14), as Matcha-TTS's decoder does (Mehta et al. 2024, §3.2), through a zero-initialised
  projection. With ``decoder_depth > 0`` the regulated states (one token per patch) first pass
  through that many FFT blocks, FastSpeech's decoder (§3.1); ``mu`` is read from their output and
  the frames also read the decoder states themselves (zero-initialised projection). The prior
  loss then trains a whole FastSpeech regression model inside the DiT, so content is in the
  frame inputs long before the generative loss alone would put it there.

Guidance is never computed here: rows whose ``keep`` flag is False simply see their
conditioner's null condition (:meth:`Generator.conditions`); :mod:`audioguide.guidance` batches
the branches. Likewise for perturbation guidance the forward takes per-row, per-block flags,
``perturb = {"attention": [B, depth], "skip": [B, depth]}`` (:meth:`DiT.perturbations`): a flagged
block's self-attention map is the identity for that row (PAG, Ahn et al. 2024), or the block is
skipped, its output being its input (STG-R, Hyung et al. 2024); which rows, and what their
predictions are combined into, is decided in :mod:`audioguide.guidance`. Without flags (or with
none set) the forward is exactly what it is without the input.

Guidance-scale inputs (``guidance_embed = ["text", ...]``): for guidance distillation (Meng et al.
2023, "On Distillation of Guided Diffusion Models", CVPR, §3.1 stage one: a student ``x_eta(z, w)``
that takes the guidance scale ``w`` as input, eq. 6-7) the forward takes ``guidance`` ``[B, n]``, one
scale per listed condition (absent: all 1). Each scale's embedding, an MLP over sinusoidal features
of ``w - 1`` (:class:`ScaleEmbedding`) whose last layer starts at zero, is added to the adaLN vector
(as the time embedding is), and with ``guidance_adapters`` also, through a zero-initialised linear
map per block, to that block's adaLN modulation: the adapter variant of Jensen et al. 2025
("Efficient Distillation of Classifier-Free Guidance using Adapters", arXiv 2503.07274), whose
trainable set is exactly these parameters (:func:`is_guidance_key`). The embedding is exactly zero
at ``w = 1`` and on rows where its condition is dropped (a scale on a null condition means
nothing), so a student warm-started from a teacher is the teacher at any ``w`` until it trains, and
``w = 1`` stays the plain conditional prediction of the network without the embedding. What scale
each row gets is decided in :mod:`audioguide.guidance` (``distilled = true``); with
``guidance_embed`` empty the DiT has none of these parameters and computes what it did before.

Attention
---------
:class:`~audioguide.models.layers.Attention` (:mod:`audioguide.models.layers`) serves self- and
cross-attention; :func:`math_attention` switches a whole model to its explicit path, which
``torch.func.jvp`` (the mean-flow loss) can differentiate. Keys whose mask is False (padded
frames, padded or dropped condition tokens) get zero weight. Optional RMSNorm on queries and keys
(``qk_norm``; Henry et al. 2020, Dehghani et al. 2023) keeps the logits bounded, which mean-flow
training needs for stability. Rotary position embedding
(``rope``; Su et al. 2021, RoFormer, eq. 34) encodes frame positions in self-attention; prefix
condition tokens sit at position 0 (unrotated), so a sample's output never depends on how much
padding the batch adds. Without ``rope``, sinusoidal absolute positions are added to the frames.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audioguide.conditioners import Conditioner, Encoded
from audioguide.core import PREDICTION_KINDS, Cond, Keep
from audioguide.models.aligned import AlignedContent, TokenBlock, token_blocks
from audioguide.models.base import Generator, init_random, masked_mean
from audioguide.models.layers import Attention, attention, math_attention, rope_angles, sinusoidal

# attention and math_attention are served from here too (the mean-flow trainer, older imports)
__all__ = [
    "COND_MODES",
    "GUIDANCE_PREFIXES",
    "DiT",
    "DiTBlock",
    "DiTConfig",
    "FinalLayer",
    "ScaleEmbedding",
    "TimeEmbedding",
    "attention",
    "is_guidance_key",
    "math_attention",
]

COND_MODES: tuple[str, ...] = ("cross", "prefix")
GUIDANCE_PREFIXES: tuple[str, ...] = ("guidance_embed.", "guidance_adapters.")
"""Parameter-name prefixes of the guidance-scale inputs: what an adapter-only student trains."""


def is_guidance_key(name: str) -> bool:
    """Whether a parameter / state-dict key belongs to the guidance-scale embeddings or adapters."""
    return name.startswith(GUIDANCE_PREFIXES)


@dataclass(frozen=True)
class DiTConfig:
    """Hyper-parameters of :class:`DiT`; every field is TOML-friendly."""

    dim: int = 64
    depth: int = 2
    heads: int = 4
    mlp_ratio: float = 4.0
    kind: str = "flow"  # prediction kind: flow | eps | v | x0
    mean_flow: bool = False  # also takes r: predicts the average velocity u(z, r, t)
    cond_mode: str = "cross"  # cross | prefix
    qk_norm: bool = True  # RMSNorm on queries and keys
    rope: bool = True  # rotary positions in self-attention (else sinusoidal absolute positions)
    pool: bool = True  # add each condition's masked mean to the adaLN vector
    patch: int = 1  # latent frames per transformer token (DiT's patchify, §3.1, in 1-D)
    aligned: str = ""  # a condition expanded to the frames by token durations (FastSpeech length regulator)
    encoder_depth: int = 2  # transformer blocks over the aligned condition's tokens
    prior_input: bool = False  # aligned: also feed the prior mean mu to the frames (Matcha-TTS)
    decoder_depth: int = 0  # aligned: FFT blocks over the regulated frames (FastSpeech's decoder) before mu
    guidance_embed: tuple[str, ...] = ()  # conditions whose guidance scale is an input (guidance distillation)
    guidance_adapters: bool = False  # guidance_embed: also a zero-initialised adapter on each block's adaLN
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dim <= 0 or self.depth < 0 or self.heads <= 0:
            raise ValueError(f"dim, heads must be > 0 and depth >= 0, got {self.dim}, {self.heads}, {self.depth}")
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")
        if (self.dim // self.heads) % 2:
            raise ValueError(f"head width dim / heads = {self.dim // self.heads} must be even")
        if not self.mlp_ratio > 0:
            raise ValueError(f"mlp_ratio must be > 0, got {self.mlp_ratio}")
        if self.kind not in PREDICTION_KINDS:
            raise ValueError(f"kind must be one of {', '.join(PREDICTION_KINDS)}, got {self.kind!r}")
        if self.cond_mode not in COND_MODES:
            raise ValueError(f"cond_mode must be one of {', '.join(COND_MODES)}, got {self.cond_mode!r}")
        if self.patch < 1:
            raise ValueError(f"patch must be >= 1, got {self.patch}")
        if self.prior_input and not self.aligned:
            raise ValueError("prior_input needs an aligned condition")
        if self.encoder_depth < 0 or self.decoder_depth < 0:
            raise ValueError(f"encoder_depth and decoder_depth must be >= 0, got {self.encoder_depth}, {self.decoder_depth}")
        if self.decoder_depth and not self.aligned:
            raise ValueError("decoder_depth needs an aligned condition")
        if self.mean_flow and self.kind != "flow":
            raise ValueError(f"a mean-flow model predicts kind 'flow', got {self.kind!r}")
        if isinstance(self.guidance_embed, str):
            raise ValueError(f"guidance_embed is a list of condition names, got {self.guidance_embed!r}")
        object.__setattr__(self, "guidance_embed", tuple(self.guidance_embed))
        if len(set(self.guidance_embed)) != len(self.guidance_embed) or not all(self.guidance_embed):
            raise ValueError(f"guidance_embed must name distinct conditions, got {list(self.guidance_embed)}")
        if self.guidance_adapters and not self.guidance_embed:
            raise ValueError("guidance_adapters needs guidance_embed (the scales they adapt to)")


# ---------------------------------------------------------------------------------------------
# Embeddings and blocks
# ---------------------------------------------------------------------------------------------


class TimeEmbedding(nn.Module):
    """DiT's timestep embedder: sinusoidal features of ``t`` in ``[0, 1]`` -> Linear-SiLU-Linear."""

    def __init__(self, dim: int, features: int = 256) -> None:
        super().__init__()
        self.features = features
        self.mlp = nn.Sequential(nn.Linear(features, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(sinusoidal(t, self.features))


class ScaleEmbedding(nn.Module):
    """A guidance scale's embedding: sinusoidal features of ``w - 1`` -> Linear-SiLU-Linear, minus the
    same at ``w = 1``, zero where ``w = 1`` exactly. The last layer starts at zero (the embedding is
    then zero for every ``w``: a student warm-started from a teacher is the teacher).

    Frequencies ``100 * 10000^(-i / (features / 2))`` rad per unit of scale (:func:`sinusoidal`),
    so the slowest features vary smoothly over the scales guidance uses (1 to ~10)."""

    def __init__(self, dim: int, features: int = 256) -> None:
        super().__init__()
        self.features = features
        self.mlp = nn.Sequential(nn.Linear(features, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, w: Tensor) -> Tensor:
        off = w - 1.0
        feats = sinusoidal(torch.cat([off, off.new_zeros(1)]), self.features, scale=100.0)
        emb = self.mlp(feats)
        return torch.where((off == 0)[:, None], 0.0, emb[:-1] - emb[-1:])


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN: ``x (1 + scale) + shift`` with per-sample ``shift``, ``scale`` ``[B, dim]`` (DiT §3.2)."""
    return x * (1.0 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    """adaLN-Zero block: gated self-attention, optional gated cross-attention, gated MLP."""

    def __init__(self, config: DiTConfig, cross: bool) -> None:
        super().__init__()
        d = config.dim
        self.cross = cross
        self.norm_attn = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(d, config.heads, config.qk_norm)
        self.norm_mlp = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        hidden = max(1, int(round(d * config.mlp_ratio)))
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, d))
        if cross:
            self.norm_cross = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
            self.cross_attn = Attention(d, config.heads, config.qk_norm)
        # shift, scale, gate for each of the 2 (or 3) residual branches
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(d, (9 if cross else 6) * d))

    def forward(
        self,
        h: Tensor,
        c: Tensor,
        mask: Tensor,
        rope: tuple[Tensor, Tensor] | None,
        context: Encoded | None,
        identity: Tensor | None = None,
        adapter: Tensor | None = None,
    ) -> Tensor:
        """``identity`` ``[B]`` bool: rows whose self-attention map is the identity (see :class:`Attention`);
        ``adapter`` ``[B, n dim]``: added to the adaLN modulation (guidance-scale adapters)."""
        mods = self.ada(c)
        if adapter is not None:
            mods = mods + adapter
        mods = mods.chunk(9 if self.cross else 6, dim=-1)
        shift, scale, gate = mods[0:3]
        x = modulate(self.norm_attn(h), shift, scale)
        h = h + gate[:, None] * self.attn(x, x, mask, rope, identity)
        if self.cross and context is not None:
            shift, scale, gate = mods[6:9]
            x = modulate(self.norm_cross(h), shift, scale)
            h = h + gate[:, None] * self.cross_attn(x, context.emb, context.mask)
        shift, scale, gate = mods[3:6]
        return h + gate[:, None] * self.mlp(modulate(self.norm_mlp(h), shift, scale))


class FinalLayer(nn.Module):
    """DiT's output head: adaLN (shift, scale) then a Linear to the latent channels."""

    def __init__(self, dim: int, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.out = nn.Linear(dim, channels)

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.ada(c).chunk(2, dim=-1)
        return self.out(modulate(self.norm(h), shift, scale))


# ---------------------------------------------------------------------------------------------
# The generator
# ---------------------------------------------------------------------------------------------


class DiT(Generator):
    """Diffusion Transformer (Peebles & Xie 2023) over latents ``[B, C, T]``; see the module doc."""

    Config = DiTConfig

    def __init__(self, config: DiTConfig, channels: int, conditioners: Mapping[str, Conditioner]) -> None:
        super().__init__(conditioners)
        self.config, self.kind, self.mean_flow = config, config.kind, config.mean_flow
        self.aligned = config.aligned
        if self.aligned and self.aligned not in conditioners:
            raise ValueError(f"aligned names {self.aligned!r}, which is not a condition ({', '.join(conditioners) or 'none'})")
        d = config.dim
        self.inp = nn.Linear(channels * config.patch, d)
        self.time = TimeEmbedding(d)
        self.interval = TimeEmbedding(d) if config.mean_flow else None
        sequences = {n: c for n, c in conditioners.items() if n != self.aligned}
        self.cond_proj = nn.ModuleDict({n: nn.Linear(c.dim, d) for n, c in sequences.items()})
        self.pool_proj = nn.ModuleDict(
            {n: nn.Linear(c.dim, d) for n, c in conditioners.items()} if config.pool else {}
        )
        self.content = None
        if self.aligned:  # its pooled speaker and style come through pool_proj, shared with adaLN
            width = conditioners[self.aligned].dim
            self.content = AlignedContent(self.aligned, width, d, config.heads, config.qk_norm, config.encoder_depth)
            self.moved = self.content.former("content")
            # FastSpeech's decoder over the regulated states, one token per patch; mu is read from it
            self.frame_blocks = nn.ModuleList(
                TokenBlock(d, config.heads, config.qk_norm) for _ in range(config.decoder_depth)
            )
            self.frame_norm = nn.LayerNorm(d) if config.decoder_depth else None
            self.frame_in = nn.Linear(d, d) if config.decoder_depth else None
            # Grad-TTS's encoder output mu: per frame, or per patch (p frames) after the decoder
            self.prior = nn.Linear(d, channels * (config.patch if config.decoder_depth else 1))
        else:
            self.frame_norm = self.frame_in = None
        self.prior_in = nn.Linear(channels * config.patch, d) if self.aligned and config.prior_input else None
        cross = config.cond_mode == "cross" and len(sequences) > 0
        self.blocks = nn.ModuleList(DiTBlock(config, cross) for _ in range(config.depth))
        self.final = FinalLayer(d, channels * config.patch)
        init_random(self, config.seed, self.moved)
        self._init_zero()
        self._guidance_inputs(config, conditioners, cross)

    def _guidance_inputs(self, config: DiTConfig, conditioners: Mapping[str, Conditioner], cross: bool) -> None:
        """The guidance-scale embeddings (and adapters): built after the rest of the network, and drawn
        from their own generator, so the rest is what the same seed gives without them."""
        unknown = [n for n in config.guidance_embed if n not in conditioners]
        if unknown:
            raise ValueError(f"guidance_embed names {unknown[0]!r}, which is not a condition ({', '.join(conditioners) or 'none'})")
        if not config.guidance_embed:
            return
        d, mods = config.dim, 9 if cross else 6
        self.guidance_embed = nn.ModuleDict({n: ScaleEmbedding(d) for n in config.guidance_embed})
        if config.guidance_adapters:  # no bias: zero embedding, zero modulation
            self.guidance_adapters = nn.ModuleList(nn.Linear(d, mods * d, bias=False) for _ in self.blocks)
        init_random(self.guidance_embed, config.seed + 1)
        with torch.no_grad():
            for emb in self.guidance_embed.values():
                emb.mlp[-1].weight.zero_()
                emb.mlp[-1].bias.zero_()
            for adapter in getattr(self, "guidance_adapters", ()):
                adapter.weight.zero_()

    @classmethod
    def guidance_scales(cls, config: DiTConfig) -> tuple[str, ...]:
        """The conditions whose guidance scale a model built from ``config`` takes as its ``guidance``
        input, in that input's column order."""
        return tuple(config.guidance_embed)

    @property
    def guidance_inputs(self) -> tuple[str, ...]:
        """:meth:`guidance_scales` of this model (what ``perturbable`` is for PAG: its inputs, which
        :mod:`audioguide.guidance` decides)."""
        return type(self).guidance_scales(self.config)

    def guidance_keys(self) -> list[str]:
        """The state-dict keys of the guidance-scale embeddings and adapters (none without them)."""
        return [k for k in self.state_dict() if is_guidance_key(k)]

    @classmethod
    def perturbations(cls, config: DiTConfig) -> dict[str, int]:
        """Per-row perturbations of the ``perturb`` input: ``attention`` (self-attention map replaced by
        the identity) and ``skip`` (block skipped), each over the ``depth`` transformer blocks."""
        return {"attention": config.depth, "skip": config.depth}

    def _init_zero(self) -> None:
        """adaLN-Zero (DiT §3.2): zero modulation and output projection; unit qk-norm gains."""
        with torch.no_grad():
            for block in self.blocks:
                block.ada[-1].weight.zero_()
                block.ada[-1].bias.zero_()
            zeros = [self.final.ada[-1].weight, self.final.ada[-1].bias, self.final.out.weight, self.final.out.bias]
            for late in (self.prior_in, self.frame_in):
                if late is not None:  # starts as the model without it (warm starts keep their behaviour)
                    zeros += [late.weight, late.bias]
            for p in zeros:
                p.zero_()
            for m in self.modules():
                if isinstance(m, (nn.RMSNorm, nn.LayerNorm)) and m.weight is not None:
                    m.weight.fill_(1.0)
                if isinstance(m, nn.LayerNorm) and m.bias is not None:
                    m.bias.zero_()

    # -- pieces of the forward -----------------------------------------------------------------

    def _adaln_vector(self, t: Tensor, r: Tensor, conds: Mapping[str, Encoded]) -> Tensor:
        """``c = emb(t) [+ emb(t - r)] [+ sum_k W_k mean(cond_k)]``, shape ``[B, dim]``."""
        c = self.time(t)
        if self.interval is not None:
            c = c + self.interval(t - r)
        for name, proj in self.pool_proj.items():
            c = c + proj(masked_mean(conds[name]))
        return c

    def _guidance_vector(self, guidance: Tensor | None, keep: Keep, B: int, like: Tensor) -> Tensor | None:
        """``sum_k [keep_k] emb_k(w_k)`` ``[B, dim]`` over the ``guidance_embed`` conditions (None when
        the input is absent): a dropped condition's scale adds nothing."""
        if guidance is None:
            return None
        names = self.guidance_inputs
        if not names:
            raise ValueError("this DiT takes no guidance input (its config has no guidance_embed)")
        guidance = torch.as_tensor(guidance, dtype=like.dtype, device=like.device)
        if tuple(guidance.shape) != (B, len(names)):
            raise ValueError(f"guidance must be [{B}, {len(names)}] (scales of {', '.join(names)}), got {tuple(guidance.shape)}")
        g = None
        for i, name in enumerate(names):
            emb = self.guidance_embed[name](guidance[:, i])
            kept = keep.get(name)
            if kept is not None:
                emb = torch.where(kept.to(emb.device)[:, None], emb, 0.0)
            g = emb if g is None else g + emb
        return g

    def _context(self, conds: Mapping[str, Encoded]) -> Encoded | None:
        """The projected condition sequences (the aligned one excepted), concatenated along length."""
        names = [n for n in conds if n in self.cond_proj]
        if not names:
            return None
        embs = [self.cond_proj[n](conds[n].emb) for n in names]
        masks = [conds[n].mask for n in names]
        return Encoded(torch.cat(embs, dim=1), torch.cat(masks, dim=1))

    # -- the frame-aligned condition -------------------------------------------------------------

    def _voiced_tokens(self, conds: Mapping[str, Encoded], tokens: Tensor | None = None) -> Tensor:
        """The aligned tokens' states (``tokens``, computed when not given) plus the pooled other
        conditions (speaker, style): what the duration predictor and the prior see."""
        return self.content.voiced(conds, tokens, self.pool_proj)

    @torch.no_grad()
    def predict_durations(self, cond: Cond, pace: float = 1.0, frames: int | None = None) -> Tensor:
        """Durations ``[B, L]`` of the aligned tokens, all conditions kept: see :meth:`AlignedContent.predict_durations`."""
        if not self.aligned:
            raise ValueError("this DiT has no aligned condition")
        return self.content.predict_durations(self.conditions(cond, {}), pace, frames, self.pool_proj)

    def aligned_losses(self, cond: Cond, keep: Keep, x0: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
        """Direct supervision of the aligned condition's encoder, over the rows where it is kept:

        * ``duration``: the duration predictor's MSE on ``log(1 + d)`` against
          ``cond["<aligned>.durations"]`` (FastSpeech §3.3);
        * ``prior``: the regulated token states (with the pooled speaker and style; through the
          decoder when ``decoder_depth > 0``), projected to the latent channels, regressed onto
          the clean latents ``x0`` ``[B, C, T]`` (Grad-TTS, Popov et al. 2021, eq. 14, the encoder
          loss ``||x0 - mu||^2``), which teaches the encoder what each phoneme sounds like far
          faster than the generative loss alone.

        ``cond`` prepared by :meth:`prepare` (same ``keep``, ``mask`` and length) shares the
        encoder and decoder states with the training step's forward; otherwise they are computed.
        """
        T = x0.shape[-1]
        if f"{self.aligned}.mu" not in cond:
            cond = self.prepare(cond, keep, T, mask)
        enc_mask = cond[f"{self.aligned}.mask"]
        kept = self.content.kept(keep, enc_mask)
        log_d = cond[f"{self.aligned}.log_durations"]
        duration = self.content.duration_loss(log_d, self.content.durations(cond), enc_mask, kept)
        # a dropped row's mu is the null token's; only kept rows enter the loss
        mu = cond[f"{self.aligned}.mu"][:, :T].transpose(1, 2)
        frames = torch.ones(x0.shape[0], T, dtype=torch.bool, device=x0.device) if mask is None else mask.bool()
        w = (frames & kept[:, None]).to(x0.dtype)[:, None]
        prior = ((mu - x0).square() * w).sum() / (w.sum() * x0.shape[1]).clamp_min(1.0)
        return {"duration": duration, "prior": prior}

    def _patches(self, B: int, T: int, mask: Tensor | None, device: torch.device) -> tuple[int, Tensor]:
        """``(pad, patch mask [B, (T + pad) / p])``: the padding to whole patches and which are real."""
        frames = torch.ones(B, T, dtype=torch.bool, device=device) if mask is None else mask.bool()
        pad = -T % self.config.patch
        return pad, F.pad(frames, (0, pad)).view(B, -1, self.config.patch).any(dim=-1)

    def prepare(self, cond: Cond, keep: Keep, frames: int, mask: Tensor | None = None) -> dict[str, Tensor]:
        """``cond`` plus the aligned condition's step-invariant states for ``frames`` latent frames
        (:func:`audioguide.core.prepare`); a DiT without an aligned condition returns a copy of ``cond``.

        Adds ``<aligned>.inputs`` ``[B, P, dim]`` (what the aligned condition adds to the ``P``
        patch tokens: the regulated token states, the decoder states and ``mu`` through their
        projections), ``<aligned>.mu`` ``[B, P p, C]`` (the prior mean) and
        ``<aligned>.log_durations`` ``[B, L]`` (the duration predictor's output). The token
        encoder, length regulator and decoder thus run once per generation instead of once per
        sampling step and branch, and once per training step instead of twice.
        """
        out = dict(cond)
        if self.aligned:
            states = self._aligned_states(cond, keep, frames, mask, losses=True)
            out.update({f"{self.aligned}.{name}": v for name, v in states.items()})
        return out

    def _aligned_states(self, cond: Cond, keep: Keep, frames: int, mask: Tensor | None, losses: bool) -> dict[str, Tensor]:
        """``inputs`` (and, with ``losses``, ``mu`` and ``log_durations``): see :meth:`prepare`."""
        B, p = cond[self.aligned].shape[0], self.config.patch
        pad, patches = self._patches(B, frames, mask, cond[self.aligned].device)
        conds = self.conditions(cond, keep)
        durations, kept = self.content.durations(cond), keep.get(self.aligned)
        tokens = self.content.encode(conds[self.aligned])
        token_mask = conds[self.aligned].mask
        regulated = self.content.regulate(tokens, durations, kept, frames + pad, token_mask)
        inputs = regulated.view(B, -1, p, regulated.shape[-1]).mean(dim=2)
        out: dict[str, Tensor] = {}
        if losses or self.frame_in is not None or self.prior_in is not None:
            voiced = self._voiced_tokens(conds, tokens)
            g, mu = self._prior(voiced, durations, kept, frames + pad, patches, token_mask)
            if self.frame_in is not None:  # FastSpeech's decoder states
                inputs = inputs + self.frame_in(g)
            if self.prior_in is not None:  # Matcha-TTS: the frames also read the prior mean mu
                inputs = inputs + self.prior_in(mu.reshape(B, patches.shape[1], -1))
            if losses:
                out["mu"], out["log_durations"] = mu, self.content.log_durations(conds, voiced)
        return {"inputs": inputs, **out}

    def _prior(
        self, voiced: Tensor, durations: Tensor, kept: Tensor | None, frames: int, mask: Tensor, token_mask: Tensor
    ) -> tuple[Tensor | None, Tensor]:
        """``(g, mu)``: the decoder's states ``[B, frames / p, dim]`` (None without a decoder) and the
        prior mean ``mu`` ``[B, frames, C]`` from the voiced token states ``[B, L, dim]``.

        ``frames`` is a whole number of patches; ``mask`` ``[B, frames / p]`` marks real patches and
        ``token_mask`` ``[B, L]`` real tokens. The decoder (FastSpeech §3.1: FFT blocks after the
        length regulator) runs one token per patch.
        """
        regulated = self.content.regulate(voiced, durations, kept, frames, token_mask)
        if self.frame_norm is None:
            return None, self.prior(regulated)
        B, p = voiced.shape[0], self.config.patch
        g = regulated.view(B, frames // p, p, -1).mean(dim=2)
        g = self.frame_norm(token_blocks(self.frame_blocks, g, mask, self.config.heads))
        return g, self.prior(g).reshape(B, frames, -1)

    def _perturb_flags(self, perturb: Mapping[str, Tensor] | None, B: int) -> tuple[Tensor | None, Tensor | None]:
        """``(identity, skip)`` flags ``[B, depth]`` bool from the ``perturb`` input (None where absent)."""
        if not perturb:
            return None, None
        known = type(self).perturbations(self.config)
        unknown = sorted(set(perturb) - set(known))
        if unknown:
            raise ValueError(f"perturb names {', '.join(map(repr, unknown))}; this DiT perturbs {', '.join(known)}")
        flags = []
        for kind in ("attention", "skip"):
            f = perturb.get(kind)
            if f is not None and (f.dtype != torch.bool or tuple(f.shape) != (B, self.config.depth)):
                raise ValueError(f"perturb[{kind!r}] must be bool [{B}, {self.config.depth}], got {f.dtype} {tuple(f.shape)}")
            flags.append(f)
        return flags[0], flags[1]

    def _positions(self, h: Tensor, prefix: int) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        """Frame positions: RoPE angles (prefix tokens at position 0), or absolute sinusoids added."""
        frames = h.shape[1] - prefix
        pos = torch.arange(frames, dtype=h.dtype, device=h.device)
        if not self.config.rope:
            absolute = sinusoidal(pos, self.config.dim, scale=1.0)
            return h + F.pad(absolute, (0, 0, prefix, 0))[None], None
        pos = torch.cat([torch.zeros(prefix, dtype=h.dtype, device=h.device), pos])
        return h, rope_angles(pos, self.config.dim // self.config.heads)

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        cond: Cond,
        keep: Keep,
        mask: Tensor | None = None,
        r: Tensor | None = None,
        perturb: Mapping[str, Tensor] | None = None,
        guidance: Tensor | None = None,
    ) -> Tensor:
        """Prediction of ``self.kind`` (or average velocity ``u(x, r, t)``) shaped like ``x`` ``[B, C, T]``.

        ``t`` and ``r`` are ``[B]`` (``r`` defaults to ``t``); ``mask`` ``[B, T]`` marks real frames
        (padded frames are never attended to; their own outputs are meaningless). A ``cond`` from
        :meth:`prepare` must have been prepared with this ``keep``, ``mask`` and length. ``perturb``
        (``{"attention" | "skip": [B, depth] bool}``) perturbs the flagged blocks of the flagged rows
        (see the module docstring); the other rows are computed as without it. ``guidance`` ``[B, n]``
        holds each row's guidance scale of the ``guidance_embed`` conditions (absent: all 1, exactly
        the forward without the input).
        """
        identity, skip = self._perturb_flags(perturb, x.shape[0])
        B, _, T = x.shape
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(B)
        r = t if r is None else torch.as_tensor(r, dtype=x.dtype, device=x.device).expand(B)
        conds = self.conditions(cond, keep)
        c = self._adaln_vector(t, r, conds)
        g = self._guidance_vector(guidance, keep, B, c)
        adapters = None
        if g is not None:
            c = c + g
            if self.config.guidance_adapters:
                adapters = [a(F.silu(g)) for a in self.guidance_adapters]
        context = self._context(conds)
        # pad to whole patches; padded frames are masked and cut off again
        pad, patches = self._patches(B, T, mask, x.device)
        if mask is not None:  # a padded frame is zero, as the patch padding is: its row sees what it sees alone
            x = x * mask[:, None].to(x.dtype)
        h = self.inp(F.pad(x, (0, pad)).transpose(1, 2).reshape(B, patches.shape[1], -1))
        if self.aligned:
            inputs = cond.get(f"{self.aligned}.inputs")
            if inputs is None:  # not prepared: the step-invariant states, here
                inputs = self._aligned_states(cond, keep, T, mask, losses=False)["inputs"]
            elif inputs.shape[:2] != h.shape[:2]:
                raise ValueError(f"cond was prepared for {inputs.shape[1]} patches of {inputs.shape[0]} rows, "
                                 f"this forward has {h.shape[1]} of {h.shape[0]}")
            h = h + inputs
        mask = patches
        prefix = 0
        if self.config.cond_mode == "prefix" and context is not None:
            prefix = context.emb.shape[1]
            h = torch.cat([context.emb, h], dim=1)
            mask = torch.cat([context.mask, mask], dim=1)
        h, rope = self._positions(h, prefix)
        for i, block in enumerate(self.blocks):
            ident = None if identity is None or not bool(identity[:, i].any()) else identity[:, i]
            out = block(h, c, mask, rope, context, ident, None if adapters is None else adapters[i])
            h = out if skip is None or not bool(skip[:, i].any()) else torch.where(skip[:, i, None, None], h, out)
        out = self.final(h[:, prefix:], c).reshape(B, T + pad, -1)
        return out[:, :T].transpose(1, 2)
