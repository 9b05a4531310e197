"""A convolutional sound judge over whole log-mel spectrograms, trained **only on real audio**.

The summary-statistics judge of :mod:`audioguide.evaluation.classifier` sees a clip as one vector
of band statistics, so it cannot tell *where in time and frequency* a pattern sits: a bell's
partials decaying, a clock's ticks, an engine's harmonics. This judge reads the log-mel image with
the convolutional design of PANNs (Kong et al. 2020, "PANNs: Large-Scale Pretrained Audio Neural
Networks for Audio Pattern Recognition", CNN10/CNN14: 3 x 3 convolutions with batch norm and ReLU,
2 x 2 average pooling between blocks, global pooling as the mean plus the max over time), narrowed
for a 2-core CPU: four blocks of one convolution each, and the frequency rows left after them kept
apart rather than averaged. Trained from scratch on the corpus' real (and procedural) clips, with:

* random 3 s crops (the whole clip at test time: the pooling takes any length);
* **mixing of real clips** in the power domain, ``P = P_a + g P_b`` with the background ``g``
  3-12 dB below relative to each crop's loudest bin (the corpus's scenes put it 3-10 dB below in
  RMS), trained multi-label with one sigmoid per class (binary
  cross-entropy): the judge learns to hear a quiet second source, and to name a foreground over
  a background (Salamon & Bello 2017 mix backgrounds for the same reason);
* SpecAugment (Park et al. 2019, §2: two frequency and two time masks) and a random spectral tilt
  of +-6 dB across the bands (a recording chain's colour, which no class should be judged by);
* clips drawn with weight ``(clips of its class)^-1/2``, so small classes are seen more often
  without being memorised.

A clip shorter than the training crop is judged as it was trained: centred in a crop of silence.

Features are librosa's (none of the generator's code): 64 mel bands of the power spectrum at
16 kHz (25 ms window, 10 ms hop), in dB relative to the clip's loudest bin, floored at -80 dB and
scaled by 1/20. The embedding (:meth:`CNNJudge.embed`, the hidden layer after pooling) is where
Fréchet distances are measured, as with the MLP judge.

Saved as a ``sound-classifier`` safetensors checkpoint whose config says ``"model": "cnn"``
(:func:`audioguide.evaluation.sound.load_sound_classifier` dispatches on it). Every random draw
(initialisation, crops, mixing, masks, order) comes from the seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Self

import numpy as np
import torch
from torch import Tensor, nn

from audioguide.core import AudioguideError
from audioguide.evaluation.classifier import ClassRanking, map_files

SAMPLE_RATE = 16000
N_MELS = 64
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
FLOOR_DB = 80.0
SCALE_DB = 20.0  # image = dB / 20: [-4, 0]
SILENCE_DB = -100.0  # a clip quieter than this everywhere is silence, not a sound to normalise
FEATURE_SET = "logmel-image"


def logmel_image(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """``[64, frames]`` float16: librosa's mel power in dB below the clip's loudest bin, floored
    at -80 dB, over 20 (so in [-4, 0]); level does not matter, except that a clip whose loudest
    bin is below -100 dB (digital silence) is measured from -100 dB, not made loud."""
    import librosa

    audio = np.asarray(wav, dtype=np.float32).reshape(-1)
    if sample_rate != SAMPLE_RATE:
        audio = librosa.resample(audio, orig_sr=sample_rate, target_sr=SAMPLE_RATE).astype(np.float32)
    if audio.size < 4 * N_FFT:
        audio = np.pad(audio, (0, 4 * N_FFT - audio.size))
    mel = librosa.feature.melspectrogram(y=audio, sr=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS, power=2.0)
    db = 10.0 * np.log10(np.maximum(mel, 1e-20))
    db = np.maximum(db - max(float(db.max()), SILENCE_DB), -FLOOR_DB)
    return (db / SCALE_DB).astype(np.float16)


def file_images(paths: Sequence[str | Path], on_item: Callable[[int, int], None] | None = None) -> list[np.ndarray]:
    """:func:`logmel_image` of audio files; ``on_item(i, n)`` after each."""
    return map_files(paths, logmel_image, on_item)


@dataclass(frozen=True)
class CNNConfig:
    channels: tuple[int, ...] = (32, 64, 128, 128)
    embed: int = 128
    steps: int = 3000  # ~38 min on 2 threads; with short clips judged uncentred, 1500 steps gave 90.2 % held out, 3000 91.7 %
    batch: int = 32
    crop: int = 300  # frames (3 s)
    lr: float = 2e-3
    weight_decay: float = 1e-2
    mix: float = 0.4  # share of training examples that are two clips mixed
    mix_gain_db: tuple[float, float] = (-12.0, -3.0)
    tilt_db: float = 6.0
    balance: float = 0.5  # clip weight (clips of its class)^-balance


class SpectrogramCNN(nn.Module):
    """Conv blocks (3 x 3 conv, batch norm, ReLU, 2 x 2 average pool); the channels of every
    remaining frequency row side by side (PANNs average over frequency; with four blocks, not six,
    that would leave the absolute frequency of a pattern unknown), mean + max over time (PANNs
    eq. 5), a ReLU hidden layer (the embedding), a linear layer per class."""

    def __init__(self, classes: int, channels: Sequence[int], embed: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(), nn.AvgPool2d(2)]
            c_in = c
        self.conv = nn.Sequential(*layers)
        self.hidden = nn.Linear(c_in * (N_MELS >> len(channels)), embed)
        self.head = nn.Linear(embed, classes)

    def embedding(self, x: Tensor) -> Tensor:
        """``[B, embed]`` of log-mel images ``[B, mels, frames]`` (one length per batch)."""
        h = self.conv(x[:, None]).flatten(1, 2)  # [B, C * F', T']: where in frequency stays known
        pooled = h.mean(-1) + h.amax(-1)
        return torch.relu(self.hidden(pooled))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.embedding(x))


class CNNJudge(ClassRanking):
    """Class names and a :class:`SpectrogramCNN`; the same calls as
    :class:`~audioguide.evaluation.classifier.ClipClassifier` (features are log-mel images, a list)."""

    def __init__(self, labels: Sequence[str], net: SpectrogramCNN, config: dict, kind: str = "sound-classifier") -> None:
        self.labels = tuple(labels)
        self.net = net.eval()
        self.config = dict(config)
        self.kind = kind

    feature_set = FEATURE_SET

    def clip_features(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        return logmel_image(wav, sample_rate)

    def file_features(self, paths: Sequence[str | Path], on_item: Callable[[int, int], None] | None = None) -> list[np.ndarray]:
        return file_images(paths, on_item)

    @staticmethod
    def batch(feats: Sequence[np.ndarray]) -> list[np.ndarray]:
        """What :meth:`predict_features` and the others take: the images themselves."""
        return list(feats)

    @torch.inference_mode()
    def _run(self, feats: Sequence[np.ndarray]) -> tuple[Tensor, Tensor]:
        """Embeddings and logits, clip by clip (batch norm in eval mode): a clip at its own length,
        or, shorter than the training crop, centred in a crop of silence as in training."""
        if len(feats) == 0:
            return torch.zeros(0, self.net.hidden.out_features), torch.zeros(0, len(self.labels))
        blocks = len(self.net.conv) // 4  # conv, norm, ReLU, pool
        least = max(int(self.config.get("crop", 0)), 2**blocks)
        embs = []
        for img in feats:
            x = torch.from_numpy(np.asarray(img, dtype=np.float32))
            if x.shape[-1] < least:
                short = least - x.shape[-1]
                x = torch.nn.functional.pad(x, (short // 2, short - short // 2), value=-FLOOR_DB / SCALE_DB)
            embs.append(self.net.embedding(x[None]))
        emb = torch.cat(embs)
        return emb, self.net.head(emb)

    def embed(self, feats: Sequence[np.ndarray]) -> Tensor:
        return self._run(feats)[0]

    def logits(self, feats: Sequence[np.ndarray]) -> Tensor:
        return self._run(feats)[1]

    def save(self, path: str | Path) -> Path:
        from audioguide.checkpoints import save_checkpoint

        tensors = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
        return save_checkpoint(path, tensors, {**self.config, "labels": list(self.labels)}, self.kind)

    @classmethod
    def from_checkpoint(cls, ckpt) -> Self:
        config = dict(ckpt.config)
        try:
            labels = config.pop("labels")
            net = SpectrogramCNN(len(labels), tuple(config["channels"]), int(config["embed"]))
            net.load_state_dict(dict(ckpt.tensors))
        except (KeyError, RuntimeError) as e:
            raise AudioguideError(f"{ckpt.path}: not a CNN sound judge ({str(e).splitlines()[0]})") from None
        return cls(labels, net, config, ckpt.kind)


def _crop(img: np.ndarray, frames: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``frames``-long window of ``img`` (float32), padded with silence when shorter."""
    n = img.shape[1]
    if n > frames:
        a = int(rng.integers(n - frames + 1))
        return img[:, a : a + frames].astype(np.float32)
    out = np.full((img.shape[0], frames), -FLOOR_DB / SCALE_DB, dtype=np.float32)
    a = int(rng.integers(frames - n + 1))
    out[:, a : a + n] = img
    return out


def _mix(a: np.ndarray, b: np.ndarray, gain_db: float) -> np.ndarray:
    """Two images mixed as powers, ``b`` ``gain_db`` below ``a`` (both are relative to their
    loudest bin), renormalised and floored like :func:`logmel_image`."""
    db = 10.0 * np.log10(10.0 ** (a * SCALE_DB / 10.0) + 10.0 ** ((b * SCALE_DB + gain_db) / 10.0))
    return (np.maximum(db - db.max(), -FLOOR_DB) / SCALE_DB).astype(np.float32)


def _augment(x: np.ndarray, rng: np.random.Generator, tilt_db: float) -> np.ndarray:
    """SpecAugment masks (two of up to 8 bands, two of up to 40 frames) and a random tilt."""
    m, t = x.shape
    x = x + (rng.uniform(-tilt_db, tilt_db) / SCALE_DB) * np.linspace(-0.5, 0.5, m, dtype=np.float32)[:, None]
    floor = -FLOOR_DB / SCALE_DB
    for _ in range(2):
        w = int(rng.integers(0, 9))
        f0 = int(rng.integers(0, m - w + 1))
        x[f0 : f0 + w] = floor
        w = int(rng.integers(0, 41))
        t0 = int(rng.integers(0, max(t - w, 0) + 1))
        x[:, t0 : t0 + w] = floor
    return np.maximum(x, floor)


def train_cnn_judge(
    images: Sequence[np.ndarray], labels: Sequence[str | Sequence[str]], seed: int = 0, config: CNNConfig = CNNConfig(),
    on_step: Callable[[int, int], None] | None = None,
) -> CNNJudge:
    """Train on log-mel images (:func:`logmel_image`) and their classes (a tuple for a two-source
    scene); see the module docstring. Deterministic for a seed (CPU)."""
    sets = [(v,) if isinstance(v, str) else tuple(v) for v in labels]
    classes = sorted({c for v in sets for c in v})
    if len(classes) < 2:
        raise AudioguideError(f"a sound judge needs at least two classes with audio; got {len(classes)}")
    if len(images) != len(sets):
        raise AudioguideError(f"{len(images)} images but {len(sets)} label sets")
    index = {c: i for i, c in enumerate(classes)}
    primary = np.array([index[v[0]] for v in sets])
    counts = np.bincount(primary, minlength=len(classes)).astype(np.float64)
    weight = counts[primary] ** -config.balance
    weight /= weight.sum()
    # partners a clip may be mixed with: the clips that share none of its classes
    by_class: dict[str, set[int]] = {}
    for i, v in enumerate(sets):
        for c in v:
            by_class.setdefault(c, set()).add(i)
    rng = np.random.default_rng([seed, 17])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = SpectrogramCNN(len(classes), config.channels, config.embed)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=config.steps, pct_start=0.1)
    net.train()
    losses = []
    with torch.enable_grad():
        for step in range(config.steps):
            x = np.empty((config.batch, N_MELS, config.crop), dtype=np.float32)
            y = np.zeros((config.batch, len(classes)), dtype=np.float32)
            for j, i in enumerate(rng.choice(len(sets), size=config.batch, p=weight)):
                img = _crop(images[i], config.crop, rng)
                y[j, [index[c] for c in sets[i]]] = 1.0
                if rng.random() < config.mix and len(set().union(*(by_class[c] for c in sets[i]))) < len(sets):
                    k = int(rng.choice(len(sets), p=weight))
                    while set(sets[k]) & set(sets[i]):
                        k = int(rng.choice(len(sets), p=weight))
                    img = _mix(img, _crop(images[k], config.crop, rng), float(rng.uniform(*config.mix_gain_db)))
                    y[j, [index[c] for c in sets[k]]] = 1.0
                x[j] = _augment(img, rng, config.tilt_db)
            loss = nn.functional.binary_cross_entropy_with_logits(net(torch.from_numpy(x)), torch.from_numpy(y))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            if on_step is not None:
                on_step(step + 1, config.steps)
    judge = CNNJudge(classes, net, {
        "model": "cnn", "feature_set": FEATURE_SET, "multi_label": True,
        "features": f"librosa log-mel {N_MELS} bands at {SAMPLE_RATE} Hz, n_fft {N_FFT}, hop {HOP}, dB below the clip's peak, floor -{FLOOR_DB:g} dB",
        **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()},
        "seed": seed, "train_items": len(sets), "final_loss": float(np.mean(losses[-50:])),
    })
    judge.config["train_accuracy"] = float(np.mean([p == v[0] for p, v in zip(judge.predict_features(images), sets)]))
    return judge
