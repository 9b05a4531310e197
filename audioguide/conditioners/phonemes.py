"""Phoneme conditioner: English text -> phonemes (offline G2P) -> embeddings.

The G2P is hibari's port of misaki (Apache-2.0; lexicon + POS tagger + an out-of-vocabulary net,
no spaCy, no espeak-ng), which also normalises numbers, dates and abbreviations. The phoneme
alphabet below covers misaki's American and British English symbols; anything else maps to
``<unk>``. Sentences keep their punctuation, which carries prosody. With ``edges = true`` the
sequence is framed by an ``<edge>`` token at each end, one token per symbol: the layout of the
corpus's ``phoneme_samples`` durations (:mod:`audioguide.corpus.speech`), for models that align
phonemes to frames (:mod:`audioguide.models.duration`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from audioguide.conditioners.base import Conditioner, Encoded
from audioguide.core import AudioguideError

PUNCTUATION = " !\"(),.:;?—“”…-'"
LETTERS = "AIOQSTWYabcdefghijklmnopqrstuvwxyz"
IPA = "æçðŋɐɑɒɔəɚɛɜɡɪɹɾʃʊʌʒʔʤʧθβχˈˌːᵊᵻ"
SYMBOLS: tuple[str, ...] = ("<pad>", "<unk>", *dict.fromkeys(PUNCTUATION + LETTERS + IPA), "<edge>")
EDGE = len(SYMBOLS) - 1
_INDEX = {s: i for i, s in enumerate(SYMBOLS)}


@lru_cache(maxsize=2)
def _g2p(british: bool):
    try:
        from hibari.g2p import G2P
    except ImportError:
        raise AudioguideError("the phoneme conditioner needs the G2P of hibari-tts: pip install hibari-tts") from None
    return G2P(british=british)


def phonemize(text: str, british: bool = False) -> str:
    """Misaki-style phonemes of ``text`` (offline).

    The G2P reads numbers as words and fails on numbers beyond its largest name (about 36 digits);
    such text is read again with every digit as its own word ("1 2 3"), and a one-line error
    remains for text it still cannot read.
    """
    g2p = _g2p(british)
    try:
        return g2p(text)
    except Exception:  # noqa: BLE001 - a third-party G2P's failure becomes a one-line error below
        pass
    try:
        return g2p(re.sub(r"\d", r" \g<0> ", text))
    except Exception as e:  # noqa: BLE001
        raise AudioguideError(f"cannot read {text[:40]!r} aloud: the G2P failed ({type(e).__name__})") from None


@dataclass(frozen=True)
class PhonemesConfig:
    dim: int = 64
    max_len: int = 600  # phonemes
    british: bool = False
    edges: bool = False  # an <edge> token before and after the phonemes (the silences of aligned speech)

    def __post_init__(self) -> None:
        if self.dim <= 0 or self.max_len <= 0:
            raise ValueError("dim and max_len must be positive")


class Phonemes(Conditioner):
    """Embeds the phoneme sequence of each text; a learned null stands for 'no text'."""

    Config = PhonemesConfig

    def __init__(self, config: PhonemesConfig) -> None:
        super().__init__(config.dim)
        self.config = config
        self.table = nn.Embedding(len(SYMBOLS), config.dim, padding_idx=0)

    def ids(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        seqs = []
        for text in texts:
            if not text.strip():
                raise AudioguideError("text is empty")
            phones = phonemize(text, self.config.british)
            if not phones.strip(PUNCTUATION):  # nothing but punctuation and spaces
                raise AudioguideError(f"no pronounceable words in {text[:40]!r}")
            if len(phones) > self.config.max_len:
                raise AudioguideError(
                    f"text has {len(phones)} phonemes, over this conditioner's limit of {self.config.max_len}; split it"
                )
            ids = [_INDEX.get(c, 1) for c in phones]
            seqs.append([EDGE, *ids, EDGE] if self.config.edges else ids)
        ids = torch.zeros(len(seqs), max(len(s) for s in seqs), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
        return ids, ids != 0

    def check(self, inputs: Sequence[str]) -> None:
        self.ids(inputs)

    def forward(self, inputs: Sequence[str]) -> Encoded:
        ids, mask = self.ids(inputs)
        return Encoded(self.table(ids.to(self.null.device)), mask.to(self.null.device))
