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


MOD_BANDS = 8  # broad bands whose energy envelopes give the modulation spectrum
MOD_EDGES = np.geomspace(0.75, 40.0, 9)  # Hz: 8 log-spaced modulation bins, each holding 2+ of the 0.39 Hz FFT bins
MOD_WINDOW = 256  # frames (2.56 s at the 10 ms hop) per modulation-spectrum window
N_SCENE_FEATURES = 6 * N_MELS + MOD_BANDS * (len(MOD_EDGES) - 1) + 4


def scene_features(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """The sound judge's description of a clip, computed with librosa alone (none of the
    generator's code): the log-mel statistics of :func:`clip_features` (64 bands at 16 kHz, mean and
    standard deviation of the bands and of their deltas, level removed), plus what summary
    statistics miss about *time*: a modulation spectrum (Dau et al. 1997; the rhythm features of
    sound-event tagging) of 8 broad bands' log-energy envelopes, Welch-averaged over 2.56 s windows
    and pooled into 8 log-spaced bins from 0.75 to 40 Hz (ticks, footsteps, rotor slaps, claps),
    and the mean and deviation of spectral flatness and zero-crossing rate (noise vs tone); and
    the bands' 10th and 90th percentiles over time (the floor a steady background leaves under an
    intermittent foreground).
    ``N_SCENE_FEATURES`` float32 numbers."""
    import librosa

    audio = np.asarray(wav, dtype=np.float32).reshape(-1)
    if sample_rate != SAMPLE_RATE:
        audio = librosa.resample(audio, orig_sr=sample_rate, target_sr=SAMPLE_RATE).astype(np.float32)
    if audio.size < 4 * N_FFT:
        audio = np.pad(audio, (0, 4 * N_FFT - audio.size))
    power = np.abs(librosa.stft(audio, n_fft=N_FFT, hop_length=HOP, center=True)) ** 2
    mel = np.log(librosa.feature.melspectrogram(S=power, sr=SAMPLE_RATE, n_mels=N_MELS) + 1e-12).astype(np.float64)
    mel = np.maximum(mel, mel.max() - FLOOR)
    energy = mel.mean(axis=0)
    active = energy >= energy.max() - ACTIVE_RANGE
    act = mel[:, active] if active.sum() >= 2 else mel
    act = act - act.mean()
    delta = librosa.feature.delta(act, width=5, mode="nearest") if act.shape[1] >= 5 else np.zeros_like(act)
    # the 10th and 90th percentiles over time: a quiet steady source under an intermittent one
    # (rain under barking) shows in the floor, an intermittent one in the peaks
    stats = [act.mean(1), act.std(1), delta.mean(1), delta.std(1), *np.percentile(act, [10, 90], axis=1)]
    # modulation spectrum of broad-band envelopes (all frames: silences are part of a rhythm)
    env = mel.reshape(MOD_BANDS, N_MELS // MOD_BANDS, -1).mean(1)
    env = env - env.mean(1, keepdims=True)
    frames = env.shape[1]
    if frames < MOD_WINDOW:
        env = np.pad(env, [(0, 0), (0, MOD_WINDOW - frames)])
    starts = range(0, max(env.shape[1] - MOD_WINDOW, 0) + 1, MOD_WINDOW // 2)
    win = np.hanning(MOD_WINDOW)
    spec = np.mean([np.abs(np.fft.rfft(env[:, a : a + MOD_WINDOW] * win, axis=1)) ** 2 for a in starts], axis=0)
    freqs = np.fft.rfftfreq(MOD_WINDOW, HOP / SAMPLE_RATE)
    pooled = [spec[:, (freqs >= lo) & (freqs < hi)].mean(1) for lo, hi in zip(MOD_EDGES[:-1], MOD_EDGES[1:])]  # none empty
    modulation = np.log(np.stack(pooled, 1) + 1e-6)
    modulation = modulation - modulation.mean()  # the shape of the rhythm, not the envelope's depth
    flat = librosa.feature.spectral_flatness(S=np.sqrt(power))[0]
    zcr = librosa.feature.zero_crossing_rate(audio, frame_length=N_FFT, hop_length=HOP)[0]
    extra = [np.log(flat.mean() + 1e-8), np.log(flat.std() + 1e-8), zcr.mean(), zcr.std()]
    return np.concatenate([*stats, modulation.reshape(-1), extra]).astype(np.float32)


FEATURE_SETS: dict[str, tuple[Callable[[np.ndarray, int], np.ndarray], int]] = {
    "logmel-stats": (clip_features, N_FEATURES),
    "scene": (scene_features, N_SCENE_FEATURES),
}


def _feature_set(name: str) -> tuple[Callable[[np.ndarray, int], np.ndarray], int]:
    if name not in FEATURE_SETS:
        raise AudioguideError(f"unknown feature set {name!r}; known: {', '.join(FEATURE_SETS)}")
    return FEATURE_SETS[name]


def features(wavs: Sequence[np.ndarray], sample_rate: int, feature_set: str = "logmel-stats") -> Tensor:
    """``[len(wavs), D]`` features of several clips at one sample rate."""
    fn, dim = _feature_set(feature_set)
    if len(wavs) == 0:
        return torch.zeros(0, dim)
    return torch.from_numpy(np.stack([fn(w, sample_rate) for w in wavs]))


def map_files(paths: Sequence[str | Path], fn: Callable[[np.ndarray, int], object],
              on_item: Callable[[int, int], None] | None = None) -> list:
    """``fn(wav, SAMPLE_RATE)`` of every audio file, read (mono) at the judges' rate; ``on_item(i, n)``
    after each file."""
    from audioguide.audio import read_audio

    out = []
    for i, path in enumerate(paths):
        out.append(fn(*read_audio(path, SAMPLE_RATE)))
        if on_item is not None:
            on_item(i + 1, len(paths))
    return out


def file_features(paths: Sequence[str | Path], on_item: Callable[[int, int], None] | None = None,
                  feature_set: str = "logmel-stats") -> Tensor:
    """``[len(paths), D]`` features of audio files, read at the features' rate; ``on_item(i, n)``
    after each file."""
    fn, dim = _feature_set(feature_set)
    feats = map_files(paths, fn, on_item)
    return torch.from_numpy(np.stack(feats)) if feats else torch.zeros(0, dim)


def accuracy_by_label(predicted: Sequence[str], labels: Sequence[str]) -> tuple[float, dict[str, tuple[float, int]]]:
    """Top-1 accuracy overall and per true label (``label -> (accuracy, items)``, sorted by label)."""
    hits = [p == v for p, v in zip(predicted, labels)]
    per = {c: (float(np.mean([h for h, lc in zip(hits, labels) if lc == c])), labels.count(c)) for c in sorted(set(labels))}
    return float(np.mean(hits)), per


class ClassRanking:
    """The calls every judge answers alike from its own ``labels``, ``logits(batch)``,
    ``batch(features)`` and ``clip_features(wav, rate)``: the best class, the ``k`` best, the
    class of waveforms. A batch is whatever the judge's :meth:`batch` returns (a tensor of
    features, a list of log-mel images, an ensemble's parts), with ``len`` its number of clips."""

    labels: tuple[str, ...]

    @torch.inference_mode()
    def predict_features(self, feats) -> list[str]:
        if len(feats) == 0:
            return []
        return [self.labels[i] for i in self.logits(feats).argmax(-1).tolist()]

    @torch.inference_mode()
    def top_features(self, feats, k: int) -> list[tuple[str, ...]]:
        """The ``k`` most likely classes of each clip, best first (a two-source scene is recognised
        when both its classes are in its top 2)."""
        if len(feats) == 0:
            return []
        return [tuple(self.labels[i] for i in row) for row in self.logits(feats).topk(k, -1).indices.tolist()]

    def predict(self, wavs: Sequence[np.ndarray] | np.ndarray, sample_rate: int) -> list[str]:
        """The most likely class of each waveform (mono float arrays at ``sample_rate``)."""
        if isinstance(wavs, np.ndarray) and wavs.ndim == 1:
            wavs = [wavs]
        return self.predict_features(self.batch([self.clip_features(w, sample_rate) for w in wavs]))


@dataclass(frozen=True)
class TrainConfig:
    hidden: int = 128  # 0: multinomial logistic regression
    steps: int = 400
    lr: float = 1e-2
    weight_decay: float = 1e-3


class ClipClassifier(ClassRanking):
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
        return self._hidden(feats.float()) @ self.params["w2"] + self.params["b2"]

    @torch.inference_mode()
    def embed(self, feats: Tensor) -> Tensor:
        """``[N, H]`` embeddings of ``[N, 256]`` features: the standardised features through the hidden
        ReLU layer (``hidden = 0``: the standardised features themselves)."""
        if len(feats) == 0:
            width = self.params["w1"].shape[1] if "w1" in self.params else self.mean.numel()
            return torch.zeros(0, width)
        return self._hidden(feats.float())

    @property
    def feature_set(self) -> str:
        """The features this judge reads (:data:`FEATURE_SETS`); older checkpoints: log-mel stats."""
        return str(self.config.get("feature_set", "logmel-stats"))

    def clip_features(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        """One clip's features, of this judge's feature set."""
        return _feature_set(self.feature_set)[0](wav, sample_rate)

    def file_features(self, paths: Sequence[str | Path], on_item: Callable[[int, int], None] | None = None) -> Tensor:
        """``[len(paths), D]`` features of audio files, of this judge's feature set."""
        return file_features(paths, on_item, self.feature_set)

    @staticmethod
    def batch(feats: Sequence[np.ndarray]) -> Tensor:
        """Clips' :meth:`clip_features` as what :meth:`predict_features` and the others take."""
        return torch.from_numpy(np.stack(feats)) if len(feats) else torch.zeros(0, 0)

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


def fit(feats: Tensor, labels: Sequence[str | Sequence[str]], seed: int = 0, config: TrainConfig = TrainConfig(),
        kind: str = CLIP_KIND, feature_set: str = "logmel-stats") -> ClipClassifier:
    """Train on precomputed features (``[N, D]``) and class names; full batch, deterministic.

    A label may be a tuple of classes (a two-source scene): the judge is then trained multi-label,
    a sigmoid per class (binary cross-entropy; single-class rows are one-hot), which is what lets it
    name both sources of a mixture; otherwise a softmax over classes (cross-entropy)."""
    sets = [(v,) if isinstance(v, str) else tuple(v) for v in labels]
    multi = any(len(v) > 1 for v in sets)
    labels = [v[0] for v in sets]  # the primary class: balancing and train accuracy
    classes = sorted({c for v in sets for c in v})
    if len(classes) < 2:
        raise AudioguideError(f"a {kind.replace('-', ' ')} needs at least two classes with audio; got {len(classes)}")
    index = {v: i for i, v in enumerate(classes)}
    y = torch.tensor([index[v] for v in labels])
    targets = torch.zeros(len(sets), len(classes))
    for i, v in enumerate(sets):
        targets[i, [index[c] for c in v]] = 1.0
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
    weight = counts.sum() / (k * counts.clamp_min(1))
    opt = torch.optim.Adam(params.values(), lr=config.lr, weight_decay=config.weight_decay)
    model = ClipClassifier(classes, mean, std, {}, {}, kind)
    model.params = params  # the same tensors, trained in place
    with torch.enable_grad():
        for _ in range(config.steps):
            if multi:
                per_row = torch.nn.functional.binary_cross_entropy_with_logits(model.logits(feats), targets, reduction="none").sum(-1)
                loss = (per_row * weight[y]).sum() / weight[y].sum()
            else:
                loss = torch.nn.functional.cross_entropy(model.logits(feats), y, weight=weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
    trained = {n: p.detach().clone() for n, p in params.items()}
    described = {"logmel-stats": f"log-mel {N_MELS} bands at {SAMPLE_RATE} Hz, n_fft {N_FFT}, hop {HOP}: mean/std of bands and deltas",
                 "scene": f"librosa log-mel {N_MELS} bands at {SAMPLE_RATE} Hz: mean/std/10th/90th percentile of bands, mean/std of deltas, "
                          f"{MOD_BANDS}-band modulation spectrum 0.75-40 Hz, flatness, zero crossings"}
    clf = ClipClassifier(classes, mean, std, trained, {
        "features": described.get(feature_set, feature_set), "feature_set": feature_set, "multi_label": multi,
        "hidden": h, "steps": config.steps, "lr": config.lr, "weight_decay": config.weight_decay, "seed": seed,
        "train_items": len(y),
    }, kind)
    clf.config["train_accuracy"] = float(np.mean([p == v for p, v in zip(clf.predict_features(feats), labels)]))
    return clf
