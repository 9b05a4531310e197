"""Shared fixtures. Tests run single-threaded on tiny random models built in code."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from audioguide.audio import write_wav
from audioguide.manifest import write_manifest

torch.set_num_threads(1)


@pytest.fixture
def write_recipe(tmp_path: Path):
    """Write a recipe TOML (dedented) into tmp_path and return its path."""

    def write(text: str, name: str = "r.toml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


TINY_TTS = """
    name = "tiny"
    task = "tts"
    random_weights = true
    [representation]
    type = "frames"
    sample_rate = 8000
    hop = 64
    [conditioners.text]
    type = "characters"
    dim = 16
    [model]
    type = "toy-flow"
    hidden = 32
    [sampler]
    type = "euler"
    steps = 4
    [guidance]
    scales = { text = 3.0 }
"""


TINY_AE = """
    type = "autoencoder"
    sample_rate = 8000
    n_fft = 256
    hop = 64
    n_mels = 32
    channels = 8
    width = 32
    encoder_depth = 1
    depth = 1
    n_codebooks = 2
    codebook_size = 16
"""


TINY_AE_RECIPE = f"""
    name = "ae"
    task = "tts"
    [representation]
    {TINY_AE}
    [train]
    target = "representation"
"""
"""A recipe that trains only TINY_AE: append the rest of its [train] table."""


TINY_SPEECH = """
    name = "tiny-speech"
    task = "tts"
    random_weights = true
    [representation]AE
    [conditioners.text]
    type = "phonemes"
    dim = 16
    edges = true
    [conditioners.speaker]
    type = "speaker-id"
    voices = ["s0", "s1"]
    dim = 8
    [model]
    MODEL
    [sampler]
    SAMPLER
    [guidance]
    GUIDANCE
    TAIL"""
"""Phonemes and two voices on TINY_AE: fill in AE, MODEL, SAMPLER, GUIDANCE and TAIL (more tables)."""


TINY_TRAIN = """
    [train]
    steps = 30
    batch_size = 4
    lr = 3e-3
    warmup = 3
    save_every = 30
    log_every = 1
    sample_every = 1000
    validation = 0.0
    dropout = { text = 0.2 }
"""


SR = 8000


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """Eight short 'utterances': tones whose pitch depends on the text's first letter."""
    root = tmp_path_factory.mktemp("corpus")
    g = np.random.default_rng(0)
    rows = []
    for i, text in enumerate(["ah", "oh", "ee", "oo", "ah ah", "oh oh", "ee ee", "oo oo"]):
        f0 = {"a": 220.0, "o": 330.0, "e": 440.0}.get(text[0], 550.0)
        n = int(SR * (0.4 + 0.1 * (i % 3)))
        t = np.arange(n) / SR
        wav = 0.3 * np.sin(2 * np.pi * f0 * t) * np.hanning(n) + 0.01 * g.standard_normal(n)
        write_wav(root / f"u{i}.wav", wav, SR)
        rows.append({"id": f"u{i}", "audio": f"u{i}.wav", "text": text, "caption": f"a tone {text}", "speaker": "s" + str(i % 2)})
    write_manifest(root / "train.jsonl", rows)
    return root / "train.jsonl"


