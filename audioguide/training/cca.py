"""Condition Contrastive Alignment (CCA): fine-tune a codec LM so that sampling without guidance
matches guided sampling, at half the decoding cost (one branch instead of two or more).

Chen et al. 2024, "Toward Guidance-Free AR Visual Generation via Condition Contrastive Alignment",
arXiv 2410.09347 (ICLR 2025). Classifier-free guidance samples ``p(x|c) [p(x|c) / p(x)]^s``; its
extra factor is the conditional residual ``log p(x|c) / p(x)``, which noise-contrastive estimation
learns from matched pairs ``(x, c) ~ p(x, c)`` against mismatched ones ``(x, c_neg) ~ p(x) p(c)``.
CCA parametrises that estimate by the model's own log-likelihood ratio against its frozen
pretrained self ``p_phi`` (the reference, which is also the warm start ``theta_0 = phi``) and
fine-tunes the model ``p_theta`` itself (eq. 11-12)::

    L(theta) = - E_{p(x,c)}     log sigmoid( beta log p_theta(x|c)     / p_phi(x|c)     )
               - lam E_{p(x)p(c)} log sigmoid(-beta log p_theta(x|c_neg) / p_phi(x|c_neg) )

(:func:`cca_loss`). ``log p(x|c)`` is the teacher-forced log-likelihood of a row's codes summed over
its real tokens: every codebook of every real frame, never a delay-pattern pad
(:func:`sequence_log_likelihood`). The reference gets no gradient, lives beside the trained model
(never in the train state, never exported) and is the recipe's ``[model] weights`` unless
``[train.cca] reference`` names others. Sampling then uses scales of 1 (one branch).

Negatives for a model whose text is aligned to the frames
---------------------------------------------------------
The paper draws ``c_neg`` by shuffling the conditions within the batch. For our codec LM the text's
phonemes are expanded to the frames by their durations, which therefore belong to the condition,
while the target codes ``x`` (and their frame count ``T``) belong to the audio. Another row's
phonemes regulated by *its* durations would cover another number of frames, so a negative keeps
row ``i``'s codes, frame mask and frame count and takes row ``j``'s phonemes *re-timed* to ``T_i``
frames: ``j``'s cumulative duration boundaries scaled by ``T_i / T_j`` and rounded
(:func:`retime`), so that every frame still has a phoneme and ``j``'s phonemes keep their order and
relative lengths. That is a draw from ``p(c)`` as the model meets it (a whole sentence, plausibly
timed over the clip) rather than a corrupted text, and it needs no new null or mask. The other
conditions follow ``shuffled``: ``()`` shuffles all of them (the paper's ``p(x) p(c)``); naming only
``text`` keeps the voice (speaker, style) and contrasts ``log p(x|t, s, y) / p(x|s, y)``, the text's
residual given the voice, which is what a policy guiding the text alone (``speech-lm``: text 3,
speaker and style 1) amplifies. Row ``j`` is a random cyclic derangement of the batch (no row is
its own negative), drawn from the run's generator.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from audioguide.core import AudioguideError, Cond
from audioguide.recipes import Recipe
from audioguide.train_config import CCAConfig, TrainConfig
from audioguide.training.objectives import EncodedClips, Logs, _add, _Conditioned
from audioguide.training.tokens import delayed_io

__all__ = ["CCAObjective", "cca_loss", "derangement", "negative_conditions", "retime", "sequence_log_likelihood"]


def cca_loss(
    theta_pos: Tensor, ref_pos: Tensor, theta_neg: Tensor, ref_neg: Tensor, beta: float, lam: float
) -> tuple[Tensor, dict[str, Tensor]]:
    """The CCA loss (eq. 12) from per-row sequence log-likelihoods ``[B]`` of the trained model and
    the reference under matched (``pos``) and mismatched (``neg``) conditions, averaged over rows::

        -log sigmoid(beta (theta_pos - ref_pos)) - lam log sigmoid(-beta (theta_neg - ref_neg))

    Returns the loss and its two terms (each averaged over rows, before ``lam``)."""
    pos = -F.logsigmoid(beta * (theta_pos - ref_pos)).mean()
    neg = -F.logsigmoid(-beta * (theta_neg - ref_neg)).mean()
    return pos + lam * neg, {"pos": pos, "neg": neg}


def sequence_log_likelihood(model: nn.Module, codes: Tensor, cond: Cond, mask: Tensor | None = None) -> Tensor:
    """``log p(x | c)`` ``[B]`` of codes ``[B, K, T]`` under a codec LM, all conditions kept: the
    teacher-forced log-probability of every real target (every codebook of every real frame,
    ``mask [B, T]``; delay-pattern pads never count), summed per row. No input dropout: this is the
    likelihood the sampler's model assigns."""
    inputs, targets, valid = delayed_io(codes, model.bos_id, model.pad_id, mask)
    logits = model(inputs, cond, {}).float()  # [B, K, S, V]
    nll = F.cross_entropy(logits.flatten(0, 2), targets.masked_fill(~valid, 0).flatten(), reduction="none")
    return -(nll.view_as(valid) * valid).sum(dim=(1, 2))


def derangement(batch: int, generator: torch.Generator) -> Tensor:
    """A random permutation ``[batch]`` with no fixed point (a random cycle through all rows), from ``generator``."""
    if batch < 2:
        raise AudioguideError("CCA takes its negatives from other rows of the batch: batch_size must be >= 2")
    order = torch.randperm(batch, generator=generator)
    perm = torch.empty(batch, dtype=torch.long)
    perm[order] = order.roll(-1)
    return perm


def retime(durations: Tensor, frames: Tensor) -> Tensor:
    """Durations ``[B, L]`` rescaled so that row ``b`` sums to ``frames[b]``: the cumulative
    boundaries scaled by ``frames / sum`` and rounded (half up), so order and relative lengths stay
    and no frame is lost; padded tokens (duration 0 past the end) stay 0."""
    d = durations.long()
    ends = d.cumsum(dim=1)
    total = ends[:, -1:].clamp_min(1)
    scaled = torch.div(2 * ends * frames.to(ends)[:, None] + total, 2 * total, rounding_mode="floor")
    return scaled - F.pad(scaled, (1, 0))[:, :-1]


def negative_conditions(cond: Mapping[str, Tensor], perm: Tensor, shuffled: Sequence[str], aligned: str,
                        frames: Tensor) -> dict[str, Tensor]:
    """``cond`` with the conditions ``shuffled`` taken from rows ``perm`` (every tensor of the
    condition: ``name``, ``name.mask``, ...); an aligned condition's durations re-timed to each row's
    own ``frames [B]`` (:func:`retime`, see the module docstring)."""
    out = dict(cond)
    for key, value in cond.items():
        if key.split(".")[0] in shuffled:
            out[key] = value.index_select(0, perm.to(value.device))
    durations = f"{aligned}.durations"
    if aligned and aligned in shuffled and durations in out:
        out[durations] = retime(out[durations], frames.to(out[durations].device))
    return out


class CCAObjective(_Conditioned):
    """CCA of a codec LM against its frozen reference (module docstring): ``forward`` scores every
    row's codes under its own conditions and under a negative's, in one batched forward of the model
    and one (without gradient) of the reference; a model with aligned phonemes also keeps its
    duration predictor and content prior supervised (:meth:`_Conditioned.aligned_losses`, all
    conditions kept), since they read the token encoder that CCA changes.

    The reference is a submodule (it moves with the objective, stays in eval mode, and requires no
    gradient) but not part of :attr:`module`, so it is neither optimised, saved in the train state,
    nor exported.
    """

    def __init__(self, model: nn.Module, reference: nn.Module, encoded: EncodedClips, cfg: TrainConfig) -> None:
        super().__init__(model, encoded, cfg)
        assert cfg.cca is not None
        self.config: CCAConfig = cfg.cca
        self.reference = reference.eval().requires_grad_(False)
        self.shuffled = self.config.shuffled or tuple(model.conditioners)

    @classmethod
    def from_recipe(cls, recipe: Recipe, model: nn.Module, encoded: EncodedClips, cfg: TrainConfig) -> CCAObjective:
        """The objective of ``recipe``'s ``[train.cca]``: the reference is built from its weights
        (``reference``, default the recipe's ``[model] weights``) and ``model`` starts as a copy of it."""
        from audioguide.components import build_components

        assert cfg.cca is not None
        source = cfg.cca.reference or (recipe.model.weights if recipe.model is not None else None)
        if not source:
            raise AudioguideError(f"{recipe.source}: [train.cca] fine-tunes trained weights: set its reference or [model] weights")
        _, reference = build_components(recipe, model_weights=source)
        model.load_state_dict(reference.state_dict())  # theta_0 = phi
        return cls(model, copy.deepcopy(reference), encoded, cfg)

    def train(self, mode: bool = True) -> CCAObjective:
        super().train(mode)
        self.reference.eval()
        return self

    def forward(self, batch, generator, step):
        codes, mask = self.encoded(batch)
        cond, keep = self.conditions(batch, mask, generator)
        B = codes.shape[0]
        perm = derangement(B, generator)
        negative = negative_conditions(cond, perm, self.shuffled, self.module.aligned, mask.sum(dim=1))
        both = {k: torch.cat([v, negative[k]]) for k, v in cond.items()}
        codes2, mask2 = codes.repeat(2, 1, 1), mask.repeat(2, 1)
        theta = sequence_log_likelihood(self.module, codes2, both, mask2)
        with torch.no_grad():
            ref = sequence_log_likelihood(self.reference, codes2, both, mask2)
        c = self.config
        loss, terms = cca_loss(theta[:B], ref[:B], theta[B:], ref[B:], c.beta, c.lam)
        tokens = (mask.sum() * codes.shape[1]).clamp_min(1)
        with torch.no_grad():
            gap = (theta[:B] - theta[B:]).sum() / tokens  # log p(x|c) - log p(x|c_neg), nats per token
        logs: Logs = {
            "loss": float(loss.detach()), "cca/pos": float(terms["pos"].detach()), "cca/neg": float(terms["neg"].detach()),
            "cca/ratio_pos": float((theta[:B] - ref[:B]).detach().mean()),  # log p_theta / p_phi, nats per row
            "cca/ratio_neg": float((theta[B:] - ref[B:]).detach().mean()),
            "cca/gap": float(gap),
        }
        if not self.module.aligned:
            return loss, logs
        return _add(loss, logs, self.module.aligned_losses(cond, keep, codes, mask))
