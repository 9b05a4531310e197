"""Audio I/O, levels and spectrograms: soundfile for files, pyloudnorm for loudness, soxr for
resampling, librosa for mel filters, torch.stft.

Writes are atomic (:func:`audioguide.core.atomic_write`): audio is encoded in memory, written to a
temporary file beside the target and renamed into place only when complete, so an interrupted run
or a full disk never leaves a partial or corrupt file behind (and a full disk is a one-line error).

Output (:func:`master`, then :func:`encode_audio` / :func:`write_audio`), in this order:

1. resampling to a requested rate (soxr's high-quality filter, the one under ``librosa.resample``);
2. loudness normalisation to :data:`TARGET_LUFS` integrated loudness (ITU-R BS.1770-4, gated, as
   measured by pyloudnorm): -16 LUFS, the level of streamed speech and podcasts (AES TD1004.1.15-10
   recommends -16 to -20; Apple's podcast guideline is -16), within about 0.6 LU where the limiter
   has much to do;
3. a true-peak guard at :data:`CEILING_DBTP` (-1 dBTP, EBU R128 / AES TD1004's ceiling for
   lossy-coded delivery): a look-ahead limiter (:func:`limit`) brings every inter-sample peak,
   estimated by 4x oversampling (BS.1770-4 Annex 2), under the ceiling. Nothing is ever clipped;
4. encoding by format (:data:`FORMATS`: WAV 16 / 24-bit / float, FLAC, Ogg Vorbis, Ogg Opus, MP3)
   with soundfile (libsndfile).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from audioguide.core import AudioguideError, atomic_write

TARGET_LUFS = -16.0  # integrated loudness of written audio (ITU-R BS.1770-4); None leaves levels alone
CEILING_DBTP = -1.0  # true-peak ceiling (dBTP, BS.1770-4 Annex 2)


@dataclass(frozen=True)
class Format:
    """An output format: libsndfile's major format, its sample formats (the first the default) and
    the sample rates it can carry (None: any)."""

    major: str
    subtypes: tuple[str, ...]
    rates: tuple[int, ...] | None = None
    media_type: str = "application/octet-stream"


_MPEG_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
FORMATS: dict[str, Format] = {
    "wav": Format("WAV", ("PCM_16", "PCM_24", "FLOAT"), media_type="audio/wav"),
    "flac": Format("FLAC", ("PCM_16", "PCM_24"), media_type="audio/flac"),
    "ogg": Format("OGG", ("VORBIS",), media_type="audio/ogg"),
    "opus": Format("OGG", ("OPUS",), (8000, 12000, 16000, 24000, 48000), media_type="audio/ogg"),
    "mp3": Format("MP3", ("MPEG_LAYER_III",), _MPEG_RATES, media_type="audio/mpeg"),
    "pcm": Format("RAW", ("PCM_16",), media_type="audio/pcm"),  # headerless 16-bit little-endian (OpenAI's "pcm")
}
SAMPLE_FORMATS = {"16": "PCM_16", "24": "PCM_24", "float": "FLOAT"}  # --sample-format
MIN_RATE, MAX_RATE = 8000, 192000  # --sample-rate


def format_of(path: str | Path) -> str:
    """The output format a file name asks for, by its suffix; a one-line error for any other."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in FORMATS or suffix == "pcm":
        known = ", ".join(f".{k}" for k in FORMATS if k != "pcm")
        raise AudioguideError(f"cannot tell the audio format of {path}: use a suffix among {known}")
    return suffix


def subtype_of(fmt: str, sample_format: str | None = None) -> str:
    """libsndfile's subtype for ``fmt`` and a sample format (``16``, ``24``, ``float``; None: the
    format's default), checked against what the format can hold."""
    spec = FORMATS[fmt]
    if sample_format is None:
        return spec.subtypes[0]
    subtype = SAMPLE_FORMATS.get(str(sample_format))
    if subtype is None:
        raise AudioguideError(f"sample format must be one of {', '.join(SAMPLE_FORMATS)}, got {sample_format!r}")
    if subtype not in spec.subtypes:
        allowed = [k for k, v in SAMPLE_FORMATS.items() if v in spec.subtypes]
        if not allowed:
            raise AudioguideError(f"{fmt} has no sample format to choose (its codec decides); leave out the sample format")
        raise AudioguideError(f"{fmt} takes sample format {' or '.join(allowed)}, not {sample_format}")
    return subtype


def output_rate(fmt: str, sample_rate: int, requested: int | None = None) -> int:
    """The rate to write ``fmt`` at: ``requested`` (checked against the format), else ``sample_rate``,
    else (a codec that cannot carry it: Opus, MP3) the nearest rate above that it can."""
    rates = FORMATS[fmt].rates
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or not MIN_RATE <= requested <= MAX_RATE:
            raise AudioguideError(f"sample rate must be an integer in [{MIN_RATE}, {MAX_RATE}] Hz, got {requested!r}")
        if rates is not None and requested not in rates:
            raise AudioguideError(f"{fmt} cannot carry {requested} Hz; use one of {', '.join(map(str, rates))}")
        return requested
    if rates is None or sample_rate in rates:
        return sample_rate
    return min((r for r in rates if r >= sample_rate), default=rates[-1])


# -- levels --------------------------------------------------------------------------------------


def resample(wav: np.ndarray, sample_rate: int, target: int) -> np.ndarray:
    """``wav`` at ``target`` Hz through soxr's high-quality filter (what ``librosa.resample`` uses)."""
    if target == sample_rate:
        return wav
    import soxr

    return soxr.resample(np.asarray(wav, dtype=np.float32), sample_rate, target, quality="HQ").astype(np.float32)


def loudness(wav: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness in LUFS (ITU-R BS.1770-4: K-weighting, 400 ms blocks, absolute and
    relative gates; pyloudnorm). Audio shorter than one block is measured padded with silence,
    which the absolute gate leaves out; silence is ``-inf``."""
    import warnings

    import pyloudnorm

    x = np.asarray(wav, dtype=np.float64).reshape(-1)
    block = int(np.ceil(0.4 * sample_rate)) + 1
    if len(x) < block:
        x = np.pad(x, (0, block - len(x)))
    if not np.any(x):
        return float("-inf")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyloudnorm warns of possible clipping; we only measure
        return float(pyloudnorm.Meter(sample_rate).integrated_loudness(x))


def _oversampled_peaks(wav: np.ndarray) -> np.ndarray:
    """Per-sample magnitude envelope of the 4x-oversampled signal (the true-peak meter of
    ITU-R BS.1770-4 Annex 2, with soxr's interpolation filter): at each sample, the largest
    magnitude among it and its three interpolated successors."""
    x = np.asarray(wav, dtype=np.float32).reshape(-1)
    if x.size == 0:
        return np.zeros(0)
    import soxr

    up = np.abs(soxr.resample(x, 1, 4, quality="HQ"))[: 4 * len(x)]
    up = np.pad(up, (0, 4 * len(x) - len(up)))
    return np.maximum(np.abs(x), up.reshape(len(x), 4).max(axis=1)).astype(np.float64)


def true_peak(wav: np.ndarray) -> float:
    """True peak in dBTP (ITU-R BS.1770-4 Annex 2: 4x oversampling); ``-inf`` for silence."""
    peaks = _oversampled_peaks(wav)
    peak = float(peaks.max()) if peaks.size else 0.0
    return 20 * np.log10(peak) if peak > 0 else float("-inf")


def limit(wav: np.ndarray, sample_rate: int, ceiling_dbtp: float = CEILING_DBTP, lookahead: float = 0.005,
          release: float = 0.05) -> np.ndarray:
    """Bring every true peak of ``wav`` under ``ceiling_dbtp`` without clipping: a look-ahead
    peak limiter.

    The gain each sample needs is ``min(1, ceiling / peak)`` (peaks from the 4x-oversampled
    envelope). In blocks of ``lookahead`` seconds, each block holds the lowest need from one block
    before it to ``release`` after it; a moving average over half a block then ramps the gain down
    before a peak and back up after it. Every sample that average reads holds a need no higher than
    the sample's own, so the gain never exceeds what it needs. Audio under the ceiling is returned
    unchanged.
    """
    x = np.asarray(wav, dtype=np.float32).reshape(-1)
    ceiling = 10 ** (ceiling_dbtp / 20)
    peaks = _oversampled_peaks(x)
    if peaks.size == 0 or peaks.max() <= ceiling:
        return x
    need = np.minimum(1.0, ceiling / np.maximum(peaks, 1e-12))
    size = max(int(lookahead * sample_rate), 2)
    after = max(int(np.ceil(release / lookahead)), 1)
    blocks = -(-len(x) // size)
    per_block = np.pad(need, (0, blocks * size - len(x)), constant_values=1.0).reshape(blocks, size).min(axis=1)
    window = np.lib.stride_tricks.sliding_window_view(np.pad(per_block, (after, 1), mode="edge"), after + 2)
    held = np.repeat(window.min(axis=1), size)[: len(x)]  # block j: min over blocks j - after .. j + 1
    half = size // 2
    total = np.concatenate([[0.0], np.cumsum(np.pad(held, half, mode="edge"))])
    gain = (total[2 * half + 1 :] - total[: -2 * half - 1]) / (2 * half + 1)
    out = (x * np.minimum(gain, need)).astype(np.float32)
    over = float(_oversampled_peaks(out).max()) / ceiling  # the interpolation can leave a trace above
    return (out / over).astype(np.float32) if over > 1 else out


def master(wav: np.ndarray, sample_rate: int, *, target_lufs: float | None = TARGET_LUFS,
           ceiling_dbtp: float = CEILING_DBTP, rate: int | None = None) -> tuple[np.ndarray, int]:
    """The output stage: resample to ``rate``, bring integrated loudness to ``target_lufs`` (None
    keeps the level) and keep every true peak under ``ceiling_dbtp`` (:func:`limit`). Silent audio
    is left silent. Returns ``(waveform, sample_rate)``."""
    x = np.asarray(wav, dtype=np.float32).reshape(-1)
    if not np.all(np.isfinite(x)):
        raise AudioguideError("refusing to write non-finite audio")
    if rate is not None and rate != sample_rate:
        x, sample_rate = resample(x, sample_rate, rate), rate
    out = limit(x, sample_rate, ceiling_dbtp)
    if target_lufs is None:
        return out, sample_rate
    gain_db = 0.0
    for _ in range(6):  # limiting takes a little loudness away: measure again and make it up
        short = target_lufs - loudness(out, sample_rate)
        if not np.isfinite(short) or abs(short) < 0.1:
            break
        gain_db += short
        out = limit((x * 10 ** (gain_db / 20)).astype(np.float32), sample_rate, ceiling_dbtp)
    return out, sample_rate


# -- encoding and writing ------------------------------------------------------------------------


def encode_audio(wav: np.ndarray, sample_rate: int, fmt: str = "wav", sample_format: str | None = None) -> bytes:
    """``wav`` encoded as a whole file of format ``fmt`` (:data:`FORMATS`), in memory. Samples
    beyond [-1, 1] are refused, never clipped (:func:`master` keeps them under its ceiling)."""
    import soundfile as sf

    x = np.asarray(wav, dtype=np.float32).reshape(-1)
    if x.size == 0:
        raise AudioguideError("refusing to write an empty waveform")
    if not np.all(np.isfinite(x)):
        raise AudioguideError("refusing to write non-finite audio")
    if fmt not in FORMATS:
        raise AudioguideError(f"unknown audio format {fmt!r}; choose one of {', '.join(FORMATS)}")
    subtype = subtype_of(fmt, sample_format)
    if subtype != "FLOAT" and np.abs(x).max() > 1.0:
        raise AudioguideError(f"audio peaks at {np.abs(x).max():.3f}, beyond full scale: it would clip (level it first)")
    if fmt == "pcm":
        return (np.round(x * 32767.0).astype("<i2")).tobytes()
    rates = FORMATS[fmt].rates
    if rates is not None and sample_rate not in rates:
        raise AudioguideError(f"{fmt} cannot carry {sample_rate} Hz; use one of {', '.join(map(str, rates))}")
    buffer = io.BytesIO()
    try:
        sf.write(buffer, x, sample_rate, format=FORMATS[fmt].major, subtype=subtype)
    except sf.LibsndfileError as e:
        raise AudioguideError(f"cannot encode {fmt}: {e}") from None
    return buffer.getvalue()


def write_bytes(path: str | Path, data: bytes, temp: str | None = None) -> Path:
    """Write ``data`` to ``path`` atomically and durably (fsync); a full disk is a one-line error.
    ``temp``: the temporary file's name (:func:`~audioguide.core.atomic_write`)."""
    path = Path(path)
    with atomic_write(path, temp) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return path


def write_audio(path: str | Path, waveform: np.ndarray, sample_rate: int, sample_format: str | None = None) -> Path:
    """Write a mono waveform in the format of ``path``'s suffix (:func:`format_of`), atomically."""
    return write_bytes(path, encode_audio(waveform, sample_rate, format_of(path), sample_format))


def write_wav(path: str | Path, waveform: np.ndarray, sample_rate: int) -> Path:
    """Write a mono float waveform as 16-bit PCM WAV, atomically. Values are clipped to [-1, 1]
    (rendering and training samples; :func:`master` levels without clipping)."""
    path = Path(path)
    wav = np.asarray(waveform, dtype=np.float32).reshape(-1)
    if wav.size and not np.all(np.isfinite(wav)):
        raise AudioguideError(f"refusing to write non-finite audio to {path}")
    if path.suffix.lower() != ".wav":
        raise AudioguideError(f"output must be a .wav file, got {path}")
    try:
        data = encode_audio(np.clip(wav, -1.0, 1.0), sample_rate, "wav")
    except AudioguideError as e:
        raise AudioguideError(f"{e} to {path}") from None
    return write_bytes(path, data)


def mix_scene(foreground: np.ndarray, background: np.ndarray, gain_db: float) -> np.ndarray:
    """A two-source scene as long as the foreground: the background looped or cut to it, its RMS
    ``gain_db`` relative to the foreground's, the sum peaking at the foreground's peak (at least 0.1,
    at most 0.9); float32."""
    fg = np.asarray(foreground, dtype=np.float64).reshape(-1)
    bg = np.resize(np.asarray(background, dtype=np.float64).reshape(-1), fg.shape)
    rms_fg, rms_bg = float(np.sqrt(np.mean(fg**2))) + 1e-9, float(np.sqrt(np.mean(bg**2))) + 1e-9
    out = fg + bg * (rms_fg / rms_bg) * 10 ** (gain_db / 20)
    target = min(max(float(np.abs(fg).max()), 0.1), 0.9)
    return (out / max(float(np.abs(out).max()), 1e-6) * target).astype(np.float32)


def read_audio(path: str | Path | io.BytesIO, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Read an audio file (or a file object, e.g. an archive member's bytes) as mono float32,
    resampled to ``sample_rate`` when given."""
    import soundfile as sf

    try:
        wav, sr = sf.read(path if hasattr(path, "read") else str(path), dtype="float32", always_2d=True)
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
