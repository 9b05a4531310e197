"""EnCodec (Défossez et al. 2022, arXiv 2210.13438) through ``transformers.EncodecModel``.

Two views of one pretrained codec:

* **tokens**: ``encode_tokens`` runs ``model.encode`` at the configured bandwidth and returns the
  RVQ codes ``[B, K, T]`` (``K`` codebooks for that bandwidth, ``K = 8`` at 6 kbps for the 24 kHz
  model, values in ``[0, 1024)``); ``decode_tokens`` runs ``model.decode``;
* **continuous latents**: ``encode`` returns the SEANet encoder output before quantization
  (``model.encoder``, ``[B, hidden_size, T]``, 128 channels for the 24 kHz model, not rescaled)
  and ``decode`` runs ``model.decoder`` on it.

Length rules: ``S`` samples give ``T = ceil(S / hop)`` frames (the encoder pads internally),
``hop = prod(upsampling_ratios)`` (320 at 24 kHz: 75 frames/s), and ``T`` frames decode to
exactly ``T * hop`` samples. Only mono, unchunked models without input normalisation (such as
``facebook/encodec_24khz``) are supported: chunked or normalised models need per-chunk scales
that a token sequence cannot carry.

``source`` is a local ``save_pretrained`` directory or, where a network exists, a Hub id.
:meth:`Encodec.from_model` wraps an already built model (e.g. a tiny random one in tests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from torch import Tensor

from audioguide.checkpoints import is_hub_id
from audioguide.core import AudioguideError
from audioguide.representations.base import Representation

if TYPE_CHECKING:
    from transformers import EncodecModel



@dataclass(frozen=True)
class EncodecConfig:
    source: str = ""  # local save_pretrained directory, or a Hub id such as facebook/encodec_24khz
    bandwidth: float = 6.0  # kbps; one of the model's target_bandwidths

    def __post_init__(self) -> None:
        if not self.bandwidth > 0:
            raise ValueError(f"bandwidth must be positive (kbps), got {self.bandwidth}")


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def load_encodec_model(source: str) -> EncodecModel:
    """``EncodecModel.from_pretrained(source)``; any failure becomes a one-line AudioguideError."""
    if not source:
        raise AudioguideError("encodec needs a source: a save_pretrained directory or a Hub id")
    path = Path(source).expanduser()
    is_local = not is_hub_id(source)
    if is_local and not (path / "config.json").is_file():
        raise AudioguideError(f"EnCodec source {source} is not a directory holding config.json")
    from transformers import EncodecModel

    try:
        return EncodecModel.from_pretrained(str(path) if is_local else source)
    except Exception as e:  # network, auth, missing or corrupt files: all reported the same way
        raise AudioguideError(f"cannot load EnCodec from {source!r}: {_first_line(e)}") from None


def _check_supported(model: EncodecModel, bandwidth: float) -> None:
    cfg = model.config
    if cfg.audio_channels != 1 or cfg.chunk_length_s is not None or cfg.normalize:
        raise AudioguideError("only mono, unchunked, unnormalised EnCodec models (e.g. encodec_24khz) are supported")
    if bandwidth not in cfg.target_bandwidths:
        choices = ", ".join(str(b) for b in cfg.target_bandwidths)
        raise AudioguideError(f"EnCodec bandwidth {bandwidth} not supported; choose one of {choices}")


class Encodec(Representation):
    """A frozen pretrained EnCodec as a :class:`Representation` (tokens and continuous latents)."""

    Config = EncodecConfig

    def __init__(self, config: EncodecConfig, model: EncodecModel | None = None) -> None:
        super().__init__()
        self.config = config
        model = load_encodec_model(config.source) if model is None else model
        _check_supported(model, config.bandwidth)
        self.model = model.eval().requires_grad_(False)
        cfg = model.config
        self.sample_rate, self.channels = cfg.sampling_rate, cfg.hidden_size
        self.hop = math.prod(cfg.upsampling_ratios)
        self.n_codebooks = model.quantizer.get_num_quantizers_for_bandwidth(config.bandwidth)
        self.codebook_size = cfg.codebook_size

    @classmethod
    def from_model(cls, model: EncodecModel, bandwidth: float | None = None) -> Encodec:
        """Wrap a built model; ``bandwidth`` defaults to the model's smallest target bandwidth."""
        bw = model.config.target_bandwidths[0] if bandwidth is None else bandwidth
        return cls(EncodecConfig(source="", bandwidth=float(bw)), model=model)

    @staticmethod
    def _audio(wav: Tensor) -> Tensor:
        if wav.ndim != 2 or wav.shape[-1] < 1:
            raise ValueError(f"expected a waveform [B, samples], got shape {tuple(wav.shape)}")
        return wav[:, None]

    def encode(self, wav: Tensor) -> Tensor:
        """``[B, S] -> [B, hidden_size, ceil(S / hop)]``: the encoder output before quantization."""
        return self.model.encoder(self._audio(wav))

    def decode(self, z: Tensor) -> Tensor:
        """``[B, hidden_size, T] -> [B, T * hop]`` through the SEANet decoder."""
        if z.ndim != 3 or z.shape[1] != self.channels:
            raise ValueError(f"expected latents [B, {self.channels}, T], got shape {tuple(z.shape)}")
        return self.model.decoder(z)[:, 0]

    def encode_tokens(self, wav: Tensor) -> Tensor:
        """``[B, S] -> LongTensor [B, K, ceil(S / hop)]`` at the configured bandwidth."""
        out = self.model.encode(self._audio(wav), bandwidth=self.config.bandwidth, return_dict=True)
        return out.audio_codes[0]

    def decode_tokens(self, codes: Tensor) -> Tensor:
        """``LongTensor [B, k, T] -> [B, T * hop]`` using the first ``k <= K`` codebooks."""
        if codes.ndim != 3 or not 1 <= codes.shape[1] <= self.model.quantizer.num_quantizers:
            raise ValueError(f"expected codes [B, k <= {self.n_codebooks}, T], got shape {tuple(codes.shape)}")
        if bool((codes < 0).any()) or bool((codes >= self.codebook_size).any()):
            raise ValueError(f"codes must lie in [0, {self.codebook_size})")
        return self.model.decode(codes[None], [None], return_dict=True).audio_values[:, 0]
