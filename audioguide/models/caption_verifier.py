"""A caption verifier: a small contrastive audio-text model over the sound autoencoder's latents.

The text-to-audio recipes have no content verifier of phonemes; what a sound should be is its
caption. This model scores how well latents ``z [B, C, T]`` match a caption as the cosine of two
embeddings in one joint space, CLAP-style (Elizalde et al. 2023, "CLAP: Learning Audio Concepts
from Natural Language Supervision", ICASSP, §2: an audio encoder and a text encoder, each with a
projection into a joint space, trained with a symmetric cross-entropy over the batch's similarity
matrix; CLIP's loss, Radford et al. 2021, arXiv 2103.00020, §2.3 and Fig. 3, with its learned
temperature, initialised at 0.07 and capped so that the logit scale stays <= 100):

* **audio**: the latents (padding frames zeroed), a strided convolution down to ``dim`` channels
  at ``1 / stride`` of the frame rate, ConvNeXt-style 1-D blocks (as the phoneme verifier's,
  :mod:`audioguide.models.verifier`; every block's input masked, so that padding never reaches a
  real frame), LayerNorm and attention pooling over the real frames (a learned score per frame,
  softmaxed), then a linear map into the joint space;
* **text**: the frozen text encoder of the recipe's caption conditioner (``source``, by default the
  packaged all-MiniLM-L6-v2), mean-pooled over its tokens as sentence-transformers pools it, then a
  trainable two-layer MLP into the joint space. The encoder is not part of the module (loaded once
  per process and shared with the conditioner, :func:`~audioguide.conditioners.text_encoder.load_encoder`);
  the checkpoint holds only what is trained here.

Its score, ``cos(audio(z), text(caption))`` in ``[-1, 1]`` per row, is a clip-level judgement of
one forward at ``1 / stride`` of the frame rate: cheap enough to be dynamic guidance's evaluator at
every step (:class:`audioguide.guidance.Dynamic`, recipe ``sound-dynamic``) and to rank candidates.

Training (``[train] target = "verifier"``, :class:`audioguide.training.objectives.CaptionVerifierObjective`,
:func:`caption_loss`) pairs each clip's latents with its own caption. A batch from a corpus of 21
classes holds several clips of one class, whose captions describe each other's clips nearly as well
("a gentle flute melody" for another flute clip): as negatives they would teach the model to push
apart what belongs together (the false negatives of contrastive learning). They are **masked**: a
pair of different rows with the same class label (the manifest's ``label``; rows without one are
grouped by identical caption) is left out of both softmaxes, neither positive nor negative, so
each clip is contrasted only with the captions of other classes (the false-negative elimination of
Huynh et al. 2022, "Boosting Contrastive Self-Supervised Learning with False Negative
Cancellation", WACV, §3.2). They are not made positives: a same-class caption may name another
register, tempo or texture. Half of the rows are noised along the flow path first, ``z_t = (1 - t)
z + t eps`` with ``t ~ U(0, 1)``, because dynamic guidance shows it each step's estimate, which on
a mean-flow sampler is the (still noisy) state the step goes to, not a clean clip; the verifier is
given no ``t`` (a noise-robust classifier, as the classifiers of classifier guidance are trained on
noised inputs, Dhariwal & Nichol 2021, §4).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from audioguide.conditioners.text_encoder import DEFAULT_SOURCE, frozen_states, hidden_size
from audioguide.models.base import init_random
from audioguide.models.verifier import _Block

__all__ = ["CaptionVerifier", "CaptionVerifierConfig", "caption_loss", "false_negatives"]

MAX_LOGIT_SCALE = 100.0  # CLIP's cap on exp(logit_scale)


@dataclass(frozen=True)
class CaptionVerifierConfig:
    """Size of the caption verifier; ``channels`` is the representation's latent width, ``embed``
    the joint space's, ``source`` the caption conditioner's frozen text encoder."""

    channels: int = 32
    dim: int = 128
    embed: int = 128
    stride: int = 4
    dilations: tuple[int, ...] = (1, 2, 4, 8)
    kernel: int = 5
    source: str = DEFAULT_SOURCE
    max_length: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.channels < 1 or self.dim < 1 or self.embed < 1:
            raise ValueError(f"channels, dim and embed must be positive, got {self.channels}, {self.dim}, {self.embed}")
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")
        if not self.dilations or any(d < 1 for d in self.dilations):
            raise ValueError(f"dilations must be a non-empty list of integers >= 1, got {list(self.dilations)}")
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"kernel must be an odd integer >= 1, got {self.kernel}")
        if not self.source:
            raise ValueError("source must name a text encoder")
        if self.max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {self.max_length}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")


class CaptionVerifier(nn.Module):
    """Latents and captions into one joint space; :meth:`score` is their cosine."""

    Config = CaptionVerifierConfig
    reads: ClassVar[str] = "caption"  # the input it judges samples against

    def __init__(self, config: CaptionVerifierConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.down = nn.Conv1d(c.channels, c.dim, c.stride, stride=c.stride)
        self.blocks = nn.ModuleList(_Block(c.dim, c.kernel, d) for d in c.dilations)
        self.norm = nn.LayerNorm(c.dim)
        self.attend = nn.Linear(c.dim, 1)
        self.audio_proj = nn.Linear(c.dim, c.embed)
        hidden = hidden_size(c.source)  # reads config.json only; the encoder loads on first use
        self.text_proj = nn.Sequential(nn.Linear(hidden, 2 * c.embed), nn.GELU(), nn.Linear(2 * c.embed, c.embed))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        init_random(self, c.seed)
        with torch.no_grad():  # init_random re-draws every parameter: the temperature starts at CLIP's
            self.logit_scale.fill_(math.log(1 / 0.07))

    # -- audio -----------------------------------------------------------------------------------

    def embed_audio(self, z: Tensor, mask: Tensor | None = None) -> Tensor:
        """Unit joint-space embeddings ``[B, embed]`` of latents ``z [B, C, T]``; ``mask [B, T]``
        (True = a real frame, default all) keeps padding out: a row's embedding is that of its real
        frames alone, to float rounding. A row needs at least one real frame."""
        c = self.config
        if z.ndim != 3 or z.shape[1] != c.channels:
            raise ValueError(f"expected latents [B, {c.channels}, T], got shape {tuple(z.shape)}")
        B, _, T = z.shape
        if mask is None:
            mask = torch.ones(B, T, dtype=torch.bool, device=z.device)
        if mask.shape != (B, T):
            raise ValueError(f"mask must be [B, T] = [{B}, {T}], got {tuple(mask.shape)}")
        if not mask.any(dim=1).all():
            raise ValueError("every row needs at least one real frame")
        pad = (-T) % c.stride
        h = F.pad(z.to(self.down.weight.dtype) * mask[:, None], (0, pad))
        m = F.pad(mask, (0, pad)).view(B, -1, c.stride).any(-1)  # [B, T'] a downsampled frame touches a real one
        h = self.down(h)
        keep = m[:, None].to(h.dtype)
        for block in self.blocks:
            h = block(h * keep)
        h = self.norm(h.transpose(1, 2))  # [B, T', dim]
        w = self.attend(h).squeeze(-1).float().masked_fill(~m, -math.inf).softmax(-1).to(h.dtype)
        pooled = (w[..., None] * h).sum(1)
        return F.normalize(self.audio_proj(pooled), dim=-1)

    def forward(self, z: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.embed_audio(z, mask)

    # -- text ------------------------------------------------------------------------------------

    def text_states(self, texts: Sequence[str]) -> Tensor:
        """The frozen encoder's mean-pooled states ``[B, hidden]`` of ``texts`` (no gradient)."""
        return frozen_states(self.config.source, texts, self.config.max_length, pooled=True).emb[:, 0]

    def project_text(self, states: Tensor) -> Tensor:
        """Unit joint-space embeddings ``[B, embed]`` of pooled text states ``[B, hidden]``."""
        p = self.text_proj[0].weight
        return F.normalize(self.text_proj(states.to(device=p.device, dtype=p.dtype)), dim=-1)

    def embed_text(self, texts: Sequence[str]) -> Tensor:
        """Unit joint-space embeddings ``[B, embed]`` of captions."""
        return self.project_text(self.text_states(texts))

    # -- the score -------------------------------------------------------------------------------

    @torch.no_grad()
    def score(self, z: Tensor, text: str | Tensor, mask: Tensor | None = None) -> Tensor:
        """How well each of ``z [B, C, T]`` matches a caption: ``cos(audio(z), text)`` in
        ``[-1, 1]`` per row ``[B]`` (higher is better). ``text``: one caption, or its embedding
        ``[embed]`` (:meth:`embed_text`), or one per row ``[B, embed]``."""
        emb = self.embed_text([text]) if isinstance(text, str) else text
        audio = self.embed_audio(z, mask)
        return (audio * emb.to(audio.dtype)).sum(-1).float()

    def logits(self, audio: Tensor, text: Tensor) -> Tensor:
        """The similarity matrix ``[B, B]`` of unit embeddings, times the learned logit scale."""
        return self.logit_scale.clamp(max=math.log(MAX_LOGIT_SCALE)).exp() * audio @ text.T


def false_negatives(groups: Sequence[object]) -> Tensor:
    """``[B, B]`` True where two different rows share a group (a class label): the pairs that
    :func:`caption_loss` leaves out of both softmaxes."""
    ids = {g: i for i, g in enumerate(dict.fromkeys(groups))}
    g = torch.tensor([ids[x] for x in groups])
    same = g[:, None] == g[None, :]
    return same & ~torch.eye(len(groups), dtype=torch.bool)


def caption_loss(
    verifier: CaptionVerifier, z: Tensor, mask: Tensor, text_states: Tensor, groups: Sequence[object]
) -> tuple[Tensor, dict[str, float]]:
    """Symmetric InfoNCE (CLIP §2.3, CLAP §2) of latents ``z [B, C, T]`` (real frames ``mask``)
    against their captions' pooled states ``[B, hidden]``, with same-group pairs masked
    (:func:`false_negatives`). Logs ``loss``, ``acc`` (clip -> caption top-1 among the batch's
    other-class captions and its own) and ``temperature``."""
    audio = verifier.embed_audio(z, mask)
    text = verifier.project_text(text_states)
    logits = verifier.logits(audio, text).float()
    logits = logits.masked_fill(false_negatives(groups).to(logits.device), -math.inf)
    target = torch.arange(logits.shape[0], device=logits.device)
    loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    acc = (logits.argmax(1) == target).float().mean()
    temperature = 1.0 / float(verifier.logit_scale.detach().clamp(max=math.log(MAX_LOGIT_SCALE)).exp())
    return loss, {"loss": loss.item(), "acc": acc.item(), "temperature": temperature}
