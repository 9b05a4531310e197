"""Description following: do voice descriptions move pitch, pace and voice the way they ask?

Instruction-following TTS is judged on pairs of instructions that differ in one attribute while the
others stay put (VoxInstruct, Zhou et al. 2024, §4; Parler-TTS's attribute evaluation, Lyth & King
2024, §4): the recipe speaks the same texts under both descriptions of a pair, with the same seeds,
and every attribute the pair changes must move the asked way. Single-attribute pairs ("a deep voice"
/ "a high voice") and combined ones ("a deep male voice speaking slowly" / "... quickly") are
measured apart, since entanglement shows only in the second kind.

Measured on every clip, from the audio alone:

* **pitch**: median F0 of the voiced frames, YIN (de Cheveigné & Kawahara 2002) with an energy gate
  rather than pYIN's voicing decision, which rejects some synthetic voices
  (:func:`audioguide.corpus.speech.voice_measures`, the measure the corpus's pitch words come from);
* **pace**: phonemes per second of the clip (the same function);
* **gender**: the speaker judge's decision (:mod:`audioguide.evaluation.speaker`, trained on real
  recordings), mapped to the judged voice's gender.

A pitch pair moves the asked way when the lower-asked clip has the lower F0; a pace pair likewise
for the rate; a gender pair when the judge names a voice of the asked gender on both sides. On top,
every clip whose description asks for a deep voice must land below ``DEEP_HZ`` and every high one
above ``HIGH_HZ``, whatever else the description asks (issue 25's bounds). Fractions come with
Wilson 95 % intervals.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from audioguide.core import AudioguideError

DEEP_HZ, HIGH_HZ = 130.0, 165.0
ATTRIBUTES = ("pitch", "pace", "gender")
ORDER = {"pitch": ("deep", "high"), "pace": ("slow", "fast"), "gender": ("male", "female")}


@dataclass(frozen=True)
class Ask:
    """A description and the attribute values it asks for (None: says nothing about it)."""

    text: str
    pitch: str | None = None  # "deep" | "high"
    pace: str | None = None  # "slow" | "fast"
    gender: str | None = None  # "male" | "female"

    def value(self, attribute: str) -> str | None:
        return getattr(self, attribute)


# Pairs (a, b) with a's changed attributes on the low side of ORDER. Phrasings are written for the
# evaluation, not taken from the corpus's description templates, and put attributes in varied orders.
PAIRS: tuple[tuple[Ask, Ask], ...] = (
    # one attribute, nothing else asked
    (Ask("a deep voice", pitch="deep"), Ask("a high voice", pitch="high")),
    (Ask("someone speaking slowly", pace="slow"), Ask("someone speaking quickly", pace="fast")),
    (Ask("a male voice", gender="male"), Ask("a female voice", gender="female")),
    # pace changes, pitch and gender asked and kept
    (Ask("a deep male voice speaking slowly", pitch="deep", gender="male", pace="slow"),
     Ask("a deep male voice speaking quickly", pitch="deep", gender="male", pace="fast")),
    (Ask("a high female voice speaking slowly", pitch="high", gender="female", pace="slow"),
     Ask("a high female voice speaking quickly", pitch="high", gender="female", pace="fast")),
    (Ask("slow speech from a man with a deep voice", pitch="deep", gender="male", pace="slow"),
     Ask("fast speech from a man with a deep voice", pitch="deep", gender="male", pace="fast")),
    # pitch changes, pace kept
    (Ask("a deep voice, talking slowly", pitch="deep", pace="slow"),
     Ask("a high voice, talking slowly", pitch="high", pace="slow")),
    (Ask("speaking fast in a deep voice", pitch="deep", pace="fast"),
     Ask("speaking fast in a high voice", pitch="high", pace="fast")),
    # gender changes, pace kept
    (Ask("a man reading slowly", gender="male", pace="slow"), Ask("a woman reading slowly", gender="female", pace="slow")),
    (Ask("a quick male speaker", gender="male", pace="fast"), Ask("a quick female speaker", gender="female", pace="fast")),
    # two attributes change at once
    (Ask("a deep male voice, slow", pitch="deep", gender="male", pace="slow"),
     Ask("a high female voice, fast", pitch="high", gender="female", pace="fast")),
)


def changed(a: Ask, b: Ask) -> tuple[str, ...]:
    """The attributes a pair asks to move (asked on both sides, differently)."""
    return tuple(k for k in ATTRIBUTES if a.value(k) and b.value(k) and a.value(k) != b.value(k))


def combined(a: Ask, b: Ask) -> bool:
    """A pair is combined when either side asks for more than one attribute."""
    return max(sum(x.value(k) is not None for k in ATTRIBUTES) for x in (a, b)) > 1


def check_pairs(pairs: Sequence[tuple[Ask, Ask]]) -> None:
    for a, b in pairs:
        moved = changed(a, b)
        if not moved:
            raise AudioguideError(f"descriptions {a.text!r} / {b.text!r} change no attribute")
        for k in moved:
            if (a.value(k), b.value(k)) != ORDER[k]:
                raise AudioguideError(f"pair {a.text!r} / {b.text!r}: {k} must go {ORDER[k][0]} -> {ORDER[k][1]}")


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion k / n (Wilson 1927); (nan, nan) when n = 0."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Clip:
    """What was measured on one clip."""

    description: str
    text: str
    f0_hz: float
    phones_per_second: float
    voice: str | None  # the speaker judge's decision
    gender: str | None  # that voice's gender


@dataclass(frozen=True)
class PairResult:
    a: Ask
    b: Ask
    clips_a: tuple[Clip, ...]
    clips_b: tuple[Clip, ...]

    @property
    def attributes(self) -> tuple[str, ...]:
        return changed(self.a, self.b)

    @property
    def combined(self) -> bool:
        return combined(self.a, self.b)

    def moved(self, attribute: str) -> list[bool]:
        """Per text: did ``attribute`` move the asked way between the two clips?"""
        out = []
        for x, y in zip(self.clips_a, self.clips_b):
            if attribute == "pitch":
                out.append(x.f0_hz < y.f0_hz)
            elif attribute == "pace":
                out.append(x.phones_per_second < y.phones_per_second)
            else:
                out.append(x.gender == self.a.gender and y.gender == self.b.gender)
        return out


@dataclass(frozen=True)
class DescriptionReport:
    recipe: str
    pairs: tuple[PairResult, ...]
    measured_gender: bool
    notes: tuple[str, ...] = field(default=())
    speed_rates: tuple[tuple[float, float], ...] = ()  # (speed, median phonemes per second), default voice

    def _moved(self, select: Callable[[PairResult], bool], attribute: str | None = None) -> tuple[int, int]:
        k = n = 0
        for p in self.pairs:
            if not select(p):
                continue
            for a in p.attributes:
                if (attribute is None or a == attribute) and (a != "gender" or self.measured_gender):
                    m = p.moved(a)
                    k, n = k + sum(m), n + len(m)
        return k, n

    def bounds(self) -> dict[str, tuple[int, int]]:
        """``deep``: clips asked deep with F0 < DEEP_HZ; ``high``: asked high with F0 > HIGH_HZ.
        A description shared by several pairs counts its clips once."""
        clips = {(ask.text, c.text): (ask.pitch, c.f0_hz) for p in self.pairs
                 for ask, cs in ((p.a, p.clips_a), (p.b, p.clips_b)) for c in cs}
        deep = [f0 < DEEP_HZ for pitch, f0 in clips.values() if pitch == "deep"]
        high = [f0 > HIGH_HZ for pitch, f0 in clips.values() if pitch == "high"]
        return {"deep": (sum(deep), len(deep)), "high": (sum(high), len(high))}

    def summary(self) -> dict[str, tuple[int, int]]:
        """The headline fractions as (hits, total)."""
        out = {
            "single-attribute pairs": self._moved(lambda p: not p.combined),
            "combined pairs": self._moved(lambda p: p.combined),
        }
        for a in ATTRIBUTES:
            if a != "gender" or self.measured_gender:
                out[f"combined pairs, {a}"] = self._moved(lambda p: p.combined, a)
        b = self.bounds()
        out[f"'deep' below {DEEP_HZ:g} Hz"] = b["deep"]
        out[f"'high' above {HIGH_HZ:g} Hz"] = b["high"]
        return out

    def markdown(self, title: str | None = None) -> str:
        def pct(k: int, n: int) -> str:
            if n == 0:
                return "-"
            lo, hi = wilson(k, n)
            return f"{100 * k / n:.1f} % [{100 * lo:.0f}, {100 * hi:.0f}] ({k}/{n})"

        def side(clips: Sequence[Clip]) -> str:
            f0 = float(np.median([c.f0_hz for c in clips]))
            rate = float(np.median([c.phones_per_second for c in clips]))
            genders = [c.gender for c in clips if c.gender]
            male = f", {100 * genders.count('male') / len(genders):.0f} % male" if genders else ""
            return f"{f0:.0f} Hz, {rate:.1f} ph/s{male}"

        lines = [f"## {title or self.recipe}", "",
                 "| measure | moved the asked way / in bounds |", "|---|---|"]
        lines += [f"| {k} | {pct(*v)} |" for k, v in self.summary().items()]
        lines += ["", "| description A | description B | changes | A (median) | B (median) | moved |", "|---|---|---|---|---|---|"]
        for p in self.pairs:
            moved = ", ".join(f"{a} {pct(sum(p.moved(a)), len(p.moved(a)))}" for a in p.attributes
                              if a != "gender" or self.measured_gender) or "-"
            lines.append(f"| {p.a.text} | {p.b.text} | {', '.join(p.attributes)} | {side(p.clips_a)} | {side(p.clips_b)} | {moved} |")
        if self.speed_rates:
            base = dict(self.speed_rates).get(1.0)
            cells = [f"{sp:g}: {rate:.1f} ph/s" + (f" ({rate / base:.2f}x)" if base else "") for sp, rate in self.speed_rates]
            lines += ["", "Explicit `--speed` (the recipe's default voice, no description), median rate: " + "; ".join(cells) + "."]
        notes = [*self.notes, "Brackets: Wilson 95 % intervals. F0: median of YIN over voiced frames; pace: phonemes per second of the clip."]
        return "\n".join(lines + [""] + [f"{n}" for n in notes]) + "\n"


def evaluate_descriptions(
    pipe, texts: Sequence[str], classifier=None, genders: Mapping[str, str] | None = None, seed: int = 0,
    pairs: Sequence[tuple[Ask, Ask]] = PAIRS, on_item: Callable[[int, int], None] | None = None,
    scales: Mapping[str, float] | None = None, speeds: Sequence[float] = (0.75, 1.0, 1.3),
) -> DescriptionReport:
    """Speak every text under both descriptions of every pair and measure each clip (module doc).

    Text ``i`` uses seed ``seed + i`` under every description, so the two sides of a pair differ
    only in what they ask. ``classifier`` (a speaker judge) and ``genders`` (voice -> gender) give
    the gender decisions; without them gender pairs are not scored. A description shared by
    several pairs is synthesised once. ``speeds`` also speaks the texts in the recipe's default
    voice at those explicit speeds (``speed=``), to set the pace words beside the control.
    """
    from audioguide.conditioners.phonemes import phonemize
    from audioguide.corpus.speech import voice_measures

    if pipe.task != "tts":
        raise AudioguideError(f"recipe {pipe.recipe.name!r} is a {pipe.task} recipe; description following needs a tts recipe")
    if "style" not in pipe.model.conditioners:
        raise AudioguideError(f"recipe {pipe.recipe.name!r} takes no voice description (no 'style' condition)")
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise AudioguideError("no texts to speak")
    check_pairs(pairs)
    measured_gender = classifier is not None and genders is not None
    if measured_gender:
        missing = [v for v in classifier.voices if v not in genders]
        if missing:
            raise AudioguideError(f"no gender known for judged voice(s) {', '.join(missing)}")
    for t in texts:
        pipe.check_texts([t], {"style": "a voice"})
    descriptions = list(dict.fromkeys(x.text for p in pairs for x in p))
    total, done = (len(descriptions) + len(speeds)) * len(texts), 0
    clips: dict[tuple[str, str], Clip] = {}
    phones = {t: phonemize(t) for t in texts}
    for desc in descriptions:
        for i, text in enumerate(texts):
            audio = pipe([text], seed=seed + i, inputs={"style": desc}, scales=scales)
            wav, sr = np.asarray(audio[0], dtype=np.float32), audio.sample_rate
            m = voice_measures(wav, sr, phones[text])
            voice = classifier.predict([wav], sr)[0] if measured_gender else None
            clips[(desc, text)] = Clip(desc, text, m["f0_hz"], m["phones_per_second"], voice,
                                       genders.get(voice) if measured_gender else None)
            done += 1
            if on_item is not None:
                on_item(done, total)
    speed_rates = []
    for speed in speeds:
        rates = []
        for i, text in enumerate(texts):
            audio = pipe([text], seed=seed + i, scales=scales, speed=speed)
            rates.append(voice_measures(np.asarray(audio[0], dtype=np.float32), audio.sample_rate, phones[text])["phones_per_second"])
            done += 1
            if on_item is not None:
                on_item(done, total)
        speed_rates.append((float(speed), float(np.median(rates))))
    results = tuple(PairResult(a, b, tuple(clips[(a.text, t)] for t in texts), tuple(clips[(b.text, t)] for t in texts))
                    for a, b in pairs)
    notes = () if measured_gender else ("No speaker judge given: gender pairs are not scored.",)
    return DescriptionReport(pipe.recipe.name, results, measured_gender, notes, tuple(speed_rates))
