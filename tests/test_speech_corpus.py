"""Speech corpus text, voice descriptions, merging, and the `voices` command."""

from __future__ import annotations

import json
import re

from typer.testing import CliRunner

from audioguide.cli import app
from audioguide.corpus.speech import describe_rows, espeak_phones, merge_corpora, parse_flite_phones, phone_alignment
from audioguide.corpus.texts import OPEN_FRACTION, open_words, sentences
from audioguide.manifest import read_manifest

runner = CliRunner()


def test_open_vocabulary_sentences_are_seeded_and_varied():
    words = open_words()
    assert all(len(words[k]) > 100 for k in ("nn", "jj", "rb"))
    a, b = sentences(300, 0), sentences(300, 0)
    assert a == b and len(set(a)) == 300
    vocab = {w.strip(".,!?").lower() for s in a for w in s.split()}
    assert len(vocab) > 400  # far beyond the small template lists
    held = sentences(50, 0, "held_out")
    assert not set(held) & set(a)
    assert 0 < OPEN_FRACTION < 1


def test_sus_sentences_are_hard_rare_and_grammatical():
    from audioguide.corpus.texts import ADJ, NOUNS, SUS_VERBS

    sus = sentences(200, 0, "sus")
    assert sus == sentences(200, 0, "sus") and len(set(sus)) == 200
    assert not set(sus) & set(sentences(300, 0)) and not set(sus) & set(sentences(50, 0, "held_out"))
    words = [w.strip(".,!?").lower() for s in sus for w in s.split()]
    assert len(set(words)) > 500  # rare, open-vocabulary words, not the training lists'
    assert not set(words) & (set(NOUNS) | set(ADJ)) - {"the"}
    assert set(words) & set(open_words()["nns"])  # plurals beside singulars
    assert {v for pair in SUS_VERBS for v in pair} & set(words)
    for s in sus:  # "an" before a vowel letter, "a" before a consonant
        toks = s.lower().split()
        for art, nxt in zip(toks, toks[1:]):
            if art in ("a", "an"):
                assert (art == "an") == (nxt[0] in "aeiou"), s
    assert any(s.endswith("?") for s in sus) and any(s.endswith("!") for s in sus)


def _row(speaker, f0, rate, gender="female", accent="american"):
    return {"speaker": speaker, "f0_hz": f0, "f0_range_st": 8.0, "phones_per_second": rate, "gender": gender, "accent": accent}


def test_descriptions_follow_the_measured_attributes():
    rows = [_row("deep", 95.0, r, "male") for r in (8.0, 10.0, 12.0) for _ in range(20)]
    rows += [_row("high", 230.0, r, "female", "japanese") for r in (8.0, 10.0, 12.0) for _ in range(20)]
    bounds = describe_rows(rows, seed=0)
    assert bounds[0] < 10.0 < bounds[1]
    deep = " ".join(r["style"] for r in rows if r["speaker"] == "deep")
    high = " ".join(r["style"] for r in rows if r["speaker"] == "high")
    assert "deep" in deep and "high" not in deep.replace("high,", "") and " male" in deep and "female" not in deep
    assert "high" in high and "Japanese" in high and "deep" not in high
    slow = [r["style"] for r in rows if r["phones_per_second"] == 8.0]
    quick = re.compile(r"\b(quick|quickly|fast|rapid|rapidly|brisk|briskly|hurried)\b")
    assert not any(quick.search(s) for s in slow)
    fast = " ".join(r["style"] for r in rows if r["phones_per_second"] == 12.0)
    assert not re.search(r"\b(slow|slowly|unhurried|unhurriedly|leisurely)\b", fast)
    assert len(set(quick.findall(fast))) >= 3  # paraphrased, not one word
    assert " woman" not in deep and " man" not in high  # the person noun follows the gender
    again = [dict(r) for r in rows]
    describe_rows(again, seed=0)
    assert [r["style"] for r in again] == [r["style"] for r in rows]  # seeded


def test_merge_rewrites_paths_and_describes(tmp_path):
    for name in ("fast", "slow"):
        d = tmp_path / name
        (d / "wavs").mkdir(parents=True)
        for split in ("train", "held_out", "sus"):
            row = {"id": f"{name}-{split}", "audio": f"wavs/{name}.wav", "text": "Hi.", **_row(name, 120.0, 10.0)}
            (d / f"{split}.jsonl").write_text(json.dumps(row) + "\n")
        (d / "wavs" / f"{name}.wav").write_bytes(b"")
    paths = merge_corpora(tmp_path / "all", [tmp_path / "fast", tmp_path / "slow"])
    rows = read_manifest(paths["train"])
    assert [r.id for r in rows] == ["fast-train", "slow-train"]
    assert rows[0].audio.resolve() == (tmp_path / "fast" / "wavs" / "fast.wav").resolve()
    assert all(r.style for r in rows)
    res = runner.invoke(app, ["data", "merge", str(tmp_path / "nope"), "-o", str(tmp_path / "x")])
    assert res.exit_code == 2 and "not found" in res.output


def test_voices_lists_the_recipe_voices_and_its_default():
    res = runner.invoke(app, ["voices", "-r", "speech"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert len(lines) == 9 and any("festival-ked" in line for line in lines) and lines[0].startswith("* hibari-heart")
    assert sum(line.startswith("*") for line in lines) == 1
    res = runner.invoke(app, ["voices", "-r", "random-tts"])
    assert res.exit_code == 2 and "has no named voices" in res.output


def test_flite_phone_times_are_parsed():
    assert parse_flite_phones("pau:0.119 hh:0.212 ax:0.261\n") == [("pau", 0.119), ("hh", 0.212), ("ax", 0.261)]


def test_teacher_phone_times_carry_over_to_our_phonemes():
    # "hˈɛlO" spoken by a teacher as pau hh eh l ow pau, at 100 samples per second
    spoken = [("pau", 0.1), ("hh", 0.2), ("eh", 0.3), ("l", 0.4), ("ow", 0.6), ("pau", 0.7)]
    samples = phone_alignment("hˈɛlO", spoken, 70, 100)
    #          <edge> h  ˈ  ɛ   l   O  <edge>
    assert samples == [10, 10, 0, 10, 10, 20, 10]


def test_a_pause_inside_goes_to_the_punctuation_and_unsaid_phonemes_share_the_next():
    # "bˈi, sˈi." with the teacher dropping nothing; then with a phoneme it did not say (ə)
    spoken = [("pau", 0.1), ("b", 0.2), ("iy", 0.3), ("pau", 0.5), ("s", 0.6), ("iy", 0.7), ("pau", 0.8)]
    samples = phone_alignment("bˈi, sˈi.", spoken, 80, 100)
    tokens = ["<edge>", *"bˈi, sˈi.", "<edge>"]
    assert dict(zip(tokens, samples))[","] == 20 and samples[tokens.index(" ")] == 0
    assert sum(samples) == 80 and samples[0] == 10 and samples[-1] == 10
    samples = phone_alignment("bˈi, əsˈi.", spoken, 80, 100)
    tokens = ["<edge>", *"bˈi, əsˈi.", "<edge>"]
    assert samples[tokens.index("ə")] == 5 and samples[tokens.index("s")] == 5  # s's 10 samples, shared


def test_phone_alignment_refuses_timings_that_do_not_fit():
    spoken = [("pau", 0.1), ("hh", 0.2), ("eh", 0.3), ("l", 0.4), ("ow", 0.6), ("pau", 0.7)]
    assert phone_alignment("hˈɛlO", spoken, 200, 100) is None  # the recording is far longer
    assert phone_alignment("hˈɛlO", spoken[:-1] + [("pau", 0.66)], 70, 100) is not None  # closing pause cut short
    assert phone_alignment("ʃˈæmpu", spoken, 70, 100) is None  # another text: too few phonemes match


def test_espeak_symbols_become_phones_with_their_samples():
    pieces = [("^", 10), ("h", 10), ("ə", 5), ("l", 10), ("ˈ", 5), ("o", 10), ("ʊ", 10), ("ː", 5), (".", 10), ("$", 10)]
    assert espeak_phones(pieces, 1) == [("pau", 10), ("hh", 20), ("ax", 25), ("l", 35), ("ow", 65), ("pau", 75),
                                        ("pau", 85)]


def test_festival_teacher_quotes_the_text_stretches_durations_and_aligns(tmp_path, monkeypatch):
    """festival-ked through a stand-in `festival` program (a real process): it records the Scheme
    script it is given, writes a 16 kHz WAV and prints Segment end times as Festival does."""
    import os
    import sys

    from audioguide.corpus.speech import TEACHERS
    from audioguide.conditioners.phonemes import phonemize

    fake = tmp_path / "bin" / "festival"
    fake.parent.mkdir()
    fake.write_text(f"""#!{sys.executable}
import re, sys, numpy as np, soundfile as sf
script = open(sys.argv[2]).read()
open({str(tmp_path / "seen.scm")!r}, "w").write(script)
out = re.search(r'utt.save.wave utt "([^"]+)"', script).group(1)
stretch = float(re.search(r"Duration_Stretch ([0-9.]+)", script).group(1))
ends = [0.1, 0.2, 0.3, 0.4, 0.6, 0.7]
sf.write(out, np.zeros(int(16000 * 0.7 * stretch), dtype=np.float32), 16000)
print(" ".join(f"{{p}}:{{e * stretch:f}}" for p, e in zip(["pau", "hh", "eh", "l", "ow", "pau"], ends)))
""")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    text = 'Hello "there" \\ hello'  # quotes and a backslash must not break the Scheme string
    teacher = TEACHERS["festival-ked"](speed=1.25)
    wav = teacher.synth(text)
    script = (tmp_path / "seen.scm").read_text()
    assert "(voice_ked_diphone)" in script and "Duration_Stretch 0.8" in script
    assert '"Hello \'there\'   hello"' in script  # one string literal, nothing escaped out of it
    assert len(wav) == int(16000 * 0.7 * 0.8)
    samples = teacher.alignment("Hello", wav)  # another text: resynthesised, then aligned
    assert samples is not None and sum(samples) == len(wav) and len(samples) == len(phonemize("Hello")) + 2
    assert teacher.attributes["gender"] == "male" and teacher.sample_rate == 16000
