"""Frame-aligned content: the token encoder and duration predictor that the DiT and the codec LM share.

A condition named by a model's ``aligned`` (phonemes) is not attended to as a sequence: its tokens
are encoded, given a duration in frames each, and expanded to the frames, the way FastSpeech
conditions its decoder (Ren et al. 2019, "FastSpeech: Fast, Robust and Controllable Text to
Speech", arXiv 1905.09263):

* **Encoder** (§3.1): ``token_in`` projects the conditioner's width to the model's, then
  ``encoder_depth`` FFT blocks (:class:`TokenBlock`: self-attention and 1-D convolutions in
  place of the position-wise MLP) and a LayerNorm give the token states ``[B, L, dim]``
  (:meth:`AlignedContent.encode`).
* **Voiced states**: the token states plus the pooled other conditions (speaker, style), each
  condition's masked mean through its own projection (:meth:`AlignedContent.voiced`). A token's
  duration and sound depend on who speaks it: FastSpeech 2 adds the speaker embedding to the
  encoder output before its variance adaptor (Ren et al. 2021, arXiv 2006.04558, §2.3), Grad-TTS
  conditions its encoder output ``mu`` on the speaker (Popov et al. 2021, arXiv 2105.06337, §3).
  The DiT's projections are the ones that also pool every condition into its adaLN vector, and it
  passes them in; the codec LM's are this module's own (``pooled``).
* **Duration predictor** (§3.3; FastSpeech 2's variance predictor, §2.3): ``log(1 + d)`` per token
  from the voiced states, trained with MSE against teacher durations on the rows where the
  condition is kept (:meth:`AlignedContent.duration_loss`); at inference
  :meth:`AlignedContent.predict_durations` rounds ``exp(.) - 1`` (times a pace).
* **Length regulator** (§3.2, eq. 2): a state is repeated its duration's number of frames
  (:meth:`AlignedContent.regulate`, :func:`audioguide.models.duration.regulate_kept`); a row whose
  aligned condition is dropped repeats its null token on every frame, so classifier-free guidance on
  content works as on any condition.

What the frames then do with the states (the DiT adds them to its patch inputs and regresses a
prior mean onto the latents, Grad-TTS eq. 14; the codec LM adds them to its step inputs and reads a
content prior over codes) stays with each model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audioguide.conditioners import Encoded
from audioguide.core import Cond, Keep
from audioguide.models.base import masked_mean
from audioguide.models.duration import DurationPredictor, regulate_kept
from audioguide.models.layers import Attention, rope_angles

__all__ = ["AlignedContent", "TokenBlock", "token_blocks"]


class TokenBlock(nn.Module):
    """FastSpeech's FFT block (Ren et al. 2019, §3.1) over condition tokens, pre-LN: self-attention
    with rotary positions, then two 1-D convolutions (kernel 3) in place of the position-wise MLP."""

    def __init__(self, dim: int, heads: int, qk_norm: bool, kernel: int = 3, ratio: float = 2.0) -> None:
        super().__init__()
        hidden = max(1, int(round(dim * ratio)))
        self.norm_attn, self.norm_conv = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, qk_norm)
        self.conv_in = nn.Conv1d(dim, hidden, kernel, padding=kernel // 2)
        self.conv_out = nn.Conv1d(hidden, dim, kernel, padding=kernel // 2)

    def forward(self, h: Tensor, mask: Tensor, rope: tuple[Tensor, Tensor]) -> Tensor:
        x = self.norm_attn(h)
        h = h + self.attn(x, x, mask, rope)
        x = (self.norm_conv(h) * mask[..., None].to(h.dtype)).transpose(1, 2)
        return h + self.conv_out(F.gelu(self.conv_in(x))).transpose(1, 2)


def token_blocks(blocks: Iterable[TokenBlock], h: Tensor, mask: Tensor, heads: int) -> Tensor:
    """``h`` ``[B, L, dim]`` through a stack of FFT blocks, with rotary positions ``0 .. L-1``.

    Every row runs with at least one masked position after its end, so its states do not depend on
    how much the batch pads it. (The block's second convolution reads the hidden layer one step past
    a row's last token, which is nonzero there, and attention then spreads it over the row: a row
    with padding and the same row alone differ, and the shipped weights were trained on padded
    batches. One masked position is what any amount of padding gives.)
    """
    h = F.pad(h, (0, 0, 0, 1))
    mask = F.pad(mask, (0, 1), value=False)
    pos = torch.arange(h.shape[1], dtype=h.dtype, device=h.device)
    rope = rope_angles(pos, h.shape[-1] // heads)
    for block in blocks:
        h = block(h, mask, rope)
    return h[:, :-1]


class AlignedContent(nn.Module):
    """The encoder and duration predictor of the aligned condition ``name`` (see the module doc).

    ``width`` is its conditioner's width, ``dim`` the host model's; ``depth`` FFT blocks of ``heads``
    heads. ``pooled`` (``{condition: width}``) gives this module its own projections of the other
    conditions for the voiced states; without it the host passes its projections to each call.
    """

    # the host's former names of these parameters (before this module existed): see former()
    FORMER = {"token_in": "token_in", "blocks": "token_blocks", "norm": "token_norm", "pool": "pool_proj", "duration": "duration"}

    def __init__(
        self, name: str, width: int, dim: int, heads: int, qk_norm: bool, depth: int, pooled: Mapping[str, int] | None = None
    ) -> None:
        super().__init__()
        self.name, self.heads = name, heads
        # registered in the order the hosts registered them, so parameters() (and with it the
        # position-keyed optimizer state of a training run) keeps its order
        self.token_in = nn.Linear(width, dim)
        self.blocks = nn.ModuleList(TokenBlock(dim, heads, qk_norm) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.pool = nn.ModuleDict({n: nn.Linear(w, dim) for n, w in pooled.items()}) if pooled is not None else None
        self.duration = DurationPredictor(dim)

    def former(self, at: str) -> dict[str, str]:
        """``{prefix now: former prefix}`` of these parameters in a host that holds this module as
        ``at``; they were the host's own before (``token_blocks.0...`` is now ``<at>.blocks.0...``).
        For :attr:`audioguide.models.base.Generator.moved`."""
        return {f"{at}.{child}.": f"{self.FORMER[child]}." for child in self._modules}

    # -- the token states ------------------------------------------------------------------------

    def encode(self, enc: Encoded) -> Tensor:
        """The aligned condition's tokens through the FFT blocks: ``[B, L, dim]``."""
        return self.norm(token_blocks(self.blocks, self.token_in(enc.emb), enc.mask, self.heads))

    def voiced(
        self, conds: Mapping[str, Encoded], tokens: Tensor | None = None, pool: Mapping[str, nn.Module] | None = None
    ) -> Tensor:
        """The token states (``tokens``, encoded from ``conds`` when not given) plus each other
        condition's masked mean through its projection in ``pool`` (default: this module's own),
        added one after another in ``pool``'s order: what the duration predictor and the priors read."""
        h = self.encode(conds[self.name]) if tokens is None else tokens
        for name, proj in (self.pool if pool is None else pool).items():
            if name != self.name:
                h = h + proj(masked_mean(conds[name]))[:, None]
        return h

    # -- durations ---------------------------------------------------------------------------------

    def log_durations(
        self, conds: Mapping[str, Encoded], voiced: Tensor | None = None, pool: Mapping[str, nn.Module] | None = None
    ) -> Tensor:
        """Predicted ``log(1 + d)`` ``[B, L]`` per token, from the ``voiced`` states (computed when not given)."""
        voiced = self.voiced(conds, pool=pool) if voiced is None else voiced
        return self.duration(voiced, conds[self.name].mask)

    def predict_durations(
        self, conds: Mapping[str, Encoded], pace: float = 1.0, frames: int | None = None, pool: Mapping[str, nn.Module] | None = None
    ) -> Tensor:
        """Durations ``[B, L]`` in frames (:meth:`DurationPredictor.to_frames`): ``pace`` scales them
        (2.0 speaks half as fast); ``frames`` instead sets the pace so that the total comes to
        about that many frames."""
        return DurationPredictor.to_frames(self.log_durations(conds, pool=pool), conds[self.name].mask, pace, frames)

    def durations(self, cond: Cond) -> Tensor:
        """The durations ``cond["<name>.durations"]`` ``[B, L]`` (teacher's or predicted), as integers."""
        durations = cond.get(f"{self.name}.durations")
        if durations is None:
            raise ValueError(f"the aligned condition needs cond[{self.name + '.durations'!r}] (see predict_durations)")
        return durations.long()

    def kept(self, keep: Keep, mask: Tensor) -> Tensor:
        """Rows ``[B]`` (bool, on ``mask``'s device) where the aligned condition is kept."""
        kept = keep.get(self.name)
        if kept is None:
            return torch.ones(mask.shape[0], dtype=torch.bool, device=mask.device)
        return kept.view(-1).to(mask.device)

    @staticmethod
    def duration_loss(log_d: Tensor, durations: Tensor, mask: Tensor, kept: Tensor) -> Tensor:
        """FastSpeech §3.3: MSE on ``log(1 + d)`` against teacher ``durations`` over the real tokens
        (``mask`` ``[B, L]``) of the kept rows (``kept`` ``[B]``)."""
        return DurationPredictor.loss(log_d, durations, mask.bool() & kept[:, None])

    @staticmethod
    def regulate(states: Tensor, durations: Tensor, kept: Tensor | None, frames: int, mask: Tensor) -> Tensor:
        """The length regulator (§3.2): ``states`` ``[B, L, D]`` -> ``[B, frames, D]``, a dropped row
        (``kept`` False) its null token on every frame, frames past a row's durations its last real
        token (``mask`` ``[B, L]``: the real tokens; :func:`~audioguide.models.duration.regulate_kept`)."""
        return regulate_kept(states, durations, kept, frames, mask)
