"""Semantic tokens for a corpus: what an acoustic stage trains on (``audioguide data tokens``).

Each row of a manifest gets its audio's tokens from a recipe's semantic tokenizer
(:class:`~audioguide.representations.semantic.SemanticTokens`) under ``tokens``, written as
:func:`~audioguide.conditioners.tokens.token_text` writes them; everything else in the row is kept
(audio paths made absolute, so the new manifest may live anywhere). The output is written
atomically once every row is done.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from audioguide.audio import read_audio
from audioguide.conditioners.tokens import token_text
from audioguide.core import AudioguideError
from audioguide.manifest import read_manifest, write_manifest


def tokenize_manifest(recipe, source: str | Path, target: str | Path,
                      on_item: Callable[[int, int], None] | None = None) -> int:
    """Write ``target``: the rows of manifest ``source`` with their ``tokens``; returns the row count."""
    from audioguide.components import build_components

    representation, _ = build_components(recipe)
    if not hasattr(representation, "tokenizer"):
        raise AudioguideError(f"recipe {recipe.name!r} has no semantic tokenizer ([representation] type = \"semantic\")")
    representation.eval()
    source = Path(source)
    rows = read_manifest(source)
    raw = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    out = []
    with torch.inference_mode():
        for i, (row, obj) in enumerate(zip(rows, raw)):
            if row.audio is None:
                raise AudioguideError(f"manifest row {row.id!r} has no 'audio'")
            wav = torch.from_numpy(read_audio(row.audio, representation.sample_rate)[0])[None]
            tokens = representation.encode_tokens(wav)[0, 0]
            out.append({**obj, "audio": str(row.audio.resolve()), "tokens": token_text(tokens)})
            if on_item is not None:
                on_item(i + 1, len(rows))
    write_manifest(target, out)
    return len(out)
