"""A frame-level phoneme recogniser over the audio representation's latents, used as a verifier.

Sampling draws several candidates for one sentence and keeps the one this model hears best:
best-of-N reranking by a content verifier, as speech LMs do with an ASR model (Seed-TTS, Anastassiou
et al. 2024, arXiv 2406.02430, §2.2 "we select the best ... based on WER"; BASE TTS, Łajszczak et al.
2024, arXiv 2402.08093, §5). Here the verifier is ours, small and offline: it reads the latents
``z [B, C, T]`` of the audio representation (for a codec LM, the dequantised tokens) and predicts,
for every frame, which phoneme-conditioner symbol (:mod:`audioguide.conditioners.phonemes`) is
being spoken there. The generators of the speech recipes align their phonemes to the frames by
durations (:mod:`audioguide.models.duration`), so every candidate's intended symbols are known.
Its score is a forced-alignment score: the Viterbi path ``a`` that lays the ``L`` symbols ``y`` in
order over the ``T`` frames, each on at least one frame, maximising ``sum_f log p(y_{a_f} | z)``
(the forced alignment of HMM recognisers, Rabiner 1989, Proc. IEEE 77(2), eq. 105; a frame
classifier's posteriors as its emissions, as in hybrid ASR), and then the mean posterior along it:

    score(z) = 1 / T * sum_f p(y_{a_f} | z).

Aligning afresh lets a candidate drift a little from the durations it was generated with, which
costs intelligibility nothing; averaging posteriors rather than log-posteriors keeps a few
hopeless boundary frames, shared by every candidate, from outweighing the rest (on the draw this
was chosen on, 48 sentences of the shipped codec LM with 4 candidates each, held-out / SUS WER: mean
candidate 32.9 / 21.0 %, the mean log-posterior on the given durations chose 31.9 / 21.6 %, this
score 25.0 / 14.2 %). On two further draws of 96 sentences it takes the codec LM's SUS WER from
19.1 to 14.1 % and its held-out WER from 28.0 to 27.4 % (benchmarks/results/speech_lm_eval.md).

The network is a stack of ConvNeXt-style 1-D blocks (Liu et al. 2022, arXiv 2201.03545, §2.5:
depthwise convolution, LayerNorm, pointwise MLP, residual), dilated so that a frame sees about
0.8 s of context. It is trained on the corpus's teacher alignments (``[train] target = "verifier"``,
:func:`verifier_loss`), on the encoder's latents and, half of the time, on their RVQ round trip,
so that it hears both families' outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from audioguide.conditioners.phonemes import SYMBOLS
from audioguide.conditioners.tokens import DilatedBlock as _Block
from audioguide.models.base import init_random
from audioguide.models.duration import frame_tokens

__all__ = ["PhoneVerifier", "VerifierConfig", "forced_alignment", "frame_targets", "verifier_loss"]


@dataclass(frozen=True)
class VerifierConfig:
    """Size of the verifier; ``channels`` is the representation's latent width."""

    channels: int = 32
    dim: int = 192
    dilations: tuple[int, ...] = (1, 2, 4, 1, 2, 4)
    kernel: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.channels < 1 or self.dim < 1:
            raise ValueError(f"channels and dim must be positive, got {self.channels}, {self.dim}")
        if not self.dilations or any(d < 1 for d in self.dilations):
            raise ValueError(f"dilations must be a non-empty list of integers >= 1, got {list(self.dilations)}")
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"kernel must be an odd integer >= 1, got {self.kernel}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")


class PhoneVerifier(nn.Module):
    """Per-frame phoneme-symbol logits from latents: ``z [B, C, T] -> [B, T, len(SYMBOLS)]``."""

    Config = VerifierConfig
    reads: ClassVar[str] = "text"  # the input it judges samples against: the aligned phonemes of the text

    def __init__(self, config: VerifierConfig) -> None:
        super().__init__()
        self.config = config
        self.proj_in = nn.Conv1d(config.channels, config.dim, 1)
        self.blocks = nn.ModuleList(_Block(config.dim, config.kernel, d) for d in config.dilations)
        self.norm = nn.LayerNorm(config.dim)
        self.head = nn.Linear(config.dim, len(SYMBOLS))
        init_random(self, config.seed)

    def forward(self, z: Tensor) -> Tensor:
        if z.ndim != 3 or z.shape[1] != self.config.channels:
            raise ValueError(f"expected latents [B, {self.config.channels}, T], got shape {tuple(z.shape)}")
        h = self.proj_in(z.to(self.proj_in.weight.dtype))
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h.transpose(1, 2)))

    @torch.no_grad()
    def score(self, z: Tensor, ids: Tensor) -> Tensor:
        """How clearly each of ``z [B, C, T]`` says the symbols ``ids [L]``: the mean posterior of the
        symbols along their forced alignment, in ``[0, 1]``, per row ``[B]`` (see the module
        docstring; higher is clearer). Needs ``L <= T``: each symbol takes at least one frame."""
        if ids.ndim != 1 or not 1 <= ids.shape[0] <= z.shape[-1]:
            raise ValueError(f"ids must be one sequence of 1 to {z.shape[-1]} symbols (one frame each), got shape {tuple(ids.shape)}")
        emissions = self(z).float().log_softmax(-1)[:, :, ids.to(z.device)]  # [B, T, L]
        path = forced_alignment(emissions)
        return emissions.gather(-1, path[..., None]).squeeze(-1).exp().mean(dim=1)


def forced_alignment(emissions: Tensor) -> Tensor:
    """The Viterbi path ``[B, T]`` (symbol index per frame) through ``emissions [B, T, L]``
    (log-probabilities of the ``L`` symbols, in order, per frame): monotonic, starting at symbol 0
    and ending at symbol ``L - 1``, each symbol on at least one frame (needs ``L <= T``)."""
    B, T, L = emissions.shape
    if not 1 <= L <= T:
        raise ValueError(f"cannot align {L} symbols to {T} frames")
    impossible = torch.finfo(emissions.dtype).min / 4
    best = emissions.new_full((B, L), impossible)
    best[:, 0] = emissions[:, 0, 0]
    moved = torch.zeros(B, T, L, dtype=torch.bool, device=emissions.device)  # frame t entered its symbol
    for t in range(1, T):
        advance = torch.cat([best.new_full((B, 1), impossible), best[:, :-1]], dim=1)
        moved[:, t] = advance > best
        best = torch.maximum(best, advance) + emissions[:, t]
    path = torch.empty(B, T, dtype=torch.long, device=emissions.device)
    state = torch.full((B,), L - 1, dtype=torch.long, device=emissions.device)
    rows = torch.arange(B, device=emissions.device)
    for t in range(T - 1, -1, -1):
        path[:, t] = state
        if t:
            state = state - moved[rows, t, state].long()
    return path


def frame_targets(ids: Tensor, durations: Tensor, frames: int) -> Tensor:
    """The symbol of every frame ``[B, frames]``: ``ids [B, L]`` expanded by ``durations [B, L]``
    (FastSpeech's length regulator, :func:`~audioguide.models.duration.frame_tokens`)."""
    if ids.shape != durations.shape:
        raise ValueError(f"ids and durations must have the same shape, got {tuple(ids.shape)} and {tuple(durations.shape)}")
    return ids.gather(1, frame_tokens(durations.to(ids.device), frames))


def verifier_loss(verifier: PhoneVerifier, z: Tensor, ids: Tensor, durations: Tensor, frame_mask: Tensor) -> tuple[Tensor, dict[str, float]]:
    """Cross-entropy of the frame symbols over the real frames (``frame_mask [B, T]``); logs ``loss`` and ``acc``."""
    target = frame_targets(ids, durations, z.shape[-1])
    logits = verifier(z).float()
    ce = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")
    w = frame_mask.to(ce.dtype)
    n = w.sum().clamp_min(1.0)
    loss = (ce * w).sum() / n
    acc = ((logits.argmax(-1) == target).to(w.dtype) * w).sum() / n
    return loss, {"loss": loss.item(), "acc": acc.item()}
