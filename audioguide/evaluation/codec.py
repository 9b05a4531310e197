"""Resynthesis quality of a representation: encode + decode real speech and compare with the original.

Per voice and overall: log-mel distance (natural-log units, lower is better), multi-resolution
STFT distance, wideband PESQ and STOI of the resynthesis against the original, and word error rate
of the resynthesised audio through the offline Whisper judge next to the judge's WER on the
original audio (the ceiling), plus encode/decode real-time factors.

* **PESQ** (Perceptual Evaluation of Speech Quality), wideband: ITU-T P.862.2, via the ``pesq``
  package at 16 kHz; MOS-LQO from about 1.0 (bad) to 4.64 (transparent).
* **STOI** (Short-Time Objective Intelligibility): Taal, Hendriks, Heusdens & Jensen, "An algorithm
  for intelligibility prediction of time-frequency weighted noisy speech", IEEE TASLP 2011, via
  ``pystoi``; from 0 to 1 (higher is more intelligible).

Both are intrusive (they need the original) and are computed per utterance and averaged; an
utterance PESQ cannot score (no speech found, too short) is left out of its mean.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from audioguide.audio import read_audio
from audioguide.core import AudioguideError
from audioguide.manifest import Row
from audioguide.metrics import mel_distance, multi_resolution_stft_distance


@dataclass(frozen=True)
class CodecReport:
    group: str
    items: int
    mel_distance: float
    stft_distance: float
    pesq: float
    stoi: float
    wer_original: float
    wer_resynth: float
    encode_rtf: float
    decode_rtf: float


PERCEPTUAL_SAMPLE_RATE = 16000  # wideband PESQ is defined at 16 kHz; STOI is computed from it too


def _perceptual_metrics():
    """``(pesq, stoi)`` functions, imported on first use; a one-line error if not installed."""
    try:
        from pesq import pesq
        from pystoi import stoi
    except ImportError:
        raise AudioguideError('PESQ and STOI need the pesq and pystoi packages: pip install "audioguide[eval]"') from None
    return pesq, stoi


def pesq_wb(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """Wideband PESQ (ITU-T P.862.2) MOS-LQO of ``estimate`` against ``reference``; NaN if PESQ
    finds no speech in the reference or it is too short."""
    pesq, _ = _perceptual_metrics()
    from pesq import PesqError

    ref, est = _at_16k(reference, estimate, sample_rate)
    if not np.any(ref):
        return float("nan")  # silence: nothing to score
    try:
        return float(pesq(PERCEPTUAL_SAMPLE_RATE, ref, est, "wb"))
    except PesqError:  # NoUtterancesError, BufferTooShortError
        return float("nan")


def stoi(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """STOI (Taal et al. 2011) of ``estimate`` against ``reference``, in [0, 1]."""
    _, stoi_fn = _perceptual_metrics()
    ref, est = _at_16k(reference, estimate, sample_rate)
    return float(stoi_fn(ref, est, PERCEPTUAL_SAMPLE_RATE, extended=False))


def _at_16k(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Both signals as float64 at 16 kHz, trimmed to the shorter one."""
    ref = np.asarray(reference, dtype=np.float64).reshape(-1)
    est = np.asarray(estimate, dtype=np.float64).reshape(-1)
    n = min(len(ref), len(est))
    ref, est = ref[:n], est[:n]
    if sample_rate != PERCEPTUAL_SAMPLE_RATE:
        import librosa

        ref = librosa.resample(ref, orig_sr=sample_rate, target_sr=PERCEPTUAL_SAMPLE_RATE)
        est = librosa.resample(est, orig_sr=sample_rate, target_sr=PERCEPTUAL_SAMPLE_RATE)
    return ref, est


def _nanmean(values: Sequence[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else float("nan")


def evaluate_resynthesis(
    representation, rows: Sequence[Row], tokens: bool = False, judge: str | None = "tiny.en",
    on_item: Callable[[int, int], None] | None = None, perceptual: bool = True,
) -> list[CodecReport]:
    """Reports per speaker and for ``all`` rows; ``tokens`` goes through the discrete path;
    ``perceptual`` computes PESQ and STOI (NaN otherwise)."""
    from audioguide.evaluation.asr import transcribe, word_error_rate

    if perceptual:
        _perceptual_metrics()  # fail before any work if they are missing
    sr = representation.sample_rate
    per: dict[str, list[dict]] = defaultdict(list)
    for i, row in enumerate(rows):
        wav, _ = read_audio(row.audio, sr)
        x = torch.from_numpy(wav)[None]
        with torch.inference_mode():
            t0 = time.perf_counter()
            z = representation.encode_tokens(x) if tokens else representation.encode(x)
            t1 = time.perf_counter()
            y = (representation.decode_tokens(z) if tokens else representation.decode(z))[0, : len(wav)]
            t2 = time.perf_counter()
        rec = y.numpy()
        item = {
            "mel": float(mel_distance(torch.from_numpy(wav), y, sr)),
            "stft": float(multi_resolution_stft_distance(torch.from_numpy(wav), y)),
            "enc": t1 - t0, "dec": t2 - t1, "sec": len(wav) / sr, "text": row.text or "",
            "pesq": pesq_wb(wav, rec, sr) if perceptual else float("nan"),
            "stoi": stoi(wav, rec, sr) if perceptual else float("nan"),
        }
        if judge and row.text:
            item["hyp_orig"], item["hyp_rec"] = transcribe(wav, sr, judge), transcribe(rec, sr, judge)
        per[row.speaker or "-"].append(item)
        per["all"].append(item)
        if on_item is not None:
            on_item(i + 1, len(rows))
    reports = []
    for group, items in sorted(per.items(), key=lambda kv: (kv[0] == "all", kv[0])):
        secs = sum(it["sec"] for it in items)
        judged = [it for it in items if "hyp_orig" in it]
        refs = [it["text"] for it in judged]
        reports.append(CodecReport(
            group, len(items), float(np.mean([it["mel"] for it in items])), float(np.mean([it["stft"] for it in items])),
            _nanmean([it["pesq"] for it in items]), _nanmean([it["stoi"] for it in items]),
            word_error_rate(refs, [it["hyp_orig"] for it in judged]) if judged else float("nan"),
            word_error_rate(refs, [it["hyp_rec"] for it in judged]) if judged else float("nan"),
            sum(it["enc"] for it in items) / secs, sum(it["dec"] for it in items) / secs,
        ))
    return reports


def markdown(reports: Sequence[CodecReport], title: str) -> str:
    lines = [f"### {title}", "",
             "| voice | items | mel dist | MR-STFT dist | PESQ-WB | STOI | WER original | WER resynth | encode RTF | decode RTF |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in reports:
        pesq_text = "-" if math.isnan(r.pesq) else f"{r.pesq:.2f}"
        stoi_text = "-" if math.isnan(r.stoi) else f"{r.stoi:.3f}"
        lines.append(f"| {r.group} | {r.items} | {r.mel_distance:.3f} | {r.stft_distance:.3f} | {pesq_text} | {stoi_text} | "
                     f"{100 * r.wer_original:.1f} % | {100 * r.wer_resynth:.1f} % | {r.encode_rtf:.4f} | {r.decode_rtf:.4f} |")
    lines += ["", "PESQ-WB: ITU-T P.862.2 MOS-LQO (1 to 4.64); STOI: Taal et al. 2011 (0 to 1); both against the original."]
    return "\n".join(lines) + "\n"
