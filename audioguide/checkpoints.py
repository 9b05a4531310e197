"""Checkpoints: safetensors files whose metadata carries the model's config.

A checkpoint source is a local ``.safetensors`` file, a directory holding ``model.safetensors``, or
a Hugging Face repo id (``owner/name``) fetched with ``huggingface_hub`` where a network exists.
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


def save_checkpoint(path: str | Path, tensors: dict[str, Tensor], config: dict[str, Any], kind: str) -> Path:
    """Write ``tensors`` with ``config`` (JSON) and ``kind`` in the safetensors metadata, atomically."""
    from safetensors.torch import save_file

    metadata = {"format": FORMAT, "kind": kind, "config": json.dumps(config, sort_keys=True)}
    with atomic_write(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    return Path(path)


def resolve(source: str | Path) -> Path:
    """Find the safetensors file a source names (file, directory, or Hub repo id)."""
    p = Path(source).expanduser()
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


def load_checkpoint(source: str | Path) -> Checkpoint:
    """Load tensors and config from a checkpoint source; never unpickles."""
    from safetensors import SafetensorError, safe_open

    path = resolve(source)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise AudioguideError(f"{path} is not a valid safetensors file: {e}") from None
    if meta.get("format") != FORMAT:
        raise AudioguideError(f"{path} is not an audioguide checkpoint (metadata format {meta.get('format')!r})")
    return Checkpoint(tensors=tensors, config=json.loads(meta["config"]), kind=meta.get("kind", ""), path=path)
