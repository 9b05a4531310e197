"""The captioned sound corpus builder: composition, captions, effect classes, splits, resuming."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from audioguide.audio import read_audio, write_wav
from audioguide.corpus import sound
from audioguide.corpus.sound import (
    EFFECT_CLASSES,
    HELD_OUT_TEMPLATES,
    INSTRUMENTS,
    SPEECH_PHRASES,
    TRAIN_TEMPLATES,
    UNSEEN_PHRASES,
    Effect,
    build_sound_corpus,
    compose,
    effect_caption,
    effect_class,
    effect_segments,
    music_caption,
)
from audioguide.manifest import read_manifest

HAS_FLUIDSYNTH = shutil.which("fluidsynth") is not None and any(Path(p).is_file() for p in sound.SOUNDFONTS)
needs_fluidsynth = pytest.mark.skipif(not HAS_FLUIDSYNTH, reason="needs fluidsynth and a GM soundfont (apt-get install fluidsynth fluid-soundfont-gm)")


def test_compose_is_seeded_and_stays_in_range():
    for inst in INSTRUMENTS:
        a = compose(np.random.default_rng(3), inst, 4.0)
        b = compose(np.random.default_rng(3), inst, 4.0)
        assert a == b
        notes, attrs = a
        assert notes and all(0 <= t < 4.0 and length > 0 and 1 <= v <= 127 for t, length, _, v in notes)
        assert all(inst.low <= n <= inst.high for _, _, n, _ in notes)
        assert attrs["instrument"] == inst.name and attrs["tempo"] in sound.TEMPI
    assert compose(np.random.default_rng(3), INSTRUMENTS[0], 4.0) != compose(np.random.default_rng(4), INSTRUMENTS[0], 4.0)


def _template_of(caption: str, templates) -> bool:
    for t in templates:
        head, _, tail = t.partition("{x}")
        if caption.startswith(head) and caption.endswith(tail) and len(caption) > len(head) + len(tail):
            return True
    return False


def test_held_out_captions_use_only_held_out_phrasings():
    rng = np.random.default_rng(0)
    for i in range(60):
        _, attrs = compose(rng, INSTRUMENTS[i % len(INSTRUMENTS)], 4.0)
        held = music_caption(attrs, rng, held_out=True)
        train = music_caption(attrs, rng, held_out=False)
        name = attrs["instrument"].rstrip("s")  # "drums" may be "a drum kit"
        assert name in held and name in train
        assert _template_of(held, HELD_OUT_TEMPLATES) and "  " not in held
        # the bare "{x}" training phrasing matches anything, so check the reverse only for the framed ones
        assert not any(_template_of(train, [t]) for t in HELD_OUT_TEMPLATES)


@pytest.mark.parametrize(
    "label,cls",
    [
        ("A dog", "dog"), ("dog", "dog"), ("A brown hen", "bird"), ("owls", "bird"), ("A cow", "farm animal"),
        ("shotgunfire", "gunshot"), ("grenadeimpact", "explosion"), ("im new mail", "chime"), ("sword", "weapon strike"),
        ("splash", "water"),
        # creatures' cries and false friends are left out
        ("wolf hit", None), ("drake die", None), ("hell growl", None), ("comeonthen", None), ("coward", None),
        ("beep", None), ("UB2006 Penguin II deep sea research vessel", None), ("sniperreload", None),
    ],
)
def test_effect_classes(label, cls):
    assert effect_class(label) == cls


def test_effect_segments_trim_cut_and_normalise(tmp_path):
    sr = sound.SAMPLE_RATE
    t = np.arange(int(19.0 * sr)) / sr
    wav = np.concatenate([np.zeros(sr, np.float32), 0.2 * np.sin(2 * np.pi * 440 * t).astype(np.float32), np.zeros(sr, np.float32)])
    write_wav(tmp_path / "long.wav", wav, sr)
    pieces = effect_segments(tmp_path / "long.wav", max_seconds=8.0)
    assert [round(len(p) / sr, 1) for p in pieces] == [8.0, 8.0, 3.0]  # silence trimmed, cut at 8 s
    assert all(abs(float(np.abs(p).max()) - 0.9) < 1e-3 for p in pieces)
    assert len(effect_segments(tmp_path / "long.wav", max_seconds=4.0, max_segments=2)) == 2
    write_wav(tmp_path / "silent.wav", np.zeros(sr, np.float32), sr)
    assert effect_segments(tmp_path / "silent.wav", 8.0) == []
    assert effect_segments(tmp_path / "missing.ogg", 8.0) == []
    write_wav(tmp_path / "blip.wav", 0.5 * np.ones(int(0.25 * sr), np.float32), sr)  # under 0.3 s: too short to be a class
    write_wav(tmp_path / "short.wav", 0.5 * np.ones(int(0.35 * sr), np.float32), sr)
    assert effect_segments(tmp_path / "blip.wav", 8.0) == [] and len(effect_segments(tmp_path / "short.wav", 8.0)) == 1


def test_named_files_skip_the_folders_asked(tmp_path):
    """A game's voices/Grenade.ogg is a character saying the word, not an explosion: skipped folders
    give no effect, wherever they sit under the root; the same name elsewhere is kept."""
    sr = sound.SAMPLE_RATE
    for rel in ("voices/Classic/Grenade.ogg", "grenade.ogg", "sub/Explosion.wav"):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        write_wav(path.with_suffix(".wav"), np.ones(sr, np.float32) * 0.1, sr)
        path.with_suffix(".wav").rename(path)
    kept = sound._named(tmp_path, "pkg", "CC0", skip=("voices",))
    assert sorted(str(e.path.relative_to(tmp_path)) for e in kept) == ["grenade.ogg", "sub/Explosion.wav"]
    assert len(sound._named(tmp_path, "pkg", "CC0")) == 3
    assert {sound.effect_class(e.label) for e in kept} == {"explosion"}


@pytest.fixture
def fake_sources(tmp_path, monkeypatch):
    """Two classes of synthetic 'effects' in place of the Debian packages."""
    sr, rng = sound.SAMPLE_RATE, np.random.default_rng(0)
    effects = []
    for i in range(4):
        for label in ("A dog", "splash"):
            path = tmp_path / "fx" / f"{label.replace(' ', '_')}_{i}.wav"
            path.parent.mkdir(exist_ok=True)
            write_wav(path, (0.3 * rng.standard_normal(int(1.5 * sr))).astype(np.float32), sr)
            effects.append(Effect(path, label, "fake-package", "CC0"))
    monkeypatch.setattr(sound, "EFFECT_SOURCES", {"fake": lambda: effects})
    return effects


def _speech_corpus(root: Path) -> Path:
    sr = 16000
    for split in ("train", "held_out"):
        rows = []
        for i, gender in enumerate(["male", "female"] * 3):
            path = root / f"{split}_{i}.wav"
            write_wav(path, np.full(sr, 0.1, np.float32), sr)
            rows.append({"id": f"{split}_{i}", "audio": path.name, "text": "Hi.", "speaker": f"v{gender}", "gender": gender, "duration": 1.0})
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_build_without_music_splits_effects_and_speech(tmp_path, fake_sources):
    speech = _speech_corpus((tmp_path / "speech").resolve())
    speech.mkdir(exist_ok=True)
    paths = build_sound_corpus(tmp_path / "c", music=0, seed=0, speech=speech, effect_captions=3, speech_clips=4,
                               sources=("fake",))
    train, held = read_manifest(paths["train"]), read_manifest(paths["held_out"])
    labels = {r.extra["label"] for r in train}
    assert labels == {"dog", "water", "man speaking", "woman speaking"} and {r.extra["label"] for r in held} == labels
    train_audio = {r.audio for r in train if r.extra["kind"] == "effect"}
    held_audio = {r.audio for r in held if r.extra["kind"] == "effect"}
    assert train_audio and held_audio and not (train_audio & held_audio)  # held-out effects are other files
    per_file = {}
    for r in train:
        if r.extra["kind"] == "effect":
            per_file.setdefault(r.audio, set()).add(r.caption)
    assert all(1 <= len(c) <= 3 for c in per_file.values()) and len([r for r in train if r.extra["kind"] == "effect"]) == 3 * len(per_file)
    assert all(r.extra["source"] and r.extra["licence"] for r in train + held)
    assert all(r.audio.exists() for r in train + held)
    speech_rows = [r for r in train if r.extra["kind"] == "speech"]
    assert len(speech_rows) == 4 and len({r.extra["label"] for r in speech_rows}) == 2 and all(
        bool(re.search(r"\b(man|male)\b", r.caption)) == (r.extra["label"] == "man speaking") for r in speech_rows)
    unseen = read_manifest(paths["unseen"])  # the held-out recordings, asked for in other words
    assert [(r.audio, r.extra["label"]) for r in unseen] == [(r.audio, r.extra["label"]) for r in held]
    assert all(r.caption != h.caption for r, h in zip(unseen, held))
    counts = json.loads((tmp_path / "c" / "classes.json").read_text())
    assert sum(counts["train"].values()) == len(train)
    # a second run is the same corpus, and rewrites no audio
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "c" / "wavs").iterdir()}
    build_sound_corpus(tmp_path / "c", music=0, seed=0, speech=speech, effect_captions=3, speech_clips=4, sources=("fake",))
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "c" / "wavs").iterdir()} == stamps
    assert read_manifest(paths["train"]) == train


@needs_fluidsynth
def test_music_renders_each_instrument_audibly(tmp_path, fake_sources):
    paths = build_sound_corpus(tmp_path / "m", music=10, seed=1, sources=())
    train, held = read_manifest(paths["train"]), read_manifest(paths["held_out"])
    assert len(train) == 10 and len(held) == 10
    assert {r.extra["label"] for r in train} == {i.name for i in INSTRUMENTS}
    for r in train[:3]:
        wav, sr = read_audio(r.audio)
        assert sr == sound.SAMPLE_RATE and len(wav) == 4 * sr
        assert np.abs(wav).max() == pytest.approx(sound.LEVELS[r.extra["dynamics"]], abs=0.01)
        assert r.caption.lower().count(r.extra["label"]) >= 1


def test_cli_data_sound_without_packages_is_a_one_line_error(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from audioguide.cli import app

    monkeypatch.setattr(sound, "SOUNDFONTS", (str(tmp_path / "none.sf2"),))
    res = CliRunner().invoke(app, ["data", "sound", "-o", str(tmp_path / "c"), "--music", "2"])
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert "soundfont" in res.output or "fluidsynth" in res.output.lower()


STOP_WORDS = {"a", "an", "the", "on", "of", "in", "at", "from", "to", "and", "with", "by"}


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower())) - STOP_WORDS


def test_unseen_phrases_avoid_every_word_that_singles_out_a_class_in_training():
    """A word singles out a class when its training captions use it and no other class's do
    ("cello", "barking", "man"). Unseen phrasings use none of them, for their own class or any
    other; words several classes share ("playing", "tune", "voice") are allowed, since they alone
    do not name a class."""
    rng = np.random.default_rng(0)
    vocab: dict[str, set[str]] = {}
    for inst in INSTRUMENTS:
        vocab[inst.name] = set().union(*(_words(music_caption(compose(rng, inst, 4.0)[1], rng, held_out=False)) for _ in range(300)))
    for cls, (keys, _) in EFFECT_CLASSES.items():
        effects = [Effect(Path("x.wav"), k, "s", "l") for k in keys]
        vocab[cls] = set().union(*(_words(effect_caption(e, cls, rng, held_out=False)) for e in effects for _ in range(20)))
    for gender, label in sound.SPEECH_LABEL.items():
        vocab[label] = set().union(*(_words(p) for p in SPEECH_PHRASES[gender])) | _words(" ".join(TRAIN_TEMPLATES))
    from audioguide.corpus.procedural import SYNTHS, synthesize

    for cls, synths in SYNTHS.items():  # every source's descriptions, as short draws make them
        vocab[cls] = set().union(*(_words(synthesize(cls, name, np.random.default_rng(k), 0.3)[1]) for name in synths for k in range(12)))
    for spec in sound.CURATED.values():  # curated packages' words (every surface a step pattern names)
        for pattern, cls, words, _ in spec.rules:
            names = re.findall(r"\(([a-z|]+)\)", pattern.lower())
            for name in (names[0].split("|") if names else [""]):
                if cls:
                    vocab.setdefault(cls, set()).update(_words(words.format(name=sound.SURFACE_WORDS.get(name, name))))
    for cls, (_, _, phrases) in sound.SOUNDFONT_EFFECTS.items():
        vocab[cls] |= set().union(*(_words(p) for p in phrases))
    scene_words = {w for share, peak, adjectives, suffixes in sound.SCENES for w in _words(" ".join(adjectives + suffixes))}
    for cls in SYNTHS:  # procedural clips may be quiet, loud or distant
        vocab[cls] |= scene_words
    assert set(UNSEEN_PHRASES) == set(vocab)  # every class has unseen phrasings
    specific = {c: vocab[c] - set().union(*(vocab[o] for o in vocab if o != c)) for c in vocab}
    assert {"cello", "barking", "striking", "siren"} <= set().union(*specific.values())  # the check has teeth
    for cls, phrases in UNSEEN_PHRASES.items():
        for phrase in phrases:
            clash = {c: _words(phrase) & words for c, words in specific.items() if _words(phrase) & words}
            assert not clash, (cls, phrase, clash)


def test_midi_pieces_leave_no_note_sounding_into_the_next_piece():
    """A note starting a hair before the cut (float round-off in ``compose``) used to get its
    note-off sorted before its note-on and sustain through the following pieces."""
    pytest.importorskip("mido")
    seconds = 4.0
    organ = next(i for i in INSTRUMENTS if i.name == "organ")
    rng = np.random.default_rng(0)
    pieces = [(organ, organ.programs[0], compose(rng, organ, seconds)[0] + [(3.9999999999999996, 1.0, 60, 90), (2.0, 5.0, 62, 90)])
              for _ in range(3)]
    midi = sound.midi_file(pieces, seconds)
    ticks, sounding, now = 960, set(), 0
    ends = [int((sound.GAP_SECONDS + i * (seconds + sound.GAP_SECONDS) + seconds) * ticks) for i in range(len(pieces))]
    msgs = []
    for msg in midi.tracks[0]:
        now += msg.time
        msgs.append((now, msg))
    for end in ends:  # after every message up to each piece's end, nothing still sounds
        sounding = set()
        for tick, msg in msgs:
            if tick > end:
                break
            if msg.type == "note_on" and msg.velocity > 0:
                sounding.add((msg.channel, msg.note))
            elif msg.type == "note_off" or (msg.type == "note_on" and msg.velocity == 0):
                sounding.discard((msg.channel, msg.note))
            elif msg.type == "control_change" and msg.control == 123:
                sounding = {n for n in sounding if n[0] != msg.channel}
        assert not sounding, (end, sounding)
    # the note cut by the piece's end (starts at 2 s, asked for 5 s) still plays, up to the cut
    assert sum(1 for _, m in msgs if m.type == "note_on" and m.note == 62) == len(pieces)


def test_procedural_classes_and_mixtures_build_resume_and_keep_splits_apart(tmp_path, fake_sources):
    paths = build_sound_corpus(tmp_path / "p", music=0, seed=0, sources=("fake",), procedural=3, mixtures=8,
                               classes=("rain", "siren", "clock"), procedural_seconds=(1.0, 2.0))
    train, held = read_manifest(paths["train"]), read_manifest(paths["held_out"])
    proc_rows = [r for r in train if r.extra["kind"] == "procedural"]
    assert {r.extra["label"] for r in proc_rows} == {"rain", "siren", "clock"}
    assert all(r.extra["source"].startswith("procedural:") and r.extra["licence"] for r in proc_rows)
    assert all(1.0 <= r.duration <= 2.0 and r.duration * 2 == int(r.duration * 2) for r in proc_rows)
    for cls in ("rain", "siren", "clock"):  # every source of a class in turn, train and held out
        assert len({r.extra["source"] for r in proc_rows if r.extra["label"] == cls}) == 3
        assert len({r.extra["source"] for r in held if r.extra["label"] == cls and r.extra["kind"] == "procedural"}) == 3
    assert all(_template_of(r.caption, HELD_OUT_TEMPLATES) for r in held if r.extra["kind"] == "procedural")
    mixtures = [r for r in train if r.extra["kind"] == "mixture"]
    held_mix = [r for r in held if r.extra["kind"] == "mixture"]
    assert len(mixtures) == 8 and len(held_mix) == 2
    assert all(len(set(r.extra["labels"])) == 2 and r.extra["label"] == r.extra["labels"][0] for r in mixtures + held_mix)
    assert all(-10 <= r.extra["background_db"] <= -3 for r in mixtures)
    # each source's own words, foreground first, and the caption says both (a prompt in parts draws them)
    origin = {Path(str(r.audio)).stem: r.extra["origin"] for r in train + held if r.extra["kind"] != "mixture"}
    for r in mixtures + held_mix:
        words = r.extra["part_captions"]
        assert len(words) == 2 and all(w and w in r.caption for w in words)
        assert all(w == origin[p] for w, p in zip(words, r.extra["parts"]) if p.startswith("proc-"))  # a synth's own words
    for r in mixtures:  # each scene: the foreground's length, audible, not clipped
        wav, sr = read_audio(r.audio)
        assert 0.1 <= np.abs(wav).max() <= 0.9 + 1e-4 and len(wav) / sr == pytest.approx(r.duration, abs=1e-3)
    # held-out scenes mix held-out clips only: their sources' clips are never training audio
    train_ids = {Path(str(r.audio)).stem for r in train if r.extra["kind"] != "mixture"}
    held_ids = {Path(str(r.audio)).stem for r in held if r.extra["kind"] != "mixture"}
    assert all(set(r.extra["parts"]) <= held_ids and not set(r.extra["parts"]) & train_ids for r in held_mix)
    assert all(set(r.extra["parts"]) <= train_ids for r in mixtures)
    unseen = read_manifest(paths["unseen"])
    assert not any(r.extra["kind"] == "mixture" for r in unseen) and {r.extra["label"] for r in unseen} >= {"rain", "siren", "clock"}
    # resuming rewrites nothing and gives the same manifests
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "p" / "wavs").iterdir()}
    again = build_sound_corpus(tmp_path / "p", music=0, seed=0, sources=("fake",), procedural=3, mixtures=8,
                               classes=("rain", "siren", "clock"), procedural_seconds=(1.0, 2.0))
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "p" / "wavs").iterdir()} == stamps
    assert read_manifest(again["train"]) == train and read_manifest(again["held_out"]) == held


def _wav_bytes(seconds: float, freq: float) -> bytes:
    import io

    import soundfile as sf

    buf = io.BytesIO()
    t = np.arange(int(seconds * 16000)) / 16000
    sf.write(buf, (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000, format="WAV")
    return buf.getvalue()


def test_curated_packages_read_directories_zips_and_opensfx(tmp_path, monkeypatch):
    import struct
    import zipfile

    step = _wav_bytes(0.1, 800)
    with zipfile.ZipFile(tmp_path / "snd.pk3", "w") as z:
        for name in ("gravel1", "gravel2", "snow1", "crouch"):
            z.writestr(f"sound/footsteps/{name}.wav", step)
        z.writestr("sound/misc/breakglass01.wav", _wav_bytes(0.8, 3000))
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "carhorn1.wav").write_bytes(_wav_bytes(0.5, 400))
    # an opensfx.cat: a table of (offset, size), then per entry a length-prefixed caption and a RIFF WAV
    entries = [(b"Helicopter", _wav_bytes(0.5, 90)), (b"Toyland: Comedy bus start", _wav_bytes(0.5, 200))]
    table, body = b"", b""
    base = 8 * len(entries)
    for caption, wav in entries:
        blob = bytes([len(caption) + 1]) + caption + b"\0" + wav
        table += struct.pack("<II", base + len(body), len(blob))
        body += blob
    (tmp_path / "fx.cat").write_bytes(table + body)
    monkeypatch.setattr(sound, "CURATED", {
        "zip": sound.Curated(str(tmp_path / "snd.pk3"), "zip-pkg", "CC0", (
            (r"sound/footsteps/(gravel|snow)\d*\.wav", "footsteps", "footsteps on {name}", 2.0),
            (r"sound/misc/breakglass\d+\.wav", "glass breaking", "glass shattering", 0.0))),
        "dir": sound.Curated(str(tmp_path / "dir"), "dir-pkg", "CC0", ((r"carhorn\d\.wav", "car horn", "a car horn honking", 0.0),)),
        "cat": sound.Curated(str(tmp_path / "fx.cat"), "cat-pkg", "CC0", (
            (r"toyland.*", "", "", 0.0), (r"helicopter", "helicopter", "a helicopter flying", 0.0), (r".*bus start.*", "engine", "a bus", 0.0))),
    })
    found = {name: sound._curated(name) for name in sound.CURATED}
    steps = [e for e in found["zip"] if e.cls == "footsteps"]
    assert sorted(e.label for e in steps) == ["footsteps on gravel", "footsteps on snow"]  # one sequence per surface; crouch unmatched
    gravel = next(e for e in steps if "gravel" in e.label)
    assert len(gravel.members) == 2 and gravel.rate == 2.0
    seq = sound.effect_audio(gravel)
    assert len(seq) == 8 * sound.SAMPLE_RATE and 12 <= _count_bursts(seq) <= 18  # ~2 steps a second for 8 s
    assert np.array_equal(seq, sound.effect_audio(gravel))  # seeded by what it is
    glass = next(e for e in found["zip"] if e.cls == "glass breaking")
    assert len(sound.effect_segments(glass, 4.0)) == 1
    assert [(e.cls, e.label) for e in found["dir"]] == [("car horn", "a car horn honking")]
    assert [(e.cls, e.members) for e in found["cat"]] == [("helicopter", ("0:Helicopter",))]  # the Toyland entry is skipped
    heli = sound.effect_audio(found["cat"][0])
    assert len(heli) == pytest.approx(0.5 * sound.SAMPLE_RATE, abs=2)
    assert sound.effect_description(found["cat"][0], "helicopter", np.random.default_rng(0)) == "a helicopter flying"
    missing = sound.Curated(str(tmp_path / "nowhere"), "x", "x", ())
    monkeypatch.setattr(sound, "CURATED", {"missing": missing})
    assert sound._curated("missing") == []  # a package that is not installed has no files


def _count_bursts(x: np.ndarray) -> int:
    hop = 240
    env = np.abs(x)[: len(x) // hop * hop].reshape(-1, hop).max(1)
    above = env > 0.2 * env.max()
    return int(np.count_nonzero(above[1:] & ~above[:-1]) + above[0])
