"""Sound evaluation: prompt adherence, realism and speed of a text-to-audio recipe across guidance settings.

For every setting (CFG scale, CFG-rescale phi, sampler steps) and every held-out row of a captioned
sound corpus, the recipe generates from ``row.caption`` for the row's duration, and three numbers
are measured:

* **prompt adherence**: top-1 accuracy of a sound classifier naming the row's class
  (``row.extra["label"]``: "dog", "piano", "man speaking", ...). The judge is the clip classifier
  of :mod:`audioguide.evaluation.classifier` trained **only on real corpus audio** (the training
  split), never on generated audio, which would teach it the generator's artefacts instead of the
  classes. It plays the part of the pretrained audio tagger behind the "KL" and classifier scores
  of AudioGen / AudioLDM (or of CLAP's text-audio score), trained offline on the corpus' own
  classes. Its accuracy on the real held-out clips is the ceiling a generator is compared with.
* **realism**: the Fréchet distance between Gaussians fitted to the judge's embeddings (its hidden
  layer, :meth:`~audioguide.evaluation.classifier.ClipClassifier.embed`) of the generated clips and
  of the rows' real audio: FID (Heusel et al. 2017, eq. 6) with the embedding of FAD (Kilgour et al.
  2019, who use VGGish) replaced by the judge's. Lower is more realistic; the estimate is biased
  upwards for few clips (the covariances are estimated), so compare settings at equal numbers of
  clips, as here, where every setting generates the same rows.
* **real-time factor**: synthesis wall time over seconds of audio produced (below 1 is faster than
  real time).

Row ``i`` gets seed ``seed + i`` under every setting, so settings are compared on paired samples.
Rows that share one audio file (several captions of one effect) are one real clip, counted once in
the real reference and, for training, in the judge.
"""

from __future__ import annotations

import itertools
import math
import re
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from audioguide.core import AudioguideError
from audioguide.evaluation.classifier import (
    SAMPLE_RATE,
    ClipClassifier,
    TrainConfig,
    accuracy_by_label,
    clip_features,
    file_features,
    fit,
)
from audioguide.evaluation.tts import Sample, fmt_num, fmt_pct, fmt_scale, real_time_factor
from audioguide.manifest import Row
from audioguide.recipes import call_policy, sampler_config

KIND = "sound-classifier"

Setting = tuple[str, dict[str, float]]
"""A labelled setting: ``(label, {"cfg": w, "rescale": phi, "steps": n})``; an absent key is the recipe's."""

DEFAULT_LABEL = "recipe default"
REAL_LABEL = "real audio"
SETTING_KEYS = ("cfg", "rescale", "steps")


def row_label(row: Row) -> str | None:
    """The class of a corpus row (``extra["label"]``), or None."""
    label = row.extra.get("label")
    return str(label) if label not in (None, "") else None


# -- the judge ----------------------------------------------------------------------------------


def clip_rows(rows: Sequence[Row], per_class: int | None = None) -> list[Row]:
    """Rows with audio and a label, one per audio file (the first in manifest order), at most
    ``per_class`` per class."""
    seen: set[Path] = set()
    counts: dict[str, int] = {}
    out = []
    for row in rows:
        label = row_label(row)
        if row.audio is None or label is None:
            continue
        key = row.audio.resolve()
        if key in seen:
            continue
        seen.add(key)
        counts[label] = counts.get(label, 0) + 1
        if per_class is None or counts[label] <= per_class:
            out.append(row)
    return out


def row_features(
    rows: Sequence[Row], per_class: int | None = None, on_item: Callable[[int, int], None] | None = None
) -> tuple[Tensor, list[str]]:
    """Features and classes of the real clips of ``rows`` (see :func:`clip_rows`)."""
    chosen = clip_rows(rows, per_class)
    return file_features([r.audio for r in chosen], on_item), [row_label(r) for r in chosen]


def train_sound_classifier(
    rows: Sequence[Row], seed: int = 0, config: TrainConfig = TrainConfig(), per_class: int | None = None,
    on_item: Callable[[int, int], None] | None = None,
) -> ClipClassifier:
    """Train the sound-class judge on the real clips of ``rows`` (each audio file once, at most
    ``per_class`` per class in manifest order); classes are ``row.extra["label"]``."""
    feats, labels = row_features(rows, per_class, on_item)
    if not labels:
        raise AudioguideError("no rows with both 'audio' and a 'label' to train a sound classifier on")
    clf = fit(feats, labels, seed, config, KIND)
    clf.config["per_class"] = per_class
    return clf


def load_sound_classifier(path: str | Path) -> ClipClassifier:
    """A checkpoint written by :func:`train_sound_classifier` (``audioguide eval sounds``)."""
    return ClipClassifier.load(path, KIND)


@dataclass(frozen=True)
class SoundAccuracy:
    overall: float
    items: int
    per_class: dict[str, tuple[float, int]]  # class -> (accuracy, clips)


def held_out_accuracy(
    clf: ClipClassifier, rows: Sequence[Row], per_class: int | None = None,
    on_item: Callable[[int, int], None] | None = None,
) -> SoundAccuracy:
    """Top-1 accuracy on real held-out clips, overall and per class: the sanity number (and ceiling)
    of the judge. Classes the judge was not trained on count as misses."""
    feats, labels = row_features(rows, per_class, on_item)
    if not labels:
        raise AudioguideError("no held-out rows with both 'audio' and a 'label'")
    overall, per = accuracy_by_label(clf.predict_features(feats), labels)
    return SoundAccuracy(overall, len(labels), per)


# -- realism ------------------------------------------------------------------------------------


def _moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if x.ndim != 2 or len(x) == 0:
        raise AudioguideError(f"a Fréchet distance needs a non-empty [N, D] set of embeddings, got shape {x.shape}")
    mu = x.mean(0)
    sigma = np.cov(x, rowvar=False) if len(x) > 1 else np.zeros((x.shape[1], x.shape[1]))
    return mu, np.atleast_2d(sigma)


def frechet_distance(emb_a: np.ndarray | Tensor, emb_b: np.ndarray | Tensor) -> float:
    """Fréchet (2-Wasserstein) distance between Gaussians fitted to two sets of embeddings
    (Heusel et al. 2017, eq. 6; Kilgour et al. 2019):
    ``||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))``.

    ``Tr((S_a S_b)^(1/2))`` comes from ``scipy.linalg.sqrtm``, dropping the tiny imaginary part that
    rounding leaves. With fewer clips than dimensions the covariances are rank-deficient and their
    product singular; ``sqrtm`` still copes in practice, but where its root is not finite or has a
    large imaginary part the trace is taken from the similar, symmetric positive semi-definite
    ``S_a^(1/2) S_b S_a^(1/2)`` instead (the sum of the square roots of its eigenvalues), which
    is real by construction. One clip gives a zero covariance. The result is clamped at 0 (rounding).
    """
    from scipy.linalg import LinAlgWarning, sqrtm

    a = np.asarray(emb_a.detach().cpu() if isinstance(emb_a, Tensor) else emb_a, dtype=np.float64)
    b = np.asarray(emb_b.detach().cpu() if isinstance(emb_b, Tensor) else emb_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise AudioguideError(f"embeddings must be [N, D] with one D, got {a.shape} and {b.shape}")
    (mu_a, s_a), (mu_b, s_b) = _moments(a), _moments(b)
    with warnings.catch_warnings():  # a singular product is expected with few clips; checked below
        warnings.simplefilter("ignore", LinAlgWarning)
        root = np.asarray(sqrtm(s_a @ s_b))
    finite = bool(np.all(np.isfinite(root)))
    if finite and np.iscomplexobj(root) and np.abs(root.imag).max() > 1e-3 * max(np.abs(root.real).max(), 1e-12):
        finite = False
    if finite:
        tr_root = float(np.trace(root).real)
    else:
        w, v = np.linalg.eigh(s_a)
        half = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
        tr_root = float(np.sqrt(np.clip(np.linalg.eigvalsh(half @ s_b @ half), 0, None)).sum())
    d = float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2.0 * tr_root)
    return max(d, 0.0)


# -- settings -----------------------------------------------------------------------------------


def parse_grid(text: str | None, option: str, integer: bool = False) -> list[float]:
    """``"1,3,5"`` as ``[1.0, 3.0, 5.0]`` (``integer``: whole numbers); None or "" is no grid.
    A one-line error names the option and the bad item."""
    if text is None or not text.strip():
        return []
    out = []
    for item in text.split(","):
        if not item.strip():
            continue
        try:
            v = float(item)
            if not math.isfinite(v) or (integer and v != int(v)):
                raise ValueError
        except ValueError:
            what = "whole numbers" if integer else "numbers"
            raise AudioguideError(f"{option} expects {what} separated by commas, e.g. {option} 1,2, got {item.strip()!r}") from None
        out.append(float(int(v)) if integer else v)
    return out


def resolve_setting(recipe, setting: Mapping[str, float]) -> tuple[dict[str, float], float, int | None]:
    """The guidance scales, rescale phi and sampler steps a setting runs with on ``recipe`` (its own
    where the setting says nothing), validated by the recipe's own policy and sampler configs."""
    unknown = sorted(set(setting) - set(SETTING_KEYS))
    if unknown:
        raise AudioguideError(f"unknown setting key(s) {', '.join(unknown)}; a setting takes {', '.join(SETTING_KEYS)}")
    if recipe.model is None or recipe.sampler is None:
        raise AudioguideError(f"recipe {recipe.name!r} has no generator (it trains a representation); evaluate a recipe with a [model]")
    policy = call_policy(recipe, cfg=setting.get("cfg"), rescale=setting.get("rescale"))  # what the pipeline would refuse
    steps = getattr(recipe.sampler.config, "steps", None)
    if "steps" in setting:
        n = setting["steps"]
        if n != int(n) or n < 1:
            raise AudioguideError(f"steps must be a whole number >= 1, got {n:g}")
        steps = sampler_config(recipe, int(n)).steps
    return dict(policy.scales), float(policy.rescale), steps


def _key(resolved: tuple[dict[str, float], float, int | None]) -> tuple:
    scales, rescale, steps = resolved
    if all(w == 1.0 for w in scales.values()):
        rescale = 0.0  # with no guidance the guided prediction is the conditional one: rescale is a no-op
    return tuple(sorted(scales.items())), rescale, steps


def sweep_settings(recipe, cfg: Sequence[float] = (), rescale: Sequence[float] = (), steps: Sequence[float] = ()) -> list[Setting]:
    """Settings to compare: the recipe's own (scales, rescale, steps) first, then the grid
    ``cfg x rescale x steps`` over the axes given (the others at the recipe's), labelled by the
    swept values, e.g. ``cfg=5 rescale=0.7``. A setting that runs the same as an earlier one is
    dropped (the earlier label is kept); with every scale at 1, settings differing only in rescale
    are the same. Every setting is validated against the recipe."""
    axes = [(name, list(values)) for name, values in (("cfg", cfg), ("rescale", rescale), ("steps", steps)) if len(values)]
    candidates: list[Setting] = [(DEFAULT_LABEL, {})]
    for combo in itertools.product(*(values for _, values in axes)):
        setting = {name: (int(v) if name == "steps" else float(v)) for (name, _), v in zip(axes, combo)}
        candidates.append((" ".join(f"{n}={fmt_scale(v)}" for n, v in setting.items()), setting))
    out: list[Setting] = []
    seen: set[tuple] = set()
    for label, setting in candidates:
        key = _key(resolve_setting(recipe, setting))
        if key not in seen:
            seen.add(key)
            out.append((label, setting))
    return out


# -- evaluation ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    row_id: str
    label: str  # the row's class
    kind: str | None  # music / effect / speech, where the manifest says
    predicted: str
    seed: int | None  # None for real audio
    seconds: float
    synthesis_seconds: float | None  # None for real audio


@dataclass(frozen=True)
class SettingResult:
    label: str
    scales: dict[str, float]  # what ran: guidance scales, rescale phi, sampler steps (empty / None for real audio)
    rescale: float | None
    steps: int | None
    items: tuple[Item, ...]
    fd: float  # Fréchet distance to the real clips' embeddings (nan where there is no real audio)

    def adherence(self, label: str | None = None, kind: str | None = None) -> float:
        """Top-1 accuracy of the judge naming the requested class (of one class / kind)."""
        hits = [it.predicted == it.label for it in self.items
                if (label is None or it.label == label) and (kind is None or it.kind == kind)]
        return float(np.mean(hits)) if hits else float("nan")

    @property
    def rtf(self) -> float:
        return real_time_factor(self.items)


@dataclass(frozen=True)
class T2AReport:
    recipe: str
    results: tuple[SettingResult, ...]
    real: SettingResult | None = None
    default: str = DEFAULT_LABEL
    judge: dict = field(default_factory=dict)  # the classifier's config (train items, held-out accuracy, ...)
    notes: tuple[str, ...] = ()
    samples: tuple[Sample, ...] = ()  # the first rows' clips of every setting (and real clips), where kept

    def result(self, label: str) -> SettingResult:
        for r in self.results:
            if r.label == label:
                return r
        raise KeyError(label)

    def markdown(self, title: str | None = None) -> str:
        return markdown(self, title)


def held_out_rows(rows: Sequence[Row], per_class: int | None = None) -> list[Row]:
    """Rows with a caption and a label, at most ``per_class`` per class, in manifest order."""
    counts: dict[str, int] = {}
    out = []
    for row in rows:
        label = row_label(row)
        if label is None or not (row.caption or "").strip():
            continue
        counts[label] = counts.get(label, 0) + 1
        if per_class is None or counts[label] <= per_class:
            out.append(row)
    return out


def _slug(label: str) -> str:
    return re.sub(r"[^\w.=-]+", "_", label).strip("_") or "setting"


def evaluate_t2a(
    pipe, rows: Sequence[Row], classifier: ClipClassifier, settings: Sequence[Setting],
    on_item: Callable[[int, int], None] | None = None, seconds: float | None = None, *,
    seed: int = 0, per_class: int | None = None, wav_dir: str | Path | None = None, samples: int = 0,
) -> T2AReport:
    """Generate every held-out row under every setting and judge it (see the module docstring).

    ``pipe`` is a t2a :class:`~audioguide.pipeline.Pipeline` (or anything with ``recipe``,
    ``sample_rate`` and the same call); ``rows`` are captioned rows with ``extra["label"]`` (rows
    without either are skipped), at most ``per_class`` per class. A row lasts its ``duration``
    clipped to the recipe's ``[min_seconds, max_seconds]`` (the recipe's ``seconds`` where it has
    none), or ``seconds`` for every row. ``wav_dir`` also keeps the clips, as
    ``<wav_dir>/<setting>/<row id>.wav``. ``samples`` keeps the clips of the first that many rows of
    every setting (and the real clips of those rows) in the report, for pictures
    (:mod:`audioguide.evaluation.plots`). Everything is validated before any synthesis.
    """
    from audioguide.audio import read_audio, write_wav

    recipe = pipe.recipe
    if recipe.task != "t2a":
        raise AudioguideError(f"recipe {recipe.name!r} is a {recipe.task} recipe; sound evaluation needs a t2a recipe")
    if not settings:
        raise AudioguideError("no settings to evaluate")
    chosen = held_out_rows(rows, per_class)
    if not chosen:
        raise AudioguideError("no rows with both a 'caption' and a 'label' to evaluate (is this a sound corpus manifest?)")
    unknown = sorted({row_label(r) for r in chosen} - set(classifier.labels))
    if unknown:
        raise AudioguideError(f"the sound classifier does not know class(es) {', '.join(unknown)}; "
                              f"it knows {', '.join(classifier.labels)}")
    resolved = [resolve_setting(recipe, s) for _, s in settings]
    d = recipe.duration
    if seconds is not None and not d.min_seconds <= seconds <= d.max_seconds:
        raise AudioguideError(f"seconds must be in [{d.min_seconds:g}, {d.max_seconds:g}] for recipe {recipe.name!r}, got {seconds:g}")
    lengths = [seconds if seconds is not None else min(max(row.duration or d.seconds, d.min_seconds), d.max_seconds)
               for row in chosen]
    real_rows = clip_rows(chosen)  # each real audio file once
    total = len(settings) * len(chosen) + len(real_rows)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if on_item is not None:
            on_item(done, total)

    def call(caption: str, row_seed: int, setting: Mapping[str, float], secs: float):
        steps = setting.get("steps")
        return pipe([caption], seed=row_seed, cfg=setting.get("cfg"), rescale=setting.get("rescale"),
                    steps=None if steps is None else int(steps), seconds=secs)

    # the real reference first: cheap, and a missing file fails before any synthesis
    kept: list[Sample] = []
    pictured = {row.id for row in chosen[:max(samples, 0)]}
    real_feats, real_items = [], []
    for row in real_rows:
        wav, sr = read_audio(row.audio, SAMPLE_RATE)
        if row.id in pictured:
            kept.append(Sample(REAL_LABEL, row.id, row.caption or "", np.asarray(wav, dtype=np.float32), int(sr)))
        real_feats.append(clip_features(wav, sr))
        real_items.append((row, len(wav) / sr))
        tick()
    real_result = None
    real_emb = None
    if real_rows:
        feats = torch.from_numpy(np.stack(real_feats))
        real_emb = classifier.embed(feats).numpy()
        predicted = classifier.predict_features(feats)
        items = tuple(Item(row.id, row_label(row), row.extra.get("kind"), p, None, secs, None)
                      for (row, secs), p in zip(real_items, predicted))
        real_result = SettingResult(REAL_LABEL, {}, None, None, items, float("nan"))  # FD to itself: not a measurement

    call(chosen[0].caption, seed, settings[0][1], lengths[0])  # warm-up: lazy initialisation is not synthesis time
    results = []
    for (label, setting), (scales, rescale, steps) in zip(settings, resolved):
        feats, items = [], []
        for i, (row, secs) in enumerate(zip(chosen, lengths)):
            t0 = time.perf_counter()
            audio = call(row.caption, seed + i, setting, secs)
            elapsed = time.perf_counter() - t0
            wav = np.asarray(audio[0], dtype=np.float32)
            if wav_dir is not None:
                write_wav(Path(wav_dir) / _slug(label) / f"{row.id}.wav", wav, audio.sample_rate)
            if i < samples:
                kept.append(Sample(label, row.id, row.caption, wav, int(audio.sample_rate)))
            feats.append(clip_features(wav, audio.sample_rate))
            items.append((row, seed + i, len(wav) / audio.sample_rate, elapsed))
            tick()
        feats_t = torch.from_numpy(np.stack(feats))
        predicted = classifier.predict_features(feats_t)
        fd = frechet_distance(classifier.embed(feats_t).numpy(), real_emb) if real_emb is not None else float("nan")
        results.append(SettingResult(
            label, scales, rescale, steps,
            tuple(Item(row.id, row_label(row), row.extra.get("kind"), p, s, secs, el) for (row, s, secs, el), p in zip(items, predicted)),
            fd,
        ))
    usable = held_out_rows(rows)
    notes = []
    if len(rows) > len(usable):
        notes.append(f"{len(rows) - len(usable)} row(s) without a caption or a label were skipped.")
    if len(usable) > len(chosen):
        notes.append(f"At most {per_class} row(s) per class: {len(usable) - len(chosen)} more were not evaluated.")
    if real_result is None:
        notes.append("The rows have no real audio: no realism (FD) and no real-audio reference.")
    own = _key(resolve_setting(recipe, {}))
    default = next((label for (label, _), r in zip(settings, resolved) if _key(r) == own), settings[0][0])
    judge = {**classifier.config, "classes": len(classifier.labels)}
    # the real clips after the generated ones, as in the tables
    kept = [s for s in kept if s.setting != REAL_LABEL] + [s for s in kept if s.setting == REAL_LABEL]
    return T2AReport(recipe.name, tuple(results), real_result, default, judge, tuple(notes), tuple(kept))


# -- report -------------------------------------------------------------------------------------


def _scales(scales: Mapping[str, float]) -> str:
    if not scales:
        return "-"
    if len(set(scales.values())) == 1:
        return fmt_scale(next(iter(scales.values())))
    return " ".join(f"{n}={fmt_scale(w)}" for n, w in scales.items())


def markdown(report: T2AReport, title: str | None = None) -> str:
    """Settings table (adherence, FD, RTF), a per-class table for the recipe default, the judge's line."""
    lines = [f"### {title or f'{report.recipe}: text-to-audio evaluation'}", "",
             "| setting | cfg | rescale | steps | adherence (top-1) | FD | RTF |", "|---|---|---|---|---|---|---|"]
    for r in [*report.results, *([report.real] if report.real is not None else [])]:
        lines.append(f"| {r.label} | {_scales(r.scales)} | {'-' if r.rescale is None else fmt_scale(r.rescale)} | "
                     f"{'-' if r.steps is None else r.steps} | {fmt_pct(r.adherence())} | {fmt_num(r.fd)} | {fmt_num(r.rtf)} |")
    try:
        default = report.result(report.default)
    except KeyError:
        default = report.results[0] if report.results else None
    if default is not None:
        classes = sorted({it.label for it in default.items})
        kinds = {it.label: it.kind for it in default.items}
        real = report.real
        lines += ["", f"Per class, {default.label}:", "",
                  "| class | kind | items | adherence | real audio acc |", "|---|---|---|---|---|"]
        for c in classes:
            n = sum(it.label == c for it in default.items)
            lines.append(f"| {c} | {kinds[c] or '-'} | {n} | {fmt_pct(default.adherence(c))} | "
                         f"{fmt_pct(real.adherence(c)) if real is not None else '-'} |")
    items = len(report.results[0].items) if report.results else 0
    n_classes = len({it.label for it in report.results[0].items}) if report.results else 0
    lines += ["", (f"{items} held-out captions per setting ({n_classes} classes, the same seed per row in every setting); "
                   "adherence is the top-1 accuracy of the sound classifier (trained on real corpus audio only) naming the "
                   "row's class; FD is the Fréchet distance between Gaussians fitted to the classifier's hidden-layer "
                   "embeddings of the generated and the real held-out clips (lower is more realistic; comparable only at "
                   "equal numbers of clips); RTF is synthesis time / audio seconds.")]
    if report.real is not None:
        classes, trained = report.judge.get("classes"), report.judge.get("train_items")
        line = f"Judge: top-1 accuracy {fmt_pct(report.real.adherence())} on these {len(report.real.items)} real held-out clips"
        if classes:
            line += f" (chance {fmt_pct(1 / classes)}: {classes} classes"
            line += f"; trained on {trained} real clips)" if trained else ")"
        lines += ["", line + "."]
    for note in report.notes:
        lines += ["", note]
    return "\n".join(lines) + "\n"
