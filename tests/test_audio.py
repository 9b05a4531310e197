"""Audio I/O is atomic and exact; spectrograms and the frames representation behave."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf
import torch

from audioguide.audio import log_mel, read_audio, write_wav
from audioguide.core import AudioguideError
from audioguide.representations import Frames
from audioguide.representations.frames import FramesConfig


def test_write_then_read_roundtrip(tmp_path):
    wav = (0.5 * np.sin(np.linspace(0, 200, 8000))).astype(np.float32)
    path = write_wav(tmp_path / "sub" / "a.wav", wav, 8000)
    info = sf.info(str(path))
    assert info.samplerate == 8000 and info.frames == 8000 and info.subtype == "PCM_16"
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's 0600
    back, sr = read_audio(path)
    assert sr == 8000 and np.abs(back - wav).max() < 1e-4
    res, sr2 = read_audio(path, sample_rate=16000)
    assert sr2 == 16000 and abs(len(res) - 16000) <= 1


@pytest.mark.parametrize("bad,match", [(np.array([0.1, np.nan]), "non-finite"), (np.zeros(0), "empty")])
def test_bad_audio_leaves_no_file(tmp_path, bad, match):
    target = tmp_path / "x.wav"
    with pytest.raises(AudioguideError, match=match):
        write_wav(target, bad, 8000)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_old_file_and_no_partial(tmp_path, monkeypatch):
    target = tmp_path / "x.wav"
    write_wav(target, np.full(100, 0.25, dtype=np.float32), 8000)
    before = target.read_bytes()

    def explode(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(sf, "write", explode)
    with pytest.raises(RuntimeError):
        write_wav(target, np.zeros(50, dtype=np.float32), 8000)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["x.wav"]


def test_unreadable_audio_is_a_clear_error(tmp_path):
    (tmp_path / "junk.wav").write_bytes(b"RIFF0000nope")
    with pytest.raises(AudioguideError, match="cannot read audio"):
        read_audio(tmp_path / "junk.wav")


def test_log_mel_shape_and_peak_bin():
    sr, n_fft, hop = 16000, 512, 128
    t = torch.arange(sr) / sr
    wav = torch.sin(2 * torch.pi * 1000 * t)[None]
    mel = log_mel(wav, sr, n_fft=n_fft, hop=hop, n_mels=40)
    assert mel.shape == (1, 40, sr // hop + 1)
    import librosa

    centers = librosa.mel_frequencies(n_mels=42, fmax=sr / 2)[1:-1]
    assert abs(centers[mel[0].mean(1).argmax()] - 1000) < 200


def test_frames_representation_roundtrip():
    rep = Frames(FramesConfig(sample_rate=8000, hop=64, scale=0.5))
    wav = torch.randn(2, 1000)
    z = rep.encode(wav)
    assert z.shape == (2, 64, 16)
    assert torch.allclose(rep.decode(z)[:, :1000], wav) and rep.frames_for(1000 / 8000) == 16
