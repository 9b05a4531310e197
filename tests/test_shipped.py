"""Shipped weights: they load offline from the package and do what the notes say they do."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audioguide.pipeline import WEIGHTS_DIR

AE = WEIGHTS_DIR / "autoencoder-speech.safetensors"


@pytest.mark.slow
@pytest.mark.skipif(not AE.exists(), reason="no shipped autoencoder")
def test_shipped_speech_autoencoder_resynthesises_unseen_speech():
    hibari = pytest.importorskip("hibari")
    pytest.importorskip("faster_whisper")
    from audioguide.evaluation.asr import transcribe, word_error_rate
    from audioguide.metrics import mel_distance
    from audioguide.pipeline import build_components
    from audioguide.recipes import load_recipe

    rep, _ = build_components(load_recipe("autoencoder-speech"))
    rep.eval()
    assert rep.latent_scale.item() != 1.0  # calibrated before shipping
    tts = hibari.Hibari(threads=1)
    text = "The patient clerk at the museum charged twelve dollars for a warm coat."  # not a training template
    wav = np.asarray(tts(text), dtype=np.float32)
    x = torch.from_numpy(wav)[None]
    with torch.inference_mode():
        z = rep.encode(x)
        latent = rep.decode(z)[0, : len(wav)]
        tokens = rep.decode_tokens(rep.encode_tokens(x))[0, : len(wav)]
    assert z.shape[1] == 32 and 0.5 < float(z.std()) < 2.0  # unit-scale latents for the generators
    for rec in (latent, tokens):
        assert float(mel_distance(torch.from_numpy(wav), rec, 24000)) < 0.4
        assert word_error_rate([text], [transcribe(rec.numpy(), 24000)]) <= 0.15
