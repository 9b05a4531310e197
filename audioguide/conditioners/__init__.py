"""Conditioners: turn raw inputs (text, phonemes, speaker, caption) into embeddings.

Each conditioner has an explicit, learned null condition (:meth:`Conditioner.select`), used when
guidance or training dropout removes the condition.
"""

from audioguide.conditioners.base import Conditioner, Encoded
from audioguide.conditioners.characters import Characters
from audioguide.conditioners.phonemes import Phonemes
from audioguide.conditioners.speaker import SpeakerId, SpeakerReference
from audioguide.conditioners.text_encoder import PretrainedText
from audioguide.conditioners.tokens import SemanticTokenIds

__all__ = ["Characters", "Conditioner", "Encoded", "Phonemes", "PretrainedText", "SemanticTokenIds", "SpeakerId", "SpeakerReference"]
