"""Audio I/O and spectrograms: soundfile for files, librosa for resampling and mel filters, torch.stft.

Writes are atomic (:func:`audioguide.core.atomic_write`): audio goes to a temporary file beside
the target and is renamed into place only when complete, so an interrupted run never leaves a
partial or corrupt WAV behind.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from audioguide.core import AudioguideError, atomic_write


def write_wav(path: str | Path, waveform: np.ndarray, sample_rate: int) -> Path:
    """Write a mono float waveform as 16-bit PCM WAV, atomically. Values are clipped to [-1, 1]."""
    import soundfile as sf

    path = Path(path)
    wav = np.asarray(waveform, dtype=np.float32).reshape(-1)
    if wav.size == 0:
        raise AudioguideError(f"refusing to write an empty waveform to {path}")
    if not np.all(np.isfinite(wav)):
        raise AudioguideError(f"refusing to write non-finite audio to {path}")
    if path.suffix.lower() != ".wav":
        raise AudioguideError(f"output must be a .wav file, got {path}")
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        sf.write(f, np.clip(wav, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
        f.flush()
        os.fsync(f.fileno())
    return path


def read_audio(path: str | Path, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Read an audio file as mono float32, resampled to ``sample_rate`` when given."""
    import soundfile as sf

    try:
        wav, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise AudioguideError(f"cannot read audio {path}: {e}") from None
    wav = wav.mean(axis=1)
    if sample_rate is not None and sr != sample_rate:
        import librosa

        wav = librosa.resample(wav, orig_sr=sr, target_sr=sample_rate).astype(np.float32)
        sr = sample_rate
    return wav, sr


@lru_cache(maxsize=8)
def _mel_basis(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None) -> Tensor:
    import librosa

    return torch.from_numpy(
        librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    ).float()


def log_mel(
    wav: Tensor,
    sample_rate: int,
    n_fft: int = 1024,
    hop: int = 256,
    n_mels: int = 80,
    fmin: float = 0.0,
    fmax: float | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """Log-mel spectrogram ``[B, n_mels, frames]`` of ``wav`` ``[B, samples]`` via ``torch.stft``."""
    window = torch.hann_window(n_fft, device=wav.device, dtype=wav.dtype)
    spec = torch.stft(wav, n_fft, hop, window=window, center=True, return_complex=True).abs()
    mel = _mel_basis(sample_rate, n_fft, n_mels, fmin, fmax).to(wav.device, wav.dtype) @ spec
    return torch.log(mel.clamp_min(eps))
