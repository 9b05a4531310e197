"""Samplers: flow-matching ODEs, discrete diffusion, mean flows, predictor-corrector guidance and
codec-token AR loops.

Pure functions over a model callable, and the two interfaces recipes run them through
(:class:`ContinuousSampler`, :class:`TokenSampler`; see :mod:`audioguide.sampling.common`).
"""

from audioguide.sampling.common import ContinuousSampler, RowStreams, TokenSampler
from audioguide.sampling.corrector import langevin_correct, sample_pcg
from audioguide.sampling.diffusion import (
    CLEAN_T,
    DiffusionSchedule,
    rescale_zero_terminal_snr,
    sample_ddim,
    sample_ddim_cfgpp,
    sample_dpmpp_2m,
)
from audioguide.sampling.flow import (
    flow_times,
    sample_euler,
    sample_euler_cfgpp,
    sample_heun,
    sample_midpoint,
    shift_times,
    sway_times,
    uniform_times,
)
from audioguide.sampling.meanflow import sample_meanflow
from audioguide.sampling.tokens import (
    apply_delay_pattern,
    sample_delayed,
    sample_next_token,
    undo_delay_pattern,
)

__all__ = [
    "CLEAN_T",
    "ContinuousSampler",
    "RowStreams",
    "TokenSampler",
    "DiffusionSchedule",
    "apply_delay_pattern",
    "flow_times",
    "langevin_correct",
    "rescale_zero_terminal_snr",
    "sample_ddim",
    "sample_ddim_cfgpp",
    "sample_delayed",
    "sample_dpmpp_2m",
    "sample_euler",
    "sample_euler_cfgpp",
    "sample_heun",
    "sample_meanflow",
    "sample_midpoint",
    "sample_pcg",
    "sample_next_token",
    "shift_times",
    "sway_times",
    "undo_delay_pattern",
    "uniform_times",
]
