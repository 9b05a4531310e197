"""Checkpoints: safetensors files whose metadata carries the model's config.

A checkpoint source is a local ``.safetensors`` file, a directory holding ``model.safetensors``, or
a Hugging Face repo id (``owner/name``, or explicitly ``hf://owner/name``) fetched with
``huggingface_hub`` where a network exists. A user's ``--weights`` is a local path unless written
``hf://...`` (:func:`resolve` with ``local=True``): a mistyped folder is "not found", never a Hub lookup.
Pickled formats (``.pt``, ``.bin``, ``.ckpt``) are refused: loading them can run arbitrary code.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from audioguide.core import AudioguideError, atomic_write

FORMAT = "audioguide/1"
WEIGHTS_NAME = "model.safetensors"
_PICKLED = (".pt", ".pth", ".bin", ".ckpt", ".pkl")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class Checkpoint:
    tensors: dict[str, Tensor]
    config: dict[str, Any]
    kind: str
    path: Path


HUB_PREFIX = "hf://"


def save_checkpoint(path: str | Path, tensors: dict[str, Tensor], config: dict[str, Any], kind: str) -> Path:
    """Write ``tensors`` with ``config`` (JSON) and ``kind`` in the safetensors metadata, atomically;
    a full disk is a one-line error."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    metadata = {"format": FORMAT, "kind": kind, "config": json.dumps(config, sort_keys=True)}
    with atomic_write(path) as tmp:
        try:
            save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        except SafetensorError as e:  # its I/O errors, e.g. "IoError(Os { code: 28, kind: StorageFull ...})"
            storage = "StorageFull" in str(e) or "No space" in str(e)
            reason = "disk full (no space left on device)" if storage else str(e).splitlines()[0]
            raise AudioguideError(f"cannot write {path}: {reason}") from None
    return Path(path)


def resolve(source: str | Path, local: bool = False) -> Path:
    """Find the safetensors file a source names (file, directory, or Hub repo id). With ``local``
    (a user's option) only ``hf://owner/name`` reaches the Hub; anything else is a path."""
    if str(source).startswith(HUB_PREFIX):
        repo_id = str(source)[len(HUB_PREFIX) :]
        if not _REPO_ID.match(repo_id):
            raise AudioguideError(f"not a Hugging Face repo id: {source} (expected hf://owner/name)")
        return _from_hub(repo_id)
    p = Path(source).expanduser()
    if local and not p.exists() and p.suffix not in _PICKLED:
        hint = f"; a Hugging Face repo is written {HUB_PREFIX}{source}" if _REPO_ID.match(str(source)) else ""
        raise AudioguideError(f"checkpoint not found: {source} (no such file or directory{hint})")
    if p.suffix in _PICKLED:
        raise AudioguideError(f"refusing to load pickled checkpoint {p}: convert it to .safetensors")
    if p.is_file():
        return p
    if p.is_dir():
        if (p / WEIGHTS_NAME).is_file():
            return p / WEIGHTS_NAME
        found = sorted(p.glob("*.safetensors"))
        if len(found) == 1:
            return found[0]
        raise AudioguideError(f"no {WEIGHTS_NAME} (or single .safetensors file) in {p}")
    if is_hub_id(str(source)) and not str(source).endswith(".safetensors"):
        return _from_hub(str(source))
    raise AudioguideError(f"checkpoint not found: {source}")


def is_hub_id(source: str) -> bool:
    """``owner/name`` that cannot be a local path (not existing, not path-like, no existing parent)."""
    p = Path(source).expanduser()
    local = p.exists() or source.startswith((".", "/", "~")) or (p.parent.exists() and str(p.parent) != ".")
    return bool(_REPO_ID.match(source)) and not local


def _from_hub(repo_id: str) -> Path:
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo_id, WEIGHTS_NAME))
    except Exception as e:  # network, auth, missing file: all reported the same way
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise AudioguideError(f"cannot fetch {WEIGHTS_NAME} from Hub repo {repo_id!r}: {reason}") from None


def load_checkpoint(source: str | Path, local: bool = False) -> Checkpoint:
    """Load tensors and config from a checkpoint source (``local``: see :func:`resolve`); never unpickles."""
    from safetensors import SafetensorError, safe_open

    path = resolve(source, local)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise AudioguideError(f"{path} is not a valid safetensors file: {e}") from None
    if meta.get("format") != FORMAT:
        raise AudioguideError(f"{path} is not an audioguide checkpoint (metadata format {meta.get('format')!r})")
    return Checkpoint(tensors=tensors, config=json.loads(meta["config"]), kind=meta.get("kind", ""), path=path)
