"""Plain registries: the component names a recipe may use, and what each name builds.

Each entry pairs a name with a class (or sampler) and its frozen ``Config`` dataclass; a recipe's
table for that component is validated against the ``Config`` fields. Adding a component means
adding one line here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from audioguide.conditioners import Characters, Phonemes, PretrainedText, SpeakerId, SpeakerReference
from audioguide.core import AlphaSigma, flow_alpha_sigma
from audioguide.guidance import GuidedField
from audioguide.models import ToyFlow
from audioguide.models.codec_lm import CodecLM
from audioguide.models.dit import DiT
from audioguide.models.verifier import PhoneVerifier
from audioguide.representations import Autoencoder, Encodec, Frames
from audioguide.sampling.common import Callback
from audioguide.sampling.diffusion import DIFFUSION_KINDS
from audioguide.sampling import (
    DiffusionSchedule,
    flow_times,
    sample_ddim,
    sample_ddim_cfgpp,
    sample_dpmpp_2m,
    sample_euler,
    sample_euler_cfgpp,
    sample_heun,
    sample_meanflow,
    sample_midpoint,
)
from audioguide.sampling.tokens import sample_codec_lm

REPRESENTATIONS: dict[str, type] = {"frames": Frames, "autoencoder": Autoencoder, "encodec": Encodec}
CONDITIONERS: dict[str, type] = {
    "characters": Characters,
    "phonemes": Phonemes,
    "speaker-id": SpeakerId,
    "speaker-reference": SpeakerReference,
    "pretrained-text": PretrainedText,
}
MODELS: dict[str, type] = {"toy-flow": ToyFlow, "dit": DiT, "codec-lm": CodecLM}
VERIFIERS: dict[str, type] = {"phones": PhoneVerifier}



# ---------------------------------------------------------------------------------------------
# Samplers: each entry adapts one pure sampling function to the (field, x, config) call.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlowSamplerConfig:
    steps: int = 16
    schedule: str = "uniform"  # uniform | shift | sway
    shift: float = 1.0
    sway: float = -1.0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        flow_times(1, self.schedule, self.shift, self.sway)  # validates the schedule
        if self.shift != 1.0 and self.schedule != "shift":
            raise ValueError('shift applies only to schedule = "shift"')
        if self.sway != -1.0 and self.schedule != "sway":
            raise ValueError('sway applies only to schedule = "sway"')


@dataclass(frozen=True)
class DiffusionSamplerConfig:
    steps: int = 25
    beta_schedule: str = "scaled_linear"  # linear | scaled_linear | cosine
    num_train_steps: int = 1000
    zero_terminal_snr: bool = True
    eta: float = 0.0  # DDIM stochasticity (0 = deterministic)

    def __post_init__(self) -> None:
        if not 1 <= self.steps <= self.num_train_steps:
            raise ValueError(f"steps must be in [1, {self.num_train_steps}], got {self.steps}")
        if self.eta < 0:
            raise ValueError(f"eta must be >= 0, got {self.eta}")
        self.schedule()  # validates beta_schedule

    def schedule(self) -> DiffusionSchedule:
        return DiffusionSchedule.make(self.num_train_steps, self.beta_schedule, self.zero_terminal_snr)


@dataclass(frozen=True)
class MeanFlowSamplerConfig:
    steps: int = 1

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")


@dataclass(frozen=True)
class TokenSamplerConfig:
    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    prior_weight: float = 0.0  # shallow fusion of the model's content prior (0 = off; see sampling.tokens.fuse_prior)

    def __post_init__(self) -> None:
        if self.temperature < 0 or self.top_k < 0 or not 0.0 < self.top_p <= 1.0:
            raise ValueError("need temperature >= 0, top_k >= 0 and 0 < top_p <= 1")
        if not (self.prior_weight >= 0 and math.isfinite(self.prior_weight)):
            raise ValueError(f"prior_weight must be a finite number >= 0, got {self.prior_weight}")


@dataclass(frozen=True)
class Sampler:
    """A sampler as recipes see it: its config, the model kinds it accepts, and how to run it."""

    Config: type
    kinds: tuple[str, ...]
    alpha_sigma: Callable[[Any], AlphaSigma]
    run: Callable[[GuidedField, Tensor, Any, torch.Generator, Callback | None], Tensor]
    cfgpp: bool = False  # CFG++: guidance scale lives in [0, 1]
    mean_flow: bool = False  # needs a model of average velocity u(z, r, t)
    tokens: bool = False  # autoregressive over codec tokens: run is (model, cond, policy, frames, cfg, generator)


def _flow(fn: Callable, pair: bool = False) -> Sampler:
    def run(field, x, cfg, generator, callback):
        ts = flow_times(cfg.steps, cfg.schedule, cfg.shift, cfg.sway)
        return fn(field.pair if pair else field, x, ts, callback=callback)

    return Sampler(FlowSamplerConfig, ("flow",), lambda cfg: flow_alpha_sigma, run, cfgpp=pair)


def _ddim(field, x, cfg, generator, callback):
    s = cfg.schedule()
    return sample_ddim(field, x, s.trailing_times(cfg.steps), s, field.kind, cfg.eta, generator, callback)


def _dpmpp(field, x, cfg, generator, callback):
    s = cfg.schedule()
    return sample_dpmpp_2m(field, x, s.trailing_times(cfg.steps), s, field.kind, callback=callback)


def _ddim_cfgpp(field, x, cfg, generator, callback):
    s = cfg.schedule()
    return sample_ddim_cfgpp(field.pair, x, s.trailing_times(cfg.steps), s, field.kind, callback=callback)


def _meanflow(field, x, cfg, generator, callback):
    return sample_meanflow(field, x, cfg.steps, callback=callback)


def _autoregressive(model, cond, policy, frames, cfg, generator):
    return sample_codec_lm(model, cond, frames, policy, generator, cfg.temperature, cfg.top_k, cfg.top_p, cfg.prior_weight)


SAMPLERS: dict[str, Sampler] = {
    "euler": _flow(sample_euler),
    "heun": _flow(sample_heun),
    "midpoint": _flow(sample_midpoint),
    "euler-cfgpp": _flow(sample_euler_cfgpp, pair=True),
    "ddim": Sampler(DiffusionSamplerConfig, DIFFUSION_KINDS, lambda c: c.schedule().alpha_sigma, _ddim),
    "dpmpp-2m": Sampler(DiffusionSamplerConfig, DIFFUSION_KINDS, lambda c: c.schedule().alpha_sigma, _dpmpp),
    "ddim-cfgpp": Sampler(DiffusionSamplerConfig, DIFFUSION_KINDS, lambda c: c.schedule().alpha_sigma, _ddim_cfgpp, cfgpp=True),
    "meanflow": Sampler(MeanFlowSamplerConfig, ("flow",), lambda c: flow_alpha_sigma, _meanflow, mean_flow=True),
    "ar": Sampler(TokenSamplerConfig, ("tokens",), lambda c: flow_alpha_sigma, _autoregressive, tokens=True),
}
