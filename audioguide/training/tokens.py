"""Training objective of codec language models: teacher-forced cross-entropy on delayed codes.

The codes ``[B, K, T]`` are interleaved with the MusicGen delay pattern (Copet et al. 2023,
arXiv 2306.05284, §2.2): codebook ``k`` is shifted right by ``k`` steps, giving ``S = T + K - 1``
delayed columns. The model reads ``bos`` then columns ``0 .. S - 2`` and predicts columns
``0 .. S - 1``; the loss is the mean over codebooks of the cross-entropy over real targets
(MusicGen, §2.2: "the sum of the cross-entropy over codebooks", here averaged so its scale does
not grow with ``K``).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor
from torch.nn import functional as F

from audioguide.core import Cond, Keep
from audioguide.sampling.tokens import apply_delay_pattern

__all__ = ["CodecLMLike", "codec_lm_loss", "delayed_io"]


class CodecLMLike(Protocol):
    """What the loss needs of a model: its special ids and the teacher-forced forward."""

    n_codebooks: int
    bos_id: int
    pad_id: int

    def __call__(self, codes_in: Tensor, cond: Cond, keep: Keep) -> Tensor: ...


def delayed_io(codes: Tensor, bos_id: int, pad_id: int, mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Teacher-forcing inputs, targets and target validity for codes ``[B, K, T]``.

    Frames with ``mask`` False (padding) are replaced by ``pad_id`` before delaying, so the inputs
    match what generation of the real length feeds and padded content cannot leak into the loss.
    Returns ``inputs [B, K, S]`` (``bos`` column first), ``targets [B, K, S]`` (the delayed codes)
    and ``valid [B, K, S]`` (True where the target is a real code of a real frame), ``S = T + K - 1``.
    """
    if codes.ndim != 3:
        raise ValueError(f"codes must have shape [B, K, T], got {tuple(codes.shape)}")
    B, K, T = codes.shape
    if mask is None:
        mask = torch.ones(B, T, dtype=torch.bool, device=codes.device)
    if mask.shape != (B, T):
        raise ValueError(f"mask must have shape [{B}, {T}], got {tuple(mask.shape)}")
    mask = mask.to(torch.bool)
    codes = torch.where(mask[:, None], codes, torch.full_like(codes, pad_id))
    targets = apply_delay_pattern(codes, pad_id)
    valid = apply_delay_pattern(mask[:, None].expand(B, K, T).long(), 0).bool()
    bos = torch.full((B, K, 1), bos_id, dtype=targets.dtype, device=targets.device)
    inputs = torch.cat([bos, targets[:, :, :-1]], dim=2)
    return inputs, targets, valid


def codec_lm_loss(
    model: CodecLMLike,
    codes: Tensor,
    cond: Cond,
    keep: Keep,
    mask: Tensor | None = None,
    input_dropout: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Mean over codebooks of the cross-entropy on real targets; logs per-codebook CE and accuracy.

    ``codes [B, K, T]`` hold values in ``[0, V)``; ``mask [B, T]`` (True = real frame) excludes
    padded frames, and delay-pattern pads are never targets. ``keep`` is the condition dropout of
    :func:`audioguide.training.conditions.draw_keep`. Logs: ``loss``, ``ce/k`` and ``acc/k``.

    ``input_dropout`` replaces that fraction of the teacher-forced input tokens (drawn from
    ``generator``) by ``pad_id``, so the model cannot predict a frame by copying the frames before
    it and must read its conditions. This plays the part of Tacotron 2's prenet dropout (Shen et
    al. 2018, arXiv 1712.05884, §2.3), which its authors found necessary for the decoder to use
    the text; targets are unchanged.
    """
    if codes.ndim != 3 or codes.shape[1] != model.n_codebooks:
        raise ValueError(f"codes must have shape [B, {model.n_codebooks}, T], got {tuple(codes.shape)}")
    if not 0.0 <= input_dropout < 1.0:
        raise ValueError(f"input_dropout must lie in [0, 1), got {input_dropout}")
    inputs, targets, valid = delayed_io(codes, model.bos_id, model.pad_id, mask)
    if not valid.any():
        raise ValueError("codec_lm_loss needs at least one valid frame")
    if input_dropout > 0:
        if generator is None:
            raise ValueError("input_dropout needs an explicit torch.Generator")
        drop = torch.rand(inputs.shape, generator=generator, device=generator.device).to(inputs.device) < input_dropout
        drop[:, :, 0] = False  # the bos column stays
        inputs = inputs.masked_fill(drop, model.pad_id)
    logits = model(inputs, cond, keep).float()  # [B, K, S, V]
    ce = F.cross_entropy(logits.flatten(0, 2), targets.masked_fill(~valid, 0).flatten(), reduction="none")
    ce, correct = ce.view_as(valid), (logits.argmax(-1) == targets) & valid
    count = valid.sum(dim=(0, 2)).clamp_min(1)  # [K]; equal for every codebook
    ce_k = (ce * valid).sum(dim=(0, 2)) / count
    acc_k = correct.sum(dim=(0, 2)) / count
    loss = ce_k.mean()
    logs = {"loss": loss.item()}
    for k in range(codes.shape[1]):
        logs[f"ce/{k}"], logs[f"acc/{k}"] = ce_k[k].item(), acc_k[k].item()
    return loss, logs
