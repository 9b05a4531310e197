"""Batch rendering: a manifest in, one WAV per row out; resumable and atomic.

Rows whose output already exists are skipped, so an interrupted job continues where it stopped;
each WAV is written atomically, so an existing file is always complete. Row ``i`` (its position in
the manifest) without its own ``seed`` uses ``seed + i``, so a resumed job writes exactly what an
uninterrupted one would. Every row is validated (prompt, other inputs, duration) before any work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from audioguide.audio import write_wav
from audioguide.core import AudioguideError, check_seed
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


def manifest_task(rows: Sequence[Row]) -> str:
    """The task a manifest asks for when no recipe says: captions only -> ``t2a``, else ``tts``."""
    return "t2a" if rows and all(r.caption and not r.text for r in rows) else "tts"


def inputs_of(row: Row, pipe: Pipeline) -> dict[str, str]:
    """The row's other conditions (speaker, style) that the pipeline's model takes; those a row
    leaves out are absent (the recipe's ``[defaults]`` when it gives none, as on the command line)."""
    primary = PRIMARY_INPUT[pipe.task]
    return {name: value for name in pipe.model.conditioners
            if name != primary and (value := getattr(row, name, None))}


def row_seed(row: Row, index: int, seed: int) -> int:
    """A row's own ``seed``, else ``seed + index``: rendering is the same whatever was done before."""
    return row.seed if row.seed is not None else seed + index


def row_seconds(row: Row, pipe: Pipeline) -> float | None:
    """A sound row's ``duration`` (None: the recipe's); speech takes its length from the text."""
    return row.duration if pipe.task == "t2a" else None


def check_rows(pipe: Pipeline, rows: Sequence[Row], seed: int = 0) -> None:
    """Validate every row before any work: prompt, other inputs, duration, seed. An error names the row."""
    for i, row in enumerate(rows):
        try:
            seconds = row_seconds(row, pipe)
            pipe.check_texts([prompt_of(row, pipe.task)], inputs_of(row, pipe), seconds=seconds)
            if seconds is not None:
                pipe.seconds_for("", seconds)
            check_seed(row_seed(row, i, seed))
        except AudioguideError as e:
            raise AudioguideError(f"row {row.id!r}: {e}") from None


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
    check_rows(pipe, rows, seed)
    written = skipped = 0
    for i, row in enumerate(rows):
        target = out_dir / f"{row.id}.wav"
        done = target.exists()
        if not done:
            audio = pipe([prompt_of(row, pipe.task)], seed=row_seed(row, i, seed),
                         seconds=row_seconds(row, pipe), inputs=inputs_of(row, pipe), **options)
            write_wav(target, audio[0], audio.sample_rate)
        written += not done
        skipped += done
        if on_row is not None:
            on_row(row, done)
    return RenderReport(written, skipped)
