"""Our trainable audio autoencoder: log-mel ConvNeXt encoder, VAE latent, RVQ tokens, Vocos decoder.

Why this design (quality per CPU second, trained from scratch, no pretrained codec here):

* **Everything runs at the latent frame rate.** The encoder reads log-mel frames computed with
  the latent hop (``hop = 256`` at 24 kHz: 93.75 frames/s) and the decoder predicts one STFT
  frame per latent frame, so no layer ever runs at the sample rate. The waveform is produced by
  an inverse STFT, as in Vocos (Siuzdak 2023, arXiv 2306.00814, §3), which matches
  upsampling-convolution vocoders in quality at an order of magnitude less compute.
* **ConvNeXt blocks** (Liu et al. 2022, arXiv 2201.03545, §2; 1-D as in Vocos §3): depthwise
  conv (kernel 7), LayerNorm, pointwise MLP (ratio 3, GELU), layer scale ``1 / depth``, residual.
* **VAE latent** (Kingma & Welling 2014, arXiv 1312.6114, §2.4 and App. B): the encoder outputs a
  per-frame Gaussian ``(mu, log sigma^2)`` with ``C`` channels; training decodes
  ``z = mu + sigma * eps`` and pays a KL term, which keeps the latent smooth for diffusion / flow
  generators. :meth:`Autoencoder.encode` returns ``s * mu`` with ``s = 1 / sqrt(E[mu^2])`` (a
  running estimate the training loss keeps, or set by :meth:`Autoencoder.calibrate`) so latents have
  about unit variance (the latent scale factor of Rombach et al. 2022, LDM).
* **Discrete tokens** come from a residual VQ (:mod:`audioguide.representations.rvq`) on the
  pre-sampling mean ``mu``; training also decodes quantized latents (straight-through), and the
  VAE noise the decoder has learnt to tolerate covers the remaining quantization error.
* **Vocos iSTFT head** (Siuzdak 2023, §3): a linear layer predicts per bin a
  log-magnitude ``m`` and a phase ``p``; the spectrum ``exp(m) (cos p + i sin p)`` (magnitude
  clipped at ``1e2``) goes through ``torch.istft``.

Length rules: ``encode`` turns ``S`` samples into ``T = ceil(S / hop)`` frames (the waveform is
right-padded with zeros to ``T * hop``; STFT frame ``t`` is centred on sample ``t * hop``) and
``decode`` turns ``T`` frames into exactly ``T * hop`` samples. The same holds for
``encode_tokens`` / ``decode_tokens``. Needs ``n_fft >= 2 * hop`` so that every output sample is
covered by a window.

Default size (``AutoencoderConfig()``): 24 kHz, 32 latent channels at 93.75 frames/s (8x fewer
numbers than samples), width 256, 4 encoder + 8 decoder blocks: 5.28 M parameters; encoding
and decoding 1 s of audio take about 10 ms and 17 ms on one CPU thread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audioguide.audio import log_mel
from audioguide.representations.base import Representation
from audioguide.representations.rvq import ResidualVQ

LOG_MAG_MAX = math.log(1e2)  # Vocos clips the predicted magnitude at 1e2


@dataclass(frozen=True)
class AutoencoderConfig:
    sample_rate: int = 24000
    n_fft: int = 1024  # STFT size of the encoder's mel input and of the decoder's iSTFT head
    hop: int = 256  # samples per latent frame (= STFT hop)
    n_mels: int = 100
    fmin: float = 0.0
    fmax: float = 0.0  # 0 = Nyquist
    channels: int = 32  # latent channels C
    width: int = 256  # ConvNeXt channels
    encoder_depth: int = 4
    depth: int = 8  # decoder ConvNeXt blocks
    mlp_ratio: int = 3
    kernel: int = 7
    n_codebooks: int = 8  # RVQ stages K (0 = no tokens)
    codebook_size: int = 1024  # V
    ema_decay: float = 0.99
    restart_ratio: float = 0.1  # dead-code threshold, relative to the mean codeword usage
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_fft", "hop", "n_mels", "channels", "width", "mlp_ratio", "kernel"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.n_fft % 2 or self.n_fft < 2 * self.hop:
            raise ValueError(f"n_fft must be even and >= 2 * hop, got n_fft={self.n_fft}, hop={self.hop}")
        if self.kernel % 2 == 0:
            raise ValueError(f"kernel must be odd, got {self.kernel}")
        if self.encoder_depth < 0 or self.depth < 0 or self.n_codebooks < 0 or self.seed < 0:
            raise ValueError("encoder_depth, depth, n_codebooks and seed must be non-negative")
        if self.n_codebooks and self.codebook_size < 2:
            raise ValueError(f"codebook_size must be >= 2, got {self.codebook_size}")
        if not 0.0 <= self.ema_decay < 1.0 or self.restart_ratio < 0.0:
            raise ValueError("ema_decay must lie in [0, 1) and restart_ratio be >= 0")
        if not 0.0 <= self.fmin < (self.fmax or self.sample_rate / 2) <= self.sample_rate / 2:
            raise ValueError(f"need 0 <= fmin < fmax <= sample_rate/2 (0 = Nyquist), got {self.fmin}, {self.fmax}")


def init_weights(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """Deterministic initialisation from ``generator`` (no global RNG), in module order.

    Convolutions and linear layers get ``N(0, 1/fan_in)`` weights and zero biases, LayerNorms
    unit gain and zero bias, ConvNeXt layer scales their ``layer_scale`` value.
    """
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                w = torch.randn(m.weight.shape, generator=generator) / math.sqrt(m.weight[0].numel())
                m.weight.copy_(w)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.LayerNorm):
                m.weight.fill_(1.0)
                m.bias.zero_()
            elif isinstance(m, ConvNeXtBlock):
                m.gamma.fill_(m.layer_scale)
    return module


class ConvNeXtBlock(nn.Module):
    """1-D ConvNeXt block (Liu et al. 2022, §2; Vocos §3): ``x + gamma * MLP(LN(DWConv(x)))``."""

    def __init__(self, width: int, mlp_ratio: int, kernel: int, layer_scale: float) -> None:
        super().__init__()
        self.layer_scale = layer_scale
        self.dwconv = nn.Conv1d(width, width, kernel, padding=kernel // 2, groups=width)
        self.norm = nn.LayerNorm(width)
        self.pw1 = nn.Linear(width, mlp_ratio * width)
        self.pw2 = nn.Linear(mlp_ratio * width, width)
        self.gamma = nn.Parameter(torch.empty(width))

    def forward(self, x: Tensor) -> Tensor:
        h = self.dwconv(x).transpose(1, 2)
        h = self.pw2(F.gelu(self.pw1(self.norm(h))))
        return x + (self.gamma * h).transpose(1, 2)


class ConvNeXtStack(nn.Module):
    """Embedding conv -> LayerNorm -> ``depth`` ConvNeXt blocks -> LayerNorm; ``[B, in, T] -> [B, width, T]``."""

    def __init__(self, in_channels: int, width: int, depth: int, mlp_ratio: int, kernel: int) -> None:
        super().__init__()
        self.embed = nn.Conv1d(in_channels, width, kernel, padding=kernel // 2)
        self.norm_in = nn.LayerNorm(width)
        scale = 1.0 / max(depth, 1)
        self.blocks = nn.ModuleList(ConvNeXtBlock(width, mlp_ratio, kernel, scale) for _ in range(depth))
        self.norm_out = nn.LayerNorm(width)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm_in(self.embed(x).transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            h = block(h)
        return self.norm_out(h.transpose(1, 2)).transpose(1, 2)


def pad_to_frames(wav: Tensor, n_fft: int, hop: int) -> tuple[Tensor, int]:
    """Right-pad ``wav`` with zeros to ``T * hop`` samples, ``T = ceil(S / hop)``; returns ``(padded, T)``.

    Very short clips get more zeros (to ``n_fft / 2 + 1`` samples) so that the centred STFT's
    reflection padding is defined; the extra frames this adds lie past frame ``T - 1`` and are
    dropped by the callers.
    """
    frames = -(-wav.shape[-1] // hop)
    return F.pad(wav, (0, max(frames * hop, n_fft // 2 + 1) - wav.shape[-1])), frames


def frame_stft(wav: Tensor, n_fft: int, hop: int) -> Tensor:
    """Complex STFT ``[B, n_fft/2+1, T]`` with ``T = ceil(S / hop)``; frame ``t`` centred on ``t * hop``.

    The waveform is right-padded with zeros (:func:`pad_to_frames`); the frames a centred STFT adds
    past ``T - 1`` are dropped. :meth:`ISTFTHead.synthesize` inverts this exactly.
    """
    padded, frames = pad_to_frames(wav, n_fft, hop)
    window = torch.hann_window(n_fft, device=wav.device, dtype=wav.dtype)
    return torch.stft(padded, n_fft, hop, window=window, center=True, return_complex=True)[..., :frames]


class ISTFTHead(nn.Module):
    """Vocos head (Siuzdak 2023, §3): features ``[B, width, T]`` -> log-magnitude, phase -> iSTFT."""

    def __init__(self, width: int, n_fft: int, hop: int) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.proj = nn.Linear(width, n_fft + 2)

    def spectrum(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """Predicted ``(log_magnitude, phase)``, each ``[B, n_fft/2+1, T]``."""
        log_mag, phase = self.proj(h.transpose(1, 2)).transpose(1, 2).chunk(2, dim=1)
        return log_mag, phase

    def synthesize(self, log_mag: Tensor, phase: Tensor) -> Tensor:
        """``istft(exp(m) (cos p + i sin p))`` -> ``[B, T * hop]`` (Vocos §3, magnitude clipped at 1e2)."""
        mag = log_mag.clamp(max=LOG_MAG_MAX).exp()
        spec = torch.complex(mag * phase.cos(), mag * phase.sin())
        window = torch.hann_window(self.n_fft, device=spec.device, dtype=mag.dtype)
        length = spec.shape[-1] * self.hop
        return torch.istft(spec, self.n_fft, self.hop, window=window, center=True, length=length)

    def forward(self, h: Tensor) -> Tensor:
        return self.synthesize(*self.spectrum(h))


class Autoencoder(Representation):
    """The trainable VAE + RVQ audio autoencoder described in the module docstring."""

    trainable = True  # its weights come from training: recipes must give them (or random_weights)

    Config = AutoencoderConfig

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.sample_rate, self.hop, self.channels = c.sample_rate, c.hop, c.channels
        self.n_codebooks, self.codebook_size = c.n_codebooks, (c.codebook_size if c.n_codebooks else 0)
        # built without touching the global RNG, then initialised below (not on the meta device:
        # materialising meta tensors imports sympy, a quarter of a second at every start)
        with torch.random.fork_rng(devices=[]):
            self.encoder = ConvNeXtStack(c.n_mels, c.width, c.encoder_depth, c.mlp_ratio, c.kernel)
            self.posterior_proj = nn.Conv1d(c.width, 2 * c.channels, 1)
            self.decoder = ConvNeXtStack(c.channels, c.width, c.depth, c.mlp_ratio, c.kernel)
            self.head = ISTFTHead(c.width, c.n_fft, c.hop)
        init_weights(self, torch.Generator().manual_seed(c.seed))
        self.quantizer = (
            ResidualVQ(c.channels, c.n_codebooks, c.codebook_size, c.ema_decay, c.restart_ratio, seed=c.seed + 1)
            if c.n_codebooks
            else None
        )
        self.register_buffer("latent_power", torch.ones(()))  # running E[mu^2]
        self.register_buffer("latent_updates", torch.zeros((), dtype=torch.long))

    # --- analysis ------------------------------------------------------------------------------

    def n_frames(self, samples: int) -> int:
        """Latent frames for ``samples`` samples: ``ceil(samples / hop)``."""
        return -(-samples // self.hop)

    def features(self, wav: Tensor) -> Tensor:
        """Encoder input: log-mel ``[B, n_mels, T]``, frame ``t`` centred on sample ``t * hop``."""
        if wav.ndim != 2 or wav.shape[-1] < 1:
            raise ValueError(f"expected a waveform [B, samples], got shape {tuple(wav.shape)}")
        c = self.config
        padded, frames = pad_to_frames(wav, c.n_fft, c.hop)
        mel = log_mel(padded, c.sample_rate, c.n_fft, c.hop, c.n_mels, c.fmin, c.fmax or None)
        return mel[..., :frames]

    def posterior(self, wav: Tensor) -> tuple[Tensor, Tensor]:
        """Unscaled Gaussian posterior ``(mu, log sigma^2)``, each ``[B, C, T]`` (Kingma & Welling 2014, §2.4)."""
        mu, logvar = self.posterior_proj(self.encoder(self.features(wav))).chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)

    @torch.no_grad()
    def track_latent_power(self, mu: Tensor) -> None:
        """Update the running ``E[mu^2]`` behind :attr:`latent_scale` (the training loss calls this).

        A cumulative mean over the first 100 batches, then an EMA with momentum 0.01.
        """
        momentum = max(1.0 / float(self.latent_updates + 1), 0.01)
        self.latent_power.lerp_(mu.detach().pow(2).mean(), momentum)
        self.latent_updates += 1

    @property
    def latent_scale(self) -> Tensor:
        """``s = 1 / sqrt(E[mu^2])``: :meth:`encode` returns ``s * mu``."""
        return self.latent_power.clamp_min(1e-12).rsqrt()

    @torch.no_grad()
    def calibrate(self, wav: Tensor) -> float:
        """Set :attr:`latent_scale` from the posterior means of ``wav`` (eval mode); returns it."""
        was_training = self.training
        self.eval()
        mu, _ = self.posterior(wav)
        self.train(was_training)
        self.latent_power.fill_(float(mu.pow(2).mean()))
        return float(self.latent_scale)

    # --- synthesis -----------------------------------------------------------------------------

    def synthesize(self, z: Tensor) -> Tensor:
        """Decoder on unscaled latents ``[B, C, T]`` -> waveform ``[B, T * hop]``."""
        if z.ndim != 3 or z.shape[1] != self.channels:
            raise ValueError(f"expected latents [B, {self.channels}, T], got shape {tuple(z.shape)}")
        return self.head(self.decoder(z))

    # --- the Representation protocol ------------------------------------------------------------

    def encode(self, wav: Tensor) -> Tensor:
        """``[B, S] -> [B, C, ceil(S / hop)]``: the posterior mean times :attr:`latent_scale`."""
        return self.posterior(wav)[0] * self.latent_scale

    def decode(self, z: Tensor) -> Tensor:
        """``[B, C, T] -> [B, T * hop]`` (inverse of the scaling in :meth:`encode`)."""
        return self.synthesize(z / self.latent_scale)

    def _require_tokens(self) -> ResidualVQ:
        if self.quantizer is None:
            raise NotImplementedError("this autoencoder was built with n_codebooks = 0: it has no tokens")
        return self.quantizer

    def encode_tokens(self, wav: Tensor) -> Tensor:
        """``[B, S] -> LongTensor [B, K, ceil(S / hop)]``, values in ``[0, V)``: RVQ codes of ``mu``."""
        return self._require_tokens().encode(self.posterior(wav)[0])

    def decode_tokens(self, codes: Tensor) -> Tensor:
        """``LongTensor [B, k, T] -> [B, T * hop]`` using the first ``k <= K`` codebooks."""
        return self.synthesize(self._require_tokens().decode(codes))

    def quantize(self, z: Tensor) -> Tensor:
        """Latents of :meth:`encode` ``[B, C, T]`` -> their RVQ codes ``[B, K, T]`` (as :meth:`encode_tokens`)."""
        return self._require_tokens().encode(z / self.latent_scale)

    def dequantize(self, codes: Tensor) -> Tensor:
        """Codes ``[B, k, T]`` -> the latents they stand for, scaled as :meth:`encode`'s ``[B, C, T]``."""
        return self._require_tokens().decode(codes) * self.latent_scale
