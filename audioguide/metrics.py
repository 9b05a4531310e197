"""Objective audio metrics: log-mel distance, multi-resolution STFT distance, SI-SDR.

Every metric takes a reference and an estimate shaped ``[..., samples]`` (tensors or numpy arrays),
trims both to the shorter length (decoders may return a few padded samples more), and returns one
value per leading index: a tensor of shape ``[...]`` (0-d for 1-D inputs; ``float(...)`` it for a
number). All are differentiable torch functions, so the training losses reuse them.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from audioguide.audio import log_mel

STFT_FFT_SIZES: tuple[int, ...] = (512, 1024, 2048)
NATS_TO_DB = 20.0 / math.log(10.0)
"""Multiply a natural-log *magnitude* difference by this to get decibels (about 8.69)."""


def _pair(ref: Tensor | np.ndarray, est: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
    """Float tensors of equal length (the shorter of the two)."""
    ref, est = torch.as_tensor(ref), torch.as_tensor(est)
    if ref.ndim == 0 or est.ndim == 0:
        raise ValueError("audio must have at least one (time) dimension")
    n = min(ref.shape[-1], est.shape[-1])
    if n == 0:
        raise ValueError("audio must not be empty")
    dtype = torch.promote_types(torch.promote_types(ref.dtype, est.dtype), torch.float32)
    return ref[..., :n].to(dtype), est[..., :n].to(dtype)


def _flat(wav: Tensor) -> Tensor:
    return wav.reshape(-1, wav.shape[-1])


def mel_distance(
    ref: Tensor | np.ndarray,
    est: Tensor | np.ndarray,
    sr: int,
    n_fft: int = 1024,
    hop: int = 256,
    n_mels: int = 80,
) -> Tensor:
    """Mean absolute log-mel difference ``mean |ln M(ref) - ln M(est)|`` in natural-log units.

    ``M`` is the magnitude mel spectrogram of :func:`audioguide.audio.log_mel` (floor ``1e-5``),
    so this is the HiFi-GAN mel loss (Kong et al. 2020, §2.3) averaged over bins and frames.
    Multiply by :data:`NATS_TO_DB` for decibels. Returns shape ``[...]``.
    """
    ref, est = _pair(ref, est)
    n_fft, hop = _fit(n_fft, hop, ref.shape[-1])
    mel_ref = log_mel(_flat(ref), sr, n_fft, hop, n_mels)
    mel_est = log_mel(_flat(est), sr, n_fft, hop, n_mels)
    return (mel_ref - mel_est).abs().mean(dim=(-2, -1)).reshape(ref.shape[:-1])


def _fit(n_fft: int, hop: int, samples: int) -> tuple[int, int]:
    """Shrink ``n_fft`` (a power of two, hop at most a quarter of it) for clips shorter than it."""
    if samples > n_fft:
        return n_fft, hop
    n_fft = 1 << (max(samples, 2).bit_length() - 1)
    return n_fft, max(1, min(hop, n_fft // 4))


def stft_magnitude(wav: Tensor, n_fft: int, hop: int) -> Tensor:
    """``|STFT|`` ``[B, n_fft/2+1, frames]`` (Hann window of ``n_fft``, centred), floored at ``1e-5``.

    Computed as ``sqrt(re^2 + im^2 + 1e-10)`` so that its gradient stays finite at zero.
    """
    window = torch.hann_window(n_fft, device=wav.device, dtype=wav.dtype)
    spec = torch.stft(wav, n_fft, hop, window=window, center=True, return_complex=True)
    return torch.view_as_real(spec).pow(2).sum(-1).add(1e-10).sqrt()


def spectral_convergence(mag_ref: Tensor, mag_est: Tensor) -> Tensor:
    """``|| |X| - |X^| ||_F / || |X| ||_F`` per item (Yamamoto et al. 2020, Parallel WaveGAN, §2.3)."""
    num = (mag_ref - mag_est).pow(2).sum(dim=(-2, -1)).sqrt()
    return num / mag_ref.pow(2).sum(dim=(-2, -1)).sqrt().clamp_min(1e-7)


def log_magnitude_distance(mag_ref: Tensor, mag_est: Tensor) -> Tensor:
    """``mean | ln|X| - ln|X^| |`` per item (Yamamoto et al. 2020, §2.3, the log STFT magnitude loss)."""
    return (mag_ref.log() - mag_est.log()).abs().mean(dim=(-2, -1))


def multi_resolution_stft_distance(
    ref: Tensor | np.ndarray,
    est: Tensor | np.ndarray,
    fft_sizes: tuple[int, ...] = STFT_FFT_SIZES,
) -> Tensor:
    """Multi-resolution STFT distance (Yamamoto et al. 2020, Parallel WaveGAN, §2.3).

    ``(1/M) sum_m [SC_m + LogMag_m]`` over ``M`` resolutions, each a Hann-windowed STFT of size
    ``n_fft`` with hop ``n_fft / 4`` (the paper uses windows shorter than ``n_fft``; we use the
    full size). Sizes longer than the clip are reduced to fit. Returns shape ``[...]``.
    """
    ref, est = _pair(ref, est)
    r, e = _flat(ref), _flat(est)
    total = torch.zeros(r.shape[0], dtype=r.dtype, device=r.device)
    for size in fft_sizes:
        n_fft, hop = _fit(size, size // 4, r.shape[-1])
        mag_r, mag_e = stft_magnitude(r, n_fft, hop), stft_magnitude(e, n_fft, hop)
        total = total + spectral_convergence(mag_r, mag_e) + log_magnitude_distance(mag_r, mag_e)
    return (total / len(fft_sizes)).reshape(ref.shape[:-1])


def si_sdr(ref: Tensor | np.ndarray, est: Tensor | np.ndarray, eps: float = 1e-8) -> Tensor:
    """Scale-invariant SDR in dB (Le Roux et al. 2019, "SDR - half-baked or well done?", §2).

    With zero-mean ``s`` (reference) and ``s^`` (estimate), ``alpha = <s^, s> / ||s||^2`` and
    ``SI-SDR = 10 log10(||alpha s||^2 / ||alpha s - s^||^2)``. ``eps`` bounds the value for
    identical signals (about ``10 log10(||s||^2 / eps)``) and keeps silence finite.
    """
    ref, est = _pair(ref, est)
    ref = ref - ref.mean(-1, keepdim=True)
    est = est - est.mean(-1, keepdim=True)
    alpha = (est * ref).sum(-1, keepdim=True) / (ref.pow(2).sum(-1, keepdim=True) + eps)
    target = alpha * ref
    return 10 * torch.log10((target.pow(2).sum(-1) + eps) / ((target - est).pow(2).sum(-1) + eps))
