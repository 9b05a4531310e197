"""Manifests: the one dataset format of audioguide, JSON Lines with one utterance or sound per line.

Fields (all optional except what the job needs): ``id``, ``audio`` (path, relative to the
manifest), ``text``, ``speaker``, ``caption``, ``style`` (a voice description), ``duration``
(seconds), ``seed``. Unknown fields are
kept in ``extra`` so other tools' manifests still load. Training reads ``audio`` + conditions;
rendering reads ``text`` (speech) or ``caption`` (sound) and writes ``<id>.wav``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audioguide.core import AudioguideError, atomic_write, check_seed

_FIELDS = ("id", "audio", "text", "speaker", "caption", "style", "duration", "seed")
_SAFE_ID = re.compile(r"^[\w.-]+$")
MAX_ID = 200  # characters; <id>.wav must fit a file name


@dataclass(frozen=True)
class Row:
    id: str
    audio: Path | None = None
    text: str | None = None
    speaker: str | None = None
    caption: str | None = None
    style: str | None = None  # a free-text voice description ("a slow, deep male voice")
    duration: float | None = None
    seed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _typed(value: Any, kind: type, where: str) -> Any:
    if value is None:
        return None
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is str and isinstance(value, str):
        return value
    raise AudioguideError(f"{where} must be {kind.__name__}, got {value!r}")


def _seed(seed: int | None, where: str) -> int | None:
    if seed is None:
        return None
    try:
        return check_seed(seed)
    except AudioguideError as e:
        raise AudioguideError(f"{where}: {e}") from None


def read_manifest(path: str | Path) -> list[Row]:
    """Read and validate a JSONL manifest; any bad line is a one-line error naming the line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise AudioguideError(f"cannot read manifest {path}: {e}") from None
    rows, seen = [], set()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise AudioguideError(f"{where}: invalid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise AudioguideError(f"{where}: each line must be a JSON object")
        audio = _typed(obj.get("audio"), str, f"{where}: audio")
        rid = obj.get("id", Path(audio).stem if audio else f"{len(rows):06d}")
        rid = str(_typed(rid, str, f"{where}: id") if not isinstance(rid, int) else rid)
        if len(rid) > MAX_ID:
            raise AudioguideError(f"{where}: id is {len(rid)} characters; at most {MAX_ID} (it names a file)")
        if not _SAFE_ID.match(rid):
            raise AudioguideError(f"{where}: id {rid!r} may contain only letters, digits, '_', '.', '-'")
        if rid in seen:
            raise AudioguideError(f"{where}: duplicate id {rid!r}")
        seen.add(rid)
        rows.append(
            Row(
                id=rid,
                audio=(path.parent / audio) if audio else None,
                text=_typed(obj.get("text"), str, f"{where}: text"),
                speaker=_typed(obj.get("speaker"), str, f"{where}: speaker"),
                caption=_typed(obj.get("caption"), str, f"{where}: caption"),
                style=_typed(obj.get("style"), str, f"{where}: style"),
                duration=_typed(obj.get("duration"), float, f"{where}: duration"),
                seed=_seed(_typed(obj.get("seed"), int, f"{where}: seed"), where),
                extra={k: v for k, v in obj.items() if k not in _FIELDS},
            )
        )
    if not rows:
        raise AudioguideError(f"manifest {path} has no rows")
    return rows


def cap_per_voice(rows: Sequence[Row], per_voice: int | None) -> list[Row]:
    """At most ``per_voice`` rows per speaker (None: all), in manifest order."""
    seen: Counter = Counter()
    out = []
    for row in rows:
        seen[row.speaker] += 1
        if per_voice is None or seen[row.speaker] <= per_voice:
            out.append(row)
    return out


def write_manifest(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` as JSON Lines, atomically (a crash leaves the previous file or none)."""
    with atomic_write(path) as tmp:
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
