"""Speaker identification judge: does generated speech have the voice it was asked for?

A small classifier trained **only on real corpus audio** (the teacher recordings of a training
manifest), then applied to generated speech; its accuracy on held-out real recordings is the
ceiling that generated speech is compared with.

Features (one vector per clip, at 16 kHz): a 64-band log-mel spectrogram (25 ms window, 10 ms hop,
floored 80 dB below the clip's loudest bin) of the active frames (within 40 dB of the loudest
frame), less its overall mean (so the level of a clip does not matter); the clip's vector is the mean and standard deviation over time of the bands
and of their deltas (the usual regression over +-2 frames, as in HTK), 4 x 64 = 256 numbers,
standardised with the training set's statistics. Classifier: a one-hidden-layer MLP (``hidden = 0``
is multinomial logistic regression) trained full-batch with Adam and weight decay from an explicit
``torch.Generator`` seed, so training is deterministic.

Saved as a safetensors checkpoint (kind ``speaker-classifier``): weights and normalisation
statistics as tensors, voice names and hyper-parameters in the metadata config.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from audioguide.core import AudioguideError, make_generator
from audioguide.manifest import Row, cap_per_voice

SAMPLE_RATE = 16000
N_MELS = 64
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
ACTIVE_RANGE = np.log(100.0)  # 40 dB below the loudest frame, in natural-log magnitude units
FLOOR = np.log(1e4)  # bins more than 80 dB below the clip's loudest bin are set to that floor
KIND = "speaker-classifier"


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
        return torch.zeros(0, 4 * N_MELS)
    return torch.from_numpy(np.stack([clip_features(w, sample_rate) for w in wavs]))


@dataclass(frozen=True)
class TrainConfig:
    hidden: int = 128  # 0: multinomial logistic regression
    steps: int = 400
    lr: float = 1e-2
    weight_decay: float = 1e-3


class SpeakerClassifier:
    """Voice names, feature standardisation and an MLP; :meth:`predict` names the voice of clips."""

    def __init__(self, voices: Sequence[str], mean: Tensor, std: Tensor, params: dict[str, Tensor], config: dict) -> None:
        self.voices = tuple(voices)
        self.mean, self.std = mean.float(), std.float()
        self.params = {k: v.float() for k, v in params.items()}
        self.config = dict(config)

    def logits(self, feats: Tensor) -> Tensor:
        x = (feats - self.mean) / self.std
        if "w1" in self.params:
            x = torch.relu(x @ self.params["w1"] + self.params["b1"])
        return x @ self.params["w2"] + self.params["b2"]

    @torch.inference_mode()
    def predict_features(self, feats: Tensor) -> list[str]:
        if len(feats) == 0:
            return []
        return [self.voices[i] for i in self.logits(feats).argmax(-1).tolist()]

    def predict(self, wavs: Sequence[np.ndarray] | np.ndarray, sample_rate: int) -> list[str]:
        """The most likely voice of each waveform (mono float arrays at ``sample_rate``)."""
        if isinstance(wavs, np.ndarray) and wavs.ndim == 1:
            wavs = [wavs]
        return self.predict_features(features(list(wavs), sample_rate))

    def accuracy(self, wavs: Sequence[np.ndarray], sample_rate: int, voices: Sequence[str]) -> float:
        predicted = self.predict(wavs, sample_rate)
        return float(np.mean([p == v for p, v in zip(predicted, voices)])) if predicted else float("nan")

    def save(self, path: str | Path) -> Path:
        """Write a safetensors checkpoint (atomically); the config goes into its metadata."""
        from audioguide.checkpoints import save_checkpoint

        tensors = {"mean": self.mean, "std": self.std, **self.params}
        return save_checkpoint(path, tensors, {**self.config, "voices": list(self.voices)}, KIND)

    @classmethod
    def load(cls, path: str | Path) -> SpeakerClassifier:
        from audioguide.checkpoints import load_checkpoint

        ckpt = load_checkpoint(path)
        if ckpt.kind != KIND:
            raise AudioguideError(f"{ckpt.path} is a {ckpt.kind or 'unknown'} checkpoint, not a speaker classifier")
        t = dict(ckpt.tensors)
        try:
            mean, std = t.pop("mean"), t.pop("std")
            config = dict(ckpt.config)
            voices = config.pop("voices")
        except KeyError as e:
            raise AudioguideError(f"{ckpt.path}: speaker classifier lacks {e.args[0]!r}") from None
        return cls(voices, mean, std, t, config)


def _rows_by_voice(rows: Sequence[Row], per_voice: int | None) -> list[Row]:
    """Rows with audio and a speaker, at most ``per_voice`` per speaker, in manifest order."""
    return cap_per_voice([row for row in rows if row.audio is not None and row.speaker], per_voice)


def row_features(
    rows: Sequence[Row], per_voice: int | None = None, on_item: Callable[[int, int], None] | None = None
) -> tuple[Tensor, list[str]]:
    """Features and speaker names of real recordings (rows without audio or speaker are skipped)."""
    from audioguide.audio import read_audio

    chosen = _rows_by_voice(rows, per_voice)
    feats = []
    for i, row in enumerate(chosen):
        wav, sr = read_audio(row.audio, SAMPLE_RATE)
        feats.append(clip_features(wav, sr))
        if on_item is not None:
            on_item(i + 1, len(chosen))
    return (torch.from_numpy(np.stack(feats)) if feats else torch.zeros(0, 4 * N_MELS)), [r.speaker for r in chosen]


def fit(feats: Tensor, labels: Sequence[str], seed: int = 0, config: TrainConfig = TrainConfig()) -> SpeakerClassifier:
    """Train on precomputed features (``[N, D]``) and voice names; full batch, deterministic."""
    voices = sorted(set(labels))
    if len(voices) < 2:
        raise AudioguideError(f"a speaker classifier needs at least two voices with audio; got {len(voices)}")
    index = {v: i for i, v in enumerate(voices)}
    y = torch.tensor([index[v] for v in labels])
    feats = feats.float()
    mean, std = feats.mean(0), feats.std(0, unbiased=False).clamp_min(1e-4)
    g = make_generator(seed)
    d, k, h = feats.shape[1], len(voices), config.hidden
    params: dict[str, Tensor] = {}
    if h:
        params["w1"] = torch.randn(d, h, generator=g) * (2.0 / d) ** 0.5
        params["b1"] = torch.zeros(h)
    fan_in = h or d
    params["w2"] = torch.randn(fan_in, k, generator=g) * (1.0 / fan_in) ** 0.5
    params["b2"] = torch.zeros(k)
    for p in params.values():
        p.requires_grad_(True)
    # balance voices with unequal counts
    counts = torch.bincount(y, minlength=k).float()
    weight = counts.sum() / (k * counts)
    opt = torch.optim.Adam(params.values(), lr=config.lr, weight_decay=config.weight_decay)
    model = SpeakerClassifier(voices, mean, std, {}, {})
    model.params = params  # the same tensors, trained in place
    with torch.enable_grad():
        for _ in range(config.steps):
            loss = torch.nn.functional.cross_entropy(model.logits(feats), y, weight=weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
    trained = {n: p.detach().clone() for n, p in params.items()}
    clf = SpeakerClassifier(voices, mean, std, trained, {
        "features": f"log-mel {N_MELS} bands at {SAMPLE_RATE} Hz, n_fft {N_FFT}, hop {HOP}: mean/std of bands and deltas",
        "hidden": h, "steps": config.steps, "lr": config.lr, "weight_decay": config.weight_decay, "seed": seed,
        "train_items": len(y),
    })
    clf.config["train_accuracy"] = float(np.mean([p == v for p, v in zip(clf.predict_features(feats), labels)]))
    return clf


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
    hits = [p == v for p, v in zip(clf.predict_features(feats), labels)]
    voices = sorted(set(labels))
    per = {v: (float(np.mean([h for h, lv in zip(hits, labels) if lv == v])), labels.count(v)) for v in voices}
    return SpeakerAccuracy(float(np.mean(hits)), len(hits), per)
