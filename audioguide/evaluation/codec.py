"""Resynthesis quality of a representation: encode + decode real speech and compare with the original.

Per voice and overall: log-mel distance (natural-log units, lower is better), multi-resolution
STFT distance, and word error rate of the resynthesised audio through the offline Whisper judge
next to the judge's WER on the original audio (the ceiling), plus encode/decode real-time factors.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from audioguide.audio import read_audio
from audioguide.manifest import Row
from audioguide.metrics import mel_distance, multi_resolution_stft_distance


@dataclass(frozen=True)
class CodecReport:
    group: str
    items: int
    mel_distance: float
    stft_distance: float
    wer_original: float
    wer_resynth: float
    encode_rtf: float
    decode_rtf: float


def evaluate_resynthesis(
    representation, rows: Sequence[Row], tokens: bool = False, judge: str | None = "tiny.en",
    on_item: Callable[[int, int], None] | None = None,
) -> list[CodecReport]:
    """Reports per speaker and for ``all`` rows; ``tokens`` goes through the discrete path."""
    from audioguide.evaluation.asr import transcribe, word_error_rate

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
            word_error_rate(refs, [it["hyp_orig"] for it in judged]) if judged else float("nan"),
            word_error_rate(refs, [it["hyp_rec"] for it in judged]) if judged else float("nan"),
            sum(it["enc"] for it in items) / secs, sum(it["dec"] for it in items) / secs,
        ))
    return reports


def markdown(reports: Sequence[CodecReport], title: str) -> str:
    lines = [f"### {title}", "", "| voice | items | mel dist | MR-STFT dist | WER original | WER resynth | encode RTF | decode RTF |",
             "|---|---|---|---|---|---|---|---|"]
    for r in reports:
        lines.append(f"| {r.group} | {r.items} | {r.mel_distance:.3f} | {r.stft_distance:.3f} | {100 * r.wer_original:.1f} % | "
                     f"{100 * r.wer_resynth:.1f} % | {r.encode_rtf:.4f} | {r.decode_rtf:.4f} |")
    return "\n".join(lines) + "\n"
