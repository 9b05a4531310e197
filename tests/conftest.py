"""Shared fixtures. Tests run single-threaded on tiny random models built in code."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

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
