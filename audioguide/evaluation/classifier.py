"""Clip classifiers: the small judges trained **only on real audio** (speaker identity, sound class).

Features (one vector per clip, at 16 kHz): a 64-band log-mel spectrogram (25 ms window, 10 ms hop,
floored 80 dB below the clip's loudest bin) of the active frames (within 40 dB of the loudest
frame), less its overall mean (so the level of a clip does not matter); the clip's vector is the
mean and standard deviation over time of the bands and of their deltas (the usual regression over
+-2 frames, as in HTK), 4 x 64 = 256 numbers, standardised with the training set's statistics.
Summary statistics of a log-mel spectrogram are the classic clip-level description of timbre
(speaker: the long-term spectrum; sound events: the MFCC/log-mel baselines of DCASE); the deltas add
how fast the spectrum moves, and dropping silent frames keeps padding from mattering.

Classifier: a one-hidden-layer MLP (``hidden = 0`` is multinomial logistic regression) trained
full-batch with Adam and weight decay from an explicit ``torch.Generator`` seed, so training is
deterministic; classes of unequal size are balanced by inverse-frequency loss weights.
:meth:`ClipClassifier.embed` is the hidden layer's output: the embedding in which Fréchet
distances between sets of clips are measured (:mod:`audioguide.evaluation.sound`).

Saved as a safetensors checkpoint (its ``kind`` names the judge, e.g. ``speaker-classifier``,
``sound-classifier``): weights and normalisation statistics as tensors, class names and
hyper-parameters in the metadata config.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Self

import numpy as np
import torch
from torch import Tensor

from audioguide.core import AudioguideError, make_generator

SAMPLE_RATE = 16000
N_MELS = 64
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
ACTIVE_RANGE = np.log(100.0)  # 40 dB below the loudest frame, in natural-log magnitude units
FLOOR = np.log(1e4)  # bins more than 80 dB below the clip's loudest bin are set to that floor
N_FEATURES = 4 * N_MELS
CLIP_KIND = "clip-classifier"


def _deltas(x: np.ndarray, n: int = 2) -> np.ndarray:
    """Regression deltas over +-``n`` frames along the last axis, edges repeated (HTK eq. 5.16)."""
    padded = np.pad(x, [(0, 0), (n, n)], mode="edge")
    frames = x.shape[-1]
    num = sum(k * (padded[:, n + k: n + k + frames] - padded[:, n - k: n - k + frames]) for k in range(1, n + 1))
    return num / (2 * sum(k * k for k in range(1, n + 1)))


def clip_features(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """The 256-number description of one clip (see the module docstring); float32."""
    from audioguide.audio import log_mel

    audio = np.asarray(wav, dtype=np.float32).reshape(-1)
    if sample_rate != SAMPLE_RATE:
        import librosa

        audio = librosa.resample(audio, orig_sr=sample_rate, target_sr=SAMPLE_RATE).astype(np.float32)
    if audio.size < N_FFT:
        audio = np.pad(audio, (0, N_FFT - audio.size))
    mel = log_mel(torch.from_numpy(audio)[None], SAMPLE_RATE, n_fft=N_FFT, hop=HOP, n_mels=N_MELS, eps=1e-12)[0].numpy()
    mel = np.maximum(mel.astype(np.float64), mel.max() - FLOOR)  # a floor relative to the clip, not absolute
    energy = mel.mean(axis=0)
    active = energy >= energy.max() - ACTIVE_RANGE
    if active.sum() >= 2:
        mel = mel[:, active]
    mel = mel - mel.mean()
    delta = _deltas(mel)
    return np.concatenate([mel.mean(1), mel.std(1), delta.mean(1), delta.std(1)]).astype(np.float32)


def features(wavs: Sequence[np.ndarray], sample_rate: int) -> Tensor:
    """``[len(wavs), 256]`` features of several clips at one sample rate."""
    if len(wavs) == 0:
        return torch.zeros(0, N_FEATURES)
    return torch.from_numpy(np.stack([clip_features(w, sample_rate) for w in wavs]))


def file_features(paths: Sequence[str | Path], on_item: Callable[[int, int], None] | None = None) -> Tensor:
    """``[len(paths), 256]`` features of audio files, read at the features' rate; ``on_item(i, n)``
    after each file."""
    from audioguide.audio import read_audio

    feats = []
    for i, path in enumerate(paths):
        wav, sr = read_audio(path, SAMPLE_RATE)
        feats.append(clip_features(wav, sr))
        if on_item is not None:
            on_item(i + 1, len(paths))
    return torch.from_numpy(np.stack(feats)) if feats else torch.zeros(0, N_FEATURES)


def accuracy_by_label(predicted: Sequence[str], labels: Sequence[str]) -> tuple[float, dict[str, tuple[float, int]]]:
    """Top-1 accuracy overall and per true label (``label -> (accuracy, items)``, sorted by label)."""
    hits = [p == v for p, v in zip(predicted, labels)]
    per = {c: (float(np.mean([h for h, lc in zip(hits, labels) if lc == c])), labels.count(c)) for c in sorted(set(labels))}
    return float(np.mean(hits)), per


@dataclass(frozen=True)
class TrainConfig:
    hidden: int = 128  # 0: multinomial logistic regression
    steps: int = 400
    lr: float = 1e-2
    weight_decay: float = 1e-3


class ClipClassifier:
    """Class names, feature standardisation and an MLP; :meth:`predict` names the class of clips,
    :meth:`embed` maps them into the hidden layer (for Fréchet distances).

    ``kind`` is the checkpoint kind it is saved as. Subclasses fix it in ``KIND`` (and may store the
    class names under another metadata key, ``LABEL_KEY``).
    """

    KIND: ClassVar[str | None] = None  # None: any "*-classifier" kind loads
    LABEL_KEY: ClassVar[str] = "labels"

    def __init__(self, labels: Sequence[str], mean: Tensor, std: Tensor, params: dict[str, Tensor], config: dict,
                 kind: str = CLIP_KIND) -> None:
        self.labels = tuple(labels)
        self.mean, self.std = mean.float(), std.float()
        self.params = {k: v.float() for k, v in params.items()}
        self.config = dict(config)
        self.kind = kind

    def _hidden(self, feats: Tensor) -> Tensor:
        x = (feats - self.mean) / self.std
        if "w1" in self.params:
            x = torch.relu(x @ self.params["w1"] + self.params["b1"])
        return x

    def logits(self, feats: Tensor) -> Tensor:
        return self._hidden(feats) @ self.params["w2"] + self.params["b2"]

    @torch.inference_mode()
    def embed(self, feats: Tensor) -> Tensor:
        """``[N, H]`` embeddings of ``[N, 256]`` features: the standardised features through the hidden
        ReLU layer (``hidden = 0``: the standardised features themselves)."""
        if len(feats) == 0:
            width = self.params["w1"].shape[1] if "w1" in self.params else self.mean.numel()
            return torch.zeros(0, width)
        return self._hidden(feats.float())

    @torch.inference_mode()
    def predict_features(self, feats: Tensor) -> list[str]:
        if len(feats) == 0:
            return []
        return [self.labels[i] for i in self.logits(feats.float()).argmax(-1).tolist()]

    def predict(self, wavs: Sequence[np.ndarray] | np.ndarray, sample_rate: int) -> list[str]:
        """The most likely class of each waveform (mono float arrays at ``sample_rate``)."""
        if isinstance(wavs, np.ndarray) and wavs.ndim == 1:
            wavs = [wavs]
        return self.predict_features(features(list(wavs), sample_rate))

    def accuracy(self, wavs: Sequence[np.ndarray], sample_rate: int, labels: Sequence[str]) -> float:
        predicted = self.predict(wavs, sample_rate)
        return float(np.mean([p == v for p, v in zip(predicted, labels)])) if predicted else float("nan")

    def save(self, path: str | Path) -> Path:
        """Write a safetensors checkpoint (atomically); the config goes into its metadata."""
        from audioguide.checkpoints import save_checkpoint

        tensors = {"mean": self.mean, "std": self.std, **self.params}
        return save_checkpoint(path, tensors, {**self.config, self.LABEL_KEY: list(self.labels)}, self.kind)

    @classmethod
    def load(cls, path: str | Path, kind: str | None = None) -> Self:
        """Load a checkpoint of ``kind`` (default: the class's ``KIND``; for the base class, any
        ``*-classifier``); a wrong kind or a missing field is a one-line :class:`AudioguideError`."""
        from audioguide.checkpoints import load_checkpoint

        ckpt = load_checkpoint(path)
        expected = kind or cls.KIND
        if expected is None and not ckpt.kind.endswith("-classifier"):
            raise AudioguideError(f"{ckpt.path} is a {ckpt.kind or 'unknown'} checkpoint, not a clip classifier")
        if expected is not None and ckpt.kind != expected:
            raise AudioguideError(f"{ckpt.path} is a {ckpt.kind or 'unknown'} checkpoint, not a {expected.replace('-', ' ')}")
        t = dict(ckpt.tensors)
        config = dict(ckpt.config)
        # class names: this class's key, else the other spelling (speaker checkpoints say "voices")
        key = next((k for k in (cls.LABEL_KEY, "labels", "voices") if k in config), cls.LABEL_KEY)
        try:
            mean, std = t.pop("mean"), t.pop("std")
            labels = config.pop(key)
            for name in ("w2", "b2"):
                if name not in t:
                    raise KeyError(name)
        except KeyError as e:
            raise AudioguideError(f"{ckpt.path}: {ckpt.kind.replace('-', ' ')} lacks {e.args[0]!r}") from None
        return cls(labels, mean, std, t, config, ckpt.kind)


def fit(feats: Tensor, labels: Sequence[str], seed: int = 0, config: TrainConfig = TrainConfig(),
        kind: str = CLIP_KIND) -> ClipClassifier:
    """Train on precomputed features (``[N, D]``) and class names; full batch, deterministic."""
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise AudioguideError(f"a {kind.replace('-', ' ')} needs at least two classes with audio; got {len(classes)}")
    index = {v: i for i, v in enumerate(classes)}
    y = torch.tensor([index[v] for v in labels])
    feats = feats.float()
    mean, std = feats.mean(0), feats.std(0, unbiased=False).clamp_min(1e-4)
    g = make_generator(seed)
    d, k, h = feats.shape[1], len(classes), config.hidden
    params: dict[str, Tensor] = {}
    if h:
        params["w1"] = torch.randn(d, h, generator=g) * (2.0 / d) ** 0.5
        params["b1"] = torch.zeros(h)
    fan_in = h or d
    params["w2"] = torch.randn(fan_in, k, generator=g) * (1.0 / fan_in) ** 0.5
    params["b2"] = torch.zeros(k)
    for p in params.values():
        p.requires_grad_(True)
    # balance classes with unequal counts
    counts = torch.bincount(y, minlength=k).float()
    weight = counts.sum() / (k * counts)
    opt = torch.optim.Adam(params.values(), lr=config.lr, weight_decay=config.weight_decay)
    model = ClipClassifier(classes, mean, std, {}, {}, kind)
    model.params = params  # the same tensors, trained in place
    with torch.enable_grad():
        for _ in range(config.steps):
            loss = torch.nn.functional.cross_entropy(model.logits(feats), y, weight=weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
    trained = {n: p.detach().clone() for n, p in params.items()}
    clf = ClipClassifier(classes, mean, std, trained, {
        "features": f"log-mel {N_MELS} bands at {SAMPLE_RATE} Hz, n_fft {N_FFT}, hop {HOP}: mean/std of bands and deltas",
        "hidden": h, "steps": config.steps, "lr": config.lr, "weight_decay": config.weight_decay, "seed": seed,
        "train_items": len(y),
    }, kind)
    clf.config["train_accuracy"] = float(np.mean([p == v for p, v in zip(clf.predict_features(feats), labels)]))
    return clf
