"""Progress of a render, for a person at a terminal and for a log file.

On a terminal: a rich progress bar with rows per second and the time remaining. Elsewhere (a log,
a pipe, a batch system): a plain line every ``every`` seconds, e.g.
``render: 120/1000 rows (100 written, 20 skipped, 0 failed), 3.2 rows/s, 0:04:35 left``. Either way
:meth:`RenderProgress.summary` says what the run did at the end.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from datetime import timedelta
from typing import TextIO

from audioguide.render.engine import Event


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=int(round(seconds))))


class RenderProgress:
    """Counts row events (:class:`~audioguide.render.engine.Event`) and shows them."""

    def __init__(self, total: int, every: float = 10.0, stream: TextIO | None = None, bar: bool | None = None) -> None:
        self.total, self.every, self.stream = total, every, stream or sys.stderr
        self.counts: Counter[str] = Counter()
        self.audio = 0.0
        self.start = self._last = time.monotonic()
        self.bar = self.stream.isatty() if bar is None else bar
        self._rich = None

    def __enter__(self) -> RenderProgress:
        if self.bar:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._rich = Progress(TextColumn("rendering"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                                  console=Console(file=self.stream), transient=True)
            self._rich.__enter__()
            self._task = self._rich.add_task("rendering", total=self.total, rate="")
        return self

    def __exit__(self, *exc) -> None:
        if self._rich is not None:
            self._rich.__exit__(*exc)

    @property
    def handled(self) -> int:
        return sum(self.counts.values())

    @property
    def rate(self) -> float:
        """Rows written per second so far (rows skipped as done cost nothing and do not count)."""
        return self.counts["done"] / max(time.monotonic() - self.start, 1e-9)

    def left(self) -> float | None:
        remaining = self.total - self.handled
        return remaining / self.rate if self.rate > 0 else None

    def line(self) -> str:
        c = self.counts
        left = self.left()
        return (f"render: {self.handled}/{self.total} rows ({c['done']} written, {c['skipped']} skipped, "
                f"{c['failed']} failed), {self.rate:.2f} rows/s" + (f", {_clock(left)} left" if left is not None else ""))

    def __call__(self, event: Event) -> None:
        self.counts[event.status] += 1
        self.audio += event.seconds
        now = time.monotonic()
        if self._rich is not None:
            self._rich.update(self._task, completed=self.handled, rate=f"{self.rate:.2f} rows/s")
        elif now - self._last >= self.every:
            self._last = now
            print(self.line(), file=self.stream, flush=True)

    def summary(self) -> str:
        c, elapsed = self.counts, time.monotonic() - self.start
        text = (f"{c['done']} written, {c['skipped']} skipped (done before), {c['failed']} failed"
                + (f", {c['elsewhere']} left to other processes" if c["elsewhere"] else "")
                + f"; {self.audio:.2f} s of audio in {elapsed:.2f} s ({self.rate:.2f} rows/s")
        return text + (f", RTF {elapsed / self.audio:.3f})" if self.audio else ")")
