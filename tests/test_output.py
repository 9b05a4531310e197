"""The output stage: formats by suffix, loudness to the BS.1770 target, a true-peak ceiling that
never clips, resampling, atomic writes that turn a full disk into one line."""

from __future__ import annotations

import errno
import io

import numpy as np
import pytest
import soundfile as sf

from audioguide import audio as A
from audioguide.core import AudioguideError, atomic_write

SR = 24000


def _noise(seconds: float = 3.0, level: float = 0.1, seed: int = 0) -> np.ndarray:
    return (level * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


def _speechlike(seconds: float = 3.0) -> np.ndarray:
    """Tone bursts with silences and one hot transient: peaky, as speech and effects are."""
    t = np.arange(int(seconds * SR)) / SR
    x = 0.05 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 2 * t) > 0)
    x[SR // 2 : SR // 2 + 40] += 0.9
    return x.astype(np.float32)


@pytest.mark.parametrize("signal", [_noise, _speechlike])
def test_master_reaches_the_loudness_target_under_the_ceiling(signal):
    x = signal()
    wav, sr = A.master(x, SR)
    assert sr == SR and abs(A.loudness(wav, sr) - A.TARGET_LUFS) < 0.5
    assert A.true_peak(wav) <= A.CEILING_DBTP + 1e-6


def test_hot_audio_is_limited_not_clipped():
    x = _noise(level=0.1)
    x[1000] = 1.8  # what t2a makes: samples beyond full scale
    y = A.limit(x, SR)
    assert A.true_peak(y) <= A.CEILING_DBTP + 1e-6 and np.abs(y).max() < 1.0
    # the limiter works near the peak only (up to 7.5 ms before, 60 ms after): elsewhere the audio is as it was
    assert np.allclose(y[SR // 2 :], x[SR // 2 :], rtol=0, atol=1e-6) and np.allclose(y[:760], x[:760], rtol=0, atol=1e-6)
    assert abs(y[1000]) < 0.9
    quiet = _noise(level=0.01)
    assert np.array_equal(A.limit(quiet, SR), quiet)  # under the ceiling: unchanged


def test_levels_off_keeps_the_level_but_still_never_clips():
    x = _noise(level=0.5)
    x[100] = 2.0
    wav, _ = A.master(x, SR, target_lufs=None)
    assert A.true_peak(wav) <= A.CEILING_DBTP + 1e-6
    quiet = _noise(level=0.01)
    assert np.array_equal(A.master(quiet, SR, target_lufs=None)[0], quiet)


def test_silence_and_short_clips():
    silent, _ = A.master(np.zeros(1000, np.float32), SR)
    assert not silent.any()
    short, _ = A.master(_noise(0.1), SR)  # under one 400 ms block
    assert np.isfinite(A.loudness(short, SR)) and A.true_peak(short) <= A.CEILING_DBTP + 1e-6
    with pytest.raises(AudioguideError, match="non-finite"):
        A.master(np.array([0.1, np.nan], np.float32), SR)


def test_resampling_keeps_duration_and_level():
    wav, sr = A.master(_noise(), SR, rate=44100)
    assert sr == 44100 and abs(len(wav) - 3 * 44100) <= 2 and abs(A.loudness(wav, sr) - A.TARGET_LUFS) < 0.5


@pytest.mark.parametrize("suffix, subtype", [(".wav", "PCM_16"), (".flac", "PCM_16"), (".ogg", "VORBIS"), (".opus", "OPUS"),
                                             (".mp3", "MPEG_LAYER_III")])
def test_formats_by_suffix(tmp_path, suffix, subtype):
    wav, _ = A.master(_noise(), SR)
    path = A.write_audio(tmp_path / f"a{suffix}", wav, SR)
    info = sf.info(str(path))
    assert info.subtype == subtype and info.samplerate == SR and abs(info.frames - len(wav)) < SR // 10


@pytest.mark.parametrize("sample_format, subtype", [("16", "PCM_16"), ("24", "PCM_24"), ("float", "FLOAT")])
def test_wav_sample_formats_round_trip(tmp_path, sample_format, subtype):
    wav, _ = A.master(_noise(), SR)
    path = A.write_audio(tmp_path / "a.wav", wav, SR, sample_format)
    back, _ = sf.read(str(path), dtype="float32")
    assert sf.info(str(path)).subtype == subtype
    assert np.abs(back - wav).max() <= {"16": 1 / 32767, "24": 1 / 2**23, "float": 0}[sample_format] + 1e-7


def test_bad_formats_are_one_line(tmp_path):
    wav = _noise(0.5)
    with pytest.raises(AudioguideError, match="suffix among"):
        A.write_audio(tmp_path / "a.aiff", wav, SR)
    with pytest.raises(AudioguideError, match="flac takes sample format 16 or 24"):
        A.encode_audio(wav, SR, "flac", "float")
    with pytest.raises(AudioguideError, match="no sample format to choose"):
        A.encode_audio(wav, SR, "mp3", "24")
    with pytest.raises(AudioguideError, match="opus cannot carry 22050 Hz"):
        A.encode_audio(wav, 22050, "opus")
    assert A.output_rate("opus", 22050) == 24000 and A.output_rate("wav", 22050) == 22050
    with pytest.raises(AudioguideError, match="sample rate must be an integer"):
        A.output_rate("wav", SR, 1_000_000)
    with pytest.raises(AudioguideError, match="would clip"):
        A.encode_audio(np.array([0.5, 1.5], np.float32), SR, "wav")
    assert list(tmp_path.iterdir()) == []


def test_pcm_is_headerless_16_bit_little_endian():
    wav = np.array([0.0, 0.5, -0.5, 1.0, -1.0], np.float32)
    assert A.encode_audio(wav, SR, "pcm") == np.array([0, 16384, -16384, 32767, -32767], "<i2").tobytes()
    assert A.encode_audio(wav, SR, "pcm")[:8] == sf.read(io.BytesIO(A.encode_audio(wav, SR, "wav")), dtype="int16")[0][:4].astype("<i2").tobytes()


def test_a_failing_write_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    target = tmp_path / "x.flac"

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(AudioguideError, match=r"cannot write .*x\.flac: disk full"):
        with atomic_write(target) as tmp:
            tmp.write_bytes(b"partial")
            full()
    assert list(tmp_path.iterdir()) == []
