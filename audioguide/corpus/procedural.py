"""Physically-motivated procedural sound: everyday classes no installable package records.

Each class has several *sources*: different synthesis models of the same physical event (rain as
bubbles under falling drops, as drumming on a roof, as taps on a window pane), so a judge or a
generator cannot learn a class from one model, and evaluation can hold a whole source out. Every
draw flows from the ``numpy.random.Generator`` passed in; the same seed gives the same samples.

The models follow the procedural-audio literature:

* impacts and resonances as banks of exponentially damped modes excited by short pulses (modal
  synthesis; van den Doel, Kry & Pai 2001, "FoleyAutomatic", eq. 1), used for knocks, clocks,
  keys, glass shards, bells;
* liquid sound as Minnaert bubbles, a sine whose frequency is 3.26 kHz / radius (mm), rising as
  the bubble nears the surface, damped at d = 0.13 f + 0.0072 f^1.5 (van den Doel 2005, "Physically
  based models for liquid sounds", eq. 2-4);
* particle textures (rain, fire crackles, gravel under a foot, applause) as stochastic event
  streams of short grains (Cook 1997, PhISEM; Peltola et al. 2007, "Synthesis of hand clapping
  sounds", sec. 3: claps as band-passed noise bursts, 0.5-2.5 kHz centres);
* noise shaped by slowly varying spectral envelopes for wind, surf and rumble (Farnell 2010,
  "Designing Sound", ch. 40-42);
* harmonic sources driven by an instantaneous frequency: sirens, horns, engines (firing frequency =
  rpm / 60 x cylinders / 2; Farnell ch. 46), helicopter rotors (blade-pass slap);
* voice-like sounds (laughter, a crying baby, coughs) by source-filter synthesis: a glottal pulse
  train through formant resonators (Klatt 1980, "Software for a cascade/parallel formant
  synthesizer"), with aspiration noise;
* church bells with the partials of a tuned bell: hum 0.5, prime 1, tierce 1.2, quint 1.5, nominal
  2, superquint 2.5, octave nominal 3 (Rossing 1990, "The Science of Sound", ch. 13).

:data:`SYNTHS` maps class -> source -> function ``(rng, seconds) -> (audio, words)``; ``words`` is
a short description of the particular draw ("heavy rain on a roof") for captions.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

SR = 24000
Synth = Callable[[np.random.Generator, float], tuple[np.ndarray, str]]


# ------------------------------------------------------------------------------------------------
# Building blocks
# ------------------------------------------------------------------------------------------------


def _sos(kind: str, freq, order: int = 2):
    from scipy.signal import butter

    nyq = SR / 2 * 0.98
    freq = np.clip(np.asarray(freq, dtype=float), 20.0, nyq)
    return butter(order, freq, kind, fs=SR, output="sos")


def filt(x: np.ndarray, kind: str, freq, order: int = 2) -> np.ndarray:
    from scipy.signal import sosfilt

    return sosfilt(_sos(kind, freq, order), x)


def coloured(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Noise of power spectrum 1/f^exponent (0 white, 1 pink, 2 brown), unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SR)
    f[0] = f[1]
    x = np.fft.irfft(spec * f ** (-exponent / 2), n)
    return x / (x.std() + 1e-12)


def curve(rng: np.random.Generator, n: int, rate: float, lo: float, hi: float) -> np.ndarray:
    """A slowly varying random curve in [lo, hi]: random points ``rate`` times a second, joined
    by cosine interpolation."""
    k = max(int(n / SR * rate) + 2, 2)
    pts = rng.uniform(lo, hi, k)
    pos = np.linspace(0, k - 1, n)
    i = np.minimum(pos.astype(int), k - 2)
    w = (1 - np.cos(np.pi * (pos - i))) / 2
    return pts[i] * (1 - w) + pts[i + 1] * w


def shaped_noise(rng: np.random.Generator, n: int, centre: np.ndarray, width: np.ndarray, exponent: float = 0.0) -> np.ndarray:
    """Noise through a time-varying Gaussian band-pass (centre and width in Hz, per sample),
    applied frame by frame on its short-time spectrum (hop 256); unit RMS."""
    from scipy.signal import istft, stft

    x = coloured(rng, n, exponent)
    f, t, z = stft(x, fs=SR, nperseg=1024, noverlap=768)
    idx = np.clip((t * SR).astype(int), 0, n - 1)
    c, w = centre[idx][None, :], np.maximum(width[idx], 1.0)[None, :]
    z = z * np.exp(-0.5 * ((f[:, None] - c) / w) ** 2)
    _, y = istft(z, fs=SR, nperseg=1024, noverlap=768)
    y = y[:n] if len(y) >= n else np.pad(y, (0, n - len(y)))
    return y / (y.std() + 1e-12)


def modes(freqs, t60s, amps, seconds: float, rng: np.random.Generator | None = None) -> np.ndarray:
    """A bank of damped sinusoids (modal synthesis; van den Doel et al. 2001 eq. 1): each mode
    decays by 60 dB in its ``t60`` seconds; random phases when ``rng`` is given."""
    n = max(int(seconds * SR), 1)
    t = np.arange(n) / SR
    out = np.zeros(n)
    for f, t60, a in zip(np.atleast_1d(freqs), np.atleast_1d(t60s), np.atleast_1d(amps)):
        if f >= SR / 2 * 0.95:
            continue
        ph = rng.uniform(0, 2 * np.pi) if rng is not None else 0.0
        out += a * np.exp(-6.91 * t / t60) * np.sin(2 * np.pi * f * t + ph)
    return out


def burst(rng: np.random.Generator, seconds: float, attack: float, decay: float, band=None) -> np.ndarray:
    """A noise burst with a linear attack and an exponential decay (time constant ``decay``),
    optionally band-passed (``band`` = (lo, hi) Hz)."""
    n = max(int(seconds * SR), 8)
    t = np.arange(n) / SR
    env = np.minimum(t / max(attack, 1e-4), 1.0) * np.exp(-np.maximum(t - attack, 0) / decay)
    x = rng.standard_normal(n)
    if band is not None:
        x = filt(x, "bandpass", band)
    return x * env


def add(*xs: np.ndarray) -> np.ndarray:
    """The sum of signals of different lengths (the longest's length)."""
    out = np.zeros(max(len(x) for x in xs))
    for x in xs:
        out[: len(x)] += x
    return out


def place(out: np.ndarray, x: np.ndarray, at: float, gain: float = 1.0) -> None:
    """Add ``x`` into ``out`` from ``at`` seconds (cut at the end)."""
    i = int(at * SR)
    if i >= len(out) or i < 0:
        return
    m = min(len(x), len(out) - i)
    out[i : i + m] += gain * x[:m]


def poisson(rng: np.random.Generator, rate: float, seconds: float) -> np.ndarray:
    """Event times of a Poisson process of ``rate`` events a second."""
    count = rng.poisson(rate * seconds)
    return np.sort(rng.uniform(0, seconds, count))


def reverb(rng: np.random.Generator, x: np.ndarray, t60: float, wet: float) -> np.ndarray:
    """A room: convolution with exponentially decaying noise (t60 seconds), mixed ``wet``."""
    from scipy.signal import fftconvolve

    n = int(t60 * SR)
    ir = rng.standard_normal(n) * np.exp(-6.91 * np.arange(n) / n)
    ir = filt(ir, "lowpass", 6000)
    ir /= np.sqrt((ir**2).sum()) + 1e-12
    y = fftconvolve(x, ir)[: len(x)]
    return (1 - wet) * x + wet * y * (x.std() / (y.std() + 1e-12))


def fade(x: np.ndarray, seconds: float = 0.02) -> np.ndarray:
    n = min(int(seconds * SR), len(x) // 2)
    if n > 0:
        ramp = np.linspace(0, 1, n)
        x[:n] *= ramp
        x[-n:] *= ramp[::-1]
    return x


def phase(freq: np.ndarray) -> np.ndarray:
    """Phase (radians) of an oscillator with instantaneous frequency ``freq`` (Hz per sample)."""
    return 2 * np.pi * np.cumsum(freq) / SR


def harmonic(freq: np.ndarray, rolloff: float, count: int = 12, odd_only: bool = False) -> np.ndarray:
    """A band-limited harmonic tone: partials k = 1..count with amplitude 1 / k^rolloff, each
    muted where it would pass 0.45 of the sample rate."""
    ph = phase(freq)
    out = np.zeros_like(freq, dtype=float)
    for k in range(1, count + 1):
        if odd_only and k % 2 == 0:
            continue
        out += (freq * k < 0.45 * SR) * np.sin(k * ph) / k**rolloff
    return out


def glottal(f0: np.ndarray, rng: np.random.Generator, jitter: float = 0.01) -> np.ndarray:
    """A glottal source: a pulse per period (the derivative of a Rosenberg-like pulse as a short
    smoothed impulse), frequency ``f0`` per sample with ``jitter`` relative cycle-to-cycle noise."""
    f = f0 * (1 + jitter * filt(rng.standard_normal(len(f0)), "lowpass", 40) * 3)
    ph = np.cumsum(f) / SR
    k = np.floor(ph)
    pulses = np.diff(k, prepend=k[0]) > 0
    x = pulses.astype(float)
    x = filt(x, "lowpass", 4000)
    return np.diff(x, prepend=0.0) * 20


FORMANTS = {  # vowel -> (F1, F2, F3) Hz, adult male (Peterson & Barney 1952)
    "a": (730, 1090, 2440), "ae": (660, 1720, 2410), "uh": (520, 1190, 2390), "eh": (530, 1840, 2480), "i": (270, 2290, 3010),
}


def formant_filter(x: np.ndarray, vowel: str, scale: float = 1.0, bandwidths=(90, 110, 170)) -> np.ndarray:
    """Parallel formant resonators (Klatt 1980) for a vowel, formants scaled by ``scale``
    (~1 men, ~1.17 women, ~1.5 infants)."""
    out = np.zeros_like(x)
    for f, bw, g in zip(FORMANTS[vowel], bandwidths, (1.0, 0.7, 0.35)):
        f = f * scale
        out += g * filt(x, "bandpass", (max(f - bw * scale, 30), f + bw * scale))
    return out


def _n(seconds: float) -> int:
    return int(seconds * SR)


def _pick(rng: np.random.Generator, *options: str) -> str:
    return str(rng.choice(list(options)))


# ------------------------------------------------------------------------------------------------
# Weather and nature
# ------------------------------------------------------------------------------------------------


def _bubble(rng: np.random.Generator, radius_mm: float) -> np.ndarray:
    """One Minnaert bubble (van den Doel 2005 eq. 2-4): f0 = 3.26 kHz / r, rising by a factor
    1 + sigma t as it nears the surface, damped at d = 0.13 f + 0.0072 f^1.5."""
    f0 = 3260.0 / radius_mm
    d = 0.13 * f0 + 0.0072 * f0**1.5
    t = np.arange(int(min(5.0 / d, 0.08) * SR)) / SR
    sigma = rng.uniform(0.1, 0.6) * d  # xi: 0.1 in the paper's examples (sec. 3); up to 0.6, faster-rising bubbles
    return np.exp(-d * t) * np.sin(2 * np.pi * f0 * np.cumsum(1 + sigma * t) / SR)


def rain_drops(rng, seconds):
    """Rain on open water or puddles: a Poisson rain of drops, a share forming Minnaert bubbles,
    the rest short impact ticks, over a diffuse band-passed hiss."""
    n = _n(seconds)
    heavy = rng.uniform() < 0.5
    rate = rng.uniform(800, 3000) if heavy else rng.uniform(150, 600)
    out = 0.15 * filt(coloured(rng, n, 1.0), "bandpass", (rng.uniform(400, 900), rng.uniform(6000, 10000)))
    out *= rng.uniform(1.0, 2.5) if heavy else 0.5
    tick = burst(rng, 0.004, 0.0003, 0.0008, (2000, 9000))
    for at in poisson(rng, rate, seconds):
        if rng.uniform() < 0.25:
            place(out, _bubble(rng, rng.uniform(1.0, 4.5)), at, rng.pareto(3.0) * 0.3 + 0.05)
        else:
            place(out, tick, at, rng.pareto(2.5) * 0.15 + 0.02)
    return out, ("heavy rain" if heavy else "light rain") + _pick(rng, " falling", " on a pond", " on puddles")


def rain_roof(rng, seconds):
    """Rain drumming on a roof: dense soft impacts through the roof's low resonances, a broadband
    wash, and now and then a heavier drip from a gutter."""
    n = _n(seconds)
    heavy = rng.uniform() < 0.5
    wash = filt(coloured(rng, n, 1.3), "lowpass", rng.uniform(2500, 5000)) * (0.6 if heavy else 0.25)
    thud = modes(rng.uniform(150, 600, 4), rng.uniform(0.02, 0.06, 4), rng.uniform(0.3, 1, 4), 0.08, rng)
    impacts = np.zeros(n)
    for at in poisson(rng, rng.uniform(300, 900) if heavy else rng.uniform(60, 200), seconds):
        place(impacts, thud, at, rng.uniform(0.05, 0.3))
    out = wash + impacts
    for at in poisson(rng, rng.uniform(0.5, 2.5), seconds):
        place(out, _bubble(rng, rng.uniform(2.5, 5.0)), at, 0.6)
    return out, ("heavy rain" if heavy else "steady rain") + _pick(rng, " on a roof", " drumming on a tin roof", " on the roof")


def rain_window(rng, seconds):
    """Rain against a window: sharp glassy taps (high modes of the pane), trickles of small
    bubbles and a soft outdoor wash behind glass (low-passed)."""
    n = _n(seconds)
    out = 0.2 * filt(coloured(rng, n, 1.5), "lowpass", 1200)
    tap = modes(rng.uniform(2500, 6000, 3), [0.01, 0.008, 0.006], [1, 0.6, 0.4], 0.03, rng)
    for at in poisson(rng, rng.uniform(40, 250), seconds):
        place(out, tap, at, rng.pareto(2.0) * 0.1 + 0.05)
    for start in poisson(rng, rng.uniform(0.5, 2.0), seconds):  # a rivulet: a quick run of small bubbles
        for k in range(int(rng.integers(3, 10))):
            place(out, _bubble(rng, rng.uniform(0.8, 2.0)), start + k * rng.uniform(0.02, 0.06), 0.15)
    return out, _pick(rng, "rain against a window", "raindrops on a window pane", "rain tapping on glass")


def wind_gusts(rng, seconds):
    """Gusty wind: noise through a band whose centre and level follow slow random gusts."""
    n = _n(seconds)
    strong = rng.uniform() < 0.5
    gust = curve(rng, n, rng.uniform(0.3, 1.0), 0.1, 1.0) ** 1.5
    centre = 150 + gust * rng.uniform(400, 1200)
    out = shaped_noise(rng, n, centre, 0.5 * centre + 60, exponent=1.0) * (0.2 + gust)
    return out, ("strong gusty wind" if strong else "wind gusting") + _pick(rng, "", " outside", " in the open")


def wind_howl(rng, seconds):
    """Howling wind: narrow resonant whistles (flow past edges) gliding with the gusts over a low
    broadband roar."""
    n = _n(seconds)
    gust = curve(rng, n, rng.uniform(0.3, 0.8), 0.2, 1.0)
    roar = filt(coloured(rng, n, 2.0), "lowpass", 300) * gust
    whistle = np.zeros(n)
    for _ in range(int(rng.integers(1, 3))):
        c = rng.uniform(300, 900) * (0.7 + 0.6 * curve(rng, n, rng.uniform(0.3, 0.8), 0.0, 1.0))
        whistle += shaped_noise(rng, n, c, c * rng.uniform(0.02, 0.05)) * curve(rng, n, 0.7, 0.0, 1.0) ** 2
    return roar + rng.uniform(0.3, 0.8) * whistle, _pick(rng, "whistling wind", "wind whistling through a gap", "a whistling gale")


def wind_leaves(rng, seconds):
    """Wind in trees: a hiss of leaves (high band noise, fast flutter) swelling with gusts."""
    n = _n(seconds)
    gust = curve(rng, n, rng.uniform(0.2, 0.6), 0.15, 1.0)
    flutter = 0.6 + 0.4 * curve(rng, n, rng.uniform(8, 25), 0.0, 1.0)
    hiss = filt(rng.standard_normal(n), "bandpass", (rng.uniform(1200, 2500), rng.uniform(7000, 10000))) * gust * flutter
    low = filt(coloured(rng, n, 1.5), "lowpass", 400) * gust * 0.5
    return hiss + low, _pick(rng, "wind rustling the leaves", "wind gusting through trees", "a breeze in the branches")


def thunder(rng, seconds, distant: bool):
    n = _n(seconds)
    out = np.zeros(n)
    start = rng.uniform(0.0, min(1.0, seconds * 0.2))
    if not distant:  # the crack: a short broadband tearing burst, then the rumble
        place(out, burst(rng, 0.3, 0.002, 0.05, (300, 8000)), start, 3.0)
    rumble_len = max(seconds - start, 0.5)
    m = _n(rumble_len)
    t = np.arange(m) / SR
    env = (1 - np.exp(-t / rng.uniform(0.05, 0.4))) * np.exp(-t / rng.uniform(1.0, 3.0))
    env *= 0.5 + curve(rng, m, rng.uniform(2, 6), 0.0, 1.0)  # rolls
    cutoff = rng.uniform(80, 180) if distant else rng.uniform(200, 500)
    rumble = filt(coloured(rng, m, 1.5), "lowpass", cutoff, order=4) * env
    place(out, rumble, start + (0.0 if distant else 0.05), 1.5)
    for _ in range(int(rng.integers(0, 4))):  # echoes off hills and clouds
        at = start + rng.uniform(0.3, rumble_len)
        place(out, filt(burst(rng, 1.0, 0.02, 0.3), "lowpass", cutoff), at, rng.uniform(0.3, 1.0))
    return reverb(rng, out, 1.5, 0.4)


def thunder_close(rng, seconds):
    """A nearby strike: a sharp crack followed by a loud rolling rumble."""
    return thunder(rng, seconds, False), _pick(rng, "a thunderclap", "a clap of thunder", "loud thunder overhead")


def thunder_distant(rng, seconds):
    """Far thunder: only a low rolling rumble reaches the listener (high frequencies absorbed)."""
    return thunder(rng, seconds, True), _pick(rng, "thunder rumbling in the distance", "a low roll of thunder", "distant thunder")


def waves_surf(rng, seconds):
    """Surf on a beach: each wave a rising swell, a broadband crash and a hissing wash of foam
    running back (Farnell ch. 41), waves every few seconds."""
    n = _n(seconds)
    out = 0.1 * filt(coloured(rng, n, 1.5), "lowpass", 800)
    period = rng.uniform(3.0, 7.0)
    at = -rng.uniform(0, period)
    while at < seconds:
        m = _n(period + 2)
        t = np.arange(m) / SR
        crash_t = rng.uniform(0.6, 1.5)
        swell = np.exp(-((t - crash_t) / 0.6) ** 2) * filt(rng.standard_normal(m), "lowpass", 500)
        crash = np.where(t > crash_t, np.exp(-(t - crash_t) / rng.uniform(0.4, 1.0)), 0) * filt(rng.standard_normal(m), "bandpass", (200, 6000))
        wash = np.where(t > crash_t, (t - crash_t) / 0.5 * np.exp(-(t - crash_t) / rng.uniform(1.0, 2.0)), 0) * filt(
            rng.standard_normal(m), "highpass", 2000)
        wave = swell * 0.6 + crash + 0.5 * wash
        seg = wave[max(0, -int(at * SR)) :]
        place(out, seg, max(at, 0.0), rng.uniform(0.6, 1.2))
        at += period * rng.uniform(0.8, 1.2)
    return out, _pick(rng, "ocean waves crashing on a beach", "waves breaking on the shore", "surf rolling in")


def waves_lapping(rng, seconds):
    """Water lapping at a shore or a boat: small slaps, gurgling bubbles, a quiet wash."""
    n = _n(seconds)
    out = 0.15 * filt(coloured(rng, n, 1.0), "bandpass", (300, 3000)) * curve(rng, n, 1.0, 0.3, 1.0)
    at = rng.uniform(0, 0.5)
    while at < seconds:
        place(out, burst(rng, 0.3, 0.01, rng.uniform(0.04, 0.12), (rng.uniform(200, 500), rng.uniform(1500, 3000))), at, rng.uniform(0.8, 1.5))
        for _ in range(int(rng.integers(2, 8))):
            place(out, _bubble(rng, rng.uniform(1.5, 6.0)), at + rng.uniform(0.02, 0.4), rng.uniform(0.2, 0.6))
        at += rng.uniform(0.7, 2.0)
    return out, _pick(rng, "water lapping against the shore", "small waves lapping", "gentle waves against a boat")


def fire(rng, seconds, pops: bool):
    n = _n(seconds)
    roar = filt(coloured(rng, n, 2.0), "lowpass", rng.uniform(200, 500)) * curve(rng, n, rng.uniform(3, 8), 0.5, 1.0)
    hiss = 0.15 * filt(rng.standard_normal(n), "highpass", 3000) * curve(rng, n, 4, 0.2, 1.0)
    out = roar * rng.uniform(0.4, 0.8) + hiss
    # crackles come in clusters (resin pockets bursting): a Poisson process of clusters of clicks
    for c in poisson(rng, rng.uniform(2, 8), seconds):
        for _ in range(int(rng.integers(1, 12))):
            click = burst(rng, 0.006, 0.0002, rng.uniform(0.0005, 0.002), (1500, 10000))
            place(out, click, c + rng.exponential(0.05), rng.pareto(1.8) * 0.3 + 0.1)
    if pops:  # wood pops: louder, lower, resonant
        for at in poisson(rng, rng.uniform(0.3, 1.5), seconds):
            pop = modes(rng.uniform(300, 1500, 3), rng.uniform(0.02, 0.06, 3), [1, 0.5, 0.3], 0.1, rng)
            place(out, add(pop, burst(rng, 0.02, 0.0005, 0.004, (800, 6000))), at, rng.uniform(1.0, 3.0))
    return out


def fire_campfire(rng, seconds):
    """A campfire: a low roar flickering, a hiss, clusters of heavy-tailed crackles."""
    return fire(rng, seconds, False), _pick(rng, "a crackling campfire", "a fire crackling", "flames crackling and hissing")


def fire_fireplace(rng, seconds):
    """Logs in a fireplace: fewer crackles, resonant wood pops, a softer roar, a room."""
    return reverb(rng, fire(rng, seconds, True), 0.5, 0.25), _pick(rng, "logs crackling in a fireplace", "a wood fire popping", "a crackling fire in a hearth")


# ------------------------------------------------------------------------------------------------
# People and things
# ------------------------------------------------------------------------------------------------

SURFACES = ("wood", "gravel", "tile", "snow")


def _step(rng: np.random.Generator, surface: str) -> np.ndarray:
    """One footfall on a surface: heel strike then toe, each an impact through the surface's
    response (modes for wood and tile, a grain cloud for gravel and snow; PhISEM, Cook 1997)."""
    out = np.zeros(_n(0.35))
    for at, g in ((0.0, 1.0), (rng.uniform(0.05, 0.12), rng.uniform(0.3, 0.6))):
        if surface == "wood":
            x = add(modes(rng.uniform(80, 400, 4), rng.uniform(0.04, 0.12, 4), [1, .6, .4, .3], 0.25, rng), burst(rng, 0.02, 0.0005, 0.003, (1000, 5000)) * 0.3)
        elif surface == "tile":
            x = add(burst(rng, 0.03, 0.0003, 0.004, (1500, 7000)), 0.5 * modes(rng.uniform(150, 300, 2), [0.03, 0.02], [1, .5], 0.1, rng))
        else:
            grains = np.zeros(_n(0.2))
            dur = 0.12 if surface == "gravel" else 0.2
            band = (800, 6000) if surface == "gravel" else (300, 2500)
            for gt in np.sort(rng.uniform(0, dur, int(rng.integers(25, 60)))):
                place(grains, burst(rng, 0.005, 0.0003, rng.uniform(0.0005, 0.002), band), gt, rng.pareto(2.5) * 0.3 + 0.1)
            x = add(grains, 0.3 * filt(burst(rng, 0.1, 0.002, 0.02), "lowpass", 200))
        place(out, x, at, g)
    return out


def footsteps(rng, seconds, surface):
    n = _n(seconds)
    running = rng.uniform() < 0.3
    rate = rng.uniform(2.6, 3.4) if running else rng.uniform(1.5, 2.2)
    out = np.zeros(n)
    at = rng.uniform(0, 0.4)
    while at < seconds:
        place(out, _step(rng, surface), at, rng.uniform(0.7, 1.0))
        at += 1 / rate * rng.uniform(0.93, 1.07)
    words = {"wood": ("footsteps on a wooden floor", "someone walking across creaky floorboards"),
             "tile": ("footsteps on a hard floor", "shoes clicking on tiles"),
             "gravel": ("footsteps crunching on gravel", "someone walking on a gravel path"),
             "snow": ("footsteps in snow", "boots crunching through snow")}[surface]
    text = _pick(rng, *words)
    if running:
        text = text.replace("footsteps", "running footsteps").replace("walking", "running")
    return reverb(rng, out, 0.4, 0.2 if surface in ("wood", "tile") else 0.05), text


def knock(rng, seconds, door: str):
    """Knocking: groups of 2-4 knuckle raps, each a short pulse through the door's plate modes
    (wood: low and quickly damped; hollow: lower, longer; metal: high partials that ring)."""
    n = _n(seconds)
    out = np.zeros(n)
    if door == "wood":
        fr, t60 = rng.uniform(90, 600, 5), rng.uniform(0.04, 0.12, 5)
    elif door == "hollow":
        fr, t60 = rng.uniform(60, 250, 4), rng.uniform(0.1, 0.25, 4)
    else:
        fr, t60 = rng.uniform(300, 3000, 6), rng.uniform(0.2, 0.6, 6)
    amps = 1 / (1 + np.arange(len(fr)))
    at = rng.uniform(0.1, 0.5)
    while at < seconds - 0.3:
        for _ in range(int(rng.integers(2, 5))):
            rap = add(modes(fr * rng.uniform(0.97, 1.03), t60, amps, 0.6, rng), burst(rng, 0.01, 0.0003, 0.0015, (1500, 6000)) * 0.4)
            place(out, rap, at, rng.uniform(0.7, 1.0))
            at += rng.uniform(0.12, 0.3)
        at += rng.uniform(0.8, 2.0)
    words = {"wood": ("a knock at the door", "knocking on a wooden door"), "hollow": ("someone knocking on a door", "knocks on a hollow door"),
             "metal": ("knocking on a metal door", "rapping on an iron door")}[door]
    return reverb(rng, out, 0.6, 0.3), _pick(rng, *words)


def clock(rng, seconds, kind: str):
    """A clock: the escapement's alternating tick and tock, each a click of small metal modes
    through the case's resonance (wall: 1-2 per second; watch: 5-8, high and thin; grandfather:
    slow, deep wooden body)."""
    n = _n(seconds)
    out = np.zeros(n)
    rate = {"wall": rng.uniform(1.0, 2.0), "watch": rng.uniform(5.0, 8.0), "grandfather": rng.uniform(0.8, 1.2)}[kind]
    body = {"wall": (rng.uniform(600, 1200), 0.03), "watch": (rng.uniform(3000, 5000), 0.01), "grandfather": (rng.uniform(200, 400), 0.15)}[kind]
    click_band = (2000, 9000) if kind != "grandfather" else (800, 4000)
    pair = []
    for _ in range(2):
        c = add(burst(rng, 0.01, 0.0002, 0.001, click_band), 0.6 * modes(
            [body[0], body[0] * rng.uniform(1.4, 2.6), rng.uniform(3000, 7000)], [body[1], body[1] / 2, 0.01], [1, .5, .4], 0.3, rng))
        pair.append(c)
    at, k = rng.uniform(0, 1 / rate), 0
    while at < seconds:
        place(out, pair[k % 2], at, 1.0 if k % 2 == 0 else rng.uniform(0.6, 0.9))
        at += 1 / rate
        k += 1
    words = {"wall": ("a clock ticking", "a wall clock ticking"), "watch": ("a wristwatch ticking", "the fast ticking of a watch"),
             "grandfather": ("a grandfather clock ticking", "the slow tick-tock of an old clock")}[kind]
    return reverb(rng, out, 0.5, 0.2), _pick(rng, *words)


# ------------------------------------------------------------------------------------------------
# Vehicles and alarms
# ------------------------------------------------------------------------------------------------


def _passing(rng: np.random.Generator, n: int, seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """A source passing the listener: a Doppler factor c / (c - v cos theta) and a level rising
    and falling with distance (closest at a random moment)."""
    t = np.arange(n) / SR
    v, d = rng.uniform(10, 30), rng.uniform(5, 20)
    tc = rng.uniform(0.3, 0.7) * seconds
    x = v * (t - tc)
    cos = -x / np.sqrt(x**2 + d**2)
    doppler = 343.0 / (343.0 - v * cos)
    level = d / np.sqrt(x**2 + d**2)
    return doppler, level


def siren(rng, seconds, kind: str):
    """An emergency siren: a harmonic-rich tone whose pitch sweeps (wail: slow, a few seconds a
    cycle; yelp: a few cycles a second) or alternates two tones (hi-lo), sometimes passing by."""
    n = _n(seconds)
    t = np.arange(n) / SR
    lo, hi = rng.uniform(550, 750), rng.uniform(1200, 1600)
    if kind == "wail":
        period = rng.uniform(2.5, 5.0)
        u = (t / period + rng.uniform()) % 1
        f = lo + (hi - lo) * np.where(u < 0.5, np.sin(np.pi * u) ** 0.7, np.sin(np.pi * u) ** 1.5)
    elif kind == "yelp":
        period = rng.uniform(0.2, 0.4)
        u = (t / period) % 1
        f = lo + (hi - lo) * np.minimum(u / 0.8, 1.0)
    else:
        a, b = rng.uniform(420, 480), rng.uniform(560, 620)
        period = rng.uniform(1.0, 1.6)
        f = np.where(((t / period) % 1) < 0.5, a, b)
        f = filt(f, "lowpass", 30)
    gain = np.ones(n)
    moving = rng.uniform() < 0.5
    if moving:
        doppler, gain = _passing(rng, n, seconds)
        f = f * doppler
    out = filt(harmonic(f, rng.uniform(0.8, 1.4), 10), "bandpass", (300, 5000)) * gain
    words = {"wail": ("an ambulance siren wailing", "a police siren"), "yelp": ("a fast yelping siren", "a police car siren yelping"),
             "hi-lo": ("a two-tone siren", "an emergency vehicle siren")}[kind]
    text = _pick(rng, *words) + (" passing by" if moving else "")
    return reverb(rng, out, 1.0, 0.3), text


def car_horn(rng, seconds, kind: str):
    """A horn: one or two (truck: three low) reed-like tones, rich in harmonics and shaped by the
    horn's bell, pressed briefly a few times or held."""
    n = _n(seconds)
    if kind == "two-tone":
        tones = [rng.uniform(350, 420), rng.uniform(440, 520)]
    elif kind == "single":
        tones = [rng.uniform(300, 500)]
    else:
        tones = list(rng.uniform(140, 260, 3))
    out = np.zeros(n)
    long_press = rng.uniform() < 0.4 or kind == "truck"
    presses = [(rng.uniform(0.1, 0.5), rng.uniform(0.8, max(2.5, seconds * 0.7)))] if long_press else []
    at = rng.uniform(0.1, 0.4)
    while not long_press and at < seconds - 0.3:
        dur = rng.uniform(0.12, 0.35)
        presses.append((at, dur))
        at += dur + rng.uniform(0.08, 0.6)
    for start, dur in presses:
        m = _n(dur)
        tone = sum(harmonic(np.full(m, f * rng.uniform(0.995, 1.005)), rng.uniform(0.5, 0.9), 14) for f in tones)
        tone = filt(tone, "bandpass", (200, rng.uniform(2500, 4500))) * fade(np.ones(m), 0.01)
        place(out, tone, start)
    words = {"two-tone": ("a car horn honking", "a car honking its horn"), "single": ("a car horn beeping", "a short honk of a horn"),
             "truck": ("a truck's loud horn", "a loud lorry horn blaring")}[kind]
    return reverb(rng, out, 0.8, 0.25), _pick(rng, *words)


def engine(rng, seconds, kind: str):
    """A combustion engine: pressure pulses at the firing frequency (rpm / 60 x cylinders / 2)
    through the exhaust's low-pass, plus mechanical noise modulated by each firing (Farnell
    ch. 46); idling, revving, a motorbike (1-2 cylinders, high rpm), a diesel truck (knock)."""
    n = _n(seconds)
    cyl = {"idle": 4, "revving": rng.choice([4, 6]), "motorcycle": rng.choice([1, 2]), "diesel": 6}[kind]
    if kind == "idle":
        rpm = rng.uniform(700, 1000) * (1 + 0.03 * curve(rng, n, 2, -1, 1))
    elif kind == "diesel":
        rpm = rng.uniform(600, 1100) * (1 + 0.05 * curve(rng, n, 1, -1, 1))
    else:
        base, top = (rng.uniform(900, 1500), rng.uniform(3500, 6000)) if kind == "revving" else (rng.uniform(1500, 2500), rng.uniform(6000, 9000))
        rpm = base + (top - base) * curve(rng, n, rng.uniform(0.5, 1.2), 0.0, 1.0) ** 2
    f = rpm / 60 * cyl / 2
    ph = (np.cumsum(f) / SR) % 1
    pulse = np.exp(-ph * rng.uniform(6, 15))  # each firing's pressure pulse
    tone = filt(harmonic(f, 1.0, 16), "lowpass", 1200) * 0.5
    mech = filt(rng.standard_normal(n), "bandpass", (800, 5000)) * pulse * (0.6 if kind == "diesel" else 0.15)
    out = filt(pulse - pulse.mean(), "lowpass", rng.uniform(250, 600), order=3) * 2 + tone + mech
    words = {"idle": ("a car engine idling", "an engine running at idle"), "revving": ("a car engine revving", "an engine accelerating"),
             "motorcycle": ("a motorcycle engine revving", "a motorbike accelerating"), "diesel": ("a diesel truck engine rumbling", "a truck idling")}[kind]
    return out, _pick(rng, *words)


def train(rng, seconds, kind: str):
    """A train: wheel sets crossing rail joints (pairs of clacks per bogie, spaced by speed and the
    car's geometry), a low rumble and screech, or a steam locomotive's chuffs."""
    n = _n(seconds)
    out = filt(coloured(rng, n, 2.0), "lowpass", 250) * 0.6
    if kind == "steam":
        rate = rng.uniform(2.0, 6.0)
        at = 0.0
        while at < seconds:
            place(out, burst(rng, 0.3, 0.01, rng.uniform(0.05, 0.12), (300, 3000)), at, rng.uniform(0.8, 1.2))
            at += 1 / rate
        out += 0.1 * filt(rng.standard_normal(n), "highpass", 4000)
        if rng.uniform() < 0.4:  # a whistle
            m = _n(min(1.5, seconds / 2))
            place(out, harmonic(np.full(m, rng.uniform(500, 900)), 1.5, 5) * fade(np.ones(m), 0.1), rng.uniform(0, seconds / 2), 0.3)
        return out, _pick(rng, "a steam train chugging", "a steam locomotive puffing", "a steam engine pulling out")
    v = rng.uniform(10, 35)  # m/s
    car, axle, bogie = 25.0, 2.5, 17.5  # metres
    clack = add(modes(rng.uniform(200, 1500, 4), rng.uniform(0.03, 0.1, 4), [1, .7, .5, .3], 0.2, rng), burst(rng, 0.02, 0.0003, 0.003, (1000, 5000)) * 0.5)
    t0 = -rng.uniform(0, car / v)
    while t0 < seconds:  # one car's four axles over a joint
        for off in (0, axle, bogie, bogie + axle):
            place(out, clack, t0 + off / v, rng.uniform(0.7, 1.0))
        t0 += car / v
    if kind == "passing":
        _, level = _passing(rng, n, seconds)
        out = out * (0.1 + level)
        text = _pick(rng, "a train passing by", "a train rushing past")
    else:
        text = _pick(rng, "a train rattling along the tracks", "the clickety-clack of a train", "riding on a train")
    if rng.uniform() < 0.3:
        out += 0.2 * shaped_noise(rng, n, np.full(n, rng.uniform(2000, 4000)), np.full(n, 80.0)) * curve(rng, n, 1, 0, 1)
    return out, text


def helicopter(rng, seconds, kind: str):
    """A helicopter: the main rotor's blade slaps at the blade-pass frequency (blades x rotor
    rate, 10-25 Hz) modulating broadband noise, the tail rotor's faster buzz and a turbine whine."""
    n = _n(seconds)
    bpf = rng.uniform(10, 25)
    ph = (np.cumsum(np.full(n, bpf)) / SR) % 1
    slap = np.exp(-ph * rng.uniform(8, 20))
    out = filt(rng.standard_normal(n), "bandpass", (80, 2000)) * slap + 0.6 * filt(slap - slap.mean(), "lowpass", 200)
    out += 0.2 * harmonic(np.full(n, bpf * rng.uniform(4, 6)), 1.2, 6)
    out += 0.05 * np.sin(phase(np.full(n, rng.uniform(3000, 6000))))
    text = _pick(rng, "a helicopter hovering", "a helicopter's rotor thumping")
    if kind == "flyover":
        doppler, level = _passing(rng, n, seconds)
        out = out * level
        text = _pick(rng, "a helicopter flying overhead", "a helicopter flying past")
    return reverb(rng, out, 1.0, 0.3), text


# ------------------------------------------------------------------------------------------------
# Crowds and voices
# ------------------------------------------------------------------------------------------------


def applause(rng, seconds, people: str):
    """Applause: each clapper a near-periodic stream of claps, a clap a band-passed noise burst
    whose centre (0.5-2.5 kHz) and width depend on the hand configuration (Peltola et al. 2007
    sec. 3); a crowd is tens to hundreds of clappers in a hall."""
    n = _n(seconds)
    count = {"one": 1, "group": int(rng.integers(4, 12)), "crowd": int(rng.integers(40, 150))}[people]
    out = np.zeros(n)
    start_all = rng.uniform(0, 0.3)
    for _ in range(count):
        centre = rng.uniform(600, 2500)
        clap = burst(rng, 0.06, 0.0008, rng.uniform(0.006, 0.02), (centre * 0.6, centre * 1.6))
        rate = rng.uniform(3.0, 6.0)
        at = start_all + rng.uniform(0, 1 / rate) + (rng.uniform(0, 0.5) if people == "crowd" else 0)
        while at < seconds:
            place(out, clap, at, rng.uniform(0.6, 1.0))
            at += 1 / rate * rng.uniform(0.9, 1.1)
    if people == "crowd":
        out *= np.minimum(1.0, np.arange(n) / SR / rng.uniform(0.3, 1.0))
    words = {"one": ("somebody clapping alone", "a single pair of hands clapping"), "group": ("a small group applauding", "a few listeners clapping"),
             "crowd": ("a crowd applauding", "applause from an audience")}[people]
    return reverb(rng, out, 1.2 if people == "crowd" else 0.5, 0.35), _pick(rng, *words)


def breath(rng: np.random.Generator, n: int, band: tuple[float, float], gain: float) -> np.ndarray:
    """An audible breath (in or out): ``n`` samples of band-passed noise under a sine swell."""
    return filt(rng.standard_normal(n), "bandpass", band) * np.sin(np.pi * np.linspace(0, 1, n)) * gain


def _voice(rng, f0: np.ndarray, vowel: str, scale: float, breath: float) -> np.ndarray:
    src = glottal(f0, rng, 0.02) + breath * rng.standard_normal(len(f0))
    return formant_filter(src, vowel, scale)


def laughter(rng, seconds, who: str):
    """Laughter: bouts of 'ha' syllables at 4-6 a second, each an aspirated onset and a voiced
    vowel, pitch falling across the bout, with an inhalation between bouts (source-filter)."""
    n = _n(seconds)
    f0_range, scale, rate = {"man": ((100, 170), 1.0, (4, 5.5)), "woman": ((200, 320), 1.17, (4.5, 6)),
                             "child": ((300, 450), 1.35, (5, 7))}[who]
    out = np.zeros(n)
    at = rng.uniform(0, 0.3)
    while at < seconds - 0.3:
        syll = int(rng.integers(3, 9))
        top = rng.uniform(*f0_range)
        vowel = _pick(rng, "a", "uh", "eh", "ae")
        for k in range(syll):
            d = 1 / rng.uniform(*rate)
            vd = d * rng.uniform(0.5, 0.7)
            m = _n(vd)
            f0 = np.full(m, top * (1 - 0.04 * k)) * np.linspace(1.05, 0.92, m)
            env = np.sin(np.pi * np.linspace(0, 1, m)) ** 0.7
            place(out, burst(rng, 0.06, 0.005, 0.03, (800, 5000)) * 0.3, at)
            place(out, _voice(rng, f0, vowel, scale, 0.05) * env, at + 0.03, rng.uniform(0.6, 1.0) * (1 - 0.06 * k))
            at += d
        m = _n(rng.uniform(0.2, 0.4))  # breath in
        place(out, breath(rng, m, (1000, 4000), 0.12), at)
        at += m / SR + rng.uniform(0.1, 0.6)
    words = {"man": ("a man laughing", "a man's hearty laugh"), "woman": ("a woman laughing", "a woman giggling"),
             "child": ("a child giggling", "a kid laughing")}[who]
    return reverb(rng, out, 0.4, 0.15), _pick(rng, *words)


def baby_cry(rng, seconds, kind: str):
    """An infant crying: 'waah' cries of 0.5-1.5 s at f0 350-600 Hz with a rise-fall contour,
    vibrato and rough subharmonics, formants of a small vocal tract (x1.5), gasps between."""
    n = _n(seconds)
    out = np.zeros(n)
    at = rng.uniform(0, 0.3)
    base = {"newborn": rng.uniform(450, 600), "wail": rng.uniform(350, 500), "whimper": rng.uniform(300, 420)}[kind]
    while at < seconds - 0.2:
        dur = rng.uniform(0.3, 0.6) if kind == "whimper" else rng.uniform(0.5, 1.5)
        m = _n(dur)
        u = np.linspace(0, 1, m)
        f0 = base * (1 + 0.25 * np.sin(np.pi * u) ** 0.5 - 0.1 * u) * (1 + 0.02 * np.sin(2 * np.pi * rng.uniform(5, 8) * u * dur))
        env = np.minimum(u / 0.08, 1) * np.minimum((1 - u) / 0.15, 1)
        v = _voice(rng, f0, _pick(rng, "a", "ae", "eh"), rng.uniform(1.45, 1.6), 0.1)
        if rng.uniform() < 0.4:  # roughness: a subharmonic
            v += 0.3 * _voice(rng, f0 / 2, "a", 1.5, 0.0)
        place(out, v * env, at, 0.5 if kind == "whimper" else 1.0)
        at += dur
        g = _n(rng.uniform(0.15, 0.35))
        place(out, breath(rng, g, (1500, 6000), 0.15), at)
        at += g / SR + rng.uniform(0.02, 0.2)
    words = {"newborn": ("a newborn baby crying", "a baby crying"), "wail": ("a baby wailing", "an infant crying loudly"),
             "whimper": ("a baby whimpering", "a fussy baby crying softly")}[kind]
    return reverb(rng, out, 0.4, 0.15), _pick(rng, *words)


def cough(rng, seconds, kind: str):
    """Coughing: each cough an explosive burst of turbulent noise through the vocal tract
    (sharp onset, 50-150 ms) followed (chesty) by a decaying voiced phase; 1-3 coughs per bout
    or a fit of 4-7, with a breath in between bouts."""
    n = _n(seconds)
    out = np.zeros(n)
    scale = rng.uniform(1.0, 1.2)
    f0 = rng.uniform(100, 240)
    at = rng.uniform(0.1, 0.4)
    while at < seconds - 0.3:
        count = int(rng.integers(4, 8)) if kind == "fit" else int(rng.integers(1, 4))
        for _ in range(count):
            length = rng.uniform(0.08, 0.18)
            noise = burst(rng, length + 0.05, 0.003, length / 3)
            x = formant_filter(noise, _pick(rng, "a", "uh", "ae"), scale, (200, 250, 300)) * 2
            if kind != "dry":
                m = _n(rng.uniform(0.08, 0.2))
                voiced = _voice(rng, np.full(m, f0) * np.linspace(1.1, 0.85, m), "uh", scale, 0.2) * np.exp(-np.linspace(0, 4, m))
                place(x, voiced, length * 0.4, 0.5)
            place(out, x, at, rng.uniform(0.7, 1.0))
            at += length + rng.uniform(0.1, 0.35) * (0.6 if kind == "fit" else 1)
        m = _n(rng.uniform(0.3, 0.6))
        place(out, breath(rng, m, (500, 3000), 0.1), at)
        at += m / SR + rng.uniform(0.3, 1.2)
    words = {"dry": ("someone coughing", "a dry cough"), "chesty": ("a man coughing", "a chesty cough"),
             "fit": ("a coughing fit", "someone coughing repeatedly")}[kind]
    return reverb(rng, out, 0.4, 0.15), _pick(rng, *words)


# ------------------------------------------------------------------------------------------------
# Household
# ------------------------------------------------------------------------------------------------


def typing(rng, seconds, kind: str):
    """Typing: each key a press click, the bottom-out thud through the keyboard's modes and a
    softer release; intervals log-normal (4-10 keys a second) with pauses between words and a
    heavier space bar. A typewriter adds a metallic type-bar strike and the end-of-line bell."""
    n = _n(seconds)
    out = np.zeros(n)
    if kind == "mechanical":
        fr, t60, click_gain, band = rng.uniform(800, 4000, 4), rng.uniform(0.01, 0.03, 4), 0.8, (2000, 9000)
    elif kind == "laptop":
        fr, t60, click_gain, band = rng.uniform(300, 1500, 3), rng.uniform(0.01, 0.02, 3), 0.2, (1000, 5000)
    else:
        fr, t60, click_gain, band = rng.uniform(1500, 6000, 5), rng.uniform(0.05, 0.2, 5), 0.6, (1500, 8000)
    keys_per_s = rng.uniform(4, 10) if kind != "typewriter" else rng.uniform(3, 6)
    at, chars = rng.uniform(0, 0.3), 0
    while at < seconds:
        space = rng.uniform() < 0.18
        g = 1.3 if space else rng.uniform(0.6, 1.0)
        key = modes(fr * (0.8 if space else rng.uniform(0.95, 1.05)), t60, 1 / (1 + np.arange(len(fr))), 0.15, rng)
        key = add(key, click_gain * burst(rng, 0.01, 0.0002, 0.001, band))
        place(out, key, at, g)
        place(out, key * 0.3, at + rng.uniform(0.05, 0.12))  # release
        chars += 1
        at += rng.lognormal(np.log(1 / keys_per_s), 0.35) + (rng.uniform(0.1, 0.5) if space and rng.uniform() < 0.3 else 0)
        if kind == "typewriter" and chars % int(rng.integers(25, 40)) == 0:
            place(out, modes([rng.uniform(2000, 3500)], [0.8], [0.5], 1.0, rng), at)  # the bell
            place(out, burst(rng, 0.4, 0.05, 0.1, (500, 4000)) * 0.5, at + 0.3)  # carriage return
            at += 0.8
    words = {"mechanical": ("typing on a mechanical keyboard", "clicky keyboard typing"), "laptop": ("typing on a laptop keyboard", "someone typing quietly"),
             "typewriter": ("an old typewriter clacking", "typing on a typewriter")}[kind]
    return reverb(rng, out, 0.3, 0.15), _pick(rng, *words)


def glass_break(rng, seconds, kind: str):
    """Breaking glass: an impact crack, then shards, each a few inharmonic high modes (2-12 kHz)
    ringing briefly, the first burst within tens of milliseconds and debris falling and bouncing
    for up to a second or two."""
    n = _n(seconds)
    out = np.zeros(n)
    at = rng.uniform(0.1, 0.6)
    big = kind == "window"
    place(out, burst(rng, 0.1, 0.0005, 0.01 if not big else 0.03, (500, 10000)), at, 2.0)
    if kind == "bottle":
        place(out, modes(rng.uniform(300, 900, 2), [0.05, 0.04], [1, .5], 0.15, rng), at, 1.0)
    shards = int(rng.integers(60, 200)) if big else int(rng.integers(15, 60))
    spread = rng.uniform(0.8, 2.0) if big else rng.uniform(0.3, 1.0)
    for _ in range(shards):
        fr = rng.uniform(2000, 12000, 3) * (0.6 if kind == "bottle" else 1.0)
        ring = modes(fr, rng.uniform(0.02, 0.3, 3), rng.uniform(0.3, 1, 3), 0.3, rng)
        t = at + (rng.exponential(0.03) if rng.uniform() < 0.5 else rng.uniform(0.05, spread))
        place(out, ring, t, rng.pareto(2.0) * 0.15 + 0.05)
    words = {"window": ("a window shattering", "glass smashing"), "bottle": ("a glass bottle breaking", "a bottle smashing on the ground"),
             "drop": ("a drinking glass breaking", "a glass falling and shattering")}[kind]
    return reverb(rng, out, 0.7, 0.25), _pick(rng, *words)


BELL_PARTIALS = ((0.5, 1.0), (1.0, 0.8), (1.2, 0.6), (1.5, 0.4), (2.0, 0.7), (2.5, 0.3), (3.0, 0.25), (4.1, 0.12), (5.4, 0.08))


def bell(rng: np.random.Generator, nominal: float, seconds: float) -> np.ndarray:
    """One stroke of a tuned bell (Rossing 1990 ch. 13): the partials above relative to the
    prime, detuned slightly, each decaying faster the higher it is."""
    prime = nominal / 2
    fr = [prime * r * rng.uniform(0.995, 1.005) for r, _ in BELL_PARTIALS]
    t60 = [min(12.0, 6.0 * (300 / f) ** 0.7) for f in fr]
    amps = [a * rng.uniform(0.7, 1.3) for _, a in BELL_PARTIALS]
    x = modes(fr, t60, amps, seconds, rng)
    return add(x, 0.3 * burst(rng, 0.02, 0.0003, 0.002, (1000, 8000)))


def church_bells(rng, seconds, kind: str):
    """Church bells: one large bell tolling every 2-4 s, a peal (rounds on 5-8 bells of a
    diatonic scale at 0.2-0.35 s a stroke), or a small hand bell rung quickly."""
    n = _n(seconds)
    out = np.zeros(n)
    if kind == "toll":
        nominal = rng.uniform(250, 500)
        at = rng.uniform(0, 0.5)
        while at < seconds:
            place(out, bell(rng, nominal, seconds - at + 0.01), at)
            at += rng.uniform(2.0, 4.0)
        text = _pick(rng, "a church bell tolling", "a single big bell ringing slowly")
    elif kind == "peal":
        count = int(rng.integers(5, 9))
        top = rng.uniform(600, 1000)
        steps = np.array([0, 2, 4, 5, 7, 9, 11, 12])[:count]
        nominals = top / 2 ** (steps[::-1] / 12)
        gap = rng.uniform(0.2, 0.35)
        at, k = rng.uniform(0, 0.3), 0
        order = list(range(count))
        while at < seconds:
            if k % count == 0 and k > 0 and rng.uniform() < 0.5:  # change ringing: swap a pair
                i = int(rng.integers(0, count - 1))
                order[i], order[i + 1] = order[i + 1], order[i]
            place(out, bell(rng, nominals[order[k % count]], min(3.0, seconds - at + 0.01)), at, 0.6)
            at += gap + (gap if (k + 1) % count == 0 else 0)
            k += 1
        text = _pick(rng, "church bells pealing", "a peal of church bells", "bells ringing from a church tower")
    else:
        nominal = rng.uniform(1200, 2400)
        at = rng.uniform(0, 0.3)
        while at < seconds:
            place(out, bell(rng, nominal, 1.5) * 0.5, at)
            at += rng.uniform(0.15, 0.3)
        text = _pick(rng, "a hand bell ringing", "a small bell being rung")
    return reverb(rng, out, 2.0, 0.35), text


# ------------------------------------------------------------------------------------------------
# The registry
# ------------------------------------------------------------------------------------------------


def _bind(fn, arg) -> Synth:
    def synth(rng, seconds):
        return fn(rng, seconds, arg)

    synth.__doc__ = fn.__doc__
    return synth


SYNTHS: dict[str, dict[str, Synth]] = {
    "rain": {"drops": rain_drops, "roof": rain_roof, "window": rain_window},
    "wind": {"gusts": wind_gusts, "howl": wind_howl, "leaves": wind_leaves},
    "thunder": {"close": thunder_close, "distant": thunder_distant},
    "waves": {"surf": waves_surf, "lapping": waves_lapping},
    "fire": {"campfire": fire_campfire, "fireplace": fire_fireplace},
    "footsteps": {s: _bind(footsteps, s) for s in SURFACES},
    "knock": {d: _bind(knock, d) for d in ("wood", "hollow", "metal")},
    "clock": {k: _bind(clock, k) for k in ("wall", "watch", "grandfather")},
    "siren": {k: _bind(siren, k) for k in ("wail", "yelp", "hi-lo")},
    "car horn": {k: _bind(car_horn, k) for k in ("two-tone", "single", "truck")},
    "engine": {k: _bind(engine, k) for k in ("idle", "revving", "motorcycle", "diesel")},
    "train": {k: _bind(train, k) for k in ("rails", "passing", "steam")},
    "helicopter": {k: _bind(helicopter, k) for k in ("hover", "flyover")},
    "applause": {k: _bind(applause, k) for k in ("one", "group", "crowd")},
    "laughter": {k: _bind(laughter, k) for k in ("man", "woman", "child")},
    "crying baby": {k: _bind(baby_cry, k) for k in ("newborn", "wail", "whimper")},
    "cough": {k: _bind(cough, k) for k in ("dry", "chesty", "fit")},
    "typing": {k: _bind(typing, k) for k in ("mechanical", "laptop", "typewriter")},
    "glass breaking": {k: _bind(glass_break, k) for k in ("window", "bottle", "drop")},
    "church bells": {k: _bind(church_bells, k) for k in ("toll", "peal", "hand")},
}


def synthesize(cls: str, source: str, rng: np.random.Generator, seconds: float) -> tuple[np.ndarray, str]:
    """One draw of ``cls`` by ``source`` (:data:`SYNTHS`): float32 mono at 24 kHz, exactly
    ``seconds`` long, faded in and out (20 ms), peaking at 0.9; and its description."""
    audio, words = SYNTHS[cls][source](rng, seconds)
    audio = np.nan_to_num(np.asarray(audio, dtype=np.float64)[: _n(seconds)])
    if len(audio) < _n(seconds):
        audio = np.pad(audio, (0, _n(seconds) - len(audio)))
    audio = fade(audio - audio.mean())
    peak = float(np.abs(audio).max())
    return (audio / max(peak, 1e-6) * 0.9).astype(np.float32), words
