"""Batch rendering: a manifest in, one WAV per row and a results manifest out.

Batched, resumable and shareable (``audioguide render``):

* **Batched** (:mod:`~audioguide.render.engine`): rows are taken a window at a time; within a
  window the pipeline batches pieces of similar length (``batch_size`` per forward), each drawing
  from its own seeded generator, so a row's audio is what rendering it alone gives (bit for bit for
  a codec LM and for equal-length batches; within float rounding, at most one 16-bit step, for
  padded DiT batches). Which rows share a batch depends on the manifest only, so a resumed run writes
  exactly what an uninterrupted one writes.
* **Recorded and resumable** (:mod:`~audioguide.render.store`): ``results.jsonl`` beside the WAVs
  holds a line per row (settings, recipe and weights identity, duration, status, error, and the
  fingerprint of everything that determines its audio, :mod:`~audioguide.render.jobs`). A row is
  done when its file exists and its fingerprint matches; an edited row is rendered again; WAVs are
  written atomically, so a kill at any moment loses nothing finished and corrupts nothing.
* **Faults**: a failing row is recorded with its error and the run goes on (:class:`RenderReport`
  counts it); SIGINT / SIGTERM stop cleanly; a full disk stops the run with a one-line error.
* **Shared**: several processes or hosts on one directory claim windows, each row rendered once;
  ``workers`` local processes; torchrun ranks take deterministic shards; Ray actors
  (:mod:`~audioguide.render.ray_engine`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from audioguide.core import AudioguideError
from audioguide.manifest import Row
from audioguide.pipeline import Pipeline
from audioguide.render.engine import (
    Event,
    OnEvent,
    WorkerSpec,
    distributed_shard,
    render_jobs,
    render_parallel,
    threads_per_worker,
)
from audioguide.render.jobs import Job, check_rows, given, inputs_of, jobs_for, manifest_task, prompt_of, row_seconds, row_seed
from audioguide.render.store import RESULTS, OutputStore, StoreError

ENGINES = ("local", "ray")

__all__ = [
    "ENGINES", "RESULTS", "Event", "Job", "OutputStore", "RenderReport", "StoreError", "check_rows",
    "inputs_of", "jobs_for", "manifest_task", "prompt_of", "render", "row_seconds", "row_seed",
]


@dataclass(frozen=True)
class RenderReport:
    """What a render did: rows ``written`` now, ``skipped`` (done before), ``failed``, left to
    other processes (``elsewhere``), seconds of audio written and of wall time."""

    written: int
    skipped: int
    failed: int = 0
    elsewhere: int = 0
    audio_seconds: float = 0.0
    elapsed: float = 0.0


def render(
    pipe: Pipeline,
    rows: Sequence[Row],
    out_dir: str | Path,
    seed: int = 0,
    *,
    batch_size: int = 8,
    workers: int = 1,
    engine: str = "local",
    weights: str | None = None,
    on_event: OnEvent | None = None,
    lease: float = 600.0,
    ray_address: str | None = None,
    loudness: float | None = None,
    **options,
) -> RenderReport:
    """Render every row of ``rows`` to ``out_dir/<id>.wav`` (see the module docstring).

    ``options`` (``steps``, ``cfg``, ``scales``, ``rescale``, ``candidates``) go to every row's
    pipeline call; ``weights`` names the model weights ``pipe`` was loaded with (for the results'
    identity and for worker processes); files are levelled to ``loudness`` LUFS (ITU-R BS.1770; None:
    the model's level), true peaks under -1 dBTP, never clipped (:func:`audioguide.audio.master`).
    Every row is validated before any work. Under torchrun
    (``RANK`` / ``WORLD_SIZE`` set) this process takes its rank's share of the windows.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise AudioguideError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise AudioguideError(f"workers must be an integer >= 1, got {workers!r}")
    if engine not in ENGINES:
        raise AudioguideError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    jobs = jobs_for(pipe, rows, seed, options, weights, loudness)
    pipe.policy(scales=options.get("scales"), cfg=options.get("cfg"), rescale=options.get("rescale"))
    pipe.sampler_config(options.get("steps"))
    pipe.candidates_for(options.get("candidates"))
    store = OutputStore(out_dir, lease)
    store.sweep()  # what killed runs left half-written
    counts = {"done": 0, "skipped": 0, "failed": 0, "elsewhere": 0}
    audio = [0.0]

    def count(event: Event) -> None:
        counts[event.status] += 1
        audio[0] += event.seconds
        if on_event is not None:
            on_event(event)

    start = time.monotonic()
    rank, world = distributed_shard()
    spec = WorkerSpec(str(pipe.recipe.source), weights, threads_per_worker(workers), str(out_dir),
                      given(options), batch_size, lease, rank, world)
    if engine == "ray":
        from audioguide.render.ray_engine import render_ray

        render_ray(spec, jobs, workers, count, ray_address)
    elif workers > 1:
        render_parallel(spec, jobs, workers, count)
    else:
        render_jobs(pipe, jobs, store, spec.options, batch_size, rank, world, count)
    return RenderReport(counts["done"], counts["skipped"], counts["failed"], counts["elsewhere"], audio[0],
                        time.monotonic() - start)
