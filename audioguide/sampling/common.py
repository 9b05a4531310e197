"""What every sampler module shares: the callback, noise and guided-pair signatures, grid plumbing,
and the two interfaces through which recipes and the pipeline run samplers.

Samplers themselves are small pure functions over a model callable (k-diffusion's shape:
``sample_x(model, x, grid, ..., callback)``). A recipe names a sampler; what that name stands for is
one of two interfaces, each a frozen record beside the functions it runs:

* :class:`ContinuousSampler` integrates a guided vector field (:class:`~audioguide.guidance.GuidedField`)
  from Gaussian noise to latents ``[B, C, T]``;
* :class:`TokenSampler` decodes codec tokens ``[B, K, T]`` autoregressively from a codec LM under
  guidance on its logits.

Both take their randomness as :class:`RowStreams`: consecutive groups of rows, each with its own
``torch.Generator``. An item drawn in a batch with others therefore sees exactly the random numbers
it would see alone, which is what makes batched drawing give the same audio as drawing each item
alone (up to float rounding of the batched forward).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from audioguide.core import AlphaSigma
from audioguide.guidance import Guidance, GuidedField

Callback = Callable[[int, float, Tensor], None]
"""``callback(i, t, x)`` after step ``i``, with the time ``t`` the new ``x`` sits at."""

GuidedPair = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
"""``model_pair(x, t) -> (guided, unconditional)`` predictions of the sampler's kind (CFG++)."""

NoiseSampler = Callable[[Tensor], Tensor]
"""``noise(x) -> z``: fresh standard Gaussian noise shaped like ``x`` (k-diffusion's
``noise_sampler``), for stochastic samplers."""

StepProgress = Callable[[int, int], None]
"""``progress(step, total)`` after each step of a sampler run through its interface."""


def check_grid(ts: Tensor) -> None:
    if ts.ndim != 1 or ts.numel() < 2:
        raise ValueError(f"ts must be a 1-D tensor of at least 2 times, got shape {tuple(ts.shape)}")


def t_batch(t: float, x: Tensor) -> Tensor:
    """The scalar time ``t`` as the ``[B]`` tensor a model expects."""
    return torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)


# ---------------------------------------------------------------------------------------------
# Randomness per group of rows
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowStreams:
    """The random streams of a batch: ``generators[i]`` draws for the ``rows[i]`` consecutive rows
    of group ``i`` (e.g. the candidates of one sentence), and nothing else draws for them. With
    ``frames``, group ``i`` is ``frames[i]`` frames long (the last dimension) and draws only those:
    what it would draw alone; the batch is padded with zeros to the longest."""

    generators: tuple[torch.Generator, ...]
    rows: tuple[int, ...]
    frames: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not self.generators or len(self.generators) != len(self.rows) or min(self.rows) < 1:
            raise ValueError("RowStreams needs one generator per group and at least one row per group")
        if self.frames is not None and (len(self.frames) != len(self.rows) or min(self.frames) < 1):
            raise ValueError("RowStreams needs one length >= 1 per group")

    @classmethod
    def single(cls, generator: torch.Generator, batch: int) -> RowStreams:
        """One generator for a whole batch."""
        return cls((generator,), (batch,))

    @property
    def batch(self) -> int:
        return sum(self.rows)

    @property
    def device(self) -> torch.device:
        return self.generators[0].device

    def slices(self) -> list[tuple[torch.Generator, slice]]:
        out, start = [], 0
        for g, n in zip(self.generators, self.rows):
            out.append((g, slice(start, start + n)))
            start += n
        return out

    def randn(self, *shape: int, dtype: torch.dtype = torch.float32) -> Tensor:
        """Standard normal noise ``[B, *shape[:-1], T]`` (``T = shape[-1]``): each group draws from its
        own generator, over its own ``frames`` (zeros past them) when the streams have lengths."""
        frames = self.frames or (shape[-1],) * len(self.rows)
        parts = [torch.randn((n, *shape[:-1], f), generator=g, dtype=dtype, device=g.device)
                 for g, n, f in zip(self.generators, self.rows, frames)]
        if len(parts) == 1 and frames[0] == shape[-1]:
            return parts[0]
        return torch.cat([F.pad(p, (0, shape[-1] - p.shape[-1])) for p in parts])

    def noise_like(self, x: Tensor) -> Tensor:
        """:meth:`randn` shaped like ``x`` ``[B, ..., T]`` (a stochastic sampler's noise sampler)."""
        if x.shape[0] != self.batch:
            raise ValueError(f"x has {x.shape[0]} rows, the streams {self.batch}")
        return self.randn(*x.shape[1:], dtype=x.dtype).to(x.device)


def frame_mask(frames: Sequence[int], rows: Sequence[int], device: torch.device | str = "cpu") -> Tensor | None:
    """``[B, max(frames)]`` True on each row's real frames (group ``i``: ``rows[i]`` rows of
    ``frames[i]`` frames); None when every row is full length."""
    T = max(frames)
    if all(f == T for f in frames):
        return None
    lengths = torch.tensor([f for f, n in zip(frames, rows) for _ in range(n)], device=device)
    return torch.arange(T, device=device)[None] < lengths[:, None]


# ---------------------------------------------------------------------------------------------
# The two sampler interfaces
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContinuousSampler:
    """A sampler of latents from a guided vector field, as recipes see it.

    ``Config`` is the frozen dataclass its recipe table is checked against; ``kinds`` the model
    prediction kinds it accepts; ``alpha_sigma(config)`` its noise schedule;
    ``run(field, x, config, noise, callback)`` the pure sampling function bound to the config
    (``noise`` a :data:`NoiseSampler` for stochastic samplers). ``cfgpp``: guidance scales live in
    ``[0, 1]`` and ``run`` calls ``field.pair``; ``mean_flow``: needs a model of average velocity.
    """

    Config: type
    kinds: tuple[str, ...]
    alpha_sigma: Callable[[Any], AlphaSigma]
    run: Callable[[GuidedField, Tensor, Any, NoiseSampler, Callback | None], Tensor]
    cfgpp: bool = False
    mean_flow: bool = False

    def steps(self, config: Any) -> int | None:
        """Steps of one draw."""
        return config.steps

    def pads(self, policy: Guidance) -> bool:
        """Whether rows of different lengths may share a padded batch under ``policy``: only when
        each frame's guided prediction depends on that frame alone (no guider reduces over frames)."""
        return policy.frame_local

    def latents(self, representation, samples: Tensor) -> Tensor:
        """The latents ``[B, C, T]`` of what :meth:`draw` returned."""
        return samples

    def decode(self, representation, samples: Tensor) -> Tensor:
        """Waveforms ``[B, S]`` of what :meth:`draw` returned."""
        return representation.decode(samples)

    def draw(self, model, cond, policy: Guidance, config: Any, frames: Sequence[int], streams: RowStreams,
             channels: int, progress: StepProgress | None = None) -> Tensor:
        """Latents ``[B, channels, max(frames)]`` for ``cond`` (batch ``B = streams.batch``) under
        ``policy``: group ``i`` of ``streams`` has ``frames[i]`` real frames; a padded batch passes
        the frame mask to the model. Frames past a group's length are meaningless."""
        x = streams.randn(channels, max(frames))
        mask = frame_mask(frames, streams.rows, x.device)
        field = GuidedField(model, cond, policy, model.kind, self.alpha_sigma(config), extra={} if mask is None else {"mask": mask})
        total = self.steps(config)
        callback = None if progress is None else (lambda i, t, x: progress(i + 1, total))
        return self.run(field, x, config, streams.noise_like, callback)


@dataclass(frozen=True)
class TokenSampler:
    """A sampler of codec tokens from a codec LM, as recipes see it.

    ``run(model, cond, policy, frames, config, streams, progress)`` is the pure AR loop bound to the
    config; it returns codes ``[B, K, max(frames)]`` where ``frames`` has one length per row.
    """

    Config: type
    run: Callable[..., Tensor]
    kinds: tuple[str, ...] = ("tokens",)
    cfgpp = False
    mean_flow = False

    def steps(self, config: Any) -> int | None:
        """None: a draw's steps follow its length (frames + codebooks - 1)."""
        return None

    def pads(self, policy: Guidance) -> bool:
        """Always: each row stops at its own length and draws from its own stream."""
        return True

    def latents(self, representation, samples: Tensor) -> Tensor:
        """The latents ``[B, C, T]`` of drawn codes: their quantised vectors."""
        return representation.dequantize(samples)

    def decode(self, representation, samples: Tensor) -> Tensor:
        """Waveforms ``[B, S]`` of drawn codes."""
        return representation.decode_tokens(samples)

    def draw(self, model, cond, policy: Guidance, config: Any, frames: Sequence[int], streams: RowStreams,
             channels: int = 0, progress: StepProgress | None = None) -> Tensor:
        """Codes ``[B, K, max(frames)]``; group ``i`` of ``streams`` stops at ``frames[i]`` frames."""
        per_row = [f for f, n in zip(frames, streams.rows) for _ in range(n)]
        return self.run(model, cond, policy, per_row, config, streams, progress)
