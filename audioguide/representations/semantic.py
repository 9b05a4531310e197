"""Supervised semantic tokens: one low-rate codebook of content-bearing tokens over our autoencoder's latents.

Why (issue 23): a codec LM over the autoencoder's 8 RVQ codebooks at 93.75 frames/s predicts 750
tokens a second, neighbouring frames mostly agree, and on a CPU-sized corpus the LM learned to copy
the previous frame instead of reading its text. The speech LMs that work predict far fewer, more
meaningful tokens: CosyVoice 2 (Du et al. 2024, arXiv 2412.10117, §2.2) inserts finite scalar
quantisation into an ASR encoder and trains it with the ASR loss, giving one codebook of
*supervised semantic tokens* at 25 Hz; an LM predicts them from text and a flow-matching model
renders the acoustics from tokens and speaker. This module is that tokenizer, on our latents:

* **Encoder**: the autoencoder's latents ``z [B, C, T]`` (93.75 Hz) through dilated ConvNeXt-style
  blocks, then a strided convolution to ``T / stride`` token frames (``stride = 4``: 23.4 Hz, the
  rate of CosyVoice 2's tokens) and ``token_depth`` more blocks there. With ``dilations`` equal to the
  content verifier's (:mod:`audioguide.models.verifier`, a frame phoneme recogniser on the same
  latents), the frame blocks can start as the verifier's (``scripts/warm_start.py``), so FSQ sits
  inside a trained recogniser, as CosyVoice 2 inserts it into a trained ASR encoder; the shipped
  tokenizer is made so (held-out frame-phoneme accuracy from its tokens 0.72, against 0.64 for four
  blocks trained from scratch).
* **Finite scalar quantisation** (FSQ, Mentzer et al. 2023, arXiv 2309.15505, §3): a projection to
  ``d = len(levels)`` numbers, each bounded to ``L_i`` levels (``f(z) = floor(L/2) tanh(z)``,
  with the half-step shift for even ``L``, §3 and App. A) and rounded with a straight-through
  gradient; the token is the mixed-radix number of the ``d`` levels, so the codebook has
  ``prod(levels)`` entries (``(8, 5, 5, 5)``: 1000), all used by construction, no commitment loss.
  The maths is :func:`audioguide.core.fsq_quantize` and its neighbours (the token conditioner of
  the acoustic stage reads the same grid).
* **Supervision** (what makes the tokens semantic): the quantised tokens are upsampled back to the
  frames and a small decoder (:class:`~audioguide.conditioners.tokens.TokenDecoder`, which an acoustic
  stage can hold a copy of) predicts each frame's phoneme symbol (cross-entropy against the
  corpus's exact teacher alignments, as the content verifier is trained) and, with weight
  ``recon``, the latent frame itself (MSE), so that the tokens also keep the prosody (pitch, energy)
  that the phonemes do not name. The autoencoder is frozen; only the tokenizer trains
  (``audioguide train <recipe>`` with ``[train] target = "representation"``).

Tokens decode to sound only through an acoustic stage (a DiT conditioned on the tokens and the
voice, the recipe's ``[acoustic]`` table), so :meth:`SemanticTokens.decode_tokens` is not
available here; :meth:`SemanticTokens.token_frames` gives the latent frames a token sequence spans.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from audioguide.conditioners.phonemes import SYMBOLS
from audioguide.conditioners.tokens import DilatedBlock, TokenDecoder
from audioguide.core import fsq_indices, fsq_quantize, init_random, load_moved
from audioguide.representations.autoencoder import Autoencoder, AutoencoderConfig
from audioguide.representations.base import Representation

__all__ = ["SemanticConfig", "SemanticTokens", "Tokenizer", "tokenizer_loss"]


@dataclass(frozen=True)
class SemanticConfig:
    """The autoencoder it reads (its size as in :class:`AutoencoderConfig`; its weights
    ``autoencoder``, a packaged name or path) and the tokenizer:
    ``stride`` latent frames per token, FSQ ``levels``, width ``dim``, dilated blocks at the frame rate
    (``dilations``) and ``token_depth`` blocks at the token rate, each with a depthwise ``kernel``;
    ``recon`` weighs the latent reconstruction against the phoneme cross-entropy."""

    autoencoder: str = "autoencoder-speech.safetensors"  # "" = untrained (tests)
    sample_rate: int = 24000
    n_fft: int = 1024
    hop: int = 256
    n_mels: int = 100
    channels: int = 32
    width: int = 256
    encoder_depth: int = 4
    depth: int = 8
    n_codebooks: int = 8
    codebook_size: int = 1024
    stride: int = 4
    levels: tuple[int, ...] = (8, 5, 5, 5)
    dim: int = 192
    dilations: tuple[int, ...] = (1, 2, 4, 1)
    token_depth: int = 2
    kernel: int = 5
    recon: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")
        if not self.levels or any(level < 2 for level in self.levels):
            raise ValueError(f"levels must be a non-empty list of integers >= 2, got {list(self.levels)}")
        if math.prod(self.levels) > 65536:
            raise ValueError(f"levels give {math.prod(self.levels)} codes; at most 65536")
        if self.dim < 1 or self.token_depth < 0 or self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError("dim must be positive, token_depth >= 0 and kernel an odd integer >= 1")
        if any(d < 1 for d in self.dilations):
            raise ValueError(f"dilations must be integers >= 1, got {list(self.dilations)}")
        if self.recon < 0 or self.seed < 0:
            raise ValueError("recon and seed must be >= 0")


# the decoder's layers were the tokenizer's own before they became :class:`TokenDecoder`: {now: before}
MOVED = {f"decoder.{name}": name for name in ("from_fsq.", "up_blocks.", "up.", "out_blocks.", "norm.")}


class Tokenizer(nn.Module):
    """Latents ``[B, C, T]`` -> FSQ tokens ``[B, ceil(T / stride)]``, and the supervision heads."""

    def __init__(self, config: SemanticConfig) -> None:
        super().__init__()
        c = self.config = config
        self.register_buffer("levels", torch.tensor(c.levels, dtype=torch.long), persistent=False)
        self.proj_in = nn.Conv1d(c.channels, c.dim, 1)
        self.frame_blocks = nn.ModuleList(DilatedBlock(c.dim, c.kernel, d) for d in c.dilations)
        self.down = nn.Conv1d(c.dim, c.dim, c.stride, stride=c.stride)
        self.token_blocks = nn.ModuleList(DilatedBlock(c.dim, c.kernel) for _ in range(c.token_depth))
        self.to_fsq = nn.Linear(c.dim, len(c.levels))
        # supervision: tokens -> frames (the decoder an acoustic stage can also read) -> phoneme symbols and latents
        self.decoder = TokenDecoder(len(c.levels), c.dim, c.stride, c.token_depth, c.kernel)
        self.phones = nn.Linear(c.dim, len(SYMBOLS))
        self.latents = nn.Linear(c.dim, c.channels)
        self.moved = dict(MOVED)  # checkpoints and seeds from before the decoder became one module
        self.register_load_state_dict_pre_hook(load_moved)
        init_random(self, c.seed, self.moved)

    def token_count(self, frames: int) -> int:
        return -(-frames // self.config.stride)

    def quantized(self, z: Tensor) -> Tensor:
        """Normalised FSQ values ``[B, T_tok, d]`` of latents ``z [B, C, T]`` (straight-through)."""
        T = z.shape[-1]
        pad = self.token_count(T) * self.config.stride - T
        h = self.proj_in(F.pad(z.to(self.proj_in.weight.dtype), (0, pad)))
        for block in self.frame_blocks:
            h = block(h)
        h = self.down(h)
        for block in self.token_blocks:
            h = block(h)
        return fsq_quantize(self.to_fsq(h.transpose(1, 2)).float(), self.levels)

    def tokens(self, z: Tensor) -> Tensor:
        """Token ids ``[B, T_tok]`` in ``[0, prod(levels))`` of latents ``z [B, C, T]``."""
        return fsq_indices(self.quantized(z), self.levels)

    def heads(self, q: Tensor, frames: int) -> tuple[Tensor, Tensor]:
        """From FSQ values ``[B, T_tok, d]``: phoneme logits ``[B, frames, len(SYMBOLS)]`` and latents ``[B, C, frames]``."""
        h = self.decoder(q, frames)
        return self.phones(h), self.latents(h).transpose(1, 2)


def tokenizer_loss(tokenizer: Tokenizer, z: Tensor, targets: Tensor, frame_mask: Tensor) -> tuple[Tensor, dict[str, float]]:
    """Phoneme cross-entropy of every real frame (``targets [B, T]``, ``frame_mask [B, T]``) plus
    ``recon`` times the latent MSE, both read from the quantised tokens; logs ``phones``,
    ``recon``, ``acc`` (frame phoneme accuracy) and ``used`` (share of the codebook in the batch)."""
    q = tokenizer.quantized(z)
    logits, z_hat = tokenizer.heads(q, z.shape[-1])
    w = frame_mask.to(torch.float32)
    n = w.sum().clamp_min(1.0)
    ce = (F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none") * w).sum() / n
    mse = (((z_hat.float() - z.float()) ** 2).mean(1) * w).sum() / n
    loss = ce + tokenizer.config.recon * mse
    with torch.no_grad():
        acc = ((logits.argmax(-1) == targets).float() * w).sum() / n
        used = fsq_indices(q, tokenizer.levels).unique().numel() / math.prod(tokenizer.config.levels)
    return loss, {"phones": float(ce.detach()), "recon": float(mse.detach()), "acc": float(acc), "used": float(used)}


class SemanticTokens(Representation):
    """Speech as one codebook of supervised semantic tokens (see the module docstring): our frozen
    autoencoder's latents, tokenized at ``hop * stride`` samples per token."""

    trainable = True
    Config = SemanticConfig

    def __init__(self, config: SemanticConfig) -> None:
        super().__init__()
        c = self.config = config
        self.autoencoder = Autoencoder(AutoencoderConfig(
            sample_rate=c.sample_rate, n_fft=c.n_fft, hop=c.hop, n_mels=c.n_mels, channels=c.channels, width=c.width,
            encoder_depth=c.encoder_depth, depth=c.depth, n_codebooks=c.n_codebooks, codebook_size=c.codebook_size))
        self.tokenizer = Tokenizer(c)
        self.sample_rate, self.channels, self.hop = c.sample_rate, c.channels, c.hop * c.stride
        self.n_codebooks, self.codebook_size = 1, math.prod(c.levels)

    @property
    def parts(self) -> dict[str, str]:
        """Submodules whose weights come from their own file (loaded before the recipe's ``weights``,
        which hold the :attr:`trained` part only)."""
        return {"autoencoder": self.config.autoencoder} if self.config.autoencoder else {}

    @property
    def trained(self) -> nn.Module:
        """What ``[train] target = "representation"`` trains and the recipe's ``weights`` hold."""
        return self.tokenizer

    def token_frames(self, tokens: int) -> int:
        """Latent frames of the autoencoder that ``tokens`` tokens span."""
        return tokens * self.config.stride

    def latents(self, wav: Tensor) -> Tensor:
        """The autoencoder's latents ``[B, C, ceil(S / hop)]``."""
        return self.autoencoder.encode(wav)

    def encode(self, wav: Tensor) -> Tensor:
        return self.latents(wav)

    def decode(self, z: Tensor) -> Tensor:
        """The autoencoder's decoder on latents ``[B, C, T]`` (what an acoustic stage renders)."""
        return self.autoencoder.decode(z)

    def encode_tokens(self, wav: Tensor) -> Tensor:
        """``[B, S] -> LongTensor [B, 1, ceil(ceil(S / hop) / stride)]``."""
        return self.tokenizer.tokens(self.latents(wav))[:, None]

    def decode_tokens(self, codes: Tensor) -> Tensor:
        raise NotImplementedError("semantic tokens carry no voice: they decode through the recipe's [acoustic] stage")
