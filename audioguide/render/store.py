"""The output directory of a render: WAVs, the results manifest, claims, and nothing left half-written.

``<out>/<id>.wav``
    written atomically (:func:`audioguide.audio.write_bytes`): a temporary
    ``.<id>.wav.<host>-<pid>.partial`` beside it, fsynced, then renamed over the target. A kill at any moment leaves the old file or the new one, never a mix.
``<out>/results.jsonl``
    one JSON line per finished or failed row (id, file, seed, prompt, inputs, options, recipe and
    weights identity, duration, status, error, fingerprint, time), appended with one ``write`` under
    an exclusive ``flock``; a line torn by a kill is skipped when read. The last line of a row wins.
``<out>/.render/claims/<window>``
    a claim on a window of rows (:func:`audioguide.render.jobs.windows`) by one process: created with
    ``O_EXCL``, so of several renders on one directory exactly one works on a window. A claim whose
    process is gone (same host: its pid is dead; another host: not renewed for ``lease`` seconds)
    is stale and taken over. Temporary files of dead processes are swept away (:meth:`OutputStore.sweep`).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from audioguide.core import AudioguideError, os_reason

RESULTS = "results.jsonl"
STATE = ".render"
HOST = socket.gethostname()
_TAG = re.sub(r"[^\w-]", "_", HOST)  # the host in temporary file names: no dots


class StoreError(AudioguideError):
    """The output directory cannot be written (a full disk, no permission): no row's fault, the run stops."""


def _disk_error(e: OSError, what: Path) -> StoreError:
    return StoreError(f"cannot write {what}: {os_reason(e)}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class OutputStore:
    """One render output directory (see the module docstring). Safe to share between processes."""

    def __init__(self, path: str | Path, lease: float = 600.0) -> None:
        self.path = Path(path)
        self.results = self.path / RESULTS
        self.claims = self.path / STATE / "claims"
        self.lease = lease
        try:
            self.claims.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise _disk_error(e, self.claims) from None
        self._records: dict[str, dict[str, Any]] = {}
        self._offset = 0

    # -- the results manifest --------------------------------------------------------------------

    def records(self) -> dict[str, dict[str, Any]]:
        """The last record of every row, reading only what was appended since the last call."""
        try:
            with open(self.results, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return self._records
        end = data.rfind(b"\n") + 1  # an unfinished last line is read once it is finished
        for line in data[:end].splitlines():
            try:
                record = json.loads(line)
                self._records[record["id"]] = record
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by a kill
        self._offset += end
        return self._records

    def done(self, file: str, fingerprint: str) -> bool:
        """Whether ``file`` exists and its row's last record is a success with this ``fingerprint``."""
        record = self.records().get(Path(file).stem)
        return (record is not None and record.get("status") == "done" and record.get("fingerprint") == fingerprint
                and (self.path / file).is_file())

    def append(self, record: Mapping[str, Any]) -> None:
        """Append one record as one line, atomically with respect to other writers."""
        line = (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode()
        try:
            fd = os.open(self.results, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)  # closing releases the lock
        except OSError as e:
            raise _disk_error(e, self.results) from None

    # -- WAVs ------------------------------------------------------------------------------------

    def _partial(self, file: str) -> str:
        return f".{file}.{_TAG}-{os.getpid()}.partial"

    def write_wav(self, file: str, waveform: np.ndarray, sample_rate: int, target_lufs: float | None = None) -> float:
        """Write a 16-bit PCM WAV through the output stage (:func:`audioguide.audio.master`: loudness
        to ``target_lufs``, None keeps the level, true peaks under the ceiling, nothing clipped),
        atomically and durably; returns its length in seconds."""
        from audioguide.audio import encode_audio, master, write_bytes

        wav, sample_rate = master(waveform, sample_rate, target_lufs=target_lufs)
        data = encode_audio(wav, sample_rate, "wav", "16")  # a bad waveform is the row's fault
        try:
            write_bytes(self.path / file, data, temp=self._partial(file))
        except AudioguideError as e:  # the directory's: the run stops
            raise StoreError(str(e)) from None
        return len(wav) / sample_rate

    def sweep(self) -> int:
        """Remove what killed processes left: temporary files no live process will finish
        (``.<file>.<host>-<pid>.partial`` of a dead pid on this host, or another host's not touched
        for a lease) and stale claims; how many."""
        gone = 0
        with self._claims_locked():
            for claim in self.claims.glob("w*"):
                if self._stale(claim):
                    claim.unlink(missing_ok=True)
                    gone += 1
        for p in self.path.glob(".*.partial"):
            host, _, pid = p.name[: -len(".partial")].rpartition(".")[2].rpartition("-")
            try:
                stale = not _alive(int(pid)) if host == _TAG else time.time() - p.stat().st_mtime > self.lease
            except (ValueError, OSError):
                continue  # not ours, or gone already
            if stale:
                p.unlink(missing_ok=True)
                gone += 1
        return gone

    # -- claims ----------------------------------------------------------------------------------

    @contextmanager
    def _claims_locked(self) -> Iterator[None]:
        fd = os.open(self.claims / ".lock", os.O_WRONLY | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _stale(self, claim: Path) -> bool:
        try:
            owner = json.loads(claim.read_text())
            age = time.time() - claim.stat().st_mtime
        except (OSError, ValueError):
            return True
        if owner.get("host") == HOST:
            return not _alive(int(owner.get("pid", -1)))
        return age > self.lease

    def claim(self, key: str) -> bool:
        """Claim window ``key`` for this process: True if it is now ours (free, stale or ours already)."""
        claim = self.claims / key
        mine = json.dumps({"host": HOST, "pid": os.getpid(), "since": time.time()})
        with self._claims_locked():
            if claim.exists():
                try:
                    owner = json.loads(claim.read_text())
                    if (owner.get("host"), owner.get("pid")) == (HOST, os.getpid()):
                        return True
                except (OSError, ValueError):
                    pass
                if not self._stale(claim):
                    return False
                claim.unlink(missing_ok=True)
            try:
                fd = os.open(claim, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                return False
            except OSError as e:
                raise _disk_error(e, claim) from None
            with os.fdopen(fd, "w") as f:
                f.write(mine)
        return True

    def renew(self, key: str) -> None:
        """Mark the claim on ``key`` alive (its lease starts again)."""
        (self.claims / key).touch(exist_ok=True)

    def release(self, key: str) -> None:
        (self.claims / key).unlink(missing_ok=True)
