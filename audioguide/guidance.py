"""Guidance: the single home of guidance math in audioguide.

Scale convention (the only one used anywhere in the project)
------------------------------------------------------------
For a conditional prediction ``c`` and an unconditional one ``u``, classifier-free guidance with
scale ``w`` is::

    x = u + w (c - u)            (Ho & Salimans 2022, eq. 6, rewritten)

so ``w = 1`` is no guidance (the conditional prediction) and ``w = 0`` the unconditional one.
Peers write the same thing differently; :func:`from_f5tts`, :func:`from_cosyvoice` and
:func:`from_diffusers_original` convert their numbers to ``w``.

Multi-condition guidance
------------------------
With several conditions (text, speaker, style, ...) the guided prediction is a weighted sum of
predictions in which subsets of the conditions are kept and the rest replaced by their explicit
null condition::

    x = sum_i w_i * model(x_t, keep_i(conds)),     sum_i w_i = 1

(:class:`CFGTerm`; JASCO's ``CFGTerm``, Tal et al. 2024). ``nested`` guidance (InstructPix2Pix,
Brooks et al. 2023, eq. 3; VoxInstruct; MusicGen-Style double CFG) with conditions ``a, b`` is
``u_00 + s_a (u_a0 - u_00) + s_b (u_ab - u_a0)``; ``independent`` guidance (Composable Diffusion,
Liu et al. 2022, eq. 10) is ``u + sum_k s_k (c_k - u)``. Every branch is one slice of ONE batched
forward of the model (see :func:`evaluate_branches`).

The *reference* prediction ``c`` is the branch that keeps every condition of the policy; it is what
rescale, APG, CFG-Zero* and adaptive guidance compare against, and what is returned where guidance
is off (outside the guidance interval, or once adaptive guidance has converged).

Variants (each optional, all composable, applied in this order)
---------------------------------------------------------------
1. CFG-Zero* (Fan et al. 2025, arXiv 2503.18886, eq. 7-9): optimised scale
   ``s* = <c, u> / ||u||^2`` per sample; ``x = s* u + w (c - s* u)``. Only the unconditional branch
   ``u`` (every condition dropped) is rescaled; with several conditions that gives
   ``s* u + sum_k s_k (c_k - s* u)`` (independent) and ``s* u_00 + s_a (u_a0 - s* u_00) + ...``
   (nested). Zero-init: velocity zeroed for ``t`` in the first ``zero_init`` fraction of the time
   range, flow-velocity models only (a zero eps / x0 / v, or a zero *average* velocity, is not "stay
   put"). The paper zeroes the first K solver steps; on a uniform grid of N steps ``zero_init = K/N``
   is the same, on a shifted grid it covers more steps.
2. APG (Sadat et al. 2025, ICLR, Alg. 1): in x0 space, ``d = D_c - D_u``; momentum
   ``d <- d + beta * d_prev``; norm clip ``d <- d * min(1, r / ||d||)``; split ``d`` into parts
   parallel and orthogonal to ``D_c``; ``D = D_c + (w - 1) (d_perp + eta * d_par)``.
   With several terms the same update is applied to every non-reference branch.
3. CFG rescale (Lin et al. 2023, arXiv 2305.08891, §3.4, eq. 15-16):
   ``x_re = x_cfg * std(c) / std(x_cfg)``, ``x = phi x_re + (1 - phi) x_cfg``, in a declared
   prediction space, std over all non-batch dims (``"all"``) or over channels per frame
   (``"channels"``, as stable-audio-tools).
4. Guidance interval (Kynkaanniemi et al. 2024, arXiv 2404.07724, eq. 2): guide only for
   ``lo < t <= hi``, or with ``interval_on = "sigma"`` for ``lo < sigma <= hi`` where ``sigma =
   sigma_t / alpha_t`` is the EDM noise level the paper's intervals are given in (``t / (1 - t)`` on
   a flow path); the conditional prediction elsewhere, without evaluating the other branches.
5. Adaptive guidance (Castillo et al. 2025, AAAI, "Adaptive Guidance", §3): once
   ``cos(c, u)`` (in the model's own prediction space; the paper's thresholds were set on eps) has
   stayed above ``threshold`` for ``patience`` consecutive evaluations for a sample,
   that sample's remaining evaluations skip the unconditional branches and use ``c`` alone.
6. CFG++ (Chung et al. 2024, arXiv 2406.08070) is a sampler, not a combination rule: it needs the
   guided AND the unconditional prediction, which :meth:`GuidedField.pair` returns
   (see ``audioguide.sampling``). Its scale lives in ``[0, 1]``.

Codec language models use the same terms on logits (:class:`GuidedLogits`; audiocraft applies
CFG to logits before temperature / top-k / top-p).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from audioguide.core import (
    PREDICTION_KINDS,
    AlphaSigma,
    Cond,
    Denoiser,
    convert_prediction,
    flow_alpha_sigma,
    prepare,
)

__all__ = [
    "APG",
    "Adaptive",
    "CFGTerm",
    "Guidance",
    "GuidedField",
    "GuidedLogits",
    "apg_update",
    "cfg_zero_star_scale",
    "combine",
    "evaluate_branches",
    "from_cosyvoice",
    "from_diffusers_original",
    "from_f5tts",
    "independent_terms",
    "joint_terms",
    "mix",
    "nested_terms",
    "rescale",
]

# --------------------------------------------------------------------------------------------
# Scale conventions of peers -> our w (u + w (c - u))
# --------------------------------------------------------------------------------------------


def from_f5tts(cfg_strength: float) -> float:
    """F5-TTS ``cfg_strength`` s computes ``c + s (c - u)``, i.e. ``w = 1 + s``."""
    return 1.0 + cfg_strength


def from_cosyvoice(ratio: float) -> float:
    """CosyVoice's inference CFG ratio r computes ``(1 + r) c - r u``, i.e. ``w = 1 + r``."""
    return 1.0 + ratio


def from_diffusers_original(guidance_scale: float) -> float:
    """diffusers ``use_original_formulation=True`` computes ``c + g (c - u)``, i.e. ``w = 1 + g``."""
    return 1.0 + guidance_scale


# --------------------------------------------------------------------------------------------
# Terms: which conditions each branch keeps, and its weight
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CFGTerm:
    """One branch of multi-condition guidance: keep these conditions, weigh the prediction by ``weight``."""

    keep: frozenset[str]
    weight: float


def _merge(terms: Sequence[CFGTerm]) -> tuple[CFGTerm, ...]:
    """Sum the weights of terms that keep the same conditions; keep first-seen order."""
    weights: dict[frozenset[str], float] = {}
    for term in terms:
        weights[term.keep] = weights.get(term.keep, 0.0) + term.weight
    return tuple(CFGTerm(k, w) for k, w in weights.items())


def nested_terms(order: Sequence[str], scales: Sequence[float]) -> tuple[CFGTerm, ...]:
    """Nested guidance ``u_0 + s_1 (u_1 - u_0) + s_2 (u_12 - u_1) + ...`` as weighted terms.

    ``u_k`` keeps the first ``k`` conditions of ``order``. Weights: ``1 - s_1`` on ``u_0``,
    ``s_k - s_{k+1}`` on ``u_k``, ``s_n`` on ``u_n``; they sum to 1. Equal scales collapse to joint
    guidance (intermediate weights are 0).
    """
    if len(order) != len(scales):
        raise ValueError("nested guidance needs one scale per condition")
    if not order:
        return (CFGTerm(frozenset(), 1.0),)
    s = list(scales)
    terms = [CFGTerm(frozenset(), 1.0 - s[0])]
    for k in range(1, len(order) + 1):
        nxt = s[k] if k < len(s) else 0.0
        terms.append(CFGTerm(frozenset(order[:k]), s[k - 1] - nxt))
    return _merge(terms)


def independent_terms(order: Sequence[str], scales: Sequence[float]) -> tuple[CFGTerm, ...]:
    """Composable guidance ``u + sum_k s_k (c_k - u)``: branch ``k`` keeps condition ``k`` only.

    Liu et al. 2022 (Composable Diffusion), eq. 10. The all-conditions branch is not a term (weight 0);
    it is still evaluated as the reference prediction.
    """
    if len(order) != len(scales):
        raise ValueError("independent guidance needs one scale per condition")
    terms = [CFGTerm(frozenset(), 1.0 - sum(scales))]
    terms += [CFGTerm(frozenset([name]), s) for name, s in zip(order, scales)]
    return _merge(terms)


def joint_terms(conditions: Sequence[str], w: float) -> tuple[CFGTerm, ...]:
    """Plain CFG on all conditions at once: ``u + w (c - u)``."""
    return (CFGTerm(frozenset(), 1.0 - w), CFGTerm(frozenset(conditions), w))


# --------------------------------------------------------------------------------------------
# Policy
# --------------------------------------------------------------------------------------------

_MODES = ("nested", "independent", "joint", "terms")
_REDUCE = ("all", "channels")


@dataclass(frozen=True)
class APG:
    """Adaptive Projected Guidance (Sadat et al. 2025, Alg. 1). Paper defaults: eta 0, r 15, beta -0.5."""

    eta: float = 0.0
    norm_threshold: float = 15.0
    momentum: float = -0.5
    space: str = "x0"

    def __post_init__(self) -> None:
        if self.norm_threshold <= 0:
            raise ValueError(f"apg norm_threshold must be > 0, got {self.norm_threshold}")
        if not -1.0 < self.momentum <= 0.0:
            raise ValueError(f"apg momentum must be in (-1, 0], got {self.momentum}")
        if self.space not in PREDICTION_KINDS + ("native",):
            raise ValueError(f"apg space must be one of native, {', '.join(PREDICTION_KINDS)}")


@dataclass(frozen=True)
class Adaptive:
    """Adaptive guidance (Castillo et al. 2025): stop the unconditional branches once converged."""

    threshold: float = 0.999
    patience: int = 2

    def __post_init__(self) -> None:
        if not -1.0 <= self.threshold <= 1.0:
            raise ValueError(f"adaptive threshold is a cosine similarity in [-1, 1], got {self.threshold}")
        if self.patience < 1:
            raise ValueError(f"adaptive patience must be >= 1, got {self.patience}")


@dataclass(frozen=True)
class Guidance:
    """A complete guidance policy; frozen, so a per-call override is ``dataclasses.replace``.

    ``scales`` maps condition name to its scale ``w`` (canonical convention, 1 = no guidance);
    ``mode`` turns them into :class:`CFGTerm` s (``nested`` in the order of ``scales``,
    ``independent``, ``joint`` with the single scale ``scales[*]``), or ``terms`` gives them directly.
    """

    scales: tuple[tuple[str, float], ...] = ()
    mode: str = "nested"
    custom_terms: tuple[CFGTerm, ...] = ()
    rescale: float = 0.0
    rescale_space: str = "native"
    reduce: str = "all"
    apg: APG | None = None
    interval: tuple[float, float] | None = None
    interval_on: str = "t"
    zero_star: bool = False
    zero_init: float = 0.0
    adaptive: Adaptive | None = None

    def __post_init__(self) -> None:
        if isinstance(self.scales, Mapping):
            object.__setattr__(self, "scales", tuple(self.scales.items()))
        if self.mode not in _MODES:
            raise ValueError(f"guidance mode must be one of {', '.join(_MODES)}, got {self.mode!r}")
        for name, w in self.scales:
            if not math.isfinite(w) or w < 0:
                raise ValueError(f"guidance scale for {name!r} must be a finite number >= 0, got {w}")
        if self.mode == "joint" and len({w for _, w in self.scales}) > 1:
            raise ValueError("joint guidance takes one scale for all conditions")
        if not 0.0 <= self.rescale <= 1.0:
            raise ValueError(f"rescale phi must be in [0, 1], got {self.rescale}")
        if self.rescale_space not in PREDICTION_KINDS + ("native",):
            raise ValueError(f"rescale_space must be one of native, {', '.join(PREDICTION_KINDS)}")
        if self.reduce not in _REDUCE:
            raise ValueError(f"reduce must be one of {', '.join(_REDUCE)}, got {self.reduce!r}")
        if self.interval is not None:
            lo, hi = self.interval
            if not 0.0 <= lo < hi:
                raise ValueError(f"guidance interval must satisfy 0 <= lo < hi, got {self.interval}")
        if self.interval_on not in ("t", "sigma"):
            raise ValueError(f"interval_on must be t or sigma, got {self.interval_on!r}")
        if not 0.0 <= self.zero_init < 1.0:
            raise ValueError(f"zero_init must be in [0, 1), got {self.zero_init}")
        if self.mode == "terms":
            total = sum(t.weight for t in self.custom_terms)
            if not self.custom_terms or abs(total - 1.0) > 1e-6:
                raise ValueError(f"guidance term weights must sum to 1, got {total:.6g}")

    @property
    def conditions(self) -> tuple[str, ...]:
        """Every condition the policy guides on, in order."""
        if self.mode == "terms":
            seen: dict[str, None] = {}
            for term in self.custom_terms:
                seen.update(dict.fromkeys(sorted(term.keep)))
            return tuple(seen)
        return tuple(name for name, _ in self.scales)

    @property
    def terms(self) -> tuple[CFGTerm, ...]:
        names = self.conditions
        ws = [w for _, w in self.scales]
        if self.mode == "terms":
            return _merge(self.custom_terms)  # duplicate keep-sets are one branch
        if self.mode == "independent":
            return independent_terms(names, ws)
        if self.mode == "joint":
            return joint_terms(names, ws[0] if ws else 1.0)
        return nested_terms(names, ws)

    def with_scales(self, **scales: float) -> Guidance:
        """A copy with some scales replaced; unknown condition names are errors."""
        current = dict(self.scales)
        for name in scales:
            if name not in current:
                raise ValueError(
                    f"no guidance scale named {name!r}; this policy has {', '.join(current) or 'none'}"
                )
        current.update(scales)
        return dataclasses.replace(self, scales=tuple(current.items()))


# --------------------------------------------------------------------------------------------
# Pure combination functions (each testable against its formula)
# --------------------------------------------------------------------------------------------


def _dims(x: Tensor, reduce: str) -> tuple[int, ...]:
    if reduce == "channels":
        return (1,)
    return tuple(range(1, x.ndim))


def combine(preds: Tensor, weights: Sequence[float]) -> Tensor:
    """``sum_i w_i preds[i]`` over the leading (branch) dimension."""
    w = torch.as_tensor(list(weights), dtype=preds.dtype, device=preds.device)
    return torch.tensordot(w, preds, dims=([0], [0]))


def mix(preds: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
    """``sum_i w_i preds[i]`` for same-shaped predictions: the weighted combination of guidance.

    The one combination rule of the project, used by sampling-time guidance (:class:`GuidedField`,
    :class:`GuidedLogits`) and by training-time folded guidance (``audioguide.training``); the
    stacked form is :func:`combine`.
    """
    if len(preds) != len(weights) or not preds:
        raise ValueError(f"mix needs one weight per prediction, got {len(preds)} and {len(weights)}")
    return combine(torch.stack(list(preds)), weights)


def rescale(x_cfg: Tensor, c: Tensor, phi: float, reduce: str = "all") -> Tensor:
    """CFG rescale (Lin et al. 2023, eq. 15-16): match the std of ``x_cfg`` to that of ``c``."""
    if phi == 0.0:
        return x_cfg
    dims = _dims(x_cfg, reduce)
    ratio = c.std(dim=dims, keepdim=True) / x_cfg.std(dim=dims, keepdim=True).clamp_min(1e-12)
    return phi * (x_cfg * ratio) + (1.0 - phi) * x_cfg


def cfg_zero_star_scale(c: Tensor, u: Tensor) -> Tensor:
    """CFG-Zero* optimised scale ``s* = <c, u> / ||u||^2`` per sample (Fan et al. 2025, eq. 8), shape ``[B, 1, ...]``."""
    dims = tuple(range(1, c.ndim))
    return (c * u).sum(dims, keepdim=True) / (u * u).sum(dims, keepdim=True).clamp_min(1e-12)


def apg_update(
    d: Tensor, ref: Tensor, eta: float, norm_threshold: float, reduce: str = "all"
) -> Tensor:
    """APG's normalised guidance update (Sadat et al. 2025, Alg. 1, after the momentum step).

    Clips ``d`` to norm ``r``, splits it into components parallel and orthogonal to ``ref`` and
    returns ``d_perp + eta * d_par``.
    """
    dims = _dims(d, reduce)
    norm = d.norm(p=2, dim=dims, keepdim=True)
    d = d * torch.clamp(norm_threshold / norm.clamp_min(1e-12), max=1.0)
    unit = ref / ref.norm(p=2, dim=dims, keepdim=True).clamp_min(1e-12)
    d_par = (d * unit).sum(dims, keepdim=True) * unit
    return (d - d_par) + eta * d_par


# --------------------------------------------------------------------------------------------
# One batched forward for every branch
# --------------------------------------------------------------------------------------------


def _repeat_rows(v: Tensor, rows: Tensor) -> Tensor:
    return v.index_select(0, rows)


def evaluate_branches(
    model: Denoiser,
    x: Tensor,
    t: Tensor,
    cond: Cond,
    requests: Sequence[tuple[frozenset[str], Tensor]],
    conditions: Sequence[str],
    extra: Mapping[str, Tensor] | None = None,
    prepared: Mapping[frozenset[str], Cond] | None = None,
) -> list[Tensor]:
    """Evaluate several condition subsets in ONE forward of ``model``.

    ``requests`` holds ``(kept conditions, row indices into the batch)``; the rows of every request
    are stacked into one batch, with the ``keep`` mask of each condition set per row. ``prepared``
    optionally holds, per condition subset, ``cond`` prepared for it
    (:func:`audioguide.core.prepare`); each request then takes its rows from its own. Returns one
    prediction per request, shaped ``[len(rows), ...]``.
    """
    rows = torch.cat([r for _, r in requests])
    keep = {
        name: torch.cat(
            [torch.full((len(r),), name in k, dtype=torch.bool, device=x.device) for k, r in requests]
        )
        for name in conditions
    }
    if prepared is None:
        stacked = {k: _repeat_rows(v, rows) for k, v in cond.items()}
    else:
        names = prepared[requests[0][0]].keys()
        stacked = {n: torch.cat([_repeat_rows(prepared[k][n], r) for k, r in requests]) for n in names}
    out = model(
        _repeat_rows(x, rows),
        _repeat_rows(t, rows),
        stacked,
        keep,
        **{k: _repeat_rows(v, rows) for k, v in (extra or {}).items()},
    )
    return list(out.split([len(r) for _, r in requests]))


# --------------------------------------------------------------------------------------------
# The guided vector field samplers call
# --------------------------------------------------------------------------------------------


@dataclass
class _State:
    """Per-generation state: APG momentum per branch, adaptive-guidance streaks.

    ``momentum[keep]`` is full-batch ``[B, ...]`` (zeros until a row is first guided); each call
    reads and writes only the rows on which guidance is active, so a row's momentum survives the
    calls on which it is not guided (interval, adaptive guidance).
    """

    momentum: dict[frozenset[str], Tensor] = field(default_factory=dict)
    streak: Tensor | None = None
    converged: Tensor | None = None
    rows_evaluated: int = 0
    prepared: dict[frozenset[str], Cond] = field(default_factory=dict)  # per kept-condition subset
    frames: tuple[int, int] = (0, 0)  # the batch size and latent length ``prepared`` was computed for


class GuidedField:
    """``model(x, t, **extra) -> guided prediction`` for one generation; what samplers call.

    Binds a :class:`~audioguide.core.Denoiser`, its condition tensors and a :class:`Guidance`
    policy. It holds per-generation state (APG momentum, adaptive-guidance streaks), so build a new
    one for every generation. ``kind`` is the model's prediction kind and ``alpha_sigma`` its noise
    schedule; both are needed to move predictions into the space a variant declares.
    ``rows_evaluated`` counts network rows evaluated (NFE x batch), to measure savings. The model's
    step-invariant work (:func:`audioguide.core.prepare`) is done once per condition subset, the
    first time that subset is evaluated, and reused at every later step; a generation keeps one
    batch size, length and ``mask`` (a new length or batch size prepares again).
    """

    def __init__(
        self,
        model: Denoiser,
        cond: Cond,
        policy: Guidance,
        kind: str = "flow",
        alpha_sigma: AlphaSigma = flow_alpha_sigma,
    ) -> None:
        if kind not in PREDICTION_KINDS:
            raise ValueError(f"unknown prediction kind {kind!r}")
        if policy.zero_init > 0 and kind != "flow":
            raise ValueError(f"CFG-Zero* zero_init zeroes a flow velocity; a {kind!r} model has none")
        self.model, self.cond, self.policy = model, cond, policy
        self.kind, self.alpha_sigma = kind, alpha_sigma
        self.reference = frozenset(policy.conditions)
        self.terms = policy.terms
        # Branches other than the reference that carry weight; zero-weight branches are never run.
        self.others = [tm for tm in self.terms if tm.keep != self.reference and tm.weight != 0.0]
        self.ref_weight = sum(tm.weight for tm in self.terms if tm.keep == self.reference)
        self.null = frozenset()
        self.state = _State()

    @property
    def rows_evaluated(self) -> int:
        return self.state.rows_evaluated

    def __call__(self, x: Tensor, t: Tensor | float, **extra: Tensor) -> Tensor:
        return self._guide(x, t, extra, want_uncond=False)[0]

    def pair(self, x: Tensor, t: Tensor | float, **extra: Tensor) -> tuple[Tensor, Tensor]:
        """``(guided, unconditional)`` predictions, for CFG++ samplers (one batched forward)."""
        guided, uncond = self._guide(x, t, extra, want_uncond=True)
        assert uncond is not None
        return guided, uncond

    # -- internals ---------------------------------------------------------------------------

    def _active(self, t: Tensor) -> Tensor:
        """Rows [B] on which guidance is on: inside the interval and not adaptively converged."""
        p = self.policy
        active = torch.ones_like(t, dtype=torch.bool)
        if p.interval is not None:
            if p.interval_on == "t":
                at = t
            else:
                a, s = self.alpha_sigma(t)
                at = s / a.clamp_min(1e-12)  # EDM sigma; +huge at pure noise (alpha = 0)
            lo, hi = p.interval
            active &= (at > lo) & (at <= hi)
        if self.state.converged is not None:
            active &= ~self.state.converged
        return active

    def _guide(
        self, x: Tensor, t: Tensor | float, extra: Mapping[str, Tensor], want_uncond: bool
    ) -> tuple[Tensor, Tensor | None]:
        p, B = self.policy, x.shape[0]
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(B).contiguous()
        all_rows = torch.arange(B, device=x.device)
        other_keeps = [tm.keep for tm in self.others]
        # CFG++ renoises with the unconditional prediction even where its weight is 0.
        if want_uncond and self.null != self.reference and self.null not in other_keeps:
            other_keeps.append(self.null)
        active = self._active(t) if other_keeps else torch.zeros(B, dtype=torch.bool, device=x.device)
        act_rows = all_rows[active]
        requests = [(self.reference, all_rows)]
        if len(act_rows):
            requests += [(k, act_rows) for k in other_keeps]
        prepared = self._prepared([self.reference, *other_keeps], x, extra.get("mask"))
        outs = evaluate_branches(self.model, x, t, self.cond, requests, p.conditions, extra, prepared)
        self.state.rows_evaluated += sum(len(r) for _, r in requests)
        c = outs[0]
        by_keep = dict(zip(other_keeps, outs[1:]))
        guided = c.clone()
        # Where guidance is off the unconditional prediction is taken to be c: both samplers'
        # inputs then agree and CFG++ reduces to the plain sampler.
        uncond = c.clone() if want_uncond else None
        if len(act_rows):
            ca = c[active]
            preds = [by_keep[tm.keep] for tm in self.others]
            if preds:
                guided[active] = self._combine(ca, preds, x[active], t[active], active)
                self._update_adaptive(ca, preds, active)
            if uncond is not None and self.null in by_keep:
                uncond[active] = by_keep[self.null]
        if p.zero_init > 0:
            zeroed = (t > 1.0 - p.zero_init).view(-1, *([1] * (guided.ndim - 1)))
            guided = torch.where(zeroed, torch.zeros_like(guided), guided)
        return guided, uncond

    def _prepared(self, keeps: Sequence[frozenset[str]], x: Tensor, mask: Tensor | None) -> dict[frozenset[str], Cond]:
        """``cond`` prepared for each subset in ``keeps`` (all rows), computed once per generation."""
        state, B = self.state, x.shape[0]
        if state.frames != (B, x.shape[-1]):
            state.prepared, state.frames = {}, (B, x.shape[-1])
        for k in keeps:
            if k not in state.prepared:
                keep = {n: torch.full((B,), n in k, dtype=torch.bool, device=x.device) for n in self.policy.conditions}
                state.prepared[k] = prepare(self.model, self.cond, keep, x.shape[-1], mask)
        return state.prepared

    def _combine(self, c: Tensor, preds: list[Tensor], x: Tensor, t: Tensor, active: Tensor) -> Tensor:
        """Guided prediction on the active rows; ``c``, ``preds``, ``x``, ``t`` hold those rows only
        and ``active [B]`` says which rows of the full batch they are."""
        p = self.policy
        weights = [tm.weight for tm in self.others]
        if p.zero_star:
            preds = [cfg_zero_star_scale(c, q) * q if tm.keep == self.null else q for tm, q in zip(self.others, preds)]
        if p.apg is not None:
            guided = self._apg(c, preds, x, t, active)
        else:
            guided = self.ref_weight * c + combine(torch.stack(preds), weights)
        if p.rescale > 0:
            space = self.kind if p.rescale_space == "native" else p.rescale_space
            a, s = self.alpha_sigma(t)
            g_s = convert_prediction(guided, self.kind, space, x, a, s)
            c_s = convert_prediction(c, self.kind, space, x, a, s)
            guided = convert_prediction(rescale(g_s, c_s, p.rescale, p.reduce), space, self.kind, x, a, s)
        return guided

    def _apg(self, c: Tensor, preds: list[Tensor], x: Tensor, t: Tensor, active: Tensor) -> Tensor:
        """``D = D_c + sum_i (-w_i) APG(D_c - D_i)``: for one branch ``-w_u = w - 1`` as in Alg. 1.

        Momentum is kept per branch and per row of the full batch (``active [B]`` selects the rows
        of ``c``); rows not guided on this call keep theirs untouched.
        """
        apg = self.policy.apg
        assert apg is not None
        space = self.kind if apg.space == "native" else apg.space
        a, s = self.alpha_sigma(t)
        D_c = convert_prediction(c, self.kind, space, x, a, s)
        D = D_c.clone()
        for term, q in zip(self.others, preds):
            d = D_c - convert_prediction(q, self.kind, space, x, a, s)
            if apg.momentum != 0.0:
                full = (active.shape[0], *d.shape[1:])
                prev = self.state.momentum.get(term.keep)
                if prev is None:
                    prev = self.state.momentum[term.keep] = d.new_zeros(full)
                elif prev.shape != full:
                    raise ValueError(
                        f"APG momentum is per generation: got rows of shape {full}, earlier {tuple(prev.shape)}; "
                        "build a new GuidedField for a new generation"
                    )
                d = d + apg.momentum * prev[active].to(d.dtype)
                prev[active] = d.to(prev.dtype)
            D = D - term.weight * apg_update(d, D_c, apg.eta, apg.norm_threshold, self.policy.reduce)
        return convert_prediction(D, space, self.kind, x, a, s)

    def _update_adaptive(self, c: Tensor, preds: list[Tensor], active: Tensor) -> None:
        ad = self.policy.adaptive
        if ad is None:
            return
        B = active.shape[0]
        if self.state.streak is None:
            self.state.streak = torch.zeros(B, dtype=torch.long, device=active.device)
            self.state.converged = torch.zeros(B, dtype=torch.bool, device=active.device)
        flat_c = c.flatten(1)
        cos = torch.stack(
            [torch.nn.functional.cosine_similarity(flat_c, q.flatten(1), dim=1) for q in preds]
        ).amin(0)
        streak = self.state.streak[active]
        streak = torch.where(cos >= ad.threshold, streak + 1, torch.zeros_like(streak))
        self.state.streak[active] = streak
        assert self.state.converged is not None
        self.state.converged[active] = streak >= ad.patience


# --------------------------------------------------------------------------------------------
# Codec-LM logits
# --------------------------------------------------------------------------------------------


class GuidedLogits:
    """Multi-condition CFG on codec-LM logits, every branch in one batched step.

    The language model runs on a batch of ``n_branches * B`` rows laid out branch-major
    (branch ``i`` is rows ``i*B .. (i+1)*B - 1``), so its KV cache has that layout from the prompt
    on. :meth:`keep` gives the per-row condition masks for the prompt forward and :meth:`expand`
    repeats per-sample tensors into that layout; :meth:`__call__` turns the stacked logits of one
    step into guided log-probabilities ``sum_i w_i log_softmax(l_i)``. (Because the weights sum to
    one this differs from combining raw logits only by a per-row constant, i.e. not at all after
    softmax.) Temperature, top-k and top-p apply afterwards (audiocraft, ``lm.py``).
    """

    def __init__(self, policy: Guidance) -> None:
        if (
            policy.apg is not None
            or policy.rescale
            or policy.zero_star
            or policy.adaptive
            or policy.zero_init
            or policy.interval is not None
        ):
            raise ValueError(
                "only multi-condition CFG terms apply to logits (no APG, rescale, CFG-Zero*, adaptive, interval)"
            )
        self.policy = policy
        terms = [tm for tm in policy.terms if tm.weight != 0.0]
        self.keeps = tuple(tm.keep for tm in terms) or (frozenset(policy.conditions),)
        self.weights = tuple(tm.weight for tm in terms) or (1.0,)

    @property
    def n_branches(self) -> int:
        return len(self.keeps)

    def keep(self, batch: int, device: torch.device | str = "cpu") -> dict[str, Tensor]:
        return {
            name: torch.tensor([name in k for k in self.keeps], device=device).repeat_interleave(batch)
            for name in self.policy.conditions
        }

    def expand(self, v: Tensor) -> Tensor:
        return v.repeat(self.n_branches, *([1] * (v.ndim - 1)))

    def __call__(self, logits: Tensor) -> Tensor:
        """Stacked logits ``[n_branches * B, ...]`` -> guided log-probabilities ``[B, ...]``."""
        n = self.n_branches
        per_branch = logits.float().log_softmax(-1).unflatten(0, (n, logits.shape[0] // n))
        return combine(per_branch, self.weights)
