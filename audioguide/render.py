"""Batch rendering: a manifest in, one WAV per row out; resumable and atomic.

Rows whose output already exists are skipped, so an interrupted job continues where it stopped;
each WAV is written atomically, so an existing file is always complete. Row ``i`` without its own
``seed`` uses ``seed + i``, which makes the output independent of how the job was split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from audioguide.audio import write_wav
from audioguide.core import AudioguideError
from audioguide.manifest import Row
from audioguide.pipeline import PRIMARY_INPUT, Pipeline


@dataclass(frozen=True)
class RenderReport:
    written: int
    skipped: int


def prompt_of(row: Row, task: str) -> str:
    field = PRIMARY_INPUT[task]
    value = getattr(row, field)
    if not value:
        raise AudioguideError(f"manifest row {row.id!r} has no {field!r}, which a {task} recipe needs")
    return value


def render(
    pipe: Pipeline,
    rows: Sequence[Row],
    out_dir: str | Path,
    seed: int = 0,
    on_row: Callable[[Row, bool], None] | None = None,
    **options,
) -> RenderReport:
    """Render every row to ``out_dir/<id>.wav``; ``options`` go to the pipeline call."""
    out_dir = Path(out_dir)
    prompts = [prompt_of(r, pipe.task) for r in rows]  # validate every row before any work
    written = skipped = 0
    for i, (row, prompt) in enumerate(zip(rows, prompts)):
        target = out_dir / f"{row.id}.wav"
        done = target.exists()
        if not done:
            seconds = row.duration if pipe.task == "t2a" else None
            audio = pipe([prompt], seed=row.seed if row.seed is not None else seed + i, seconds=seconds, **options)
            write_wav(target, audio[0], audio.sample_rate)
        written += not done
        skipped += done
        if on_row is not None:
            on_row(row, done)
    return RenderReport(written, skipped)
