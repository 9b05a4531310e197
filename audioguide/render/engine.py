"""Rendering windows of jobs with a pipeline, in this process, in local worker processes, or on a
torchrun rank.

:func:`render_window` is the unit every engine runs (the Ray engine too,
:mod:`audioguide.render.ray_engine`): skip the rows already done, prepare every row of the window
(so batch composition is fixed by the manifest), draw the batches that hold an unfinished row, and
write each unfinished row's WAV and result. A failing row is recorded with its error and the others
go on; a batch whose drawing fails is drawn again one piece at a time to find the row at fault.
A full disk is not a row's fault: it stops the run.

:func:`render_jobs` walks the windows of a job list, claiming each (so several processes or hosts on
one directory share the work, each row rendered once), optionally only every ``world``-th window
from ``rank`` (torchrun ranks, deterministic shards). :func:`render_parallel` runs it in ``workers``
local processes with ``torch`` threads split so the cores are never oversubscribed.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from audioguide.core import AudioguideError, Terminated, terminate_on_sigterm
from audioguide.pipeline import Pipeline, Plan
from audioguide.render.jobs import Job, windows
from audioguide.render.store import OutputStore, StoreError


@dataclass(frozen=True)
class Event:
    """What happened to one row: ``done`` (written now), ``skipped`` (done before), ``failed``, or
    ``elsewhere`` (its window is claimed by another live process)."""

    id: str
    status: str
    seconds: float = 0.0  # audio written
    error: str | None = None


OnEvent = Callable[[Event], None]


def _why(e: Exception) -> str:
    return str(e) if isinstance(e, AudioguideError) else f"{type(e).__name__}: {e}"


def render_window(
    pipe: Pipeline, jobs: Sequence[Job], store: OutputStore, options: Mapping[str, Any], batch_size: int = 8,
    on_event: OnEvent | None = None, renew: Callable[[], None] | None = None,
) -> list[Event]:
    """Render the unfinished rows of one window (see the module docstring); one event per row."""
    events: list[Event] = []

    def emit(event: Event) -> None:
        events.append(event)
        if on_event is not None:
            on_event(event)

    todo = {j.index for j in jobs if not store.done(j.file, j.fingerprint)}
    for j in jobs:
        if j.index not in todo:
            emit(Event(j.id, "skipped"))
    if not todo:
        return events

    def fail(job: Job, error: str) -> None:
        store.append({**job.record, "status": "failed", "error": error, "fingerprint": job.fingerprint,
                      "duration": None, "time": round(time.time(), 3)})
        emit(Event(job.id, "failed", error=error))

    planned: list[Job] = []
    plans: list[Plan] = []
    for j in jobs:  # every row of the window, so that batches are what an uninterrupted run draws
        try:
            plans.append(pipe.prepare(j.prompt, seed=j.seed, inputs=j.inputs, seconds=j.seconds, **options))
            planned.append(j)
        except Exception as e:  # noqa: BLE001 - a row's failure is recorded, the run goes on
            if j.index in todo:
                fail(j, _why(e))
    if not plans:
        return events
    plan = Plan.concat(plans)
    wanted = {k for k, j in enumerate(planned) if j.index in todo}
    samples: list[Any] = [None] * len(plan.pieces)
    broken: dict[int, str] = {}  # text -> why its drawing failed
    for batch in pipe.batches(plan, batch_size):
        if not any(plan.pieces[i].index in wanted for i in batch):
            continue
        try:
            drawn = pipe.draw_batch(plan, batch)
        except Exception:  # noqa: BLE001 - find the piece at fault, one at a time
            drawn = []
            for i in batch:
                try:
                    drawn += pipe.draw_batch(plan, [i])
                except Exception as e:  # noqa: BLE001
                    drawn.append(None)
                    broken.setdefault(plan.pieces[i].index, _why(e))
        for i, s in zip(batch, drawn):
            samples[i] = s
        if renew is not None:
            renew()
    for k in sorted(wanted):
        job = planned[k]
        if k in broken:
            fail(job, broken[k])
            continue
        try:
            wav = pipe.assemble(plan, samples, k)
        except Exception as e:  # noqa: BLE001
            fail(job, _why(e))
            continue
        try:
            seconds = store.write_wav(job.file, wav, pipe.sample_rate, job.record["loudness"])
        except StoreError:  # a full disk is no row's fault: the run stops
            raise
        except AudioguideError as e:  # e.g. non-finite audio
            fail(job, str(e))
            continue
        store.append({**job.record, "status": "done", "error": None, "fingerprint": job.fingerprint,
                      "duration": round(seconds, 6), "time": round(time.time(), 3)})
        emit(Event(job.id, "done", seconds))
    return events


def window_size(batch_size: int) -> int:
    """Rows per window: two batches' worth (similar lengths are found among twice as many rows),
    at least 8; small enough that workers share a manifest evenly."""
    return max(8, 2 * batch_size)


def render_jobs(
    pipe: Pipeline, jobs: Sequence[Job], store: OutputStore, options: Mapping[str, Any], batch_size: int = 8,
    rank: int = 0, world: int = 1, on_event: OnEvent | None = None,
) -> None:
    """Render every window of ``jobs`` (the ``rank``-th of every ``world``), claiming each first."""
    for n, (key, part) in enumerate(windows(jobs, window_size(batch_size))):
        if n % world == rank and not skip_done(store, part, on_event):
            render_claimed(pipe, key, part, store, options, batch_size, on_event)


def skip_done(store: OutputStore, part: Sequence[Job], on_event: OnEvent | None = None) -> bool:
    """Whether every row of a window is done already (each then reported ``skipped``)."""
    if not all(store.done(j.file, j.fingerprint) for j in part):
        return False
    for j in part:
        if on_event is not None:
            on_event(Event(j.id, "skipped"))
    return True


def render_claimed(
    pipe: Pipeline, key: str, part: Sequence[Job], store: OutputStore, options: Mapping[str, Any], batch_size: int,
    on_event: OnEvent | None = None,
) -> list[Event]:
    """:func:`render_window` of window ``key`` under a claim on it, renewed after every batch and
    released at the end; rows of a window another live process holds are reported ``elsewhere``."""
    if not store.claim(key):
        events = [Event(j.id, "elsewhere") for j in part]
        for event in events:
            if on_event is not None:
                on_event(event)
        return events
    try:
        return render_window(pipe, part, store, options, batch_size, on_event, renew=lambda: store.renew(key))
    finally:
        store.release(key)


def distributed_shard() -> tuple[int, int]:
    """``(rank, world)`` of a torchrun launch (``RANK`` / ``WORLD_SIZE``), else ``(0, 1)``."""
    try:
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError:
        raise AudioguideError("RANK and WORLD_SIZE must be integers (set by torchrun)") from None
    if not 0 <= rank < world:
        raise AudioguideError(f"RANK {rank} is not in [0, WORLD_SIZE = {world})")
    return rank, world


def threads_per_worker(workers: int, budget: int | None = None) -> int:
    """``torch`` threads for each of ``workers`` processes so that together they use this process's
    thread budget once (``budget``, default ``torch.get_num_threads()``: ``--threads``,
    ``OMP_NUM_THREADS`` or the cores), never oversubscribing the machine."""
    import torch

    return max(1, (budget or torch.get_num_threads()) // workers)


# ---------------------------------------------------------------------------------------------
# Local worker processes
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker process needs to rebuild the pipeline and render its share."""

    recipe: str
    weights: str | None
    threads: int
    out_dir: str
    options: Mapping[str, Any]
    batch_size: int
    lease: float
    rank: int = 0  # a torchrun rank's share: every world-th window from rank
    world: int = 1


def _worker(spec: WorkerSpec, jobs: Sequence[Job], queue) -> None:
    import torch

    terminate_on_sigterm()
    torch.set_num_threads(spec.threads)
    status = 0
    try:
        pipe = Pipeline.from_recipe(spec.recipe, weights=spec.weights)
        store = OutputStore(spec.out_dir, spec.lease)
        render_jobs(pipe, jobs, store, spec.options, spec.batch_size, spec.rank, spec.world, on_event=queue.put)
    except KeyboardInterrupt as e:  # SIGTERM from the parent, or Ctrl-C at the terminal
        status = 128 + (signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT)
    except StoreError as e:
        queue.put(Event("", "fatal", error=str(e)))
        status = 2
    queue.put(None)  # this worker is finished
    os._exit(status)


def render_parallel(spec: WorkerSpec, jobs: Sequence[Job], workers: int, on_event: OnEvent | None = None) -> None:
    """Render ``jobs`` in ``workers`` processes (spawned, each loading the pipeline once); they
    share the windows through claims. Events reach ``on_event`` in this process. A fatal error in a
    worker (a full disk) stops them all and is raised here."""
    import multiprocessing as mp
    import queue as queue_module

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(spec, jobs, queue), daemon=True) for _ in range(workers)]
    for p in procs:
        p.start()
    finished, fatal = 0, None
    try:
        while finished < workers:
            try:
                event = queue.get(timeout=1.0)
            except queue_module.Empty:
                if not any(p.is_alive() for p in procs):
                    break  # a worker was killed before it could say it finished
                continue
            if event is None:
                finished += 1
            elif event.status == "fatal":
                fatal = fatal or event.error
                for p in procs:
                    p.terminate()
            elif on_event is not None:
                on_event(event)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()  # SIGTERM: each unwinds cleanly
            p.join()
    if fatal is not None:
        raise StoreError(fatal)
    crashed = [p.exitcode for p in procs if p.exitcode not in (0, -signal.SIGTERM, 128 + signal.SIGTERM)]
    if crashed:
        raise AudioguideError(f"{len(crashed)} worker process(es) died (exit codes {crashed}); rerun to resume")
