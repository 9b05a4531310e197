"""What a rendering job is: one manifest row resolved against a pipeline and the run's options.

A :class:`Job` holds everything that determines a row's audio (its prompt, other inputs, seed,
length, the call options, the recipe's text and the weights' bytes) and a SHA-256 fingerprint of
all of it. A row is done when its file exists and the results manifest records that fingerprint;
any change to what determines the audio changes the fingerprint, so the row is rendered again.

Rows are worked on in *windows*: consecutive runs of manifest rows. Within a window the pipeline
groups pieces of similar length into batches (:meth:`audioguide.pipeline.Pipeline.batches`), so
which rows share a batch depends only on the manifest, never on which rows earlier runs finished:
a resumed run draws exactly the batches an uninterrupted one draws.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from audioguide.components import local_weights
from audioguide.core import AudioguideError, check_seed
from audioguide.manifest import Row
from audioguide.pipeline import PRIMARY_INPUT, Pipeline

OPTIONS = ("steps", "cfg", "scales", "rescale", "candidates")
"""The per-call options a render passes to every row (None: the recipe's)."""


def given(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The options a render actually sets: None and empty ones mean the recipe's own."""
    return {k: v for k, v in (options or {}).items() if v is not None and v != {}}


@dataclass(frozen=True)
class Job:
    """One manifest row, resolved: what the pipeline is called with and the fingerprint of it all."""

    index: int  # position in the manifest
    id: str
    prompt: str
    inputs: Mapping[str, str]
    seed: int
    seconds: float | None
    fingerprint: str
    record: Mapping[str, Any] = field(compare=False)  # what the results manifest says of the job

    @property
    def file(self) -> str:
        return f"{self.id}.wav"


def prompt_of(row: Row, task: str) -> str:
    name = PRIMARY_INPUT[task]
    value = getattr(row, name)
    if not value:
        raise AudioguideError(f"manifest row {row.id!r} has no {name!r}, which a {task} recipe needs")
    return value


def inputs_of(row: Row, pipe: Pipeline) -> dict[str, str]:
    """The row's other conditions (speaker, style) that the pipeline's model takes; those a row
    leaves out are absent (the recipe's ``[defaults]`` when it gives none, as on the command line)."""
    primary = PRIMARY_INPUT[pipe.task]
    return {name: value for name in pipe.model.conditioners if name != primary and (value := getattr(row, name, None))}


def row_seed(row: Row, index: int, seed: int) -> int:
    """A row's own ``seed``, else ``seed + index``: rendering is the same whatever was done before."""
    return row.seed if row.seed is not None else seed + index


def row_seconds(row: Row, pipe: Pipeline) -> float | None:
    """A sound row's ``duration`` (None: the recipe's); speech takes its length from the text."""
    return row.duration if pipe.task == "t2a" else None


def manifest_task(rows: Sequence[Row]) -> str:
    """The task a manifest asks for when no recipe says: captions only -> ``t2a``, else ``tts``."""
    return "t2a" if rows and all(r.caption and not r.text for r in rows) else "tts"


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


@lru_cache(maxsize=64)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def digest(path: Path) -> str:
    """SHA-256 of a file, or of a directory's files (names and bytes), cached per size and mtime."""
    if path.is_dir():
        h = hashlib.sha256()
        for p in sorted(q for q in path.rglob("*") if q.is_file()):
            h.update(str(p.relative_to(path)).encode() + b"\0" + digest(p).encode())
        return h.hexdigest()
    st = path.stat()
    return _file_digest(str(path), st.st_size, st.st_mtime_ns)


def identity(pipe: Pipeline, weights: str | None = None) -> dict[str, Any]:
    """What identifies the generator: the recipe's name and the SHA-256 of its text (and of the
    recipes it extends), and of every weight file it loads (``weights``: the user's model weights
    option). A Hub id stands for itself; a recipe without weights is ``random``."""
    recipe = pipe.recipe
    sources = {
        "representation": recipe.representation.weights,
        "model": weights if weights is not None else recipe.model.weights,
        "verifier": recipe.verifier.weights if recipe.verifier is not None else None,
    }
    if recipe.model.guidance_weights:  # (also with a user's full file: identity need not know what it holds)
        sources["guidance"] = recipe.model.guidance_weights
    out = {}
    for part, source in sources.items():
        if source is None:
            out[part] = None if part == "verifier" else "random"
            continue
        local = local_weights(source, recipe, user=part == "model" and weights is not None)
        out[part] = f"sha256:{digest(local)}" if local is not None else f"hub:{source}"
    ident = {"recipe": recipe.name, "recipe_sha256": digest(recipe.source), "weights": out}
    if recipe.bases:  # the recipes it extends are part of its text
        ident["bases_sha256"] = [digest(p) for p in recipe.bases]
    return ident


def fingerprint(content: Mapping[str, Any]) -> str:
    """SHA-256 of ``content`` as canonical JSON."""
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def jobs_for(
    pipe: Pipeline, rows: Sequence[Row], seed: int = 0, options: Mapping[str, Any] | None = None,
    weights: str | None = None, loudness: float | None = None,
) -> list[Job]:
    """A :class:`Job` per row (validated first, :func:`check_rows`), with ``options`` (a subset of
    :data:`OPTIONS`) applied to every row and the written files levelled to ``loudness`` LUFS (None:
    the model's own level)."""
    options = given(options)
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise AudioguideError(f"render takes the options {', '.join(OPTIONS)}, not {', '.join(unknown)}")
    check_rows(pipe, rows, seed)
    ident = identity(pipe, weights)
    jobs = []
    for i, row in enumerate(rows):
        prompt, inputs, s, seconds = prompt_of(row, pipe.task), inputs_of(row, pipe), row_seed(row, i, seed), row_seconds(row, pipe)
        content = {"task": pipe.task, "prompt": prompt, "inputs": inputs, "seed": s, "seconds": seconds,
                   "options": options, "loudness": loudness, **ident}
        record = {"id": row.id, "file": f"{row.id}.wav", "seed": s, "prompt": prompt, "inputs": inputs, "seconds": seconds,
                  "options": options, "loudness": loudness, **ident}
        jobs.append(Job(i, row.id, prompt, inputs, s, seconds, fingerprint(content), record))
    return jobs


def windows(jobs: Sequence[Job], size: int) -> list[tuple[str, list[Job]]]:
    """Consecutive runs of ``size`` jobs, each with a key naming it (its first row's position and a
    hash of its rows' fingerprints): what a worker claims and renders as one unit."""
    out = []
    for start in range(0, len(jobs), size):
        part = list(jobs[start : start + size])
        key = hashlib.sha256("".join(j.fingerprint for j in part).encode()).hexdigest()[:16]
        out.append((f"w{start:09d}-{key}", part))
    return out
