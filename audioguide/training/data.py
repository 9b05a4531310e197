"""Training data from manifests: audio resampled once and held in memory, seeded batches.

Each step draws a batch of rows with an explicit generator, crops each clip to at most
``segment_seconds`` (a random window, also from the generator; 0 keeps whole clips), pads to the
longest, and returns the lengths so losses can ignore padding. Small corpora (the ones these
machines train on) fit in memory many times over; the resampling cost is paid once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from audioguide.audio import read_audio
from audioguide.core import AudioguideError
from audioguide.manifest import Row, read_manifest

INPUT_FIELDS = ("text", "speaker", "caption", "style", "tokens")


def row_input(row: Row, field: str) -> str | None:
    """A row's input ``field``: its own attribute, or (``tokens``: an acoustic stage's semantic
    tokens, written by ``audioguide data tokens``) its extra field of that name."""
    value = getattr(row, field, None) if field != "tokens" else row.extra.get("tokens")
    return None if value is None else str(value)


@dataclass(frozen=True)
class AudioBatch:
    """Padded waveforms ``[B, S]``, their lengths ``[B]``, the rows' inputs by field, the rows'
    indices in the dataset, their per-token durations in samples (``phoneme_samples``; None
    where a row has none, and for cropped clips) and their class labels (the manifest's ``label``;
    None where a row has none)."""

    wav: Tensor
    lengths: Tensor
    inputs: dict[str, list[str]]
    indices: tuple[int, ...] = ()
    alignments: tuple[list[int] | None, ...] = ()
    labels: tuple[str | None, ...] = ()

    def frame_mask(self, hop: int, frames: int) -> Tensor:
        """``[B, frames]`` True where a latent frame covers real audio (``ceil(length / hop)``)."""
        valid = (self.lengths + hop - 1) // hop
        return torch.arange(frames, device=valid.device)[None] < valid[:, None]


class AudioDataset:
    """A manifest's audio at one sample rate, in memory."""

    def __init__(self, rows: Sequence[Row], sample_rate: int, needs: Sequence[str] = ()) -> None:
        if not rows:
            raise AudioguideError("the training manifest has no rows")
        self.rows = list(rows)
        self.sample_rate = sample_rate
        check_rows(self.rows, needs)
        self.audio = [torch.from_numpy(read_audio(r.audio, sample_rate)[0]) for r in self.rows]
        self._index()

    def _index(self) -> None:
        """Row indices by clip length (ties by index), for length-bucketed batches; an empty cache
        of :meth:`weights`."""
        n = len(self.rows)
        self.by_length = torch.tensor(sorted(range(n), key=lambda i: (len(self.audio[i]), i)), dtype=torch.long)
        self._weights: dict[tuple[float, str], Tensor] = {}

    @classmethod
    def from_manifest(cls, path: str | Path, sample_rate: int, needs: Sequence[str] = ()) -> AudioDataset:
        return cls(read_manifest(path), sample_rate, needs)

    def __len__(self) -> int:
        return len(self.rows)

    def seconds(self) -> float:
        return sum(len(a) for a in self.audio) / self.sample_rate

    def batch(self, indices: Sequence[int], generator: torch.Generator, segment_seconds: float = 0.0) -> AudioBatch:
        segment = int(segment_seconds * self.sample_rate)
        clips = []
        for i in indices:
            wav = self.audio[i]
            if segment and len(wav) > segment:
                start = int(torch.randint(0, len(wav) - segment + 1, (1,), generator=generator))
                wav = wav[start : start + segment]
            clips.append(wav)
        lengths = torch.tensor([len(c) for c in clips])
        out = torch.zeros(len(clips), int(lengths.max()))
        for j, c in enumerate(clips):
            out[j, : len(c)] = c
        inputs = {f: [row_input(self.rows[i], f) or "" for i in indices] for f in INPUT_FIELDS}
        alignments = tuple(None if segment else self.rows[i].extra.get("phoneme_samples") for i in indices)
        labels = tuple(_label(self.rows[i].extra.get("label")) for i in indices)
        return AudioBatch(out, lengths, inputs, tuple(indices), alignments, labels)

    def weights(self, balance: float, by: str = "speaker") -> Tensor | None:
        """Draw weight of every row, ``n_g ** -balance`` for a row of a group with ``n_g`` rows; the
        groups are the rows' speakers (``by = "speaker"``) or class labels (``by = "label"``: a sound
        corpus's classes; a two-source scene counts under its foreground class, its ``label``).

        A group's share of the draws is then ``n_g ** (1 - balance) / sum_g' n_g' ** (1 - balance)``:
        the exponent-smoothed sampling of unbalanced multilingual corpora (XLM, Conneau & Lample
        2019, §3.1, q_i ∝ p_i^α with α = 1 - balance). ``balance = 0`` is uniform over rows (None),
        1 uniform over groups; rows without a speaker (label) form one group.
        """
        if balance == 0.0:
            return None
        if (balance, by) not in self._weights:
            if by == "speaker":
                groups = [r.speaker or "" for r in self.rows]
            elif by == "label":
                groups = [_label(r.extra.get("label")) or "" for r in self.rows]
            else:
                raise ValueError(f"balance groups rows by speaker or label, not {by!r}")
            counts = Counter(groups)
            self._weights[balance, by] = torch.tensor([counts[g] ** -balance for g in groups], dtype=torch.float64)
        return self._weights[balance, by]

    def sample(
        self, batch_size: int, generator: torch.Generator, segment_seconds: float = 0.0, length_window: int = 0,
        balance: float = 0.0, balance_by: str = "speaker",
    ) -> AudioBatch:
        """A random batch (with replacement across steps, without within a batch when possible).

        ``length_window > 0`` draws the batch from a random window of ``batch_size * length_window``
        clips that neighbour each other in the order of their lengths, so whole clips pad less (the
        length-bucketed batching of speech recognition and TTS trainers). The window wraps around
        the order, so every clip lies in equally many windows and comes up equally often.

        ``balance > 0`` draws rows by :meth:`weights` (groups with few rows come up more often; the
        groups are speakers or labels, ``balance_by``),
        each row with probability of being in the batch proportional to its weight
        (:func:`weighted_draw`); with a length window, the window is drawn with probability
        proportional to the weight it holds, so a row, which lies in ``width`` windows like every
        row, still comes up in proportion to its weight (unless a window's draw would need a row
        more than once: a group's share of a batch can not exceed its share of the window).
        """
        n = len(self)
        w = self.weights(balance, balance_by)
        if n <= batch_size or (w is None and length_window == 0):
            idx = torch.randperm(n, generator=generator)[: min(batch_size, n)].tolist()
        else:
            pool = self._window(batch_size * length_window, w, generator) if length_window > 0 else torch.arange(n)
            if w is not None:
                idx = pool[weighted_draw(w[pool], batch_size, generator)].tolist()
            else:
                idx = pool[torch.randperm(len(pool), generator=generator)[:batch_size]].tolist()
        while len(idx) < batch_size:
            idx.append(int(torch.randint(0, n, (1,), generator=generator)))
        return self.batch(idx, generator, segment_seconds)

    def _window(self, width: int, w: Tensor | None, generator: torch.Generator) -> Tensor:
        """Row indices of ``width`` clips that neighbour each other in the order of their lengths
        (wrapping around it); the first drawn uniformly, or with weights ``w``, in proportion to the
        weight the window holds."""
        n = len(self)
        width = min(n, width)
        if w is None:
            start = int(torch.randint(0, n, (1,), generator=generator))
        else:
            ordered = w[self.by_length]
            sums = torch.cat([ordered.new_zeros(1), torch.cat([ordered, ordered[: width - 1]]).cumsum(0)])
            held = sums[width : width + n] - sums[:n]  # held[s]: weight of the window [s, s + width)
            start = int(torch.multinomial(held, 1, generator=generator))
        return self.by_length[(start + torch.arange(width)) % n]


def _label(value: object) -> str | None:
    """A row's class label as a string (None without one)."""
    return None if value is None else str(value)


def weighted_draw(w: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """``k`` distinct indices into ``w [n]`` (``k <= n``), index ``i`` drawn with probability
    ``pi_i = min(1, c w_i)``, ``c`` such that the ``pi`` sum to ``k``.

    Systematic sampling with probability proportional to size (Madow 1949; Tillé 2006, *Sampling
    Algorithms*, §7.2): the ``pi`` are laid end to end in a random order and the indices under the
    points ``u, u + 1, ..., u + k - 1`` (``u`` uniform in [0, 1)) are taken. Unlike ``k`` draws
    without replacement, the inclusion probabilities are exactly ``pi``.
    """
    pi = torch.zeros_like(w, dtype=torch.float64)
    free = torch.ones_like(pi, dtype=torch.bool)
    for _ in range(len(w)):  # rows whose share would exceed 1 are taken surely, the rest share the remainder
        pi[free] = (k - int((~free).sum())) * w[free] / w[free].sum()
        over = free & (pi >= 1.0)
        if not over.any():
            break
        pi[over], free = 1.0, free & ~over
    order = torch.randperm(len(w), generator=generator)
    ends = pi[order].cumsum(0)
    u = float(torch.rand((), generator=generator, dtype=torch.float64))
    points = u + torch.arange(k, dtype=torch.float64)
    picks = torch.searchsorted(ends, points, right=True).clamp_max(len(w) - 1)
    return order[picks]


def check_rows(rows: Sequence[Row], needs: Sequence[str]) -> None:
    """Every row has audio (that exists) and the inputs the recipe conditions on."""
    for row in rows:
        if row.audio is None:
            raise AudioguideError(f"manifest row {row.id!r} has no 'audio'")
        if not row.audio.is_file():
            raise AudioguideError(f"manifest row {row.id!r}: audio file {row.audio} not found")
        for field in needs:
            if row_input(row, field) is None:
                raise AudioguideError(f"manifest row {row.id!r} has no {field!r}, which this recipe conditions on")


def split_holdout(rows: Sequence[Row], fraction: float, seed: int) -> tuple[list[Row], list[Row]]:
    """Deterministic train / validation split (at least one validation row when fraction > 0)."""
    rows = list(rows)
    if fraction <= 0 or len(rows) < 2:
        return rows, []
    order = np.random.default_rng(seed).permutation(len(rows))
    k = max(1, int(round(fraction * len(rows))))
    val = {int(i) for i in order[:k]}
    return [r for i, r in enumerate(rows) if i not in val], [r for i, r in enumerate(rows) if i in val]
