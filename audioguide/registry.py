"""Plain registries: the component names a recipe may use, and the object each name stands for.

Every entry is a class (or, for samplers, a :class:`~audioguide.sampling.ContinuousSampler` /
:class:`~audioguide.sampling.TokenSampler`) with a frozen ``Config`` dataclass against which the
recipe's table for that component is validated. Adding a component means adding one line here.
"""

from __future__ import annotations

from audioguide.conditioners import Characters, Phonemes, PretrainedText, SemanticTokenIds, SpeakerId, SpeakerReference
from audioguide.models import ToyFlow
from audioguide.models.caption_verifier import CaptionVerifier
from audioguide.models.codec_lm import CodecLM
from audioguide.models.dit import DiT
from audioguide.models.verifier import PhoneVerifier
from audioguide.representations import Autoencoder, Encodec, Frames
from audioguide.representations.semantic import SemanticTokens
from audioguide.sampling import ContinuousSampler, TokenSampler
from audioguide.sampling.corrector import DDIM_PCG, EULER_PCG
from audioguide.sampling.diffusion import DDIM, DDIM_CFGPP, DPMPP_2M
from audioguide.sampling.flow import EULER, EULER_CFGPP, HEUN, MIDPOINT
from audioguide.sampling.meanflow import MEANFLOW
from audioguide.sampling.tokens import AR

REPRESENTATIONS: dict[str, type] = {"frames": Frames, "autoencoder": Autoencoder, "encodec": Encodec, "semantic": SemanticTokens}
CONDITIONERS: dict[str, type] = {
    "characters": Characters,
    "phonemes": Phonemes,
    "speaker-id": SpeakerId,
    "speaker-reference": SpeakerReference,
    "pretrained-text": PretrainedText,
    "semantic-tokens": SemanticTokenIds,
}
MODELS: dict[str, type] = {"toy-flow": ToyFlow, "dit": DiT, "codec-lm": CodecLM}
VERIFIERS: dict[str, type] = {"phones": PhoneVerifier, "caption": CaptionVerifier}
SAMPLERS: dict[str, ContinuousSampler | TokenSampler] = {
    "euler": EULER,
    "heun": HEUN,
    "midpoint": MIDPOINT,
    "euler-cfgpp": EULER_CFGPP,
    "euler-pcg": EULER_PCG,
    "ddim": DDIM,
    "dpmpp-2m": DPMPP_2M,
    "ddim-cfgpp": DDIM_CFGPP,
    "ddim-pcg": DDIM_PCG,
    "meanflow": MEANFLOW,
    "ar": AR,
}
