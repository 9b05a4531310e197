"""Token durations: the length regulator and the duration predictor of FastSpeech.

Ren et al. 2019, "FastSpeech: Fast, Robust and Controllable Text to Speech" (arXiv 1905.09263):

* **Length regulator** (§3.2, eq. 2): the hidden state of token ``i`` is repeated ``d_i`` times,
  so a sequence of ``L`` tokens with durations ``d`` becomes ``sum_i d_i`` frames; frame ``f``
  takes the token ``i`` with ``D_{i-1} <= f < D_i``, ``D = cumsum(d)``. :func:`frame_tokens`
  computes that index; gathering with it is the expansion.
* **Duration predictor** (§3.3; the variance predictor of FastSpeech 2, Ren et al. 2021, §2.3):
  two 1-D convolutions (kernel 3, ReLU, LayerNorm, dropout) and a linear layer, predicting
  ``log(1 + d)`` per token, trained with MSE against teacher durations; at inference
  ``d = round(exp(.) - 1)``, clamped at 0.

Durations here are in latent frames of the audio representation. Teacher durations come from the
corpus (``phoneme_samples`` per token, see :mod:`audioguide.corpus.speech`) and are converted by
:func:`samples_to_frames`, which keeps every clip's total exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def frame_tokens(durations: Tensor, frames: int, mask: Tensor | None = None) -> Tensor:
    """Length-regulator index ``[B, frames]``: the token each frame repeats (FastSpeech eq. 2).

    ``durations`` ``[B, L]`` (integers >= 0). Frames past ``sum(d)`` repeat the row's last token:
    its last real one where ``mask`` ``[B, L]`` marks a padded row's real tokens, so a row padded
    in a batch repeats what it repeats alone.
    """
    ends = durations.long().cumsum(dim=-1)
    f = torch.arange(frames, device=durations.device).expand(durations.shape[0], frames).contiguous()
    index = torch.searchsorted(ends, f, right=True).clamp_max(durations.shape[-1] - 1)
    if mask is not None:
        last = mask.long().sum(dim=-1, keepdim=True).clamp_min(1) - 1
        index = torch.minimum(index, last.to(index.device))
    return index


def regulate(tokens: Tensor, durations: Tensor, frames: int, mask: Tensor | None = None) -> Tensor:
    """Expand token states ``[B, L, D]`` to ``[B, frames, D]`` by ``durations`` ``[B, L]`` (``mask``:
    see :func:`frame_tokens`)."""
    index = frame_tokens(durations, frames, mask)
    return tokens.gather(1, index[..., None].expand(-1, -1, tokens.shape[-1]))


def regulate_kept(states: Tensor, durations: Tensor, kept: Tensor | None, frames: int, mask: Tensor | None = None) -> Tensor:
    """:func:`regulate`, except that a row whose aligned condition is dropped (``kept`` False, the
    row then holds the conditioner's null at token 0) repeats that null token on every frame."""
    durations = durations.long()
    if kept is not None:
        kept = kept.view(-1, 1).to(durations.device)
        durations = torch.where(kept, durations, torch.zeros_like(durations))
        durations[:, 0] = torch.where(kept[:, 0], durations[:, 0], torch.full_like(durations[:, 0], frames))
    return regulate(states, durations, frames, mask)


def samples_to_frames(
    samples: Sequence[Sequence[int]], hop: int, frames: Sequence[int], width: int, lengths: Sequence[int] | None = None
) -> Tensor:
    """Per-token durations in samples -> latent frames ``[B, width]`` (zero-padded).

    A row's durations count samples of its own recording, at whatever rate it was made (flite
    speaks at 16 kHz, piper at 22.05 kHz); ``lengths`` gives each clip's length in samples at the
    representation's rate, and the boundaries are rescaled to it (without ``lengths`` the rates
    are taken to be equal). Token boundaries are then rounded to frames (``round(D_i / hop)``) and
    the last is set to the row's frame count, so each row's durations sum exactly to ``frames[b]``.
    """
    out = torch.zeros(len(samples), width, dtype=torch.long)
    for b, (row, n) in enumerate(zip(samples, frames)):
        ends = torch.tensor(row, dtype=torch.float64).cumsum(0)
        if lengths is not None and ends[-1] > 0:
            ends = ends * (float(lengths[b]) / float(ends[-1]))
        ends = ends.div(hop).round().long().clamp(0, n)
        ends[-1] = n
        out[b, : len(row)] = torch.diff(ends, prepend=ends.new_zeros(1)).clamp_min(0)
    return out


class DurationPredictor(nn.Module):
    """FastSpeech 2's variance predictor (§2.3): ``log(1 + d)`` per token from token states ``[B, L, D]``."""

    def __init__(self, dim: int, hidden: int = 256, kernel: int = 3, dropout: float = 0.1) -> None:
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv1d(dim, hidden, kernel, padding=kernel // 2),
                                    nn.Conv1d(hidden, hidden, kernel, padding=kernel // 2)])
        self.norms = nn.ModuleList([nn.LayerNorm(hidden), nn.LayerNorm(hidden)])
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, 1)

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        """``[B, L, D]`` states and ``[B, L]`` mask -> ``[B, L]`` predicted ``log(1 + d)`` (0 on padding)."""
        m = mask[..., None].to(h.dtype)
        for conv, norm in zip(self.convs, self.norms):
            h = self.dropout(norm(torch.relu(conv((h * m).transpose(1, 2)).transpose(1, 2))))
        return self.out(h).squeeze(-1) * mask.to(h.dtype)

    @staticmethod
    def to_frames(log_d: Tensor, mask: Tensor, pace: float = 1.0, frames: int | None = None) -> Tensor:
        """Predicted ``log(1 + d)`` -> integer durations, scaled by ``pace`` (> 1 is slower).

        ``frames`` instead sets the pace so that the total comes to about that many frames.
        """
        d = (torch.expm1(log_d) * pace).round().clamp_min(0).long() * mask.long()
        if frames is None:
            return d
        return DurationPredictor.to_frames(log_d, mask, frames / max(int(d.sum()), 1))

    @staticmethod
    def loss(log_d: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        """MSE between predicted and teacher ``log(1 + d)`` over real tokens (FastSpeech §3.3)."""
        m = mask.to(log_d.dtype)
        err = (log_d - torch.log1p(target.to(log_d.dtype))).square() * m
        return err.sum() / m.sum().clamp_min(1.0)
