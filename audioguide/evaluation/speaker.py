"""Speaker identification judge: does generated speech have the voice it was asked for?

A small classifier trained **only on real corpus audio** (the teacher recordings of a training
manifest), then applied to generated speech; its accuracy on held-out real recordings is the
ceiling that generated speech is compared with.

The features and the classifier are the generic clip judge of :mod:`audioguide.evaluation.classifier`
(one 256-number log-mel summary per clip at 16 kHz: mean and standard deviation over the active
frames of 64 level-normalised log-mel bands and of their HTK deltas; a one-hidden-layer MLP trained
full-batch with Adam from an explicit ``torch.Generator`` seed). A voice is what this judge
separates best: the long-term spectrum of a speaker (formant ranges, pitch harmonics, spectral tilt)
survives averaging over time, while the words, which differ between sentences, mostly do not.

Saved as a safetensors checkpoint (kind ``speaker-classifier``): weights and normalisation
statistics as tensors, voice names (metadata key ``voices``) and hyper-parameters in the metadata
config.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor

from audioguide.core import AudioguideError
from audioguide.evaluation import classifier as _clip
from audioguide.evaluation.classifier import (  # noqa: F401  (re-exported: the public names of this module)
    ACTIVE_RANGE,
    FLOOR,
    HOP,
    N_FFT,
    N_MELS,
    SAMPLE_RATE,
    ClipClassifier,
    TrainConfig,
    clip_features,
    features,
)
from audioguide.manifest import Row, cap_per_voice

KIND = "speaker-classifier"


class SpeakerClassifier(ClipClassifier):
    """A :class:`ClipClassifier` whose classes are voices; :meth:`predict` names the voice of clips."""

    KIND = KIND
    LABEL_KEY = "voices"  # the metadata key of checkpoints written before the generic classifier

    def __init__(self, voices: Sequence[str], mean: Tensor, std: Tensor, params: dict[str, Tensor], config: dict,
                 kind: str = KIND) -> None:
        super().__init__(voices, mean, std, params, config, KIND)  # ``kind`` is taken for the generic loader

    @property
    def voices(self) -> tuple[str, ...]:
        return self.labels


def _rows_by_voice(rows: Sequence[Row], per_voice: int | None) -> list[Row]:
    """Rows with audio and a speaker, at most ``per_voice`` per speaker, in manifest order."""
    return cap_per_voice([row for row in rows if row.audio is not None and row.speaker], per_voice)


def row_features(
    rows: Sequence[Row], per_voice: int | None = None, on_item: Callable[[int, int], None] | None = None
) -> tuple[Tensor, list[str]]:
    """Features and speaker names of real recordings (rows without audio or speaker are skipped)."""
    chosen = _rows_by_voice(rows, per_voice)
    return _clip.file_features([r.audio for r in chosen], on_item), [r.speaker for r in chosen]


def fit(feats: Tensor, labels: Sequence[str], seed: int = 0, config: TrainConfig = TrainConfig()) -> SpeakerClassifier:
    """Train on precomputed features (``[N, D]``) and voice names; full batch, deterministic."""
    voices = sorted(set(labels))
    if len(voices) < 2:
        raise AudioguideError(f"a speaker classifier needs at least two voices with audio; got {len(voices)}")
    clf = _clip.fit(feats, labels, seed, config, KIND)
    return SpeakerClassifier(clf.labels, clf.mean, clf.std, clf.params, clf.config)


def train_speaker_classifier(
    rows: Sequence[Row], per_voice: int | None = 200, seed: int = 0, config: TrainConfig = TrainConfig(),
    on_item: Callable[[int, int], None] | None = None,
) -> SpeakerClassifier:
    """Train on the real recordings of ``rows`` (at most ``per_voice`` per speaker, manifest order)."""
    feats, labels = row_features(rows, per_voice, on_item)
    clf = fit(feats, labels, seed, config)
    clf.config["per_voice"] = per_voice
    return clf


@dataclass(frozen=True)
class SpeakerAccuracy:
    overall: float
    items: int
    per_voice: dict[str, tuple[float, int]]  # voice -> (accuracy, items)


def held_out_accuracy(
    clf: SpeakerClassifier, rows: Sequence[Row], per_voice: int | None = None,
    on_item: Callable[[int, int], None] | None = None,
) -> SpeakerAccuracy:
    """Accuracy on real held-out recordings: the sanity number (and ceiling) of the judge."""
    feats, labels = row_features(rows, per_voice, on_item)
    if not labels:
        raise AudioguideError("no held-out rows with both 'audio' and 'speaker'")
    overall, per = _clip.accuracy_by_label(clf.predict_features(feats), labels)
    return SpeakerAccuracy(overall, len(labels), per)
