"""Pictures of evaluation reports: log-mel spectrograms of a few clips per setting, and the metrics
against the guidance scale where a run swept one (``audioguide eval tts|t2a --plots DIR``).

Pure functions from a report (:class:`~audioguide.evaluation.tts.TTSReport`,
:class:`~audioguide.evaluation.sound.T2AReport`) to PNG files; the evaluators only keep the clips
(``samples=``). The curves are computed first as plain data (:func:`tts_curves`,
:func:`t2a_curves`) and then drawn (:func:`draw_curves`), so what a picture shows can be checked
without looking at it.

matplotlib is optional (``pip install "audioguide[plots]"``) and imported only when something is
drawn. Figures are drawn on matplotlib's Agg canvas directly, never through pyplot, so drawing
opens no window, needs no display and leaves the process's matplotlib backend (a notebook's, say)
as it was. Every file is written atomically.

The reports carry no confidence intervals, so the curves have no error bars: with few rows per
setting, read small differences between points as noise.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audioguide.core import AudioguideError

SAMPLES_PER_SETTING = 3
"""Clips per setting the CLI keeps for spectrograms (the first rows, the same under every setting)."""

INSTALL_HINT = 'pip install "audioguide[plots]"'

N_MELS = 80
DPI = 100
PERCENT = (0.0, 100.0)
REFERENCE_STYLES = ("--", ":", "-.", (0, (6, 2, 1, 2, 1, 2)))


def require_matplotlib() -> None:
    """Fail with one line naming the extra to install where matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise AudioguideError(f"drawing plots needs matplotlib, which is not installed: {INSTALL_HINT}") from None


def prepare_dir(path: str | Path) -> Path:
    """Create the output directory (before any work, so a bad path fails early, in one line)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AudioguideError(f"cannot create the plots directory {path}: {e.strerror or e}") from None
    return path


def slug(label: str) -> str:
    """A setting's label as part of a file name (as ``--save-wavs`` names its folders)."""
    from audioguide.evaluation.sound import _slug

    return _slug(label)


# -- the data of a picture ----------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One curve: ``y`` against ``x`` (sorted by ``x``); ``default`` is the index of the recipe's own
    setting on it, marked in the picture, or None."""

    label: str
    x: tuple[float, ...]
    y: tuple[float, ...]
    default: int | None = None


@dataclass(frozen=True)
class Panel:
    """One set of axes: its y label, its curves, horizontal reference lines ``(label, y)`` and the
    y range where fixed (percentages: 0 to 100)."""

    ylabel: str
    lines: tuple[Line, ...]
    references: tuple[tuple[str, float], ...] = ()
    ylim: tuple[float, float] | None = None


@dataclass(frozen=True)
class Curves:
    """A figure of panels side by side sharing one x axis quantity."""

    title: str
    xlabel: str
    panels: tuple[Panel, ...]


def _finite(values) -> bool:
    return any(not math.isnan(v) for v in values)


def _line(label: str, points: Sequence[tuple[float, float, bool]]) -> Line:
    """A line from ``(x, y, is_default)`` points, sorted by x."""
    points = sorted(points, key=lambda p: p[0])
    default = next((i for i, p in enumerate(points) if p[2]), None)
    return Line(label, tuple(float(p[0]) for p in points), tuple(float(p[1]) for p in points), default)


def swept_conditions(report) -> list[str]:
    """The conditions a TTS report's settings sweep, read from their labels (``text=1.5``)."""
    base = _tts_base(report)
    out: list[str] = []
    for r in report.results:
        name, sep, _ = r.label.partition("=")
        if sep and name in base and name not in out:
            out.append(name)
    return out


def _tts_base(report) -> dict[str, float]:
    try:
        return dict(report.result(report.default).scales)
    except KeyError:
        return dict(report.results[0].scales) if report.results else {}


def tts_curves(report, conditions: Sequence[str] | None = None) -> list[Curves]:
    """WER (one line per split) and, where measured, speaker accuracy against the scale of each swept
    condition (default: :func:`swept_conditions`), the real recordings as dashed references.

    A condition's curve has every setting whose other conditions are at the recipe's scales: the swept
    values, the recipe's default and, with a single condition, no guidance (scale 1). Percentages.
    """
    base = _tts_base(report)
    out = []
    for name in swept_conditions(report) if conditions is None else conditions:
        if name not in base:
            raise AudioguideError(f"cannot draw {name!r}: the report's settings guide on {', '.join(base) or 'nothing'}")
        on_curve = [r for r in report.results
                    if name in r.scales and all(r.scales.get(n) == w for n, w in base.items() if n != name)]
        if len({r.scales[name] for r in on_curve}) < 2:
            continue  # nothing swept on this axis
        panels = []
        wer = [_line(split, [(r.scales[name], 100 * r.wer(split), r.label == report.default) for r in on_curve])
               for split in report.splits]
        wer = [line for line in wer if _finite(line.y)]
        if wer:
            refs = () if report.real is None else tuple(
                (f"{report.real.label}, {split}", 100 * report.real.wer(split)) for split in report.splits
                if not math.isnan(report.real.wer(split)))
            panels.append(Panel("WER (%)", tuple(wer), refs, (0.0, max(100.0, *(y for line in wer for y in line.y if not math.isnan(y))))))
        acc = _line("all splits", [(r.scales[name], 100 * r.speaker_accuracy(), r.label == report.default) for r in on_curve])
        if _finite(acc.y):
            refs = () if report.real is None or math.isnan(report.real.speaker_accuracy()) else (
                (report.real.label, 100 * report.real.speaker_accuracy()),)
            panels.append(Panel("speaker accuracy (%)", (acc,), refs, PERCENT))
        if panels:
            out.append(Curves(f"{report.recipe}: WER vs {name} scale", f"{name} guidance scale", tuple(panels)))
    return out


def uniform_cfg(scales: dict[str, float]) -> float | None:
    """The one scale of every condition (what ``--cfg`` sets), or None where they differ or there are none."""
    values = set(scales.values())
    return next(iter(values)) if len(values) == 1 else None


def t2a_curves(report) -> Curves | None:
    """Prompt adherence and, where measured, FD against the CFG scale, one line per (rescale, steps)
    of the report's settings; None unless the settings have at least two CFG scales.

    Settings whose conditions have different scales have no single CFG value and are left out. A
    setting without guidance (every scale 1) is on every line of its steps: rescaling is a no-op
    there (:func:`~audioguide.evaluation.sound.sweep_settings` keeps one such setting). The real
    clips' adherence and chance (one over the judge's classes) are references. Adherence in %.
    """
    points = [(uniform_cfg(r.scales), r) for r in report.results]
    points = [(w, r) for w, r in points if w is not None]
    if len({w for w, _ in points}) < 2:
        return None
    groups: dict[tuple[float | None, int | None], list] = {}
    for w, r in points:
        if w != 1.0:
            groups.setdefault((r.rescale, r.steps), []).append((w, r))
    for w, r in points:  # no guidance: on every line of its steps (or a line of its own)
        if w == 1.0:
            keys = [k for k in groups if k[1] == r.steps] or [(r.rescale, r.steps)]
            for k in keys:
                groups.setdefault(k, []).append((w, r))

    def name(key) -> str:
        rescale, steps = key
        return ", ".join([f"rescale {'-' if rescale is None else f'{rescale:g}'}"] + ([f"{steps} steps"] if steps is not None else []))

    keys = sorted(groups, key=lambda k: (k[1] if k[1] is not None else -1, k[0] if k[0] is not None else -1))
    adherence = tuple(_line(name(k), [(w, 100 * r.adherence(), r.label == report.default) for w, r in groups[k]]) for k in keys)
    refs = []
    if report.real is not None and not math.isnan(report.real.adherence()):
        refs.append((report.real.label, 100 * report.real.adherence()))
    classes = report.judge.get("classes") if isinstance(report.judge, dict) else None
    if classes:
        refs.append((f"chance (1/{classes})", 100 / classes))
    panels = [Panel("prompt adherence, top-1 (%)", adherence, tuple(refs), PERCENT)]
    fd = tuple(_line(name(k), [(w, r.fd, r.label == report.default) for w, r in groups[k]]) for k in keys)
    fd = tuple(line for line in fd if _finite(line.y))
    if fd:
        panels.append(Panel("FD to the real clips (lower is more realistic)", fd))
    return Curves(f"{report.recipe}: adherence and FD vs CFG scale", "CFG scale (every condition)", tuple(panels))


# -- drawing ------------------------------------------------------------------------------------


def _figure(width: float, height: float):
    """A Figure on the Agg canvas (no pyplot, no global backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    from audioguide.core import atomic_write

    with atomic_write(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a glyph the font lacks (e.g. in a caption)
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def draw_curves(curves: Curves, path: str | Path) -> Path:
    """Draw ``curves`` (one panel per metric, side by side) as a PNG at ``path``."""
    require_matplotlib()
    n = len(curves.panels)
    fig = _figure(5.2 * n + 0.6, 4.2)
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, panel in zip(axes, curves.panels):
        colors = {}
        for line in panel.lines:
            (drawn,) = ax.plot(line.x, line.y, marker="o", label=line.label)
            colors[line.label] = drawn.get_color()
            if line.default is not None:
                ax.plot([line.x[line.default]], [line.y[line.default]], marker="*", markersize=15, linestyle="none",
                        color=drawn.get_color(), markeredgecolor="black")
        for i, (label, y) in enumerate(panel.references):
            ax.axhline(y, linestyle=REFERENCE_STYLES[i % len(REFERENCE_STYLES)], linewidth=1.2, color="0.3", label=label)
        if any(line.default is not None for line in panel.lines):
            ax.plot([], [], marker="*", markersize=12, linestyle="none", color="white", markeredgecolor="black",
                    label="recipe default")
        if panel.ylim is not None:
            lo, hi = panel.ylim
            ax.set_ylim(lo - 0.03 * (hi - lo), hi + 0.03 * (hi - lo))
        ax.set_xlabel(curves.xlabel)
        ax.set_ylabel(panel.ylabel)
        ax.set_xticks(sorted({x for line in panel.lines for x in line.x}))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(curves.title, parse_math=False)
    return _save(fig, Path(path))


def spectrogram(wav: np.ndarray, sample_rate: int) -> tuple[np.ndarray, float, float]:
    """Log-mel ``[N_MELS, frames]`` as drawn (our :func:`~audioguide.audio.log_mel`: windows of about
    46 ms, a quarter hop, 0 Hz to Nyquist), the hop in seconds and the top of the mel scale in Hz."""
    import torch

    from audioguide.audio import log_mel

    n_fft = 2 ** max(8, round(math.log2(0.046 * sample_rate)))
    x = torch.from_numpy(np.asarray(wav, dtype=np.float32).reshape(1, -1))
    if x.shape[1] <= n_fft // 2:  # too short for the reflected padding of a centred frame
        x = torch.nn.functional.pad(x, (0, n_fft // 2 + 1 - x.shape[1]))
    mel = log_mel(x, sample_rate, n_fft=n_fft, hop=n_fft // 4, n_mels=N_MELS)[0].numpy()
    return mel, (n_fft // 4) / sample_rate, sample_rate / 2


def mel_centres(fmax: float) -> np.ndarray:
    """Centre frequency in Hz of each of the N_MELS bins of :func:`spectrogram` (librosa's Slaney scale)."""
    import librosa

    return librosa.mel_frequencies(N_MELS + 2, fmin=0.0, fmax=fmax)[1:-1]


def _mel_ticks(fmax: float) -> tuple[list[float], list[str]]:
    """Positions (in mel bins) and Hz labels for a few bins, from the bins' centre frequencies."""
    centres = mel_centres(fmax)
    bins = np.linspace(0, N_MELS - 1, 6).round().astype(int)
    return [float(b) + 0.5 for b in bins], [f"{centres[b]:.0f}" for b in bins]


def draw_spectrograms(samples: Sequence, title: str, path: str | Path, limits: tuple[float, float] | None = None) -> Path:
    """Log-mel spectrograms of ``samples`` (:class:`~audioguide.evaluation.tts.Sample`), one row each,
    time in seconds across (one scale for all), mel bins up (labelled with their centre frequency in
    Hz), as a PNG.
    ``limits`` fixes the colour scale (natural-log mel energy), so pictures can be compared."""
    require_matplotlib()
    if not samples:
        raise AudioguideError("no samples to draw")
    specs = [spectrogram(s.wav, s.sample_rate) for s in samples]
    vmin, vmax = limits or _limits([m for m, _, _ in specs])
    fig = _figure(8.5, 0.4 + 2.3 * len(samples))
    axes = fig.subplots(len(samples), 1, squeeze=False)[:, 0]
    longest = max(max(len(s.wav) / s.sample_rate for s in samples), 0.01)  # one time scale: lengths compare at a glance
    image = None
    for ax, s, (mel, hop_s, fmax) in zip(axes, samples, specs):
        # frame k is centred on k * hop
        image = ax.imshow(mel, origin="lower", aspect="auto", interpolation="nearest", cmap="magma", vmin=vmin, vmax=vmax,
                          extent=(-hop_s / 2, (mel.shape[1] - 0.5) * hop_s, 0.0, float(N_MELS)))
        ax.set_xlim(0.0, longest)
        ticks, labels = _mel_ticks(fmax)
        ax.set_yticks(ticks, labels)
        ax.set_ylabel("mel bin (Hz)")
        text = s.text if len(s.text) <= 70 else s.text[:67] + "..."
        ax.set_title(f"{s.row_id}: {text}", fontsize="small", loc="left", parse_math=False)
    axes[-1].set_xlabel("time (s)")
    fig.colorbar(image, ax=list(axes), label="log mel energy", shrink=0.9)
    fig.suptitle(title, parse_math=False)
    return _save(fig, Path(path))


def _limits(mels: Sequence[np.ndarray], span: float = 12.0) -> tuple[float, float]:
    """A colour scale from the loudest bin down ``span`` (natural log, about 52 dB of power)."""
    top = max(float(m.max()) for m in mels)
    bottom = min(float(m.min()) for m in mels)
    return max(bottom, top - span), top


def _spectrogram_files(report, out_dir: Path, describe) -> list[Path]:
    """One picture per setting (in the report's order, real audio last), on one colour scale."""
    by_setting: dict[str, list] = {}
    for s in report.samples:
        by_setting.setdefault(s.setting, []).append(s)
    if not by_setting:
        return []
    limits = _limits([spectrogram(s.wav, s.sample_rate)[0] for s in report.samples])
    paths = []
    for i, (label, samples) in enumerate(by_setting.items(), start=1):
        title = f"{report.recipe}: {label}" + (f" ({d})" if (d := describe(label)) else "")
        paths.append(draw_spectrograms(samples, title, out_dir / f"spectrograms-{i:02d}-{slug(label)}.png", limits))
    return paths


def write_tts_plots(report, out_dir: str | Path, conditions: Sequence[str] | None = None) -> list[Path]:
    """The pictures of a TTS report in ``out_dir``: ``spectrograms-NN-<setting>.png`` for the kept
    clips and ``wer-vs-<condition>.png`` for each swept condition (see :func:`tts_curves`)."""
    require_matplotlib()
    out_dir = prepare_dir(out_dir)
    results = {r.label: r for r in [*report.results, *([report.real] if report.real is not None else [])]}

    def describe(label: str) -> str:
        r = results.get(label)
        scales = " ".join(f"{n}={w:g}" for n, w in r.scales.items()) if r is not None else ""
        return "" if scales == label else scales

    paths = _spectrogram_files(report, out_dir, describe)
    for curves in tts_curves(report, conditions):
        name = curves.xlabel.split(" ")[0]
        paths.append(draw_curves(curves, out_dir / f"wer-vs-{slug(name)}.png"))
    return paths


def write_t2a_plots(report, out_dir: str | Path) -> list[Path]:
    """The pictures of a text-to-audio report in ``out_dir``: ``spectrograms-NN-<setting>.png`` for
    the kept clips and ``adherence-fd-vs-cfg.png`` where the settings have two or more CFG scales
    (see :func:`t2a_curves`)."""
    require_matplotlib()
    out_dir = prepare_dir(out_dir)
    results = {r.label: r for r in report.results}

    def describe(label: str) -> str:
        r = results.get(label)
        if r is None:
            return ""
        w = uniform_cfg(r.scales)
        cfg = f"cfg {w:g}" if w is not None else " ".join(f"{n}={v:g}" for n, v in r.scales.items())
        return ", ".join([cfg, f"rescale {r.rescale:g}"] + ([f"{r.steps} steps"] if r.steps is not None else []))

    paths = _spectrogram_files(report, out_dir, describe)
    curves = t2a_curves(report)
    if curves is not None:
        paths.append(draw_curves(curves, out_dir / "adherence-fd-vs-cfg.png"))
    return paths
