"""Rendering on Ray (``audioguide render --engine ray``; the optional ``ray`` extra).

Each of ``workers`` Ray actors loads the pipeline once and renders whole windows
(:func:`audioguide.render.engine.render_window`) into the output directory, which must therefore
be a file system every node sees (NFS, a cluster file system, or one machine). The windows are
claimed exactly as by local processes (:class:`audioguide.render.store.OutputStore`), so a Ray job,
local workers and torchrun ranks can even share one directory; the driver only hands out windows
and reports progress. On a cluster: start Ray on the nodes (``ray start --head`` on one, ``ray start
--address HEAD:6379`` on the others), then run the same command with ``RAY_ADDRESS=HEAD:6379`` (or
``--ray-address``) on any node.
"""

from __future__ import annotations

from collections.abc import Sequence

from audioguide.core import AudioguideError
from audioguide.render.engine import Event, OnEvent, WorkerSpec, render_claimed, skip_done, window_size
from audioguide.render.jobs import Job, windows
from audioguide.render.store import OutputStore, StoreError


class _Renderer:
    """The actor: one pipeline, rendering the windows it is given."""

    def __init__(self, spec: WorkerSpec) -> None:
        import torch

        from audioguide.pipeline import Pipeline

        torch.set_num_threads(spec.threads)
        self.spec = spec
        self.pipe = Pipeline.from_recipe(spec.recipe, weights=spec.weights)
        self.store = OutputStore(spec.out_dir, spec.lease)

    def render(self, key: str, jobs: Sequence[Job]) -> list[Event]:
        try:
            return render_claimed(self.pipe, key, jobs, self.store, self.spec.options, self.spec.batch_size)
        except StoreError as e:
            return [Event("", "fatal", error=str(e))]


def render_ray(spec: WorkerSpec, jobs: Sequence[Job], workers: int, on_event: OnEvent | None = None,
               address: str | None = None) -> None:
    """Render ``jobs`` with ``workers`` Ray actors of ``spec.threads`` CPUs each. Connects to the
    cluster at ``address`` (or ``RAY_ADDRESS``), else starts a local Ray instance for the run."""
    try:
        import ray
        from ray.util import ActorPool
    except ImportError:
        raise AudioguideError('--engine ray needs Ray: pip install "audioguide[ray]"') from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        actor = ray.remote(num_cpus=spec.threads)(_Renderer)
        store = OutputStore(spec.out_dir, spec.lease)
        todo = []
        for key, part in windows(jobs, window_size(spec.batch_size)):
            if not skip_done(store, part, on_event):
                todo.append((key, part))
        if not todo:
            return
        pool = ActorPool([actor.remote(spec) for _ in range(min(workers, len(todo)))])
        try:
            for events in pool.map_unordered(lambda a, w: a.render.remote(*w), todo):
                for event in events:
                    if event.status == "fatal":
                        raise StoreError(event.error)
                    if on_event is not None:
                        on_event(event)
        except ray.exceptions.RayError as e:  # an actor died or could not start
            first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
            raise AudioguideError(f"ray: {first}; rerun to resume") from None
    finally:
        if started:
            ray.shutdown()
