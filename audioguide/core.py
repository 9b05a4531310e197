"""Core types shared by every layer of audioguide.

Everything else depends on this module and it depends on nothing of ours. It holds:

* the error type that the CLI turns into a one-line message,
* the conventions for time and predictions (documented once, here),
* the conversions between prediction kinds,
* the signatures of the callables that samplers and guidance pass around,
* finite scalar quantisation's grid (token ids <-> values), which a tokenizer writes and a token
  conditioner reads.

Time and noise convention
-------------------------
All continuous generators use ``x_t = alpha_t * x_0 + sigma_t * eps`` with ``t`` in ``[0, 1]`` and
**t = 1 the noise end**. For flow matching (rectified flow) ``alpha_t = 1 - t`` and ``sigma_t = t``,
so the velocity is ``v = dx_t/dt = eps - x_0`` and sampling integrates from ``t = 1`` down to ``t = 0``.
F5-TTS and MeanAudio put noise at ``t = 0``; their ``t`` is our ``1 - t``. Diffusion schedules
(DDPM-style ``alphas_cumprod``) map a discrete timestep ``n`` of ``N`` to ``t = n / (N - 1)``.

Prediction kinds
----------------
``"flow"``  rectified-flow velocity ``v = eps - x_0`` (also mean velocity ``u`` over an interval),
``"eps"``   noise prediction,
``"v"``     diffusion v-prediction ``v = alpha_t eps - sigma_t x_0`` (Salimans & Ho 2022, eq. 3.3),
``"x0"``    data prediction.
Every kind is an affine function of ``(x_0, eps)`` given ``(x_t, alpha_t, sigma_t)``, so guidance
that is linear (plain CFG) gives the same result in any space, and the nonlinear variants declare
the space they work in and convert through :func:`to_x0_eps` / :func:`from_x0_eps`.
"""

from __future__ import annotations

import errno
import math
import os
import re
import tempfile
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch
from torch import Tensor

PredictionKind = Literal["flow", "eps", "v", "x0"]
PREDICTION_KINDS: tuple[str, ...] = ("flow", "eps", "v", "x0")

Cond = Mapping[str, Tensor]
"""Condition tensors by name, each with the batch as its leading dimension."""

Keep = Mapping[str, Tensor]
"""Per-condition boolean masks of shape ``[B]``: True keeps the condition, False uses its null."""


def part_key(name: str, k: int) -> str:
    """The ``cond`` key of part ``k >= 1`` of condition ``name``'s prompt, ``<name>.part<k>`` (its
    mask: ``<name>.part<k>.mask``); part 0 is ``cond[name]`` itself. A prompt in parts is drawn by
    :class:`audioguide.guidance.Conjunction`."""
    return f"{name}.part{k}"


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (:func:`terminate_on_sigterm`): it unwinds like Ctrl-C, so temporary files
    are removed, claims released and the command ends with one line."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def terminate_on_sigterm() -> None:
    """Make SIGTERM raise :class:`Terminated` in this process's main thread (the CLI, a render worker)."""
    import signal

    signal.signal(signal.SIGTERM, _raise_terminated)


class AudioguideError(Exception):
    """An error caused by the user's input (recipe, text, file, option).

    Its message is a single line that the CLI prints as it is, with a non-zero exit code.
    """


class Denoiser(Protocol):
    """A conditional generator network as guidance sees it.

    ``model(x, t, cond, keep, **extra)`` returns a prediction shaped like ``x``; ``keep[name][b]``
    False means "use the explicit null condition of ``name`` for row ``b``". The same mechanism
    drops conditions during training, so every branch of multi-condition guidance is one row of a
    single batched forward.
    """

    def __call__(self, x: Tensor, t: Tensor, cond: Cond, keep: Keep, **extra: Tensor) -> Tensor: ...


def prepare(model: object, cond: Cond, keep: Keep, frames: int, mask: Tensor | None = None) -> dict[str, Tensor]:
    """``cond`` plus the model's step-invariant work for ``keep`` over ``frames`` latent frames.

    A model may define ``prepare(cond, keep, frames, mask)``: whatever its forward computes from
    the conditions alone (never from ``x`` or ``t``) is computed once and travels in the returned
    mapping, which the forward then reuses, at every sampling step and in every loss of a training
    step. The result is only valid with the same ``keep`` rows, ``frames`` and ``mask``. A model
    without the method (a plain function) gets a copy of ``cond``.
    """
    method = getattr(model, "prepare", None)
    return dict(cond) if method is None else method(cond, keep, frames, mask)


VectorField = Callable[..., Tensor]
"""What samplers call: ``model(x, t, **extra) -> prediction`` with conditions already bound."""

AlphaSigma = Callable[[Tensor], tuple[Tensor, Tensor]]
"""Maps ``t`` of shape ``[B]`` to ``(alpha_t, sigma_t)`` of shape ``[B]``."""


def flow_alpha_sigma(t: Tensor) -> tuple[Tensor, Tensor]:
    """Rectified-flow path coefficients: ``alpha_t = 1 - t``, ``sigma_t = t``."""
    return 1.0 - t, t


def expand_like(v: Tensor, x: Tensor) -> Tensor:
    """Reshape a per-sample tensor ``[B]`` so that it broadcasts against ``x`` ``[B, ...]``."""
    v = torch.as_tensor(v, dtype=x.dtype, device=x.device)
    if v.ndim == 0:
        return v
    return v.reshape(v.shape[0], *([1] * (x.ndim - 1)))


def to_x0_eps(
    pred: Tensor, kind: str, x: Tensor, alpha: Tensor, sigma: Tensor
) -> tuple[Tensor, Tensor]:
    """Recover ``(x_0, eps)`` from a prediction of ``kind`` at ``x_t = alpha x_0 + sigma eps``.

    ``alpha`` and ``sigma`` have shape ``[B]`` (or are scalars). Kinds are defined in the module
    docstring; ``"v"`` assumes a variance-preserving path (``alpha^2 + sigma^2 = 1``).
    """
    a, s = expand_like(alpha, x), expand_like(sigma, x)
    if kind == "x0":
        return pred, (x - a * pred) / s
    if kind == "eps":
        return (x - s * pred) / a, pred
    if kind == "v":
        return a * x - s * pred, s * x + a * pred
    if kind == "flow":
        # eps = x0 + v and x = a x0 + s eps  =>  x0 = (x - s v) / (a + s)
        x0 = (x - s * pred) / (a + s)
        return x0, x0 + pred
    raise ValueError(f"unknown prediction kind {kind!r}; choose one of {', '.join(PREDICTION_KINDS)}")


def from_x0_eps(x0: Tensor, eps: Tensor, kind: str, alpha: Tensor, sigma: Tensor) -> Tensor:
    """The prediction of ``kind`` that corresponds to ``(x_0, eps)``; inverse of :func:`to_x0_eps`."""
    if kind == "x0":
        return x0
    if kind == "eps":
        return eps
    if kind == "v":
        return expand_like(alpha, x0) * eps - expand_like(sigma, x0) * x0
    if kind == "flow":
        return eps - x0
    raise ValueError(f"unknown prediction kind {kind!r}; choose one of {', '.join(PREDICTION_KINDS)}")


def convert_prediction(
    pred: Tensor, src: str, dst: str, x: Tensor, alpha: Tensor, sigma: Tensor
) -> Tensor:
    """Convert a prediction between kinds at the same point ``(x_t, alpha_t, sigma_t)``."""
    if src == dst:
        return pred
    if dst == "x0":
        return to_x0_eps(pred, src, x, alpha, sigma)[0]
    x0, eps = to_x0_eps(pred, src, x, alpha, sigma)
    return from_x0_eps(x0, eps, dst, alpha, sigma)


@dataclass(frozen=True)
class Audio:
    """Generated audio: one float32 waveform in ``[-1, 1]`` per input, and their sample rate."""

    waveforms: tuple[np.ndarray, ...]
    sample_rate: int

    def __len__(self) -> int:
        return len(self.waveforms)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.waveforms[i]

    def seconds(self, i: int = 0) -> float:
        return len(self.waveforms[i]) / self.sample_rate


MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed takes 64-bit seeds


def check_seed(seed: object) -> int:
    """``seed`` if it is an integer in ``[0, MAX_SEED]``, else a one-line error."""
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise AudioguideError(f"seed must be an integer in [0, 2^64 - 1], got {seed!r}")
    return seed


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` seeded explicitly; every random draw in audioguide flows from one."""
    check_seed(seed)
    return torch.Generator(device=device).manual_seed(seed)


@contextmanager
def atomic_write(path: str | Path, temp: str | None = None) -> Iterator[Path]:
    """Yield a temporary file beside ``path``; it replaces ``path`` only if the block succeeds.

    A crash or error leaves any previous file untouched and no partial file behind. The result has
    the usual permissions (``0666 & ~umask``), not ``mkstemp``'s 0600. ``temp`` names the temporary
    file (unique to its writer, e.g. with a pid, so that one left by a killed writer can be told
    apart); by default a fresh short name.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if temp is None:
            # a short temporary name: a file name near the 255-byte limit stays writable
            fd, name = tempfile.mkstemp(prefix=f".{path.name[:40]}.", suffix=".partial", dir=path.parent)
        else:
            name = str(path.parent / temp)
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as e:
        raise AudioguideError(f"cannot write to {path.parent}: {e.strerror}") from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):  # a full disk, a quota, a file size limit: one line, not a traceback
            raise AudioguideError(f"cannot write {path}: {os_reason(e)}") from None
        raise


def os_reason(e: OSError) -> str:
    """A one-line reason for a failed write, naming a full disk as such."""
    if e.errno == errno.ENOSPC:
        return "disk full (no space left on device)"
    return e.strerror or next(iter(str(e).splitlines()), type(e).__name__)


# ANSI / ECMA-48 escape sequences: CSI (ESC [ ... final byte), OSC (ESC ] ... BEL or ESC \), and
# the two-character Fe escapes; a terminal's colour codes pasted into text would otherwise be read
# aloud ("31 m").
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]?")


def clean_text(text: str) -> str:
    """``text`` without terminal escape sequences and invisible characters: Unicode control (Cc) and
    format (Cf: zero-width spaces, soft hyphens, byte-order marks) characters are removed, except
    tab, newline and carriage return, which are kept as whitespace. Ordinary text is unchanged."""
    if text.isprintable():
        return text
    text = _ESCAPES.sub("", text)
    return "".join(c for c in text if c in "\t\n\r" or unicodedata.category(c) not in ("Cc", "Cf"))


def set_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads: ``threads``, else :data:`DEFAULT_THREADS`; returns the count.

    The default is one thread. Measured on the 2-core CPU (``benchmarks/threads.py``), two threads
    are faster only on an idle machine; when another process holds a core, OpenMP's spinning
    threads wait on each other and a 0.2 s call takes seconds. One thread never collapses.
    """
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise AudioguideError(f"threads must be an integer >= 1, got {threads!r}")
    n = threads or DEFAULT_THREADS
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


DEFAULT_THREADS = 1


def init_random(module: torch.nn.Module, seed: int, moved: Mapping[str, str] | None = None) -> torch.nn.Module:
    """Re-initialise every parameter from an explicit generator (no global RNG).

    Matrices get ``N(0, 1/fan_in)``, vectors (biases, norms, null conditions) ``N(0, 0.02^2)``, drawn
    in the order of the parameters' names; a parameter that has moved (``moved``, ``{prefix now:
    former prefix}``, see :attr:`Generator.moved`) is drawn under its former name, so that a seed
    still gives the network it gave before the move.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(module.named_parameters(), key=lambda item: former_name(item[0], moved or {})):
            if p.ndim >= 2:
                std = 1.0 / math.sqrt(p[0].numel())
            else:
                std = 0.02
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


def former_name(name: str, moved: Mapping[str, str]) -> str:
    """``name`` as it was before the move ``moved`` (``{prefix now: former prefix}``) renamed it."""
    for now, before in moved.items():
        if name.startswith(now):
            return before + name[len(now) :]
    return name


def load_moved(module: torch.nn.Module, state_dict: dict, prefix: str, *_: object) -> None:
    """``load_state_dict`` pre-hook: keys under a former prefix of ``module.moved`` take the new one
    (a checkpoint written before the move loads as it is; a key already in its new place stays)."""
    for now, before in getattr(module, "moved", {}).items():
        for key in [k for k in state_dict if k.startswith(prefix + before)]:
            renamed = prefix + now + key[len(prefix + before) :]
            if renamed not in state_dict:
                state_dict[renamed] = state_dict.pop(key)


def fsq_bound(z: Tensor, levels: Tensor) -> Tensor:
    """FSQ's bounding function (Mentzer et al. 2023, App. A): each of the last dim's channels to
    ``L_i`` values after rounding, ``tanh(z + shift) * half - offset`` with ``half = (L - 1) / 2``
    (slightly widened), ``offset = 0.5`` for even ``L`` and ``shift = atanh(offset / half)``, so that
    ``z = 0`` maps to a level."""
    half = (levels - 1) * (1 + 1e-3) / 2
    offset = torch.where(levels % 2 == 0, 0.5, 0.0)
    shift = torch.atanh(offset / half)
    return torch.tanh(z + shift) * half - offset


def fsq_quantize(z: Tensor, levels: Tensor) -> Tensor:
    """Bounded, rounded with a straight-through gradient and normalised to ``[-1, 1]``: ``[..., d]``."""
    bounded = fsq_bound(z, levels)
    rounded = bounded + (bounded.round() - bounded).detach()
    return rounded / (levels // 2)


def _fsq_basis(levels: Tensor) -> Tensor:
    """The place values of the mixed-radix token id, first level least significant: ``[1, L_0, L_0 L_1, ...]``."""
    return torch.cumprod(torch.cat([levels.new_ones(1), levels[:-1]]), 0)


def fsq_indices(q: Tensor, levels: Tensor) -> Tensor:
    """Normalised FSQ values ``[..., d]`` -> token ids ``[...]`` (mixed radix, first level least significant)."""
    half = levels // 2
    digits = (q * half + half).round().long()
    return (digits * _fsq_basis(levels)).sum(-1)


def fsq_coordinates(ids: Tensor, levels: Tensor) -> Tensor:
    """Token ids ``[...]`` -> their normalised FSQ values ``[..., d]`` in ``[-1, 1]`` (inverse of :func:`fsq_indices`)."""
    digits = (ids[..., None] // _fsq_basis(levels)) % levels
    half = levels // 2
    return (digits - half).float() / half
