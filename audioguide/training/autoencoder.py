"""Training objective of :class:`audioguide.representations.autoencoder.Autoencoder`, as pure functions.

The generator (autoencoder) loss is a weighted sum of

* the mel L1 loss of HiFi-GAN (Kong et al. 2020, §2.3): ``mean |ln M(x) - ln M(x^)|`` at the
  model's own mel settings,
* the multi-resolution STFT loss of Parallel WaveGAN (Yamamoto et al. 2020, §2.3): spectral
  convergence + log-magnitude L1, averaged over resolutions,
* the VAE KL term ``KL(N(mu, sigma^2) || N(0, 1))`` (Kingma & Welling 2014, App. B), averaged
  over latent elements,
* the RVQ commitment term ``||mu - sg[z_q]||^2`` (van den Oord et al. 2017, eq. 3),
* optionally, with a :class:`SpectrogramDiscriminator`, the hinge adversarial loss (Lim & Ye 2017,
  as used by Vocos, Siuzdak 2023) and the L1 feature-matching loss (Kumar et al. 2019,
  MelGAN). Off by default (weights 0).

Each training row decodes either a VAE sample ``z = mu + sigma * eps`` or, with probability
``p_quantize``, the straight-through RVQ quantization of ``mu``; with probability
``quantizer_dropout`` such a row keeps only the first ``n_q ~ U{1..K}`` codebooks (SoundStream,
Zeghidour et al. 2021, §III-C). All random draws come from the explicit generator.

Typical step without a discriminator::

    loss, logs = autoencoder_loss(model, wav, generator)
    loss.backward(); opt.step()

With one, a GAN trainer alternates (``audioguide train`` does not wire the discriminator yet)::

    rec = reconstruct(model, wav, generator, weights)
    loss, logs = reconstruction_loss(model, wav, rec, weights, disc)      # generator step
    d_loss, d_logs = discriminator_loss(disc, wav, rec.audio.detach())   # discriminator step
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audioguide.audio import log_mel
from audioguide.metrics import log_magnitude_distance, spectral_convergence, stft_magnitude
from audioguide.representations.autoencoder import Autoencoder, init_weights


@dataclass(frozen=True)
class AutoencoderLossWeights:
    mel: float = 15.0
    stft: float = 1.0
    kl: float = 0.01
    commit: float = 0.25
    adversarial: float = 0.0  # needs a discriminator; 1.0 is the usual value when on
    feature_matching: float = 0.0  # needs a discriminator; 2.0 is the usual value when on
    p_quantize: float = 0.5  # probability that a row decodes its RVQ-quantized mean
    quantizer_dropout: float = 0.5  # probability that a quantized row uses n_q ~ U{1..K}
    stft_fft_sizes: tuple[int, ...] = (512, 1024, 2048)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stft_fft_sizes", tuple(self.stft_fft_sizes))  # TOML gives lists
        for name in ("mel", "stft", "kl", "commit", "adversarial", "feature_matching"):
            if getattr(self, name) < 0:
                raise ValueError(f"loss weight {name} must be >= 0, got {getattr(self, name)}")
        if not (0.0 <= self.p_quantize <= 1.0 and 0.0 <= self.quantizer_dropout <= 1.0):
            raise ValueError("p_quantize and quantizer_dropout must lie in [0, 1]")
        if not self.stft_fft_sizes or any(n < 16 or n % 4 for n in self.stft_fft_sizes):
            raise ValueError(f"stft_fft_sizes must be non-empty multiples of 4, >= 16, got {self.stft_fft_sizes}")


@dataclass(frozen=True)
class Reconstruction:
    """One training forward pass: decoded audio ``[B, S]`` and the terms needed for the losses."""

    audio: Tensor
    mu: Tensor
    logvar: Tensor
    commit: Tensor


# --- loss terms ------------------------------------------------------------------------------


def mel_loss(ref: Tensor, est: Tensor, model: Autoencoder) -> Tensor:
    """HiFi-GAN mel L1 (Kong et al. 2020, §2.3) at the model's mel settings, mean over bins and frames."""
    c = model.config
    mels = [log_mel(w, c.sample_rate, c.n_fft, c.hop, c.n_mels, c.fmin, c.fmax or None) for w in (ref, est)]
    return F.l1_loss(mels[1], mels[0])


def multi_resolution_stft_loss(ref: Tensor, est: Tensor, fft_sizes: tuple[int, ...]) -> Tensor:
    """``(1/M) sum_m (L_sc + L_mag)`` (Yamamoto et al. 2020, §2.3), hop ``n_fft / 4``, batch mean."""
    total = ref.new_zeros(())
    for n_fft in fft_sizes:
        mag_ref, mag_est = stft_magnitude(ref, n_fft, n_fft // 4), stft_magnitude(est, n_fft, n_fft // 4)
        total = total + (spectral_convergence(mag_ref, mag_est) + log_magnitude_distance(mag_ref, mag_est)).mean()
    return total / len(fft_sizes)


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    """``KL(N(mu, sigma^2) || N(0, 1)) = 0.5 (mu^2 + sigma^2 - 1 - ln sigma^2)`` (Kingma & Welling 2014,
    App. B), averaged over all latent elements."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).mean()


# --- the training forward pass -----------------------------------------------------------------


def _draw_n_q(batch: int, k_total: int, p_dropout: float, generator: torch.Generator) -> Tensor:
    """Quantizer dropout: ``n_q = K`` per row, or ``U{1..K}`` with probability ``p_dropout``."""
    n_q = torch.randint(1, k_total + 1, (batch,), generator=generator)
    return torch.where(torch.rand(batch, generator=generator) < p_dropout, n_q, torch.full_like(n_q, k_total))


def reconstruct(
    model: Autoencoder, wav: Tensor, generator: torch.Generator, weights: AutoencoderLossWeights
) -> Reconstruction:
    """Encode, sample ``z = mu + sigma eps`` (or quantize ``mu``, per row), decode to ``[B, S]``.

    In training mode this also updates the model's running latent scale and its RVQ codebooks; a
    frozen (eval-mode) posterior projection keeps the latent scale, and a frozen quantizer its codebooks.
    """
    mu, logvar = model.posterior(wav)
    if model.training and model.posterior_proj.training:
        model.track_latent_power(mu)
    eps = torch.randn(mu.shape, generator=generator).to(mu)
    z = mu + (0.5 * logvar).exp() * eps
    commit = mu.new_zeros(())
    if model.quantizer is not None:  # always run in training, so that the codebooks keep learning
        n_q = _draw_n_q(mu.shape[0], model.n_codebooks, weights.quantizer_dropout, generator)
        z_q, _, commit = model.quantizer(mu, n_q.to(mu.device))
        use_q = (torch.rand(mu.shape[0], generator=generator) < weights.p_quantize).to(mu.device)
        z = torch.where(use_q[:, None, None], z_q, z)
    audio = model.synthesize(z)[..., : wav.shape[-1]]
    return Reconstruction(audio=audio, mu=mu, logvar=logvar, commit=commit)


def reconstruction_loss(
    model: Autoencoder,
    wav: Tensor,
    rec: Reconstruction,
    weights: AutoencoderLossWeights,
    discriminator: SpectrogramDiscriminator | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Weighted generator loss of a :class:`Reconstruction`; returns ``(loss, logs)``."""
    terms = {
        "mel": mel_loss(wav, rec.audio, model),
        "stft": multi_resolution_stft_loss(wav, rec.audio, weights.stft_fft_sizes),
        "kl": kl_divergence(rec.mu, rec.logvar),
        "commit": rec.commit,
    }
    if discriminator is not None and (weights.adversarial > 0 or weights.feature_matching > 0):
        terms["adversarial"], terms["feature_matching"] = generator_adversarial_loss(discriminator, wav, rec.audio)
    loss = sum(getattr(weights, name) * value for name, value in terms.items())
    logs = {name: float(value.detach()) for name, value in terms.items()}
    logs["loss"] = float(loss.detach())
    return loss, logs


def autoencoder_loss(
    model: Autoencoder,
    wav: Tensor,
    generator: torch.Generator,
    weights: AutoencoderLossWeights = AutoencoderLossWeights(),
    discriminator: SpectrogramDiscriminator | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """The full autoencoder objective on a batch ``wav`` ``[B, S]``: ``(loss, logs)``."""
    return reconstruction_loss(model, wav, reconstruct(model, wav, generator, weights), weights, discriminator)


# --- optional adversarial training ---------------------------------------------------------------


@dataclass(frozen=True)
class DiscriminatorConfig:
    fft_sizes: tuple[int, ...] = (512, 1024, 2048)
    channels: int = 16
    layers: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "fft_sizes", tuple(self.fft_sizes))  # TOML gives lists
        if not self.fft_sizes or any(n < 16 or n % 4 for n in self.fft_sizes):
            raise ValueError(f"fft_sizes must be non-empty multiples of 4, >= 16, got {self.fft_sizes}")
        if self.channels < 1 or self.layers < 1 or self.seed < 0:
            raise ValueError("channels and layers must be positive and seed non-negative")


class _ResolutionDiscriminator(nn.Module):
    """2-D conv stack on one log-magnitude spectrogram ``[B, 1, F, T]`` -> logits map + features."""

    def __init__(self, n_fft: int, channels: int, layers: int) -> None:
        super().__init__()
        self.n_fft = n_fft
        convs = [nn.Conv2d(1, channels, (7, 5), padding=(3, 2))]
        convs += [nn.Conv2d(channels, channels, (5, 3), stride=(2, 1), padding=(2, 1)) for _ in range(layers - 1)]
        self.convs = nn.ModuleList(convs)
        self.out = nn.Conv2d(channels, 1, 3, padding=1)

    def forward(self, wav: Tensor) -> tuple[Tensor, list[Tensor]]:
        h = stft_magnitude(wav, self.n_fft, self.n_fft // 4).log()[:, None]
        features = []
        for conv in self.convs:
            h = F.leaky_relu(conv(h), 0.1)
            features.append(h)
        return self.out(h), features


class SpectrogramDiscriminator(nn.Module):
    """Multi-resolution spectrogram discriminator (in the spirit of the Vocos / UnivNet multi-resolution discriminator).

    One small 2-D CNN per STFT size, each on the log-magnitude spectrogram. ``forward(wav)``
    returns, per resolution, ``(logits, feature_maps)``.
    """

    Config = DiscriminatorConfig

    def __init__(self, config: DiscriminatorConfig = DiscriminatorConfig()) -> None:
        super().__init__()
        self.config = config
        with torch.device("meta"):
            self.discriminators = nn.ModuleList(
                _ResolutionDiscriminator(n, config.channels, config.layers) for n in config.fft_sizes
            )
        self.to_empty(device="cpu")
        init_weights(self, torch.Generator().manual_seed(config.seed))

    def forward(self, wav: Tensor) -> list[tuple[Tensor, list[Tensor]]]:
        return [d(wav) for d in self.discriminators]


def discriminator_loss(
    discriminator: SpectrogramDiscriminator, real: Tensor, fake: Tensor
) -> tuple[Tensor, dict[str, float]]:
    """Hinge loss ``mean relu(1 - D(x)) + mean relu(1 + D(x^))`` summed over resolutions (Lim & Ye 2017).

    Pass ``fake`` detached from the generator.
    """
    loss = real.new_zeros(())
    for (logit_real, _), (logit_fake, _) in zip(discriminator(real), discriminator(fake)):
        loss = loss + F.relu(1 - logit_real).mean() + F.relu(1 + logit_fake).mean()
    return loss, {"discriminator": float(loss.detach())}


def generator_adversarial_loss(
    discriminator: SpectrogramDiscriminator, real: Tensor, fake: Tensor
) -> tuple[Tensor, Tensor]:
    """``(adversarial, feature_matching)`` for the generator, each averaged over resolutions.

    Adversarial: hinge ``mean relu(1 - D(x^))``; feature matching: mean L1 distance between the
    discriminator's feature maps of real and generated audio (Kumar et al. 2019, MelGAN).
    """
    with torch.no_grad():
        real_out = discriminator(real)
    adversarial, matching = real.new_zeros(()), real.new_zeros(())
    for (_, feats_real), (logit_fake, feats_fake) in zip(real_out, discriminator(fake)):
        adversarial = adversarial + F.relu(1 - logit_fake).mean()
        matching = matching + sum(F.l1_loss(f, r) for f, r in zip(feats_fake, feats_real)) / len(feats_fake)
    n = len(real_out)
    return adversarial / n, matching / n
