"""Sound evaluation: prompt adherence, realism and speed of a text-to-audio recipe across guidance settings.

For every setting (CFG scale, CFG-rescale phi, sampler steps) and every held-out row of a captioned
sound corpus, the recipe generates from ``row.caption`` for the row's duration, and three numbers
are measured:

* **prompt adherence**: top-1 accuracy of a sound classifier naming the row's class
  (``row.extra["label"]``: "dog", "piano", "man speaking", ...). The judge is the clip classifier
  of :mod:`audioguide.evaluation.classifier` trained **only on real corpus audio** (the training
  split), never on generated audio, which would teach it the generator's artefacts instead of the
  classes. It plays the part of the pretrained audio tagger behind the "KL" and classifier scores
  of AudioGen / AudioLDM (or of CLAP's text-audio score), trained offline on the corpus' own
  classes. Its accuracy on the real held-out clips is the ceiling a generator is compared with.
* **realism**: the Fréchet distance between Gaussians fitted to the judge's embeddings (its hidden
  layer, :meth:`~audioguide.evaluation.classifier.ClipClassifier.embed`) of the generated clips and
  of the rows' real audio: FID (Heusel et al. 2017, eq. 6) with the embedding of FAD (Kilgour et al.
  2019, who use VGGish) replaced by the judge's. Lower is more realistic; the estimate is biased
  upwards for few clips (the covariances are estimated), so compare settings at equal numbers of
  clips, as here, where every setting generates the same rows.
* **real-time factor**: synthesis wall time over seconds of audio produced (below 1 is faster than
  real time).

Row ``i`` gets seed ``seed + i`` under every setting, so settings are compared on paired samples.
Rows that share one audio file (several captions of one effect) are one real clip, counted once in
the real reference and, for training, in the judge.
"""

from __future__ import annotations

import itertools
import math
import re
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from audioguide.core import AudioguideError
from audioguide.evaluation.classifier import (
    SAMPLE_RATE,
    ClassRanking,
    ClipClassifier,
    TrainConfig,
    file_features,
    fit,
    map_files,
)
from audioguide.evaluation.tts import Sample, fmt_num, fmt_pct, fmt_scale, real_time_factor
from audioguide.manifest import Row
from audioguide.recipes import call_policy, sampler_config

if TYPE_CHECKING:
    from audioguide.evaluation.cnn_judge import CNNConfig, CNNJudge

KIND = "sound-classifier"

Setting = tuple[str, dict[str, float]]
"""A labelled setting: ``(label, {"cfg": w, "rescale": phi, "steps": n})``; an absent key is the recipe's."""

DEFAULT_LABEL = "recipe default"
REAL_LABEL = "real audio"
SETTING_KEYS = ("cfg", "rescale", "steps")


def row_label(row: Row) -> str | None:
    """The class of a corpus row (``extra["label"]``), or None."""
    label = row.extra.get("label")
    return str(label) if label not in (None, "") else None


# -- the judge ----------------------------------------------------------------------------------


def clip_rows(rows: Sequence[Row], per_class: int | None = None) -> list[Row]:
    """Rows with audio and a label, one per audio file (the first in manifest order), at most
    ``per_class`` per class."""
    seen: set[Path] = set()
    counts: dict[str, int] = {}
    out = []
    for row in rows:
        label = row_label(row)
        if row.audio is None or label is None:
            continue
        key = row.audio.resolve()
        if key in seen:
            continue
        seen.add(key)
        counts[label] = counts.get(label, 0) + 1
        if per_class is None or counts[label] <= per_class:
            out.append(row)
    return out


def row_labels(row: Row) -> tuple[str, ...]:
    """Every class a row's audio holds: ``extra["labels"]`` for a two-source scene, else its label."""
    labels = row.extra.get("labels")
    if isinstance(labels, (list, tuple)) and labels:
        return tuple(str(v) for v in labels)
    label = row_label(row)
    return (label,) if label is not None else ()


def row_features(
    rows: Sequence[Row], per_class: int | None = None, on_item: Callable[[int, int], None] | None = None,
    feature_set: str = "logmel-stats",
) -> tuple[Tensor, list[str]]:
    """Features and classes of the real clips of ``rows`` (see :func:`clip_rows`)."""
    chosen = clip_rows(rows, per_class)
    return file_features([r.audio for r in chosen], on_item, feature_set), [row_label(r) for r in chosen]


JUDGE_CONFIG = TrainConfig(hidden=256, steps=600, lr=5e-3, weight_decay=1e-3)
"""The default judge: the ``scene`` features (:func:`~audioguide.evaluation.classifier.scene_features`),
a wider hidden layer, multi-label where the corpus has two-source scenes."""


MIXTURE_GAINS = (-10.0, -3.0)  # dB, background RMS relative to the foreground's (the corpus's scenes)


def degrade(wav: np.ndarray, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A real clip as a worse recording chain would give it, for training the judge on more than
    one rendering of each recording (Salamon & Bello 2017, §III-B: background noise and dynamic
    range among the deformations that help environmental sound classification). Each, with its
    probability, drawn from ``rng``: additive noise (white or pink, 15-35 dB SNR; p 0.6), a
    4th-order Butterworth low-pass at 3.5-7.5 kHz (p 0.4), a first-order spectral tilt
    ``y[n] = x[n] - a x[n-1]``, ``a`` in [-0.6, 0.6] (p 0.4); a copy that drew none gets the noise.
    The class stays what it was; what
    changes is what no class should be judged by. Never generated audio."""
    from scipy.signal import butter, lfilter, sosfilt

    x = np.asarray(wav, dtype=np.float64).reshape(-1)
    tilt, low, noisy = rng.random(3) < (0.4, 0.4, 0.6)
    if tilt:
        a = rng.uniform(-0.6, 0.6)
        x = lfilter([1.0, -a], [1.0], x)
    if low:
        cutoff = min(rng.uniform(3500.0, 7500.0), 0.45 * sample_rate)
        x = sosfilt(butter(4, cutoff, fs=sample_rate, output="sos"), x)
    if noisy or not (tilt or low):  # every copy is degraded somehow
        noise = rng.standard_normal(x.size)
        if rng.random() < 0.5:  # pink: -3 dB per octave, by Kellet's economy filter (3 poles)
            noise = lfilter([0.049922035, -0.095993537, 0.050612699, -0.004408786], [1.0, -2.494956002, 2.017265875, -0.522189400], noise)
        power = float(np.mean(x**2)) or 1e-12
        snr = rng.uniform(15.0, 35.0)
        x = x + noise * np.sqrt(power / (float(np.mean(noise**2)) or 1e-12) / 10 ** (snr / 10))
    return x.astype(np.float32)


def augmented_features(
    paths: Sequence[str | Path], copies: int, seed: int = 0, feature_set: str = "scene",
    on_item: Callable[[int, int], None] | None = None,
) -> Tensor:
    """``[copies, len(paths), D]``: the features of ``copies`` degraded renderings (:func:`degrade`) of every
    clip, seeded by ``(seed, clip index, copy)``, so the same clip always gets the same copies."""
    from audioguide.audio import read_audio
    from audioguide.evaluation.classifier import features

    out = torch.zeros(copies, len(paths), features([], SAMPLE_RATE, feature_set).shape[1])  # [0, D] gives the width
    for i, path in enumerate(paths):
        wav = read_audio(path, SAMPLE_RATE)[0]
        out[:, i] = features([degrade(wav, np.random.default_rng([seed, i, k, 11])) for k in range(copies)], SAMPLE_RATE, feature_set)
        if on_item is not None:
            on_item(i + 1, len(paths))
    return out


def mixed_scene_features(
    rows: Sequence[Row], count: int, seed: int = 0, feature_set: str = "scene", gains: tuple[float, float] = MIXTURE_GAINS,
    on_item: Callable[[int, int], None] | None = None,
) -> tuple[Tensor, list[tuple[str, str]]]:
    """``count`` two-source scenes mixed afresh from the single-source clips of ``rows``
    (foreground and background of different classes, the background ``gains`` dB below;
    :func:`~audioguide.audio.mix_scene`), seeded: their features and class pairs. More scenes
    than a corpus holds teach a multi-label judge to hear a quiet second source."""
    from audioguide.audio import mix_scene, read_audio
    from audioguide.evaluation.classifier import features

    single = [r for r in clip_rows(rows) if len(row_labels(r)) == 1]
    if len({row_label(r) for r in single}) < 2:
        raise AudioguideError("mixing scenes needs single-source clips of at least two classes")
    rng = np.random.default_rng([seed, 7])
    feats, pairs = [], []
    for k in range(count):
        a = single[int(rng.integers(len(single)))]
        b = single[int(rng.integers(len(single)))]
        while row_label(b) == row_label(a):
            b = single[int(rng.integers(len(single)))]
        fg, bg = read_audio(a.audio, SAMPLE_RATE)[0], read_audio(b.audio, SAMPLE_RATE)[0]
        feats.append(features([mix_scene(fg, bg, float(rng.uniform(*gains)))], SAMPLE_RATE, feature_set))
        pairs.append((row_label(a), row_label(b)))
        if on_item is not None:
            on_item(k + 1, count)
    return (torch.cat(feats) if feats else torch.zeros(0, 0)), pairs


def train_sound_classifier(
    rows: Sequence[Row], seed: int = 0, config: TrainConfig | None = None, per_class: int | None = None,
    on_item: Callable[[int, int], None] | None = None, feature_set: str = "scene", feats: Tensor | None = None,
    mixtures: int = 0, augmented: Tensor | None = None,
) -> ClipClassifier:
    """Train the sound-class judge on the real clips of ``rows`` (each audio file once, at most
    ``per_class`` per class in manifest order); classes are ``row.extra["label"]``, and both
    classes of a two-source scene (``extra["labels"]``), which makes the judge multi-label;
    ``mixtures`` more scenes are mixed from the training clips (:func:`mixed_scene_features`).
    ``feats``: the clips' features, already computed (in :func:`clip_rows` order); ``augmented``:
    those of degraded copies, ``[copies, clips, D]`` (:func:`augmented_features`), trained on too."""
    chosen = clip_rows(rows, per_class)
    if not chosen:
        raise AudioguideError("no rows with both 'audio' and a 'label' to train a sound classifier on")
    if feats is None:
        feats = file_features([r.audio for r in chosen], on_item, feature_set)
    labels: list[tuple[str, ...]] = [row_labels(r) for r in chosen]
    if augmented is not None and len(augmented):
        feats, labels = torch.cat([feats, *augmented]), labels * (1 + len(augmented))
    if mixtures:
        extra, pairs = mixed_scene_features(chosen, mixtures, seed, feature_set)
        feats, labels = torch.cat([feats, extra]), labels + pairs
    config = config or (JUDGE_CONFIG if feature_set == "scene" else TrainConfig())
    clf = fit(feats, labels, seed, config, KIND, feature_set)
    clf.config["per_class"] = per_class
    clf.config["mixed_scenes"] = mixtures
    clf.config["augmented_copies"] = 0 if augmented is None else len(augmented)
    return clf


def load_sound_classifier(path: str | Path, member: str | None = None) -> ClipClassifier | CNNJudge | EnsembleJudge:
    """A checkpoint written by ``audioguide eval sounds``: the MLP judge of
    :func:`train_sound_classifier`, the CNN judge of :func:`train_sound_cnn` (config
    ``"model": "cnn"``) or both as an :class:`EnsembleJudge` (``"model": "ensemble"``).
    ``member`` (``"mlp"`` or ``"cnn"``): that member of an ensemble alone."""
    from audioguide.checkpoints import load_checkpoint
    from audioguide.evaluation.cnn_judge import CNNJudge

    ckpt = load_checkpoint(path)
    model = ckpt.config.get("model") if ckpt.kind == KIND else None
    if member is not None and (model != "ensemble" or member not in ("mlp", "cnn")):
        raise AudioguideError(f"a member (mlp or cnn) names one judge of an ensemble; {ckpt.path} is "
                              f"{'an ensemble' if model == 'ensemble' else 'not an ensemble'}, member {member!r}")
    if model == "cnn":
        return CNNJudge.from_checkpoint(ckpt)
    if model == "ensemble":
        judge = EnsembleJudge.from_checkpoint(ckpt)
        return judge if member is None else judge.members[("mlp", "cnn").index(member)]
    return ClipClassifier.load(path, KIND)


def class_probabilities(judge: ClipClassifier | CNNJudge, batch) -> Tensor:
    """``[N, classes]``: a judge's probability of each class, a sigmoid per class for a multi-label
    judge (trained with scenes), else the softmax."""
    if isinstance(judge, EnsembleJudge):
        return judge.probabilities(batch)
    logits = judge.logits(batch).float()
    return torch.sigmoid(logits) if judge.config.get("multi_label") else torch.softmax(logits, -1)


@dataclass(frozen=True)
class EnsembleBatch:
    """Several clips as each member of an :class:`EnsembleJudge` reads them."""

    parts: tuple
    n: int

    def __len__(self) -> int:
        return self.n


class EnsembleJudge(ClassRanking):
    """Two judges that see a clip differently, the MLP over summary statistics and the CNN over
    the log-mel image, as one: a class's probability is the mean of the members'
    (:func:`class_probabilities`; the sum rule of Kittler et al. 1998, "On combining
    classifiers"), and the embedding (for Fréchet distances) is the members'
    embeddings side by side, each divided by its root-mean-square size over the training clips so
    that neither outweighs the other. The same calls as its members; saved as one
    ``sound-classifier`` checkpoint (config ``"model": "ensemble"``, tensors prefixed ``mlp.`` / ``cnn.``)."""

    feature_set = "ensemble"

    def __init__(self, mlp: ClipClassifier, cnn: CNNJudge, scales: Sequence[float] = (1.0, 1.0), config: dict | None = None,
                 kind: str = KIND) -> None:
        if tuple(mlp.labels) != tuple(cnn.labels):
            raise AudioguideError("the judges of an ensemble must know the same classes")
        self.members = (mlp, cnn)
        self.labels = tuple(mlp.labels)
        self.scales = tuple(float(x) for x in scales)
        self.config = {"model": "ensemble", **(config or {})}
        self.kind = kind

    def clip_features(self, wav: np.ndarray, sample_rate: int) -> tuple:
        return tuple(m.clip_features(wav, sample_rate) for m in self.members)

    def file_features(self, paths: Sequence[str | Path], on_item: Callable[[int, int], None] | None = None) -> EnsembleBatch:
        return self.batch(map_files(paths, self.clip_features, on_item))

    def batch(self, feats: Sequence[tuple]) -> EnsembleBatch:
        return EnsembleBatch(tuple(m.batch([f[k] for f in feats]) for k, m in enumerate(self.members)), len(feats))

    def probabilities(self, batch: EnsembleBatch) -> Tensor:
        if len(batch) == 0:
            return torch.zeros(0, len(self.labels))
        return torch.stack([class_probabilities(m, part) for m, part in zip(self.members, batch.parts)]).mean(0)

    def logits(self, batch: EnsembleBatch) -> Tensor:
        """The log of the mean probability (what :meth:`predict_features` ranks)."""
        return self.probabilities(batch).clamp_min(1e-12).log()

    def embed(self, batch: EnsembleBatch) -> Tensor:
        return torch.cat([m.embed(part).float() / s for m, part, s in zip(self.members, batch.parts, self.scales)], -1)

    def save(self, path: str | Path) -> Path:
        from audioguide.checkpoints import save_checkpoint

        mlp, cnn = self.members
        tensors = {"mlp.mean": mlp.mean, "mlp.std": mlp.std, **{f"mlp.{k}": v for k, v in mlp.params.items()},
                   **{f"cnn.{k}": v.detach().clone() for k, v in cnn.net.state_dict().items()}}
        config = {**self.config, "labels": list(self.labels), "scales": list(self.scales),
                  "members": {"mlp": mlp.config, "cnn": cnn.config}}
        return save_checkpoint(path, tensors, config, self.kind)

    @classmethod
    def from_checkpoint(cls, ckpt) -> EnsembleJudge:
        from types import SimpleNamespace

        from audioguide.evaluation.cnn_judge import CNNJudge

        config = dict(ckpt.config)
        try:
            labels, members, scales = config.pop("labels"), config.pop("members"), config.pop("scales")
            part = {p: {k[len(p) + 1:]: v for k, v in ckpt.tensors.items() if k.startswith(p + ".")} for p in ("mlp", "cnn")}
            mean, std = part["mlp"].pop("mean"), part["mlp"].pop("std")
            mlp = ClipClassifier(labels, mean, std, part["mlp"], members["mlp"], ckpt.kind)
            cnn = CNNJudge.from_checkpoint(SimpleNamespace(path=ckpt.path, kind=ckpt.kind, config={**members["cnn"], "labels": labels},
                                                           tensors=part["cnn"]))
        except KeyError as e:
            raise AudioguideError(f"{ckpt.path}: an ensemble sound judge lacks {e.args[0]!r}") from None
        return cls(mlp, cnn, scales, config, ckpt.kind)


def ensemble_judge(mlp: ClipClassifier, cnn: CNNJudge, mlp_feats: Tensor, images: Sequence[np.ndarray],
                   labels: Sequence[str]) -> EnsembleJudge:
    """The two judges as one (:class:`EnsembleJudge`); ``mlp_feats``, ``images`` and ``labels``: the
    training clips' features and (first) classes, which fix each member's embedding scale and
    give the ensemble's training accuracy."""
    if not len(mlp_feats) == len(images) == len(labels):
        raise AudioguideError(f"{len(mlp_feats)} feature rows, {len(images)} images and {len(labels)} labels: one of each per clip")
    scales = [float(m.embed(f).float().pow(2).sum(-1).mean().sqrt().clamp_min(1e-8)) for m, f in ((mlp, mlp_feats), (cnn, list(images)))]
    judge = EnsembleJudge(mlp, cnn, scales, {"train_items": len(labels), "feature_set": "ensemble"})
    predicted = judge.predict_features(EnsembleBatch((mlp_feats, list(images)), len(labels)))
    judge.config["train_accuracy"] = float(np.mean([p == v for p, v in zip(predicted, labels)]))
    return judge


def train_sound_cnn(
    rows: Sequence[Row], seed: int = 0, config: CNNConfig | None = None, per_class: int | None = None,
    images: Sequence[np.ndarray] | None = None, on_item: Callable[[int, int], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> CNNJudge:
    """The CNN judge (:mod:`audioguide.evaluation.cnn_judge`) on the real clips of ``rows`` (each
    audio file once, at most ``per_class`` per class), a scene's two classes as its labels.
    ``images``: their log-mel images, already computed (in :func:`clip_rows` order)."""
    from audioguide.evaluation.cnn_judge import CNNConfig, file_images, train_cnn_judge

    chosen = clip_rows(rows, per_class)
    if not chosen:
        raise AudioguideError("no rows with both 'audio' and a 'label' to train a sound classifier on")
    if images is None:
        images = file_images([r.audio for r in chosen], on_item)
    judge = train_cnn_judge(images, [row_labels(r) for r in chosen], seed, config or CNNConfig(), on_step)
    judge.config["per_class"] = per_class
    return judge


@dataclass(frozen=True)
class SoundAccuracy:
    overall: float  # top-1 on single-source clips
    items: int
    per_class: dict[str, tuple[float, int]]  # class -> (accuracy, clips)
    mixtures: tuple[float, int] | None = None  # two-source scenes: (both classes in the top 2, scenes)


def recognised(labels: Sequence[str], top: Sequence[str]) -> bool:
    """The judge recognises a clip: its best class is the clip's class, or, for a two-source
    scene, both classes are among its top ``len(labels)``."""
    return set(labels) <= set(top[: len(labels)])


def judge_hits(clf: ClipClassifier | CNNJudge | EnsembleJudge, feats, label_sets: Sequence[tuple[str, ...]]) -> list[bool]:
    """:func:`recognised` for each clip of ``feats``."""
    top = clf.top_features(feats, 2) if len(feats) else []
    return [recognised(v, t) for t, v in zip(top, label_sets)]


def held_out_accuracy(
    clf: ClipClassifier | CNNJudge | EnsembleJudge, rows: Sequence[Row], per_class: int | None = None,
    on_item: Callable[[int, int], None] | None = None, feats: Tensor | None = None,
) -> SoundAccuracy:
    """Accuracy on real held-out clips: top-1 overall and per class for single-source clips, both
    classes in the top 2 for two-source scenes; the sanity number (and ceiling) of the judge.
    Classes the judge was not trained on count as misses."""
    chosen = clip_rows(rows, per_class)
    if not chosen:
        raise AudioguideError("no held-out rows with both 'audio' and a 'label'")
    if feats is None:
        feats = clf.file_features([r.audio for r in chosen], on_item)
    sets = [row_labels(r) for r in chosen]
    hits = judge_hits(clf, feats, sets)
    single = [i for i, v in enumerate(sets) if len(v) == 1]
    mixed = [i for i, v in enumerate(sets) if len(v) > 1]
    labels = [sets[i][0] for i in single]
    per = {c: (float(np.mean([hits[i] for i in single if sets[i][0] == c])), labels.count(c)) for c in sorted(set(labels))}
    overall = float(np.mean([hits[i] for i in single])) if single else float("nan")
    mixtures = (float(np.mean([hits[i] for i in mixed])), len(mixed)) if mixed else None
    return SoundAccuracy(overall, len(single), per, mixtures)


@dataclass(frozen=True)
class SourceHoldout:
    """The judge's accuracy on sources it never saw: per class ``(accuracy, clips, sources)``
    over the folds in which that class had a source held out; classes with one source are absent."""

    overall: float
    items: int
    per_class: dict[str, tuple[float, int, int]]
    single_source: tuple[str, ...]


def source_holdout(
    rows: Sequence[Row], seed: int = 0, config: TrainConfig | None = None, feature_set: str = "scene",
    folds: int = 3, feats: Tensor | None = None, on_item: Callable[[int, int], None] | None = None,
    augmented: Tensor | None = None, cnn: CNNConfig | None = None, images: Sequence[np.ndarray] | None = None,
    ensemble: bool = False,
) -> SourceHoldout:
    """Held out by source: in fold ``k`` every class with several sources (``extra["source"]``:
    a package, a soundfont, a procedural model) loses its ``k``-th source (sources sorted by name,
    cycling) from training, and the judge trained on the rest is tested on that source's clips.
    Single-source rows only (a scene's sources are two). A judge that learned a package's
    recording chain or one synthesis model instead of the class fails here. ``feats``: the
    features of :func:`clip_rows` of ``rows`` (scenes included), already computed; ``augmented``:
    their degraded copies ``[copies, clips, D]``, of which each fold trains on its training clips'.
    ``cnn``: measure the CNN judge of this config instead (``images``: the log-mel images of
    :func:`clip_rows` of ``rows``, already computed); with ``ensemble``, both judges as one
    :class:`EnsembleJudge`. A fold's MLP sees single-source clips only, so it is a softmax judge
    even where the corpus's own (trained with scenes) is multi-label."""
    if ensemble and cnn is None:
        raise AudioguideError("an ensemble's source hold-out needs the CNN's config (cnn=...)")
    clips = clip_rows(rows)
    single = [i for i, r in enumerate(clips) if len(row_labels(r)) == 1]
    chosen = [clips[i] for i in single]
    use_mlp = cnn is None or ensemble
    if cnn is not None:
        from audioguide.evaluation.cnn_judge import file_images, train_cnn_judge

        imgs = file_images([r.audio for r in chosen], on_item) if images is None else [images[i] for i in single]
    if use_mlp:
        feats = file_features([r.audio for r in chosen], on_item, feature_set) if feats is None else feats[single]
        copies = augmented[:, single] if augmented is not None else torch.zeros(0, *feats.shape)
    labels = [row_label(r) for r in chosen]
    sources = [str(r.extra.get("source", "?")) for r in chosen]
    by_class: dict[str, list[str]] = {}
    for c, src in zip(labels, sources):
        if src not in by_class.setdefault(c, []):
            by_class[c].append(src)
    multi = {c: sorted(v) for c, v in by_class.items() if len(v) >= 2}
    hits: dict[str, list[bool]] = {c: [] for c in multi}
    for k in range(folds):
        out = {c: v[k % len(v)] for c, v in multi.items()}
        test = [i for i, (c, src) in enumerate(zip(labels, sources)) if out.get(c) == src]
        held = set(test)
        train = [i for i in range(len(chosen)) if i not in held]
        members = []
        if use_mlp:
            x = torch.cat([feats[train], *copies[:, train]])
            y = [labels[i] for i in train] * (1 + len(copies))
            clf = fit(x, y, seed + k, config or (JUDGE_CONFIG if feature_set == "scene" else TrainConfig()), KIND, feature_set)
            members.append((clf, feats[test]))
        if cnn is not None:
            clf = train_cnn_judge([imgs[i] for i in train], [labels[i] for i in train], seed + k, cnn)
            members.append((clf, [imgs[i] for i in test]))
        if len(members) == 1:
            predicted = members[0][0].predict_features(members[0][1])
        else:  # a fold hides sources, never a class: both judges know the same classes
            both = EnsembleJudge(members[0][0], members[1][0])
            predicted = both.predict_features(EnsembleBatch((members[0][1], members[1][1]), len(test)))
        for i, p in zip(test, predicted):
            hits[labels[i]].append(p == labels[i])
    per = {c: (float(np.mean(h)), len(h), len(multi[c])) for c, h in sorted(hits.items()) if h}
    every = [x for h in hits.values() for x in h]
    return SourceHoldout(float(np.mean(every)) if every else float("nan"), len(every), per,
                         tuple(sorted(c for c in by_class if c not in multi)))


# -- realism ------------------------------------------------------------------------------------


def _moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if x.ndim != 2 or len(x) == 0:
        raise AudioguideError(f"a Fréchet distance needs a non-empty [N, D] set of embeddings, got shape {x.shape}")
    mu = x.mean(0)
    sigma = np.cov(x, rowvar=False) if len(x) > 1 else np.zeros((x.shape[1], x.shape[1]))
    return mu, np.atleast_2d(sigma)


def frechet_distance(emb_a: np.ndarray | Tensor, emb_b: np.ndarray | Tensor) -> float:
    """Fréchet (2-Wasserstein) distance between Gaussians fitted to two sets of embeddings
    (Heusel et al. 2017, eq. 6; Kilgour et al. 2019):
    ``||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))``.

    ``Tr((S_a S_b)^(1/2))`` comes from ``scipy.linalg.sqrtm``, dropping the tiny imaginary part that
    rounding leaves. With fewer clips than dimensions the covariances are rank-deficient and their
    product singular; ``sqrtm`` still copes in practice, but where its root is not finite or has a
    large imaginary part the trace is taken from the similar, symmetric positive semi-definite
    ``S_a^(1/2) S_b S_a^(1/2)`` instead (the sum of the square roots of its eigenvalues), which
    is real by construction. One clip gives a zero covariance. The result is clamped at 0 (rounding).
    """
    from scipy.linalg import LinAlgWarning, sqrtm

    a = np.asarray(emb_a.detach().cpu() if isinstance(emb_a, Tensor) else emb_a, dtype=np.float64)
    b = np.asarray(emb_b.detach().cpu() if isinstance(emb_b, Tensor) else emb_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise AudioguideError(f"embeddings must be [N, D] with one D, got {a.shape} and {b.shape}")
    (mu_a, s_a), (mu_b, s_b) = _moments(a), _moments(b)
    with warnings.catch_warnings():  # a singular product is expected with few clips; checked below
        warnings.simplefilter("ignore", LinAlgWarning)
        root = np.asarray(sqrtm(s_a @ s_b))
    finite = bool(np.all(np.isfinite(root)))
    if finite and np.iscomplexobj(root) and np.abs(root.imag).max() > 1e-3 * max(np.abs(root.real).max(), 1e-12):
        finite = False
    if finite:
        tr_root = float(np.trace(root).real)
    else:
        w, v = np.linalg.eigh(s_a)
        half = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
        tr_root = float(np.sqrt(np.clip(np.linalg.eigvalsh(half @ s_b @ half), 0, None)).sum())
    d = float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2.0 * tr_root)
    return max(d, 0.0)


# -- settings -----------------------------------------------------------------------------------


def parse_grid(text: str | None, option: str, integer: bool = False) -> list[float]:
    """``"1,3,5"`` as ``[1.0, 3.0, 5.0]`` (``integer``: whole numbers); None or "" is no grid.
    A one-line error names the option and the bad item."""
    if text is None or not text.strip():
        return []
    out = []
    for item in text.split(","):
        if not item.strip():
            continue
        try:
            v = float(item)
            if not math.isfinite(v) or (integer and v != int(v)):
                raise ValueError
        except ValueError:
            what = "whole numbers" if integer else "numbers"
            raise AudioguideError(f"{option} expects {what} separated by commas, e.g. {option} 1,2, got {item.strip()!r}") from None
        out.append(float(int(v)) if integer else v)
    return out


def resolve_setting(recipe, setting: Mapping[str, float]) -> tuple[dict[str, float], float, int | None]:
    """The guidance scales, rescale phi and sampler steps a setting runs with on ``recipe`` (its own
    where the setting says nothing), validated by the recipe's own policy and sampler configs."""
    unknown = sorted(set(setting) - set(SETTING_KEYS))
    if unknown:
        raise AudioguideError(f"unknown setting key(s) {', '.join(unknown)}; a setting takes {', '.join(SETTING_KEYS)}")
    if recipe.model is None or recipe.sampler is None:
        raise AudioguideError(f"recipe {recipe.name!r} has no generator (it trains a representation); evaluate a recipe with a [model]")
    policy = call_policy(recipe, cfg=setting.get("cfg"), rescale=setting.get("rescale"))  # what the pipeline would refuse
    steps = getattr(recipe.sampler.config, "steps", None)
    if "steps" in setting:
        n = setting["steps"]
        if n != int(n) or n < 1:
            raise AudioguideError(f"steps must be a whole number >= 1, got {n:g}")
        steps = sampler_config(recipe, int(n)).steps
    return dict(policy.scales), float(policy.rescale), steps


def _key(resolved: tuple[dict[str, float], float, int | None]) -> tuple:
    scales, rescale, steps = resolved
    if all(w == 1.0 for w in scales.values()):
        rescale = 0.0  # with no guidance the guided prediction is the conditional one: rescale is a no-op
    return tuple(sorted(scales.items())), rescale, steps


def sweep_settings(recipe, cfg: Sequence[float] = (), rescale: Sequence[float] = (), steps: Sequence[float] = ()) -> list[Setting]:
    """Settings to compare: the recipe's own (scales, rescale, steps) first, then the grid
    ``cfg x rescale x steps`` over the axes given (the others at the recipe's), labelled by the
    swept values, e.g. ``cfg=5 rescale=0.7``. A setting that runs the same as an earlier one is
    dropped (the earlier label is kept); with every scale at 1, settings differing only in rescale
    are the same. Every setting is validated against the recipe."""
    axes = [(name, list(values)) for name, values in (("cfg", cfg), ("rescale", rescale), ("steps", steps)) if len(values)]
    candidates: list[Setting] = [(DEFAULT_LABEL, {})]
    for combo in itertools.product(*(values for _, values in axes)):
        setting = {name: (int(v) if name == "steps" else float(v)) for (name, _), v in zip(axes, combo)}
        candidates.append((" ".join(f"{n}={fmt_scale(v)}" for n, v in setting.items()), setting))
    out: list[Setting] = []
    seen: set[tuple] = set()
    for label, setting in candidates:
        key = _key(resolve_setting(recipe, setting))
        if key not in seen:
            seen.add(key)
            out.append((label, setting))
    return out


# -- evaluation ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    row_id: str
    label: str  # the row's class
    kind: str | None  # music / effect / speech, where the manifest says
    predicted: str
    seed: int | None  # None for real audio
    seconds: float
    synthesis_seconds: float | None  # None for real audio
    labels: tuple[str, ...] = ()  # a two-source scene's classes (``extra["labels"]``)
    top: tuple[str, ...] = ()  # the judge's two most likely classes

    @property
    def hit(self) -> bool:
        """The judge recognises what was asked: the class (top 1), or both classes of a scene (top 2)."""
        if len(self.labels) > 1:
            return recognised(self.labels, self.top)
        return self.predicted == self.label


@dataclass(frozen=True)
class SettingResult:
    label: str
    scales: dict[str, float]  # what ran: guidance scales, rescale phi, sampler steps (empty / None for real audio)
    rescale: float | None
    steps: int | None
    items: tuple[Item, ...]
    fd: float  # Fréchet distance to the real clips' embeddings (nan where there is no real audio)

    def adherence(self, label: str | None = None, kind: str | None = None) -> float:
        """How often the judge names what was asked (:attr:`Item.hit`), of one class / kind; single
        sources unless ``kind="mixture"``: both sources of two-source scenes."""
        hits = [it.hit for it in self.items
                if (label is None or it.label == label) and (it.kind == kind if kind is not None else it.kind != "mixture")]
        return float(np.mean(hits)) if hits else float("nan")

    @property
    def rtf(self) -> float:
        return real_time_factor(self.items)


@dataclass(frozen=True)
class T2AReport:
    recipe: str
    results: tuple[SettingResult, ...]
    real: SettingResult | None = None
    default: str = DEFAULT_LABEL
    judge: dict = field(default_factory=dict)  # the classifier's config (train items, held-out accuracy, ...)
    notes: tuple[str, ...] = ()
    samples: tuple[Sample, ...] = ()  # the first rows' clips of every setting (and real clips), where kept

    def result(self, label: str) -> SettingResult:
        for r in self.results:
            if r.label == label:
                return r
        raise KeyError(label)

    def markdown(self, title: str | None = None) -> str:
        return markdown(self, title)

    def records(self) -> list[dict]:
        """One dict per judged item of every setting (the real clips last): the setting's label and
        scales, the item's fields (class asked, class judged, top 2, seed) and whether it was a hit,
        for auditing the judge and pairing two runs item by item."""
        rows = list(self.results) + ([self.real] if self.real is not None else [])
        return [{"setting": r.label, "scales": r.scales, **asdict(it), "hit": it.hit} for r in rows for it in r.items]


def held_out_rows(rows: Sequence[Row], per_class: int | None = None) -> list[Row]:
    """Rows with a caption and a label, at most ``per_class`` per class, in manifest order."""
    counts: dict[str, int] = {}
    out = []
    for row in rows:
        label = row_label(row)
        if label is None or not (row.caption or "").strip():
            continue
        counts[label] = counts.get(label, 0) + 1
        if per_class is None or counts[label] <= per_class:
            out.append(row)
    return out


def _slug(label: str) -> str:
    return re.sub(r"[^\w.=-]+", "_", label).strip("_") or "setting"


def evaluate_t2a(
    pipe, rows: Sequence[Row], classifier: ClipClassifier | CNNJudge | EnsembleJudge, settings: Sequence[Setting],
    on_item: Callable[[int, int], None] | None = None, seconds: float | None = None, *,
    seed: int = 0, per_class: int | None = None, wav_dir: str | Path | None = None, samples: int = 0,
    compose: Sequence[float] | None = None,
) -> T2AReport:
    """Generate every held-out row under every setting and judge it (see the module docstring).

    ``pipe`` is a t2a :class:`~audioguide.pipeline.Pipeline` (or anything with ``recipe``,
    ``sample_rate`` and the same call); ``rows`` are captioned rows with ``extra["label"]`` (rows
    without either are skipped), at most ``per_class`` per class. A row lasts its ``duration``
    clipped to the recipe's ``[min_seconds, max_seconds]`` (the recipe's ``seconds`` where it has
    none), or ``seconds`` for every row. ``wav_dir`` also keeps the clips, as
    ``<wav_dir>/<setting>/<row id>.wav``. ``samples`` keeps the clips of the first that many rows of
    every setting (and the real clips of those rows) in the report, for pictures
    (:mod:`audioguide.evaluation.plots`). ``compose`` draws every two-source scene that names the
    words of its sources (``extra["part_captions"]``, foreground first) as a prompt in parts at these
    weights (:class:`~audioguide.guidance.Conjunction`) instead of from its caption. Everything is
    validated before any synthesis.
    """
    from audioguide.audio import read_audio, write_wav

    recipe = pipe.recipe
    if recipe.task != "t2a":
        raise AudioguideError(f"recipe {recipe.name!r} is a {recipe.task} recipe; sound evaluation needs a t2a recipe")
    if not settings:
        raise AudioguideError("no settings to evaluate")
    chosen = held_out_rows(rows, per_class)
    if not chosen:
        raise AudioguideError("no rows with both a 'caption' and a 'label' to evaluate (is this a sound corpus manifest?)")
    unknown = sorted({row_label(r) for r in chosen} - set(classifier.labels))
    if unknown:
        raise AudioguideError(f"the sound classifier does not know class(es) {', '.join(unknown)}; "
                              f"it knows {', '.join(classifier.labels)}")
    resolved = [resolve_setting(recipe, s) for _, s in settings]
    if compose is not None:
        sizes = {len(r.extra["part_captions"]) for r in chosen if r.extra.get("part_captions")}
        if not sizes:
            raise AudioguideError("compose draws scenes from their sources' words ('part_captions'); these rows have none "
                                  "(a sound corpus's two-source scenes have them)")
        if sizes != {len(compose)}:
            raise AudioguideError(f"compose gives {len(compose)} weight(s); the scenes have {', '.join(map(str, sorted(sizes)))} sources")
        if hasattr(pipe, "prepare"):  # a Pipeline checks every scene's words and the weights here, drawing nothing
            for r in chosen:
                if r.extra.get("part_captions"):
                    words = r.extra["part_captions"]
                    pipe.prepare([words[0]], parts=list(words[1:]), part_weights=list(compose))
    d = recipe.duration
    if seconds is not None and not d.min_seconds <= seconds <= d.max_seconds:
        raise AudioguideError(f"seconds must be in [{d.min_seconds:g}, {d.max_seconds:g}] for recipe {recipe.name!r}, got {seconds:g}")
    lengths = [seconds if seconds is not None else min(max(row.duration or d.seconds, d.min_seconds), d.max_seconds)
               for row in chosen]
    real_rows = clip_rows(chosen)  # each real audio file once
    total = len(settings) * len(chosen) + len(real_rows)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if on_item is not None:
            on_item(done, total)

    def words_of(row: Row) -> list[str] | None:  # a scene's sources' words when it is drawn in parts
        return row.extra.get("part_captions") if compose is not None else None

    def call(row: Row, row_seed: int, setting: Mapping[str, float], secs: float):
        steps = setting.get("steps")
        words = words_of(row)
        parts = {"parts": list(words[1:]), "part_weights": list(compose)} if words else {}
        return pipe([words[0] if words else row.caption], seed=row_seed, cfg=setting.get("cfg"), rescale=setting.get("rescale"),
                    steps=None if steps is None else int(steps), seconds=secs, **parts)

    # the real reference first: cheap, and a missing file fails before any synthesis
    kept: list[Sample] = []
    pictured = {row.id for row in chosen[:max(samples, 0)]}
    real_feats, real_items = [], []
    for row in real_rows:
        wav, sr = read_audio(row.audio, SAMPLE_RATE)
        if row.id in pictured:
            kept.append(Sample(REAL_LABEL, row.id, row.caption or "", np.asarray(wav, dtype=np.float32), int(sr)))
        real_feats.append(classifier.clip_features(wav, sr))
        real_items.append((row, len(wav) / sr))
        tick()
    real_result = None
    real_emb = None
    if real_rows:
        feats = classifier.batch(real_feats)
        real_emb = classifier.embed(feats).numpy()
        predicted = classifier.predict_features(feats)
        tops = classifier.top_features(feats, 2)
        items = tuple(Item(row.id, row_label(row), row.extra.get("kind"), p, None, secs, None, row_labels(row), t)
                      for (row, secs), p, t in zip(real_items, predicted, tops))
        real_result = SettingResult(REAL_LABEL, {}, None, None, items, float("nan"))  # FD to itself: not a measurement

    call(chosen[0], seed, settings[0][1], lengths[0])  # warm-up: lazy initialisation is not synthesis time
    results = []
    for (label, setting), (scales, rescale, steps) in zip(settings, resolved):
        feats, items = [], []
        for i, (row, secs) in enumerate(zip(chosen, lengths)):
            t0 = time.perf_counter()
            audio = call(row, seed + i, setting, secs)
            elapsed = time.perf_counter() - t0
            wav = np.asarray(audio[0], dtype=np.float32)
            if wav_dir is not None:
                write_wav(Path(wav_dir) / _slug(label) / f"{row.id}.wav", wav, audio.sample_rate)
            if i < samples:
                words = words_of(row)
                kept.append(Sample(label, row.id, " AND ".join(words) if words else row.caption, wav, int(audio.sample_rate)))
            feats.append(classifier.clip_features(wav, audio.sample_rate))
            items.append((row, seed + i, len(wav) / audio.sample_rate, elapsed))
            tick()
        feats_t = classifier.batch(feats)
        predicted = classifier.predict_features(feats_t)
        tops = classifier.top_features(feats_t, 2)
        fd = frechet_distance(classifier.embed(feats_t).numpy(), real_emb) if real_emb is not None else float("nan")
        results.append(SettingResult(
            label, scales, rescale, steps,
            tuple(Item(row.id, row_label(row), row.extra.get("kind"), p, s, secs, el, row_labels(row), t)
                  for (row, s, secs, el), p, t in zip(items, predicted, tops)),
            fd,
        ))
    usable = held_out_rows(rows)
    notes = []
    if len(rows) > len(usable):
        notes.append(f"{len(rows) - len(usable)} row(s) without a caption or a label were skipped.")
    if len(usable) > len(chosen):
        notes.append(f"At most {per_class} row(s) per class: {len(usable) - len(chosen)} more were not evaluated.")
    if real_result is None:
        notes.append("The rows have no real audio: no realism (FD) and no real-audio reference.")
    if compose is not None:
        notes.append(f"Two-source scenes were drawn as prompts in parts (their sources' words, foreground first) at weights "
                     f"({', '.join(f'{w:g}' for w in compose)}), not from their captions.")
    own = _key(resolve_setting(recipe, {}))
    default = next((label for (label, _), r in zip(settings, resolved) if _key(r) == own), settings[0][0])
    judge = {**classifier.config, "classes": len(classifier.labels)}
    # the real clips after the generated ones, as in the tables
    kept = [s for s in kept if s.setting != REAL_LABEL] + [s for s in kept if s.setting == REAL_LABEL]
    return T2AReport(recipe.name, tuple(results), real_result, default, judge, tuple(notes), tuple(kept))


# -- report -------------------------------------------------------------------------------------


def _scales(scales: Mapping[str, float]) -> str:
    if not scales:
        return "-"
    if len(set(scales.values())) == 1:
        return fmt_scale(next(iter(scales.values())))
    return " ".join(f"{n}={fmt_scale(w)}" for n, w in scales.items())


def markdown(report: T2AReport, title: str | None = None) -> str:
    """Settings table (adherence, FD, RTF), a per-class table for the recipe default, the judge's line."""
    scenes = any(it.kind == "mixture" for r in report.results for it in r.items)
    lines = [f"### {title or f'{report.recipe}: text-to-audio evaluation'}", "",
             "| setting | cfg | rescale | steps | adherence (top-1) |" + (" two-source scenes (both in top 2) |" if scenes else "") + " FD | RTF |",
             "|---|---|---|---|---|" + ("---|" if scenes else "") + "---|---|"]
    for r in [*report.results, *([report.real] if report.real is not None else [])]:
        lines.append(f"| {r.label} | {_scales(r.scales)} | {'-' if r.rescale is None else fmt_scale(r.rescale)} | "
                     f"{'-' if r.steps is None else r.steps} | {fmt_pct(r.adherence())} |"
                     + (f" {fmt_pct(r.adherence(kind='mixture'))} |" if scenes else "") + f" {fmt_num(r.fd)} | {fmt_num(r.rtf)} |")
    try:
        default = report.result(report.default)
    except KeyError:
        default = report.results[0] if report.results else None
    if default is not None and any(it.kind != "mixture" for it in default.items):
        classes = sorted({it.label for it in default.items if it.kind != "mixture"})
        kinds = {it.label: it.kind for it in default.items if it.kind != "mixture"}
        real = report.real
        lines += ["", f"Per class, {default.label}:", "",
                  "| class | kind | items | adherence | real audio acc |", "|---|---|---|---|---|"]
        for c in classes:
            n = sum(it.label == c and it.kind != "mixture" for it in default.items)
            lines.append(f"| {c} | {kinds[c] or '-'} | {n} | {fmt_pct(default.adherence(c))} | "
                         f"{fmt_pct(real.adherence(c)) if real is not None else '-'} |")
    items = len(report.results[0].items) if report.results else 0
    n_classes = len({it.label for it in report.results[0].items}) if report.results else 0
    lines += ["", (f"{items} held-out captions per setting ({n_classes} classes, the same seed per row in every setting); "
                   "adherence is the top-1 accuracy of the sound classifier (trained on real corpus audio only) naming the "
                   "row's class; FD is the Fréchet distance between Gaussians fitted to the classifier's hidden-layer "
                   "embeddings of the generated and the real held-out clips (lower is more realistic; comparable only at "
                   "equal numbers of clips); RTF is synthesis time / audio seconds.")]
    if report.real is not None:
        classes, trained = report.judge.get("classes"), report.judge.get("train_items")
        single = report.real.adherence()
        line = (f"Judge: top-1 accuracy {fmt_pct(single)} on these {len(report.real.items)} real held-out clips" if single == single
                else f"Judge: both classes in its top 2 for {fmt_pct(report.real.adherence(kind='mixture'))} of these "
                     f"{len(report.real.items)} real held-out scenes")
        if classes:
            line += f" (chance {fmt_pct(1 / classes)}: {classes} classes"
            line += f"; trained on {trained} real clips)" if trained else ")"
        lines += ["", line + "."]
    for note in report.notes:
        lines += ["", note]
    return "\n".join(lines) + "\n"
