"""Procedural everyday sounds (audioguide.corpus.procedural): every source draws seeded, well-formed
audio, and the physical models behave as their papers say (decay times, bubble pitch, rhythms)."""

from __future__ import annotations

import numpy as np
import pytest

from audioguide.audio import mix_scene
from audioguide.corpus import procedural as proc
from audioguide.corpus.sound import scene

SR = proc.SR


def _peak_freq(x: np.ndarray, lo: float = 20.0) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    f = np.fft.rfftfreq(len(x), 1 / SR)
    spec[f < lo] = 0
    return float(f[spec.argmax()])


@pytest.mark.parametrize("cls", sorted(proc.SYNTHS))
def test_every_source_is_seeded_well_formed_and_described(cls):
    for name in proc.SYNTHS[cls]:
        a, words = proc.synthesize(cls, name, np.random.default_rng(1), 1.5)
        b, words_b = proc.synthesize(cls, name, np.random.default_rng(1), 1.5)
        c, _ = proc.synthesize(cls, name, np.random.default_rng(2), 1.5)
        assert a.dtype == np.float32 and a.shape == (int(1.5 * SR),) and np.isfinite(a).all()
        assert np.abs(a).max() == pytest.approx(0.9, abs=1e-4) and abs(float(a[0])) < 1e-3  # normalised, faded in
        assert np.array_equal(a, b) and words == words_b  # the same seed, the same sound
        assert not np.array_equal(a, c)
        assert isinstance(words, str) and 2 <= len(words.split()) <= 12, (cls, name, words)


def test_classes_have_several_sources():
    assert len(proc.SYNTHS) == 20
    assert all(len(sources) >= 2 for sources in proc.SYNTHS.values())


def test_modes_decay_sixty_db_in_their_t60():
    x = proc.modes([1000.0], [0.2], [1.0], 0.5)
    env = np.abs(x)
    early = env[: int(0.01 * SR)].max()
    at_t60 = env[int(0.195 * SR) : int(0.205 * SR)].max()
    assert 20 * np.log10(early / at_t60) == pytest.approx(60, abs=1.5)
    assert _peak_freq(x) == pytest.approx(1000, abs=5)


def test_minnaert_bubble_pitch_follows_its_radius():
    """van den Doel 2005 eq. 2: f0 = 3.26 kHz / r (mm); the chirp only rises from there."""
    for radius in (1.0, 2.0, 4.0):
        x = proc._bubble(np.random.default_rng(0), radius)
        i = np.flatnonzero((x[:-1] < 0) & (x[1:] >= 0))  # upward zero crossings, to a fraction of a sample
        t = i + x[i] / (x[i] - x[i + 1])
        periods = np.diff(t)
        # the first period starts at f0 and has already risen by (1 + xi d t), xi <= 0.6, t < 1.5 periods
        d = 0.13 * (3260 / radius) + 0.0072 * (3260 / radius) ** 1.5
        assert 3260 / radius * 0.97 <= SR / periods[0] <= 3260 / radius * (1 + 0.6 * d * 1.5 * radius / 3260) * 1.03
        assert periods[-1] < periods[0]  # the pitch rises as the bubble nears the surface


def test_coloured_noise_has_its_spectral_slope():
    rng = np.random.default_rng(0)
    for exponent in (0.0, 1.0, 2.0):
        x = proc.coloured(rng, 2**16, exponent)
        spec = np.abs(np.fft.rfft(x)) ** 2
        f = np.fft.rfftfreq(len(x), 1 / SR)
        band = (f > 100) & (f < 5000)
        slope = np.polyfit(np.log(f[band]), np.log(spec[band] + 1e-12), 1)[0]
        assert slope == pytest.approx(-exponent, abs=0.15)
        assert x.std() == pytest.approx(1.0, rel=1e-6)


def test_building_blocks_stay_in_bounds():
    rng = np.random.default_rng(0)
    c = proc.curve(rng, SR, 5.0, 0.2, 0.7)
    assert c.min() >= 0.2 - 1e-9 and c.max() <= 0.7 + 1e-9
    out = np.zeros(100)
    proc.place(out, np.ones(50), 80 / SR)  # cut at the end, not wrapped
    assert out[80:].sum() == 20 and out[:80].sum() == 0
    proc.place(out, np.ones(50), 2.0)  # past the end: nothing
    assert out.sum() == 20
    y = proc.shaped_noise(rng, SR, np.full(SR, 2000.0), np.full(SR, 100.0))
    assert _peak_freq(y) == pytest.approx(2000, abs=250)
    times = proc.poisson(rng, 50.0, 10.0)
    assert 400 < len(times) < 600 and np.all(np.diff(times) >= 0)


def _onsets(x: np.ndarray) -> int:
    """Clicks in a signal: rises of its 5 ms energy envelope past half the peak."""
    hop = int(0.005 * SR)
    env = np.sqrt(np.convolve(x.astype(np.float64) ** 2, np.ones(hop) / hop, "same"))[::hop]
    above = env > 0.35 * env.max()
    return int(np.count_nonzero(above[1:] & ~above[:-1]))


def test_clock_ticks_at_its_rate():
    wall = [_onsets(proc.clock(np.random.default_rng(k), 6.0, "wall")[0]) for k in range(4)]
    watch = [_onsets(proc.clock(np.random.default_rng(k), 6.0, "watch")[0]) for k in range(4)]
    assert all(3 <= n <= 13 for n in wall), wall  # 1-2 ticks a second
    assert all(n >= 20 for n in watch), watch  # 5-8 a second
    assert min(watch) > max(wall)


def test_siren_and_horn_pitches():
    wail, _ = proc.siren(np.random.default_rng(0), 4.0, "wail")
    assert 500 < _peak_freq(wail, 300) < 1700
    truck, _ = proc.car_horn(np.random.default_rng(0), 3.0, "truck")
    car, _ = proc.car_horn(np.random.default_rng(0), 3.0, "single")
    assert _peak_freq(truck, 100) < _peak_freq(car, 100)


def test_scene_words_and_levels_agree():
    base, words = proc.synthesize("siren", "wail", np.random.default_rng(3), 2.0)
    seen = {}
    for k in range(60):
        audio, text = scene(base, words, np.random.default_rng(k))
        peak = round(float(np.abs(audio).max()), 2)
        seen.setdefault(peak, set()).add(text)
        if "distant" in text or "far" in text:
            assert peak == pytest.approx(0.35, abs=0.01)
        elif any(w in text for w in ("quiet", "soft", "faint")):
            assert peak == pytest.approx(0.25, abs=0.01)
        else:
            assert peak == pytest.approx(0.9, abs=0.01)
    assert len(seen) == 3 and words in seen[0.9]  # some clips keep their words and level


def test_mix_scene_sets_the_background_level():
    rng = np.random.default_rng(0)
    fg = (0.5 * rng.standard_normal(SR)).astype(np.float64)
    bg = np.sin(2 * np.pi * 300 * np.arange(SR // 3) / SR)  # shorter than the foreground: looped
    out = mix_scene(fg, bg, -6.0)
    rms = lambda x: float(np.sqrt(np.mean(x**2)))  # noqa: E731
    loop = np.resize(bg, fg.shape)
    expect = fg + loop * rms(fg) / rms(loop) * 10 ** (-6 / 20)
    assert out.dtype == np.float32 and out.shape == fg.shape
    assert np.allclose(out, expect / np.abs(expect).max() * min(np.abs(fg).max(), 0.9), atol=1e-5)
    assert 20 * np.log10(rms(expect - fg) / rms(fg)) == pytest.approx(-6.0, abs=1e-6)
    quiet = mix_scene(0.05 * fg / np.abs(fg).max(), bg, -3.0)  # a quiet foreground: the scene peaks at 0.1
    assert np.abs(quiet).max() == pytest.approx(0.1, rel=1e-5)
