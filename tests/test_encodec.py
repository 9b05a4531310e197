"""The EnCodec wrapper on a tiny random transformers model: shapes, length rules, loading errors.

No network: models are built in code from a small ``transformers.EncodecConfig``.
"""

from __future__ import annotations

import math

import pytest
import torch

from audioguide.core import AudioguideError
from audioguide.representations.encodec import Encodec, EncodecConfig

transformers = pytest.importorskip("transformers")

HOP = 8 * 5 * 4 * 2  # 320 samples: 75 frames/s at 24 kHz, as in encodec_24khz


def tiny_model(seed: int = 0, **overrides):
    """A random 24 kHz EnCodec with 16-entry codebooks (300 bit/s each): 5 codebooks at 1.5 kbps."""
    config = transformers.EncodecConfig(
        **{
            "target_bandwidths": [1.5, 3.0],
            "sampling_rate": 24000,
            "hidden_size": 16,
            "num_filters": 4,
            "num_lstm_layers": 1,
            "codebook_size": 16,
            "upsampling_ratios": [8, 5, 4, 2],
            **overrides,
        }
    )
    model = transformers.EncodecModel(config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # transformers initialises codebooks to zero; spread them out
        for layer in model.quantizer.layers:
            layer.codebook.embed.copy_(torch.randn(layer.codebook.embed.shape, generator=g))
    return model


@pytest.fixture(scope="module")
def codec() -> Encodec:
    return Encodec.from_model(tiny_model(), bandwidth=3.0)


def test_attributes(codec):
    assert (codec.sample_rate, codec.hop, codec.channels) == (24000, HOP, 16)
    assert (codec.n_codebooks, codec.codebook_size, codec.frame_rate) == (10, 16, 75.0)
    assert Encodec.from_model(tiny_model()).n_codebooks == 5  # smallest bandwidth by default
    assert not any(p.requires_grad for p in codec.parameters())


@pytest.mark.parametrize("samples", [3200, 3201, 100])
def test_tokens_and_latents_follow_the_length_rules(codec, samples):
    wav = 0.1 * torch.randn(2, samples, generator=torch.Generator().manual_seed(1))
    frames = math.ceil(samples / HOP)
    with torch.no_grad():
        codes = codec.encode_tokens(wav)
        assert codes.shape == (2, 10, frames) and codes.dtype == torch.long
        assert 0 <= int(codes.min()) and int(codes.max()) < 16
        assert codec.decode_tokens(codes).shape == (2, frames * HOP)
        assert codec.decode_tokens(codes[:, :5]).shape == (2, frames * HOP)  # coarse tokens only
        z = codec.encode(wav)
        assert z.shape == (2, 16, frames)
        assert codec.decode(z).shape == (2, frames * HOP)


def test_tokens_are_the_quantized_continuous_latents(codec):
    wav = 0.1 * torch.randn(1, 1600, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        codes = codec.encode_tokens(wav)
        z_q = codec.model.quantizer.decode(codes.transpose(0, 1))
        assert torch.equal(codes, codec.model.quantizer.encode(codec.encode(wav), 3.0).transpose(0, 1))
        assert torch.allclose(codec.decode_tokens(codes), codec.decode(z_q), atol=1e-6)
    assert len(codes.unique()) > 1


def test_save_pretrained_directory_loads(tmp_path):
    tiny_model().save_pretrained(tmp_path / "codec")
    codec = Encodec(EncodecConfig(source=str(tmp_path / "codec"), bandwidth=1.5))
    assert codec.n_codebooks == 5 and codec.hop == HOP


@pytest.mark.parametrize("source", ["", "missing-dir", "./missing", "/nonexistent/encodec"])
def test_missing_source_is_a_one_line_error(source):
    with pytest.raises(AudioguideError) as info:
        Encodec(EncodecConfig(source=source))
    assert "\n" not in str(info.value)


def test_unreachable_hub_source_is_a_one_line_error(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'\nto load the files")

    monkeypatch.setattr(transformers.EncodecModel, "from_pretrained", offline)
    with pytest.raises(AudioguideError, match="cannot load EnCodec from 'facebook/encodec_24khz'") as info:
        Encodec(EncodecConfig(source="facebook/encodec_24khz"))
    assert "\n" not in str(info.value)


def test_unsupported_models_and_bandwidths_are_rejected():
    with pytest.raises(AudioguideError, match="bandwidth"):
        Encodec.from_model(tiny_model(), bandwidth=6.0)
    with pytest.raises(AudioguideError, match="mono"):
        Encodec.from_model(tiny_model(audio_channels=2))
    with pytest.raises(ValueError):
        EncodecConfig(bandwidth=0.0)


def test_bad_codes_are_rejected(codec):
    with pytest.raises(ValueError):
        codec.decode_tokens(torch.full((1, 2, 3), 16))
