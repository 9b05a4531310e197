"""Speech evaluation: intelligibility, voice identity and speed of a TTS recipe across guidance settings.

For every guidance setting and every manifest row the recipe speaks ``row.text`` in the voice
``row.speaker`` (when the recipe has a speaker condition) and three numbers are measured:

* **word error rate** through an ASR judge (the offline Whisper of :mod:`audioguide.evaluation.asr`
  or any ``judge(wav, sample_rate) -> transcript`` callable), corpus-level per split: total word
  errors (substitutions + deletions + insertions) over total reference words, after Whisper's
  English normaliser;
* **speaker accuracy**: how often the speaker classifier of :mod:`audioguide.evaluation.speaker`
  (trained on real recordings only) names the requested voice;
* **real-time factor**: synthesis wall time over seconds of audio produced (below 1 is faster than
  real time).

Rows come in splits (the manifest's file stem: ``held_out`` for ordinary sentences, ``sus`` for
semantically unpredictable ones, where the judge's language model cannot guess the words). The
same row gets the same seed under every setting, so settings are compared on paired samples. The
real recordings of the rows, judged the same way, are the ceiling.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from audioguide.core import AudioguideError
from audioguide.manifest import Row, cap_per_voice

Judge = Callable[[np.ndarray, int], str]
"""``judge(wav, sample_rate) -> transcript``."""

Setting = tuple[str, dict[str, float]]
"""A labelled guidance setting: ``(label, {condition: scale})``."""

DEFAULT_LABEL = "recipe default"
NO_GUIDANCE_LABEL = "no guidance"
REAL_LABEL = "real recordings"


def real_time_factor(items: Sequence) -> float:
    """Synthesis seconds over audio seconds of the items that were synthesised (``synthesis_seconds``
    not None); nan where there are none."""
    timed = [it for it in items if it.synthesis_seconds is not None]
    secs = sum(it.seconds for it in timed)
    return sum(it.synthesis_seconds for it in timed) / secs if timed and secs > 0 else float("nan")


def fmt_scale(w: float) -> str:
    """A scale or other setting value as the tables print it (``5``, ``0.7``)."""
    return f"{w:g}"


def parse_sweep(items: Sequence[str]) -> dict[str, list[float]]:
    """``NAME=W1,W2,...`` options as ``{name: [w1, w2, ...]}``; a one-line error names a bad item."""
    out: dict[str, list[float]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        name = name.strip()
        try:
            if not sep or not name:
                raise ValueError
            ws = [float(v) for v in values.split(",") if v.strip()]
            if not ws:
                raise ValueError
        except ValueError:
            raise AudioguideError(f"--sweep expects NAME=W1,W2,..., got {item!r}") from None
        for w in ws:
            if not math.isfinite(w) or w < 0:
                raise AudioguideError(f"--sweep scale for {name!r} must be a finite number >= 0, got {w:g}")
        out.setdefault(name, []).extend(ws)
    return out


def sweep_settings(recipe_scales: Mapping[str, float] | Sequence[tuple[str, float]],
                   sweeps: Mapping[str, Sequence[float]] | None = None, baseline: bool = True) -> list[Setting]:
    """Guidance settings to compare: the recipe's own scales, no guidance (every scale 1; left out
    with ``baseline=False``), and for each swept condition its values with the other conditions at
    the recipe's scales.

    Settings with the same scales as an earlier one are dropped (the earlier label is kept).
    """
    base = dict(recipe_scales)
    for name in sweeps or {}:
        if name not in base:
            raise AudioguideError(f"cannot sweep {name!r}: the recipe guides on {', '.join(base) or 'nothing'}")
    settings: list[Setting] = [(DEFAULT_LABEL, dict(base))]
    if baseline:
        settings.append((NO_GUIDANCE_LABEL, {n: 1.0 for n in base}))
    for name, values in (sweeps or {}).items():
        for w in values:
            settings.append((f"{name}={fmt_scale(w)}", {**base, name: float(w)}))
    out: list[Setting] = []
    seen: set[tuple] = set()
    for label, scales in settings:
        key = tuple(sorted(scales.items()))
        if key not in seen:
            seen.add(key)
            out.append((label, scales))
    return out


def read_splits(paths: Sequence[str | Path]) -> dict[str, list[Row]]:
    """Manifests by split label (the file stem); two manifests with one stem are an error."""
    from audioguide.manifest import read_manifest

    splits: dict[str, list[Row]] = {}
    for p in paths:
        stem = Path(p).stem
        if stem in splits:
            raise AudioguideError(f"two manifests named {stem!r}; the file stem labels the split, rename one")
        splits[stem] = read_manifest(p)
    return splits


@dataclass(frozen=True)
class Item:
    split: str
    row_id: str
    voice: str | None  # the row's speaker
    reference: str
    transcript: str | None
    predicted_voice: str | None  # None where no voice was requested or no classifier ran
    seconds: float
    synthesis_seconds: float | None  # None for real recordings


@dataclass(frozen=True, eq=False)
class Sample:
    """One clip a report keeps for pictures (``samples=`` of the evaluators): the setting's label,
    the row, what was asked for (text or caption) and the waveform."""

    setting: str
    row_id: str
    text: str
    wav: np.ndarray  # float32 [samples]
    sample_rate: int


@dataclass(frozen=True)
class SettingResult:
    label: str
    scales: dict[str, float]
    items: tuple[Item, ...]

    def wer(self, split: str | None = None, voice: str | None = None) -> float:
        from audioguide.evaluation.asr import word_error_rate

        chosen = [it for it in self.items if it.transcript is not None
                  and (split is None or it.split == split) and (voice is None or it.voice == voice)]
        if not chosen:
            return float("nan")
        try:
            return word_error_rate([it.reference for it in chosen], [it.transcript for it in chosen])
        except ValueError:  # every reference normalised to nothing
            return float("nan")

    def speaker_accuracy(self, split: str | None = None, voice: str | None = None) -> float:
        hits = [it.predicted_voice == it.voice for it in self.items if it.predicted_voice is not None
                and (split is None or it.split == split) and (voice is None or it.voice == voice)]
        return float(np.mean(hits)) if hits else float("nan")

    @property
    def rtf(self) -> float:
        return real_time_factor(self.items)


@dataclass(frozen=True)
class TTSReport:
    recipe: str
    splits: tuple[str, ...]
    results: tuple[SettingResult, ...]
    default: str = DEFAULT_LABEL
    real: SettingResult | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    samples: tuple[Sample, ...] = ()  # the first rows' clips of every setting (and recording), where kept

    def result(self, label: str) -> SettingResult:
        for r in self.results:
            if r.label == label:
                return r
        raise KeyError(label)

    def markdown(self, title: str | None = None) -> str:
        return markdown(self, title)

    def records(self) -> list[dict]:
        """One dict per judged item of every setting (the real recordings last): the setting's label
        and scales, and the item's fields (reference, transcript, requested and predicted voice), for
        auditing what the judges heard."""
        rows = list(self.results) + ([self.real] if self.real is not None else [])
        return [{"setting": r.label, "scales": r.scales, **asdict(it)} for r in rows for it in r.items]


def fmt_pct(x: float) -> str:
    """A fraction as a percentage with one decimal, ``-`` for nan."""
    return "-" if math.isnan(x) else f"{100 * x:.1f} %"


def fmt_num(x: float | None, digits: int = 3) -> str:
    """A number with ``digits`` decimals, ``-`` for None or nan."""
    return "-" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def markdown(report: TTSReport, title: str | None = None) -> str:
    """Settings table (WER per split, speaker accuracy, RTF) and a per-voice table for the default."""
    splits = report.splits
    lines = [f"### {title or f'{report.recipe}: speech evaluation'}", ""]
    lines.append("| setting | scales | " + " | ".join(f"WER {s}" for s in splits) + " | speaker acc | RTF |")
    lines.append("|---|---|" + "---|" * len(splits) + "---|---|")
    rows = list(report.results) + ([report.real] if report.real is not None else [])
    for r in rows:
        scales = " ".join(f"{n}={fmt_scale(w)}" for n, w in r.scales.items()) or "-"
        lines.append(f"| {r.label} | {scales} | " + " | ".join(fmt_pct(r.wer(s)) for s in splits)
                     + f" | {fmt_pct(r.speaker_accuracy())} | {fmt_num(r.rtf)} |")
    try:
        default = report.result(report.default)
    except KeyError:
        default = report.results[0] if report.results else None
    if default is not None:
        voices = sorted({it.voice for it in default.items if it.voice})
        if voices:
            lines += ["", f"Per voice, {default.label}:", "",
                      "| voice | items | " + " | ".join(f"WER {s}" for s in splits) + " | speaker acc |",
                      "|---|---|" + "---|" * len(splits) + "---|"]
            for v in voices:
                n = sum(it.voice == v for it in default.items)
                lines.append(f"| {v} | {n} | " + " | ".join(fmt_pct(default.wer(s, v)) for s in splits)
                             + f" | {fmt_pct(default.speaker_accuracy(voice=v))} |")
    items = len(report.results[0].items) if report.results else 0
    lines += ["", (f"{items} sentences per setting; WER is corpus-level (word errors / reference words) after "
                   "Whisper's English normaliser; speaker accuracy is the real-audio-trained classifier naming the "
                   "requested voice; RTF is synthesis time / audio seconds.")]
    for note in report.notes:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def _judge(judge: str | Judge | None) -> Judge | None:
    if judge is None or judge == "":
        return None
    if callable(judge):
        return judge
    from audioguide.evaluation.asr import load_judge, transcribe

    load_judge(judge)  # fail early (missing package or model) with a one-line error
    return lambda wav, sr: transcribe(wav, sr, judge)


def evaluate_tts(
    pipe, rows: Mapping[str, Sequence[Row]] | Sequence[Row], settings: Sequence[Setting],
    judge: str | Judge | None = "tiny.en", classifier=None, seed: int = 0, per_voice: int | None = None,
    real: bool = True, steps: int | None = None, on_item: Callable[[int, int], None] | None = None,
    candidates: int | None = None, samples: int = 0,
) -> TTSReport:
    """Synthesise every row under every setting and judge it (see the module docstring).

    ``rows`` maps split labels to rows (a plain sequence is the split ``all``); ``per_voice`` caps
    the rows per speaker in each split; row ``i`` (counting across splits) uses seed ``seed + i``.
    ``real`` also judges the rows' real recordings (where they have ``audio``) as the ceiling.
    ``candidates`` is the pipeline's samples per sentence (default: the recipe's; see :class:`Pipeline`).
    ``samples`` keeps the clips of the first that many rows of every setting (and their recordings)
    in the report, for pictures (:mod:`audioguide.evaluation.plots`). Everything is validated
    before any synthesis.
    """
    from audioguide.audio import read_audio

    splits = dict(rows) if isinstance(rows, Mapping) else {"all": list(rows)}
    chosen = [(split, row) for split, rs in splits.items() for row in cap_per_voice(rs, per_voice)]
    if not chosen:
        raise AudioguideError("no rows to evaluate")
    if pipe.task != "tts":
        raise AudioguideError(f"recipe {pipe.recipe.name!r} is a {pipe.task} recipe; speech evaluation needs a tts recipe")
    if not settings:
        raise AudioguideError("no guidance settings to evaluate")
    voiced = "speaker" in pipe.model.conditioners

    def voice_of(row: Row) -> dict[str, str] | None:
        """The row's voice as the pipeline's input (None: the recipe's default)."""
        return {"speaker": row.speaker} if voiced and row.speaker else None

    if classifier is not None:
        unknown = sorted({r.speaker for _, r in chosen if r.speaker and r.speaker not in classifier.voices})
        if unknown:
            raise AudioguideError(f"the speaker classifier does not know voice(s) {', '.join(unknown)}; "
                                  f"it knows {', '.join(classifier.voices)}")
    for split, row in chosen:
        if not row.text or not row.text.strip():
            raise AudioguideError(f"{split}: row {row.id!r} has no 'text'")
        pipe.check_texts([row.text], voice_of(row))
    for _, scales in settings:
        pipe.policy(scales=scales)
    pipe.sampler_config(steps)
    pipe.candidates_for(candidates)
    transcribe = _judge(judge)
    with_real = real and all(row.audio is not None for _, row in chosen)
    total = len(chosen) * (len(settings) + with_real)
    done = 0

    def judged(split, row, wav, sr, synth) -> Item:
        nonlocal done
        asked = row.speaker and (voiced or synth is None)  # a voice was requested (or is the recording's)
        predicted = classifier.predict([wav], sr)[0] if classifier is not None and asked else None
        item = Item(split, row.id, row.speaker, row.text,
                    transcribe(wav, sr) if transcribe is not None else None, predicted, len(wav) / sr, synth)
        done += 1
        if on_item is not None:
            on_item(done, total)
        return item

    kept: list[Sample] = []

    def keep(label: str, i: int, row: Row, wav, sr: int) -> None:
        if i < samples:
            kept.append(Sample(label, row.id, row.text, np.asarray(wav, dtype=np.float32), int(sr)))

    row0 = chosen[0][1]  # warm-up (lazy initialisation is not synthesis time)
    pipe([row0.text], seed=seed, scales=settings[0][1], steps=steps, inputs=voice_of(row0), candidates=candidates)
    results = []
    for label, scales in settings:
        items = []
        for i, (split, row) in enumerate(chosen):
            t0 = time.perf_counter()
            audio = pipe([row.text], seed=seed + i, scales=scales, inputs=voice_of(row), steps=steps, candidates=candidates)
            elapsed = time.perf_counter() - t0
            items.append(judged(split, row, audio[0], audio.sample_rate, elapsed))
            keep(label, i, row, audio[0], audio.sample_rate)
        results.append(SettingResult(label, dict(scales), tuple(items)))
    real_result = None
    if with_real:
        items = []
        for i, (split, row) in enumerate(chosen):
            wav, sr = read_audio(row.audio)
            items.append(judged(split, row, wav, sr, None))
            keep(REAL_LABEL, i, row, wav, sr)
        real_result = SettingResult(REAL_LABEL, {}, tuple(items))
    notes = () if voiced else ("The recipe has no speaker condition: its speaker accuracy is not measured.",)
    default = next((label for label, s in settings if s == dict(pipe.recipe.guidance.scales)), settings[0][0])
    return TTSReport(pipe.recipe.name, tuple(splits), tuple(results), default, real_result, notes, tuple(kept))
