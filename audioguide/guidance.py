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
forward of the model (see :func:`evaluate_branches`). Several prompts of ONE condition (a sound
scene's sources: "a dog barking" AND "rain falling") are Liu et al.'s conjunction too: the model
wrapped in a :class:`Conjunction`, whose conditional prediction is ``u + sum_k lam_k (c_k - u)``,
so that the guidance above it weighs every part. This weighted sum is the base combination,
for continuous predictions (:class:`GuidedField`) and codec-LM logits (:class:`GuidedLogits`).

The *reference* prediction ``c`` is the branch that keeps every condition of the policy; it is what
guiders compare against, and what is returned where guidance is off (outside the guidance interval,
or once adaptive guidance has converged).

Guiders: one class per guidance method
--------------------------------------
Every method beyond the weighted sum is one :class:`Guider` subclass, registered by name in
:data:`GUIDERS`. A guider declares the prediction ``space`` it works in, whether it applies to
codec-LM ``logits``, the extra ``branches`` it needs evaluated, what model kinds and samplers it
allows (:meth:`Guider.check`), and implements some of these hooks, which :class:`GuidedField` runs
in this order on every evaluation, each over the policy's guiders in order:

1. ``gate``: the rows on which guidance is on (:class:`Interval`, :class:`Adaptive`);
2. ``adjust``: change the branch predictions (:class:`CFGZeroStar`'s optimised scale,
   :class:`TCFG`'s tangential damping);
3. ``combine``: replace the weighted sum (:class:`APG`; :class:`Dynamic`, which picks each row's
   scale by an evaluator's feedback; at most one guider per policy);
4. ``refine``: change the guided prediction (:class:`PAG` and :class:`STG` add their perturbed
   branch's term, :class:`Rescale` matches a std);
5. ``observe``: update the guider's per-generation state (:class:`Adaptive`);
6. ``post``: change the guided prediction of every row (:class:`CFGZeroStar`'s zero-init).

Perturbation guidance
---------------------
A branch need not drop conditions: a :class:`Perturbed` branch keeps its conditions and asks the
model to perturb its own layers on that branch's rows (self-attention maps replaced by the identity,
or whole blocks skipped). The model declares what it can perturb (``model.perturbable``, kind ->
number of layers) and takes the per-row flags as its ``perturb`` input, the way it takes ``keep``;
deciding which rows are perturbed, and what the perturbed prediction is combined into, stays here
(:class:`PAG`, :class:`STG`). A perturbed branch is one more slice of the same batched forward.

Distilled guidance
------------------
A guidance-distilled student (Meng et al. 2023, "On Distillation of Guided Diffusion Models",
CVPR, §3.1, eq. 6-7; as adapters, Jensen et al. 2025, arXiv 2503.07274) takes the scale ``w`` of
some conditions as an input (``model.guidance_inputs``, e.g. ``("text",)``) and gives the guided
prediction in one forward. With ``distilled = True`` (a recipe's ``[guidance] distilled = true``)
:class:`GuidedField` runs those conditions of the policy as model inputs instead of branches: their
scales are set to 1 in the terms (so no branch is evaluated for them) and passed, per row, as the
model's ``guidance`` input ``[B, n]`` (1 on rows where a ``gate`` turns guidance off); the other
conditions still get their branches, each evaluated at the distilled scales. A fully distilled
policy costs one row per sample and evaluation. Only ``nested`` and ``independent`` policies can be
distilled (:func:`check_distilled`, which also refuses a model without guidance inputs for any of
the policy's conditions); the training target is this module's own guided prediction of the teacher
(``audioguide.training``).

Mean-flow models
----------------
A mean-flow model predicts the average velocity ``u(z, r, t)`` over ``[r, t]`` (Geng et al. 2025,
§3), which fixes the flow map ``z_r = z - (t - r) u`` but not the instantaneous velocity
``v(z, t) = u(z, t, t)``, and so not ``E[x0 | z_t] = z - t v`` either: converting ``u`` as if it were
``v`` is exact only for ``r = t`` (for N(0, 1) data at ``t = 1``, ``r = 0.5`` it gives ``0.414 z`` where
``E[x0 | z] = 0``). A guider that works in another space than the model's own (APG's default x0,
``rescale_space = "x0"``) is therefore refused with a mean-flow sampler (:meth:`Guider.check`), and
:class:`GuidedField` refuses to convert on a call whose ``r`` differs from ``t``. The exact
conversion would need ``v``, i.e. one more network row per branch at ``r = t``: a different
method, not a change of space. In the model's own space (``native`` or ``flow``) every guider
applies to average velocities as CFG itself does.

A :class:`Guidance` policy builds the built-in guiders from its keywords (the ``[guidance]`` keys
of a recipe) and appends any others given as ``guiders=``. CFG++ (Chung et al. 2024, arXiv
2406.08070) is a sampler, not a guider: it needs the guided AND the unconditional prediction,
which :meth:`GuidedField.pair` returns (see ``audioguide.sampling``); its scales live in
``[0, 1]`` (:func:`check_policy`).

Codec language models use the same terms on logits (:class:`GuidedLogits`; audiocraft applies
CFG to logits before temperature / top-k / top-p). Their guiders refine the guided log-probs
(``refine_logits``), or with the AR loop's step in hand (``refine_step``, :class:`TokenStep`):
:class:`GeDi` rescores candidate tokens by a discriminator bound per generation.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from audioguide.core import (
    PREDICTION_KINDS,
    AlphaSigma,
    Cond,
    Denoiser,
    Keep,
    convert_prediction,
    flow_alpha_sigma,
    part_key,
    prepare,
)

__all__ = [
    "APG",
    "GUIDERS",
    "PAG",
    "STG",
    "TCFG",
    "Adaptive",
    "Branch",
    "CFGTerm",
    "CFGZeroStar",
    "Conjunction",
    "Dynamic",
    "Evaluator",
    "GeDi",
    "Guidance",
    "GuidanceError",
    "GuidedField",
    "GuidedLogits",
    "Guider",
    "Interval",
    "Perturbed",
    "Rescale",
    "Step",
    "TokenJudge",
    "TokenStep",
    "apg_update",
    "cfg_zero_star_scale",
    "check_distilled",
    "check_perturbations",
    "check_policy",
    "combine",
    "evaluate_branches",
    "from_cosyvoice",
    "from_diffusers_original",
    "from_f5tts",
    "guider",
    "independent_terms",
    "joint_terms",
    "mix",
    "nested_terms",
    "rescale",
    "tangential_damping",
]


class GuidanceError(ValueError):
    """An invalid guidance policy, or one that a model kind or sampler does not allow (one line)."""


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


@dataclass(frozen=True)
class Perturbed:
    """A branch that keeps the conditions ``keep`` and perturbs the model itself on its rows.

    ``perturb`` names a per-row perturbation the model declares in ``model.perturbable`` (for the
    DiT: ``"attention"``, self-attention map replaced by the identity; ``"skip"``, the block skipped)
    and ``layers`` the layers (0-based) it applies to. :func:`evaluate_branches` turns it into the
    model's ``perturb`` input, ``{perturb: [rows, layers] bool}``, True on this branch's rows.
    """

    keep: frozenset[str]
    perturb: str
    layers: tuple[int, ...]


Branch = frozenset[str] | Perturbed
"""What a branch of guidance evaluates: a subset of the conditions kept, or that and a perturbation."""


def _keep_of(branch: Branch) -> frozenset[str]:
    return branch.keep if isinstance(branch, Perturbed) else branch


def nested_terms(order: Sequence[str], scales: Sequence[float]) -> tuple[CFGTerm, ...]:
    """Nested guidance ``u_0 + s_1 (u_1 - u_0) + s_2 (u_12 - u_1) + ...`` as weighted terms.

    ``u_k`` keeps the first ``k`` conditions of ``order``. Weights: ``1 - s_1`` on ``u_0``,
    ``s_k - s_{k+1}`` on ``u_k``, ``s_n`` on ``u_n``; they sum to 1. Equal scales collapse to joint
    guidance (intermediate weights are 0).
    """
    if len(order) != len(scales):
        raise GuidanceError("nested guidance needs one scale per condition")
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
        raise GuidanceError("independent guidance needs one scale per condition")
    terms = [CFGTerm(frozenset(), 1.0 - sum(scales))]
    terms += [CFGTerm(frozenset([name]), s) for name, s in zip(order, scales)]
    return _merge(terms)


def joint_terms(conditions: Sequence[str], w: float) -> tuple[CFGTerm, ...]:
    """Plain CFG on all conditions at once: ``u + w (c - u)``."""
    return (CFGTerm(frozenset(), 1.0 - w), CFGTerm(frozenset(conditions), w))


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
        raise GuidanceError(f"mix needs one weight per prediction, got {len(preds)} and {len(weights)}")
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


def tangential_damping(c: Tensor, u: Tensor, reduce: str = "all") -> Tensor:
    """TCFG's unconditional prediction with its tangential component damped (Kwon et al. 2025,
    arXiv 2503.18137, §4, Algorithm 1).

    Per sample (``reduce = "all"``; per frame with ``"channels"``) stack the two predictions as the
    rows of ``A = [c; u]`` (2 x D) and take its SVD ``A = U S V^T``. The first right singular vector
    ``v_1`` is the direction both share (normal to the data manifold, where the scores agree); the
    second, orthogonal to it, is the tangential part in which the unconditional prediction strays
    from the conditional one. TCFG keeps ``u``'s component along ``v_1`` only::

        u' = u V diag(1, 0) V^T = <u, v_1> v_1

    (the paper's ``V'`` is ``V`` with its second column zeroed; diffusers' ``normalized_guidance``
    and ComfyUI's ``score_tangential_damping`` compute the same). ``u' = u`` when ``c`` and ``u``
    are parallel; the sign of ``v_1`` cancels. Computed in at least float32, returned in ``u``'s dtype.
    """
    work = torch.promote_types(u.dtype, torch.float32)
    if reduce == "channels":  # [B, C, ...] -> one C-vector per frame
        cf, uf = c.movedim(1, -1).to(work), u.movedim(1, -1).to(work)
    else:
        cf, uf = c.flatten(1).to(work), u.flatten(1).to(work)
    A = torch.stack([cf, uf], dim=-2)  # [..., 2, D]
    v1 = torch.linalg.svd(A, full_matrices=False).Vh[..., 0, :]
    damped = (uf * v1).sum(-1, keepdim=True) * v1
    if reduce == "channels":
        return damped.movedim(-1, 1).to(u.dtype)
    return damped.view_as(u).to(u.dtype)


# --------------------------------------------------------------------------------------------
# One batched forward for every branch
# --------------------------------------------------------------------------------------------


def _repeat_rows(v: Tensor, rows: Tensor) -> Tensor:
    return v.index_select(0, rows)


def _perturbable(model: object) -> dict[str, int]:
    """What ``model`` can perturb per row: perturbation kind -> number of layers (``model.perturbable``;
    none for a model or function that does not declare it)."""
    return dict(getattr(model, "perturbable", None) or {})


def _perturb_flags(
    model: object, requests: Sequence[tuple[Branch, Tensor]], device: torch.device
) -> dict[str, Tensor] | None:
    """The model's ``perturb`` input for stacked ``requests``: ``{kind: [rows, layers] bool}``, True on
    the rows and layers of each :class:`Perturbed` request; None when no request is perturbed."""
    kinds = sorted({k.perturb for k, _ in requests if isinstance(k, Perturbed)})
    if not kinds:
        return None
    counts = _perturbable(model)
    flags = {}
    for kind in kinds:
        if kind not in counts:
            raise GuidanceError(f"the model cannot perturb {kind!r} per row (it perturbs {', '.join(counts) or 'nothing'})")
        parts = []
        for k, r in requests:
            part = torch.zeros(len(r), counts[kind], dtype=torch.bool, device=device)
            if isinstance(k, Perturbed) and k.perturb == kind:
                part[:, list(k.layers)] = True
            parts.append(part)
        flags[kind] = torch.cat(parts)
    return flags


def evaluate_branches(
    model: Denoiser,
    x: Tensor,
    t: Tensor,
    cond: Cond,
    requests: Sequence[tuple[Branch, Tensor]],
    conditions: Sequence[str],
    extra: Mapping[str, Tensor] | None = None,
    prepared: Mapping[frozenset[str], Cond] | None = None,
) -> list[Tensor]:
    """Evaluate several branches in ONE forward of ``model``.

    ``requests`` holds ``(branch, row indices into the batch)``, a branch being the conditions it
    keeps or a :class:`Perturbed` one; the rows of every request are stacked into one batch, with
    the ``keep`` mask of each condition set per row and, when some branch is perturbed, the model's
    ``perturb`` input (``{kind: [rows, layers] bool}``; no ``perturb`` is passed otherwise).
    ``prepared`` optionally holds, per condition subset, ``cond`` prepared for it
    (:func:`audioguide.core.prepare`); each request then takes its rows from its own. Returns one
    prediction per request, shaped ``[len(rows), ...]``.
    """
    rows = torch.cat([r for _, r in requests])
    keep = {
        name: torch.cat(
            [torch.full((len(r),), name in _keep_of(k), dtype=torch.bool, device=x.device) for k, r in requests]
        )
        for name in conditions
    }
    if prepared is None:
        stacked = {k: _repeat_rows(v, rows) for k, v in cond.items()}
    else:
        names = prepared[_keep_of(requests[0][0])].keys()
        stacked = {n: torch.cat([_repeat_rows(prepared[_keep_of(k)][n], r) for k, r in requests]) for n in names}
    inputs = {k: _repeat_rows(v, rows) for k, v in (extra or {}).items()}
    flags = _perturb_flags(model, requests, x.device)
    if flags is not None:
        inputs["perturb"] = flags
    out = model(_repeat_rows(x, rows), _repeat_rows(t, rows), stacked, keep, **inputs)
    return list(out.split([len(r) for _, r in requests]))


class Conjunction:
    """A prompt in parts, as one denoiser: Composable Diffusion's conjunction (Liu et al. 2022,
    "Compositional Visual Generation with Composable Diffusion Models", ECCV, eq. 10).

    ``cond`` holds part 0 of condition ``name`` as usual and parts ``k = 1..K-1`` under
    :func:`part_key` (:func:`~audioguide.core.part_key`; the same length as part 0, as
    :func:`audioguide.models.base.with_parts` pads them).
    On a row where ``name`` is kept the prediction is::

        c = u + sum_k lam_k (c_k - u)

    with ``c_k`` the model's prediction for part ``k`` and ``u`` its prediction with ``name`` dropped
    (the row's other conditions as kept; the negative prompt where ``cond`` has one), evaluated only
    when ``sum_k lam_k != 1`` (with weights summing to 1, ``c`` is their weighted mean). A row where
    ``name`` is dropped is the model's prediction, evaluated once. Guidance above it with scale ``w``
    on ``name`` (``u + w (c - u)``) then gives ``u + sum_k w lam_k (c_k - u)``: Liu et al.'s
    conjunction with scale ``w lam_k`` per part, every branch of every part in ONE forward of the
    wrapped model. ``lam = (1, ..., 1)`` is the paper's; smaller weights make a part quieter.

    Where a guider turns guidance off on a row (an interval, adaptive guidance) the row still gets
    the conjunction, at scale 1: ``u + sum_k lam_k (c_k - u)``, which costs every part's rows (and
    ``u``'s); ``rows_evaluated`` counts the rows the wrapped model evaluated. Every attribute but
    :meth:`prepare` is the wrapped model's; :meth:`prepare` is a copy (the wrapped model's
    step-invariant work would see part 0 only).
    """

    def __init__(self, model: Any, name: str, weights: Sequence[float]) -> None:
        weights = tuple(float(w) for w in weights)
        if len(weights) < 2:
            raise GuidanceError(f"a conjunction needs at least 2 parts, got {len(weights)}")
        if not all(math.isfinite(w) and w > 0 for w in weights):
            raise GuidanceError(f"part weights must be finite and > 0, got {weights}")
        self.model, self.name, self.weights = model, name, weights
        self.rows_evaluated = 0  # rows the wrapped model evaluated (its callers count one per outer row)

    def __getattr__(self, attr: str) -> Any:
        try:
            model = self.__dict__["model"]
        except KeyError:
            raise AttributeError(attr) from None
        return getattr(model, attr)

    def prepare(self, cond: Cond, keep: Keep, frames: int, mask: Tensor | None = None) -> dict[str, Tensor]:
        return dict(cond)

    def __call__(self, x: Tensor, t: Tensor, cond: Cond, keep: Keep, **extra: Any) -> Tensor:
        name, K = self.name, len(self.weights)
        for k in range(1, K):
            key = part_key(name, k)
            if key not in cond or f"{key}.mask" not in cond:
                raise GuidanceError(f"a conjunction of {K} parts needs cond[{key!r}] and its mask")
            if cond[key].shape != cond[name].shape or cond[f"{key}.mask"].shape != cond[f"{name}.mask"].shape:
                raise GuidanceError(f"part {k} of {name!r} is {tuple(cond[key].shape)}, the prompt {tuple(cond[name].shape)}: "
                                    "pad them to one length (with_parts)")
        B, device = x.shape[0], x.device
        kept = keep.get(name)
        flags = [True] * B if kept is None else kept.tolist()
        dropped = torch.tensor([b for b in range(B) if not flags[b]], dtype=torch.long, device=device)
        on = torch.tensor([b for b in range(B) if flags[b]], dtype=torch.long, device=device)
        with_u = abs(sum(self.weights) - 1.0) > 1e-6
        # rows: the dropped ones once, then the kept ones part by part (then once more, dropped, for u)
        blocks = [dropped] + [on] * (K + with_u)
        idx = torch.cat(blocks)
        inner = {k: _repeat_rows(v, idx) for k, v in cond.items() if not k.startswith(f"{name}.part")}
        n_drop, n_on = len(dropped), len(on)
        for k in range(1, K):
            at = torch.arange(n_drop + k * n_on, n_drop + (k + 1) * n_on, device=device)
            inner[name] = inner[name].index_copy(0, at, cond[part_key(name, k)].index_select(0, on))
            inner[f"{name}.mask"] = inner[f"{name}.mask"].index_copy(0, at, cond[f"{part_key(name, k)}.mask"].index_select(0, on))
        inner_keep = {n: _repeat_rows(v.to(device), idx) for n, v in keep.items()}
        kept_rows = torch.ones(len(idx), dtype=torch.bool, device=device)
        kept_rows[:n_drop] = False
        if with_u:
            kept_rows[n_drop + K * n_on :] = False
        inner_keep[name] = kept_rows
        out = self.model(_repeat_rows(x, idx), _repeat_rows(t, idx) if t.ndim else t, inner, inner_keep,
                         **{k: _rows_of(v, idx, B) for k, v in extra.items()})
        result = out.new_empty((B, *out.shape[1:]))
        if n_drop:
            result.index_copy_(0, dropped, out[:n_drop])
        if n_on:
            preds = out[n_drop : n_drop + K * n_on].reshape(K, n_on, *out.shape[1:])
            w = torch.tensor(self.weights, dtype=out.dtype, device=device).reshape(K, *([1] * out.ndim))
            if with_u:
                u = out[n_drop + K * n_on :]
                combined = u + (w * (preds - u)).sum(0)
            else:
                combined = (w * preds).sum(0)
            result.index_copy_(0, on, combined)
        self.rows_evaluated += len(idx)
        return result


def _rows_of(v: Any, idx: Tensor, batch: int) -> Any:
    """``v`` with its batch rows taken at ``idx`` (tensors whose first dim is the batch, and the
    tensors of a mapping such as ``perturb``); anything else as it is."""
    if isinstance(v, Tensor) and v.ndim and v.shape[0] == batch:
        return v.index_select(0, idx.to(v.device))
    if isinstance(v, Mapping):
        return {k: _rows_of(x, idx, batch) for k, x in v.items()}
    return v


# --------------------------------------------------------------------------------------------
# Guiders: one class per guidance method
# --------------------------------------------------------------------------------------------

_SPACES = ("native",) + PREDICTION_KINDS
_REDUCE = ("all", "channels")
_HOOKS = ("gate", "adjust", "combine", "refine", "observe", "post", "refine_logits")

GUIDERS: dict[str, type[Guider]] = {}
"""Every guider class by name; a subclass registers itself (``class G(Guider, name="g")``)."""


class Step:
    """What a guider's hooks see of one evaluation of a :class:`GuidedField`.

    ``x``, ``t``: the rows the hook works on (the guided rows for ``adjust``, ``combine``,
    ``refine``, ``observe``; every row for ``gate`` and ``post``); ``active``: the ``[B]`` mask of
    the guided rows in the batch (``None`` for ``gate`` and ``post``); ``branches``: each evaluated
    branch (the reference's condition subset, the terms', the extra ones guiders asked for,
    :class:`Perturbed` ones included) to its prediction on the guided rows, in the model's space;
    ``state``: the calling guider's per-generation state (:meth:`Guider.start`). From the field: ``kind`` (the model's prediction
    kind, what ``native`` means), ``alpha_sigma``, ``reduce`` (the policy's dims for stds and norms),
    ``terms`` (the weighted non-reference branches, in the order of the hooks' ``preds``),
    ``ref_weight`` (the weight of the reference ``c``) and ``reference`` (its conditions);
    ``policy`` (the field's :class:`Guidance`); ``r``: a mean-flow call's ``r`` of the hook's rows
    (the sampler's ``r`` input, ``[rows]``; None on calls without one).
    """

    def __init__(
        self, owner: GuidedField, x: Tensor, t: Tensor, active: Tensor | None,
        branches: Mapping[frozenset[str], Tensor], r: Tensor | None = None,
    ) -> None:
        self.x, self.t, self.active, self.branches, self.r = x, t, active, branches, r
        self.kind, self.alpha_sigma, self.reduce = owner.kind, owner.alpha_sigma, owner.policy.reduce
        self.terms, self.ref_weight, self.reference = owner.others, owner.ref_weight, owner.reference
        self.policy = owner.policy
        self.state: Any = None


class Guider:
    """One guidance method. Subclass it, name it, and override the hooks the method needs::

        @dataclass(frozen=True)
        class MyGuider(Guider, name="mine"):
            def refine(self, step, guided, c): ...

    Declarations: ``space`` (``native`` = the model's own kind, or ``x0``, ``eps``, ``v``,
    ``flow``): hooks that take predictions get them converted to it, and what they return is
    converted back; ``logits``: whether the method applies to codec-LM logits (then
    :meth:`refine_logits` is its hook there); :meth:`branches`: branches it needs evaluated
    besides the weighted terms (condition subsets, or :class:`Perturbed` ones, which the engine
    checks against what the model can perturb); :meth:`check`: the model kinds and samplers it
    allows (by default: not codec-LM logits unless ``logits``, and with a mean-flow sampler only in
    the model's own space, see the module docstring).
    Hooks (see the module docstring for their order) default to doing nothing. Guiders belong to
    a frozen policy shared by many generations, so they hold no state: per-generation state comes
    from :meth:`start` and reaches the hooks as ``step.state``. Hooks that take ``c`` and
    ``preds`` get the guided rows only: ``c`` the reference prediction, ``preds`` one prediction
    per term of ``step.terms``.
    """

    name: ClassVar[str] = ""
    space: str = "native"
    logits: ClassVar[bool] = False
    frame_local: ClassVar[bool] = False  # True: no hook reduces over frames (a row's padding cannot change it)
    needs: ClassVar[str | None] = None  # the evaluator it takes per generation (:meth:`bind`), e.g. "verifier"
    takes: ClassVar[str | None] = None  # what :meth:`bind` wants, for its error message

    def __init_subclass__(cls, name: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.name = name or cls.__name__
        known = GUIDERS.get(cls.name)
        if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
            raise GuidanceError(f"a guider named {cls.name!r} exists already ({known.__module__}.{known.__qualname__})")
        GUIDERS[cls.name] = cls

    @property
    def key(self) -> str:
        """What messages call this guider (the recipe key for the built-in ones)."""
        return self.name

    @property
    def space_key(self) -> str:
        """What messages call the setting of this guider's space."""
        return f"{self.key} space"

    def check(self, kind: str, cfgpp: bool = False, mean_flow: bool = False) -> None:
        """Raise :class:`GuidanceError` if the method does not apply to a model of ``kind``
        (``"tokens"`` for codec LMs) sampled by a CFG++ (``cfgpp``) or mean-flow sampler.

        With a mean-flow sampler a guider must work in the model's own space: its average velocity
        ``u(z, r, t)`` has no x0 / eps / v for ``r < t`` (module docstring, "Mean-flow models")."""
        if kind == "tokens" and not self.logits:
            raise GuidanceError(f"{self.key} does not apply to codec-LM logits (only multi-condition CFG does)")
        if mean_flow and kind != "tokens" and self.space not in ("native", kind):
            raise GuidanceError(
                f"{self.key} works in {self.space} space, which a mean-flow model's average velocity u(z, r, t) "
                f"does not give for r < t (it is not v(z, t)); set {self.space_key} = \"native\""
            )

    def branches(self, conditions: tuple[str, ...]) -> tuple[Branch, ...]:
        """Branches to evaluate besides the weighted terms (found in ``step.branches``): condition
        subsets, or :class:`Perturbed` ones. They are evaluated whenever guidance is on for a row."""
        return ()

    def branches_for(self, policy: Guidance) -> tuple[Branch, ...]:
        """:meth:`branches` under ``policy``, what the engine asks; a guider whose branches depend
        on the policy's scales or mode (:class:`Dynamic`) overrides this instead."""
        return self.branches(policy.conditions)

    def start(self) -> Any:
        """Fresh per-generation state (``step.state`` in the hooks)."""
        return None

    def gate(self, step: Step) -> Tensor | None:
        """``[B]`` bool: rows on which guidance stays on (``None``: all)."""
        return None

    def adjust(self, step: Step, c: Tensor, preds: list[Tensor]) -> list[Tensor]:
        """The branch predictions to combine."""
        return preds

    def combine(self, step: Step, c: Tensor, preds: list[Tensor]) -> Tensor:
        """The guided prediction, instead of ``ref_weight c + sum_i w_i preds[i]``."""
        raise NotImplementedError

    def refine(self, step: Step, guided: Tensor, c: Tensor) -> Tensor:
        """The guided prediction, changed."""
        return guided

    def observe(self, step: Step, c: Tensor, preds: list[Tensor]) -> None:
        """See the branch predictions as evaluated (before ``adjust``); update ``step.state``."""

    def post(self, step: Step, guided: Tensor) -> Tensor:
        """The guided prediction of every row of the batch, changed."""
        return guided

    def refine_logits(self, guided: Tensor, branches: Mapping[frozenset[str], Tensor]) -> Tensor:
        """Guided log-probabilities ``[B, ...]`` changed; ``branches`` maps each evaluated
        condition subset to its log-probabilities (only for guiders with ``logits = True``)."""
        return guided

    def refine_step(
        self, guided: Tensor, branches: Mapping[frozenset[str], Tensor], context: TokenStep | None
    ) -> Tensor:
        """:meth:`refine_logits` with the step's context (:class:`TokenStep`: the delayed AR loop's
        step and the tokens drawn so far; None where the caller gives none), for guiders that judge
        candidate tokens in their context (:class:`GeDi`); by default :meth:`refine_logits`."""
        return self.refine_logits(guided, branches)

    def bind(self, evaluator: Callable[..., Any]) -> Guider:
        """This guider with the evaluator it ``needs`` for one generation (feedback guiders: a
        cheap judge of the current estimate, built by the pipeline for the pieces being drawn);
        a copy, the policy's own guider stays unbound, with ``evaluator`` set."""
        if self.needs is None:
            raise GuidanceError(f"{self.key} takes no evaluator")
        if not callable(evaluator):
            raise GuidanceError(f"{self.takes or f'{self.key} takes a callable evaluator'}, got {evaluator!r}")
        bound = dataclasses.replace(self)
        object.__setattr__(bound, "evaluator", evaluator)
        return bound


def _overrides(g: Guider, hook: str) -> bool:
    return getattr(type(g), hook) is not getattr(Guider, hook)


def guider(name: str, **params: Any) -> Guider:
    """The registered guider ``name`` built from ``params``."""
    cls = GUIDERS.get(name)
    if cls is None:
        raise GuidanceError(f"no guider named {name!r}; registered: {', '.join(sorted(GUIDERS))}")
    try:
        return cls(**params)
    except TypeError as e:
        raise GuidanceError(f"guider {name!r}: {e}") from None


def _check_space(space: str, key: str) -> None:
    if space not in _SPACES:
        raise GuidanceError(f"{key} must be one of {', '.join(_SPACES)}, got {space!r}")


@dataclass(frozen=True)
class CFGZeroStar(Guider, name="cfg-zero-star"):
    """CFG-Zero* (Fan et al. 2025, arXiv 2503.18886): optimised scale and zero-init.

    Optimised scale (eq. 7-9, ``zero_star``): ``s* = <c, u> / ||u||^2`` per sample;
    ``x = s* u + w (c - s* u)``. Only the unconditional branch ``u`` (every condition dropped) is
    rescaled; with several conditions that gives ``s* u + sum_k s_k (c_k - s* u)`` (independent)
    and ``s* u_00 + s_a (u_a0 - s* u_00) + ...`` (nested). Zero-init (``zero_init``): velocity
    zeroed for ``t`` in the first ``zero_init`` fraction of the time range, flow-velocity models
    only (a zero eps / x0 / v, or a zero *average* velocity, is not "stay put"). The paper zeroes
    the first K solver steps; on a uniform grid of N steps ``zero_init = K/N`` is the same, on a
    shifted grid it covers more steps.
    """

    zero_star: bool = True
    zero_init: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.zero_init < 1.0:
            raise GuidanceError(f"zero_init must be in [0, 1), got {self.zero_init}")

    @classmethod
    def from_policy(cls, p: Guidance) -> CFGZeroStar | None:
        g = cls(p.zero_star, p.zero_init)
        return g if p.zero_star or p.zero_init > 0 else None

    @property
    def key(self) -> str:
        return "zero_star" if self.zero_star else "zero_init"

    def check(self, kind: str, cfgpp: bool = False, mean_flow: bool = False) -> None:
        super().check(kind, cfgpp, mean_flow)
        if self.zero_init > 0 and (kind != "flow" or mean_flow):
            what = "a mean-flow sampler (a zero average velocity skips the whole step)" if kind == "flow" else f"a {kind!r} model"
            raise GuidanceError(f"zero_init zeroes a flow velocity; it does not apply to {what}")

    def adjust(self, step: Step, c: Tensor, preds: list[Tensor]) -> list[Tensor]:
        if not self.zero_star:
            return preds
        return [cfg_zero_star_scale(c, q) * q if not tm.keep else q for tm, q in zip(step.terms, preds)]

    def post(self, step: Step, guided: Tensor) -> Tensor:
        if self.zero_init <= 0:
            return guided
        zeroed = (step.t > 1.0 - self.zero_init).view(-1, *([1] * (guided.ndim - 1)))
        return torch.where(zeroed, torch.zeros_like(guided), guided)


@dataclass(frozen=True)
class TCFG(Guider, name="tcfg"):
    """Tangential damping CFG (Kwon et al. 2025, CVPR, "TCFG: Tangential Damping Classifier-free
    Guidance", arXiv 2503.18137, §4, Algorithm 1).

    Before the weighted sum, the unconditional prediction ``u`` is replaced by its component along
    the first right singular vector of ``A = [c; u]`` (:func:`tangential_damping`):
    ``u' = <u, v_1> v_1``, and ``x = u' + w (c - u')``. The paper works on scores (eps up to the
    factor ``-1 / sigma_t``, which the projection does not see), hence ``space = "eps"`` by default.
    With several conditions the damped branches are the weighted ones that keep the fewest
    conditions (the unconditional side of the guidance: ``u`` of plain CFG, ``u_00`` of nested
    guidance, the branch without text when text is guided last), each against the reference ``c``.
    SVD per sample over all dims, or per frame with the policy's ``reduce = "channels"``.
    """

    space: str = "eps"

    def __post_init__(self) -> None:
        _check_space(self.space, "tcfg space")

    @classmethod
    def from_policy(cls, p: Guidance) -> TCFG | None:
        return p.tcfg

    def adjust(self, step: Step, c: Tensor, preds: list[Tensor]) -> list[Tensor]:
        if not preds:
            return preds
        fewest = min(len(tm.keep) for tm in step.terms)
        return [
            tangential_damping(c, q, step.reduce) if len(tm.keep) == fewest else q
            for tm, q in zip(step.terms, preds)
        ]


@dataclass(frozen=True)
class APG(Guider, name="apg"):
    """Adaptive Projected Guidance (Sadat et al. 2025, ICLR, Alg. 1). Paper defaults: eta 0, r 15, beta -0.5.

    In ``space`` (x0 by default), ``d = D_c - D_u``; momentum ``d <- d + beta * d_prev``; norm
    clip ``d <- d * min(1, r / ||d||)``; split ``d`` into parts parallel and orthogonal to
    ``D_c``; ``D = D_c + (w - 1) (d_perp + eta * d_par)``. With several terms the same update is
    applied to every non-reference branch: ``D = D_c + sum_i (-w_i) APG(D_c - D_i)`` (for one
    branch ``-w_u = w - 1``). Norms over the policy's ``reduce`` dims. Momentum is kept per branch
    and per row of the batch; rows not guided on a call (interval, adaptive) keep theirs.
    """

    eta: float = 0.0
    norm_threshold: float = 15.0
    momentum: float = -0.5
    space: str = "x0"

    def __post_init__(self) -> None:
        if self.norm_threshold <= 0:
            raise GuidanceError(f"apg norm_threshold must be > 0, got {self.norm_threshold}")
        if not -1.0 < self.momentum <= 0.0:
            raise GuidanceError(f"apg momentum must be in (-1, 0], got {self.momentum}")
        _check_space(self.space, "apg space")

    @classmethod
    def from_policy(cls, p: Guidance) -> APG | None:
        return p.apg

    def start(self) -> dict[frozenset[str], Tensor]:
        return {}  # momentum per branch, full batch [B, ...]

    def combine(self, step: Step, c: Tensor, preds: list[Tensor]) -> Tensor:
        assert step.active is not None
        D = c.clone()
        for term, q in zip(step.terms, preds):
            d = c - q
            if self.momentum != 0.0:
                full = (step.active.shape[0], *d.shape[1:])
                prev = step.state.get(term.keep)
                if prev is None:
                    prev = step.state[term.keep] = d.new_zeros(full)
                elif prev.shape != full:
                    raise GuidanceError(
                        f"APG momentum is per generation: got rows of shape {full}, earlier {tuple(prev.shape)}; "
                        "build a new GuidedField for a new generation"
                    )
                d = d + self.momentum * prev[step.active].to(d.dtype)
                prev[step.active] = d.to(prev.dtype)
            D = D - term.weight * apg_update(d, c, self.eta, self.norm_threshold, step.reduce)
        return D


@dataclass(frozen=True)
class PAG(Guider, name="pag"):
    """Perturbed-attention guidance (Ahn et al. 2024, ECCV, "Self-Rectifying Diffusion Sampling with
    Perturbed-Attention Guidance", arXiv 2403.17377, §4).

    The perturbed prediction ``c^`` is the reference ``c`` (every condition of the policy kept)
    with the self-attention map of the chosen ``layers`` replaced by the identity (PAG's perturbed
    self-attention: ``softmax(Q K^T / sqrt(d)) -> I``, so the layer outputs ``V``). The paper's
    guidance ``c + s (c - c^)`` is added to the guided prediction; in the project's one scale
    convention (``c^ + w (c - c^)``, ``w = 1`` off) ``w = 1 + s``::

        x = CFG(...) + (w - 1) (c - c^)

    With no condition (or scales of 1) that is PAG alone, ``c + s (c - c^)``; with CFG it is the
    paper's PAG + CFG, ``u + w_cfg (c - u) + s (c - c^)`` (diffusers' ``pag_scale``). The perturbed
    branch is one more slice of the same batched forward; the model only takes per-row flags
    (:class:`Perturbed`, ``model.perturbable``), and a model that cannot perturb is refused in one
    line (:func:`check_perturbations`). Linear, so in the model's own space, mean flows included.
    """

    scale: float
    layers: tuple[int, ...]
    perturb: ClassVar[str] = "attention"
    frame_local: ClassVar[bool] = True  # a sum of predictions per frame

    def __post_init__(self) -> None:
        number = isinstance(self.scale, int | float) and not isinstance(self.scale, bool)
        if not number or not math.isfinite(self.scale) or self.scale < 0:
            raise GuidanceError(f"{self.key} scale must be a finite number >= 0 (1 = off), got {self.scale!r}")
        layers = tuple(self.layers)
        if not layers or any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in layers):
            raise GuidanceError(f"{self.key} layers must be a non-empty list of block indices >= 0, got {list(layers)}")
        object.__setattr__(self, "scale", float(self.scale))
        object.__setattr__(self, "layers", tuple(sorted(set(layers))))

    @classmethod
    def from_policy(cls, p: Guidance) -> PAG | None:
        return p.pag

    def branch(self, conditions: Sequence[str]) -> Perturbed:
        """The perturbed reference: every condition of the policy kept, ``layers`` perturbed."""
        return Perturbed(frozenset(conditions), self.perturb, self.layers)

    def branches(self, conditions: tuple[str, ...]) -> tuple[Branch, ...]:
        return () if self.scale == 1.0 else (self.branch(conditions),)

    def refine(self, step: Step, guided: Tensor, c: Tensor) -> Tensor:
        if self.scale == 1.0:
            return guided
        return guided + (self.scale - 1.0) * (c - step.branches[self.branch(step.reference)])


@dataclass(frozen=True)
class STG(PAG, name="stg"):
    """Layer-skip guidance, STG-style (Hyung et al. 2024, "Spatiotemporal Skip Guidance for Enhanced
    Video Diffusion Sampling", arXiv 2411.18664, §3, STG-R): :class:`PAG` with the chosen blocks
    skipped instead (a skipped block's output is its input) on the perturbed branch's rows;
    ``x = CFG(...) + (w - 1) (c - c^)``, ``w = 1 + s`` of the paper.
    """

    perturb: ClassVar[str] = "skip"

    @classmethod
    def from_policy(cls, p: Guidance) -> STG | None:
        return p.stg


@dataclass(frozen=True)
class Rescale(Guider, name="rescale"):
    """CFG rescale (Lin et al. 2023, arXiv 2305.08891, §3.4, eq. 15-16).

    ``x_re = x_cfg * std(c) / std(x_cfg)``, ``x = phi x_re + (1 - phi) x_cfg``, in ``space``, std
    over the policy's ``reduce`` dims: all non-batch dims (``"all"``) or channels per frame
    (``"channels"``, as stable-audio-tools).
    """

    phi: float
    space: str = "native"

    def __post_init__(self) -> None:
        if not 0.0 <= self.phi <= 1.0:
            raise GuidanceError(f"rescale phi must be in [0, 1], got {self.phi}")
        _check_space(self.space, "rescale_space")

    @classmethod
    def from_policy(cls, p: Guidance) -> Rescale | None:
        g = cls(p.rescale, p.rescale_space)
        return g if g.phi > 0 else None

    @property
    def space_key(self) -> str:
        return "rescale_space"

    def refine(self, step: Step, guided: Tensor, c: Tensor) -> Tensor:
        return rescale(guided, c, self.phi, step.reduce)


@dataclass(frozen=True)
class Interval(Guider, name="interval"):
    """Guidance interval (Kynkaanniemi et al. 2024, arXiv 2404.07724, eq. 2).

    Guide only for ``lo < t <= hi``, or with ``on = "sigma"`` for ``lo < sigma <= hi`` where
    ``sigma = sigma_t / alpha_t`` is the EDM noise level the paper's intervals are given in
    (``t / (1 - t)`` on a flow path); the conditional prediction elsewhere, without evaluating
    the other branches.
    """

    lo: float
    hi: float
    on: str = "t"
    frame_local: ClassVar[bool] = True  # gates whole rows by their time

    def __post_init__(self) -> None:
        if not 0.0 <= self.lo < self.hi:
            raise GuidanceError(f"guidance interval must satisfy 0 <= lo < hi, got {(self.lo, self.hi)}")
        if self.on not in ("t", "sigma"):
            raise GuidanceError(f"interval_on must be t or sigma, got {self.on!r}")

    @classmethod
    def from_policy(cls, p: Guidance) -> Interval | None:
        if p.interval is None:
            if p.interval_on not in ("t", "sigma"):
                raise GuidanceError(f"interval_on must be t or sigma, got {p.interval_on!r}")
            return None
        lo, hi = p.interval
        return cls(lo, hi, p.interval_on)

    def gate(self, step: Step) -> Tensor:
        t = step.t
        if self.on == "t":
            at = t
        else:
            a, s = step.alpha_sigma(t)
            at = s / a.clamp_min(1e-12)  # EDM sigma; +huge at pure noise (alpha = 0)
        return (at > self.lo) & (at <= self.hi)


@dataclass
class _Streaks:
    streak: Tensor | None = None
    converged: Tensor | None = None


@dataclass(frozen=True)
class Adaptive(Guider, name="adaptive"):
    """Adaptive guidance (Castillo et al. 2025, AAAI, "Adaptive Guidance", §3).

    Once ``cos(c, u)`` (in the model's own prediction space; the paper's thresholds were set on
    eps; the minimum over the weighted branches) has stayed above ``threshold`` for ``patience``
    consecutive evaluations for a sample, that sample's remaining evaluations skip the other
    branches and use ``c`` alone.
    """

    threshold: float = 0.999
    patience: int = 2

    def __post_init__(self) -> None:
        if not -1.0 <= self.threshold <= 1.0:
            raise GuidanceError(f"adaptive threshold is a cosine similarity in [-1, 1], got {self.threshold}")
        if self.patience < 1:
            raise GuidanceError(f"adaptive patience must be >= 1, got {self.patience}")

    @classmethod
    def from_policy(cls, p: Guidance) -> Adaptive | None:
        return p.adaptive

    def start(self) -> _Streaks:
        return _Streaks()

    def gate(self, step: Step) -> Tensor | None:
        converged = step.state.converged
        return None if converged is None else ~converged

    def observe(self, step: Step, c: Tensor, preds: list[Tensor]) -> None:
        state, active = step.state, step.active
        assert active is not None
        if not preds:  # only perturbed branches (PAG alone): no c-u similarity to watch
            return
        B = active.shape[0]
        if state.streak is None:
            state.streak = torch.zeros(B, dtype=torch.long, device=active.device)
            state.converged = torch.zeros(B, dtype=torch.bool, device=active.device)
        flat_c = c.flatten(1)
        cos = torch.stack(
            [torch.nn.functional.cosine_similarity(flat_c, q.flatten(1), dim=1) for q in preds]
        ).amin(0)
        streak = state.streak[active]
        streak = torch.where(cos >= self.threshold, streak + 1, torch.zeros_like(streak))
        state.streak[active] = streak
        state.converged[active] = streak >= self.patience


Evaluator = Callable[[Tensor, Tensor], Tensor]
"""``evaluator(estimates [N, C, T], rows [N]) -> scores [N]`` (higher is better): a feedback guider's
judge of clean estimates, ``rows`` giving the batch row each estimate belongs to (:class:`Dynamic`)."""


@dataclass
class _Choices:
    """:class:`Dynamic`'s per-generation record, one entry per evaluation that guided some row:
    ``t`` (``[B]``, each row's time), ``scales`` (``[B]``, the scale chosen for it) and ``scores``
    (``[n_candidates, B]``, the evaluator's score of each candidate), NaN on the rows not guided on
    that evaluation (outside the guidance interval, say); scores are NaN with a single candidate
    (then the evaluator is not asked)."""

    t: list[Tensor] = field(default_factory=list)
    scales: list[Tensor] = field(default_factory=list)
    scores: list[Tensor] = field(default_factory=list)

    @property
    def chosen(self) -> Tensor:
        """The chosen scales, ``[evaluations, B]`` (NaN where a row was not guided)."""
        return torch.stack(self.scales) if self.scales else torch.empty(0)


@dataclass(frozen=True)
class Dynamic(Guider, name="dynamic"):
    """Dynamic guidance from online feedback (Papalampidi et al. 2025, "Dynamic Classifier-Free
    Diffusion Guidance via Online Feedback", arXiv 2509.16131: a greedy search over candidate CFG
    scales at every step, scored by latent-space evaluators; abstract and Fig. 1).

    At every guided evaluation the scale of one condition (``condition``; default the policy's
    first) is chosen per row among the candidates ``scales`` (sorted, duplicates dropped). Candidate
    ``s`` is the policy's own weighted sum with that condition's scale replaced by ``s`` (joint
    guidance: its one scale; mode ``terms`` has no scale to replace and is refused), all candidates
    from the same branch predictions: :meth:`branches_for` declares the union of the candidates'
    weighted branches, the rows plain CFG at the largest candidate needs, so no candidate costs a
    network row. Each candidate's estimate goes to the bound evaluator (:data:`Evaluator`, one call
    for all candidates, candidate-major: candidate ``k`` is estimates ``k n .. (k + 1) n - 1`` of the
    ``n`` guided rows) and every row takes the candidate it scores highest (ties and NaN: the smaller
    scale): the greedy per-step choice, not smoothed across steps. The paper weighs several
    evaluators; this guider takes one (the pipeline binds the recipe's content verifier,
    :meth:`audioguide.pipeline.Pipeline.evaluators`; ``needs = "verifier"``). A single candidate
    is plain CFG at that scale, without asking the evaluator.

    The estimate of a candidate prediction ``p`` at ``(x, t)``: on a mean-flow call with ``r`` the
    flow-map endpoint ``z_r = x - (t - r) p`` (MeanFlow, Geng et al. 2025, §3), the clean estimate
    exactly when ``r = 0`` and otherwise the state the sampler steps to; on any other call ``x0``
    (:func:`audioguide.core.convert_prediction`: ``x0 = x - t v`` for a flow velocity).

    It replaces the weighted sum (``combine``: not with APG); it combines what the ``adjust``
    hooks left of the policy's weighted branches (raw predictions for branches only its candidates
    weigh); ``refine`` hooks (rescale, PAG) change the chosen prediction after the choice. Rows the
    ``gate`` hooks turn off (:class:`Interval`, :class:`Adaptive`) are neither guided nor scored.
    The choices are recorded per generation (:class:`_Choices`, ``GuidedField.state_of``). Not
    frame-local: the evaluator reads whole rows (each row's real frames are the evaluator's to know).
    """

    scales: tuple[float, ...] = (1.0, 2.0, 3.0)
    condition: str | None = None
    evaluator: Evaluator | None = field(default=None, init=False, compare=False, repr=False)
    needs: ClassVar[str | None] = "verifier"
    takes: ClassVar[str | None] = "dynamic guidance takes an evaluator(estimates, rows) -> scores"

    def __post_init__(self) -> None:
        scales = self.scales
        if isinstance(scales, str) or not isinstance(scales, Sequence) or not scales:
            raise GuidanceError(f"dynamic scales must be a non-empty list of candidate scales, got {scales!r}")
        if any(isinstance(s, bool) or not isinstance(s, int | float) or not math.isfinite(s) or s < 0 for s in scales):
            raise GuidanceError(f"dynamic scales must be finite numbers >= 0, got {list(scales)}")
        object.__setattr__(self, "scales", tuple(sorted({float(s) for s in scales})))
        if self.condition is not None and (not isinstance(self.condition, str) or not self.condition):
            raise GuidanceError(f"dynamic condition must be a condition's name, got {self.condition!r}")

    def check(self, kind: str, cfgpp: bool = False, mean_flow: bool = False) -> None:
        super().check(kind, cfgpp, mean_flow)
        if cfgpp and not all(0.0 <= s <= 1.0 for s in self.scales):
            raise GuidanceError(f"CFG++ scales live in [0, 1]; dynamic scales are {list(self.scales)}")

    def target(self, policy: Guidance) -> str:
        """The condition whose scale varies under ``policy``."""
        if policy.mode == "terms":
            raise GuidanceError('dynamic guidance varies a condition\'s scale; a policy of mode "terms" has none')
        if getattr(policy, "distilled", False):  # its candidates are branch combinations, not model inputs
            raise GuidanceError("dynamic guidance combines branches at each candidate scale; it does not take distilled = true")
        names = policy.conditions
        name = self.condition or (names[0] if names else None)
        if name not in names:
            raise GuidanceError(f"dynamic condition {name!r} is not a guided condition of the policy ({', '.join(names) or 'none'})")
        return name

    def terms_at(self, policy: Guidance, scale: float) -> tuple[CFGTerm, ...]:
        """``policy``'s terms with the :meth:`target` condition's scale replaced by ``scale``."""
        name = self.target(policy)
        scales = [(n, scale if policy.mode == "joint" or n == name else w) for n, w in policy.scales]
        names, ws = [n for n, _ in scales], [w for _, w in scales]
        if policy.mode == "independent":
            return independent_terms(names, ws)
        if policy.mode == "joint":
            return joint_terms(names, scale)
        return nested_terms(names, ws)

    def branches_for(self, policy: Guidance) -> tuple[Branch, ...]:
        reference, out = frozenset(policy.conditions), []
        for s in self.scales:
            out += [tm.keep for tm in self.terms_at(policy, s)
                    if tm.keep != reference and tm.weight != 0.0 and tm.keep not in out]
        return tuple(out)

    def start(self) -> _Choices:
        if self.evaluator is None:
            raise GuidanceError("dynamic guidance needs an evaluator bound for each generation (Guidance.bind); "
                                "the pipeline binds the recipe's [verifier]")
        return _Choices()

    def estimate(self, step: Step, preds: Tensor) -> Tensor:
        """The evaluator's input for stacked candidate predictions ``[K, n, ...]`` of the guided rows."""
        if step.r is not None:  # mean flow: the flow-map endpoint z_r
            return step.x - (step.t - step.r).view(1, -1, *([1] * (preds.ndim - 2))) * preds
        a, s = step.alpha_sigma(step.t)
        return torch.stack([convert_prediction(p, step.kind, "x0", step.x, a, s) for p in preds])

    def combine(self, step: Step, c: Tensor, preds: list[Tensor]) -> Tensor:
        assert step.active is not None
        have = {tm.keep: q for tm, q in zip(step.terms, preds)}
        outs = []
        for s in self.scales:  # each candidate exactly as GuidedField combines a policy at that scale
            terms = self.terms_at(step.policy, s)
            others = [tm for tm in terms if tm.keep != step.reference and tm.weight != 0.0]
            if not others:
                outs.append(c)
                continue
            ref_weight = sum(tm.weight for tm in terms if tm.keep == step.reference)
            q = torch.stack([have[tm.keep] if tm.keep in have else step.branches[tm.keep] for tm in others])
            outs.append(ref_weight * c + combine(q, [tm.weight for tm in others]))
        K, n, B = len(outs), c.shape[0], step.active.shape[0]
        stacked = torch.stack(outs)
        if K == 1:
            best, scores = torch.zeros(n, dtype=torch.long, device=c.device), c.new_full((1, n), math.nan).float()
        else:
            rows = step.active.nonzero().squeeze(1)
            assert self.evaluator is not None
            scores = torch.as_tensor(self.evaluator(self.estimate(step, stacked).flatten(0, 1), rows.repeat(K)))
            if scores.shape != (K * n,):
                raise GuidanceError(f"the dynamic guidance evaluator must return one score per estimate, shape ({K * n},); "
                                    f"got {tuple(scores.shape)}")
            scores = scores.detach().float().view(K, n).to(c.device)
            best = scores.nan_to_num(nan=-math.inf).argmax(0)  # first maximum: the smaller scale
        record = [torch.full((B,), math.nan, device=c.device) for _ in range(2)] + [torch.full((K, B), math.nan, device=c.device)]
        record[0][step.active] = step.t.float()
        record[1][step.active] = torch.tensor(self.scales, device=c.device)[best]
        record[2][:, step.active] = scores
        state: _Choices = step.state
        state.t.append(record[0]), state.scales.append(record[1]), state.scores.append(record[2])
        return stacked[best, torch.arange(n, device=c.device)]


@dataclass(frozen=True)
class TokenStep:
    """What a logits guider sees of one step of a codec LM's delayed AR loop
    (:func:`audioguide.sampling.tokens.guided_lm_step` passes it to :class:`GuidedLogits`):
    ``step``, the delayed column ``s`` being drawn (codebook ``k`` of frame ``s - k``, so codebook 0
    starts frame ``s``), and ``drawn``, the columns drawn before it ``[B, K, s]`` (the pad id where
    the loop forced one: outside a row's frames)."""

    step: int
    drawn: Tensor


TokenJudge = Callable[[TokenStep, Tensor], "Tensor | None"]
"""``judge(context, candidates [B, k]) -> log p(c | candidate, tokens so far) [B, k]``: :class:`GeDi`'s
discriminator of the codebook-0 candidates of frame ``context.step``; None when no row has that frame."""


@dataclass(frozen=True)
class GeDi(Guider, name="gedi"):
    """Token guidance by a discriminator, GeDi-style (Krause et al. 2020, "GeDi: Generative
    Discriminator Guided Sequence Generation", arXiv 2009.06367, §3.1).

    GeDi weighs the LM's next-token distribution by a discriminator's posterior of the desired
    attribute ``c`` for every candidate token, eq. 5, ``P_w(x_t | x_<t, c) ∝ P_LM(x_t | x_<t)
    P(c | x_t, x_<t)^omega``; in log space, for the candidates ``v``::

        log p_w(v) = log p(v) + omega log p(c | v, x_<t) - log sum_v' p(v') p(c | v', x_<t)^omega

    GeDi gets ``P(c | x_{1:t})`` from class-conditional LMs by Bayes' rule (eq. 3-4); here the
    discriminator is discriminative already, the evaluator this guider ``needs`` (``"verifier"``,
    bound per generation, :meth:`bind`; :data:`TokenJudge`): for a codec LM with aligned phonemes
    the pipeline binds the content verifier's log-posterior of the phoneme the alignment expects at
    the frame being started (:class:`audioguide.sampling.tokens.VerifierJudge`). ``p`` is the
    guided log-probabilities (after CFG, before temperature, top-k, top-p and the content prior).

    Only codebook 0 of frame ``s`` (delayed column ``s``, :class:`TokenStep`) is rescored, the other
    codebooks are unchanged, and only its ``top_k`` most probable tokens under ``p``: the rest are
    masked (log-probability ``-inf``) and the normaliser runs over the ``top_k``, a hard form of
    GeDi's filtering of unlikely tokens (its heuristics, §3.1) that costs ``top_k`` discriminator
    rows per sequence and step; with the sampler's ``top_k`` equal to this one the sampler keeps the
    same set. ``weight`` (omega) 0 returns the guided log-probabilities unchanged (without the mask),
    which for that sampler is the same distribution again.
    """

    weight: float = 1.0
    top_k: int = 50
    evaluator: TokenJudge | None = field(default=None, init=False, compare=False, repr=False)
    logits: ClassVar[bool] = True
    needs: ClassVar[str | None] = "verifier"
    takes: ClassVar[str | None] = "gedi takes a judge(context, candidates) -> log-posteriors"

    def __post_init__(self) -> None:
        if isinstance(self.weight, bool) or not isinstance(self.weight, int | float) or not (math.isfinite(self.weight) and self.weight >= 0):
            raise GuidanceError(f"gedi weight must be a finite number >= 0, got {self.weight!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 1:
            raise GuidanceError(f"gedi top_k must be an integer >= 1, got {self.top_k!r}")

    def check(self, kind: str, cfgpp: bool = False, mean_flow: bool = False) -> None:
        if kind != "tokens":
            raise GuidanceError(f"gedi rescores a codec LM's candidate tokens; it does not apply to a {kind!r} model")

    def refine_step(
        self, guided: Tensor, branches: Mapping[frozenset[str], Tensor], context: TokenStep | None
    ) -> Tensor:
        if self.weight == 0.0:
            return guided
        if self.evaluator is None:
            raise GuidanceError("gedi needs a discriminator bound for each generation (Guidance.bind); "
                                "the pipeline binds one from the recipe's [verifier]")
        if context is None:
            raise GuidanceError("gedi judges candidate tokens in their context; the sampler must pass GuidedLogits a TokenStep")
        first = guided[:, 0]  # [B, V]: codebook 0, which starts frame context.step
        top, candidates = first.topk(min(self.top_k, first.shape[-1]), dim=-1)
        judged = self.evaluator(context, candidates)
        if judged is None:
            return guided
        if judged.shape != candidates.shape:
            raise GuidanceError(f"the gedi judge must return one log-posterior per candidate, shape {tuple(candidates.shape)}; "
                                f"got {tuple(judged.shape)}")
        weighted = (top + self.weight * judged.to(top)).log_softmax(dim=-1)
        out = guided.clone()
        out[:, 0] = torch.full_like(first, -math.inf).scatter(-1, candidates, weighted)
        return out


# The guiders a policy builds from its keywords (the recipe's [guidance] keys), in this order.
# TCFG adjusts after CFG-Zero*'s scale; PAG / STG add their terms to the combination (APG's too)
# before the rescale sees it, as diffusers orders PAG and guidance_rescale.
_KEYWORD_GUIDERS: tuple[Any, ...] = (CFGZeroStar, TCFG, APG, PAG, STG, Rescale, Interval, Adaptive)


# --------------------------------------------------------------------------------------------
# Policy
# --------------------------------------------------------------------------------------------

_MODES = ("nested", "independent", "joint", "terms")


@dataclass(frozen=True)
class Guidance:
    """A complete guidance policy; frozen, so a per-call override is a copy (:meth:`override`).

    ``scales`` maps condition name to its scale ``w`` (canonical convention, 1 = no guidance);
    ``mode`` turns them into :class:`CFGTerm` s (``nested`` in the order of ``scales``,
    ``independent``, ``joint`` with the single scale ``scales[*]``), or ``terms`` gives them directly.
    The other keywords (a recipe's ``[guidance]`` keys) set the built-in guiders:
    ``zero_star`` / ``zero_init`` :class:`CFGZeroStar`, ``tcfg`` :class:`TCFG`, ``apg``
    :class:`APG`, ``pag`` :class:`PAG`, ``stg`` :class:`STG`, ``rescale`` (phi) /
    ``rescale_space`` :class:`Rescale`, ``interval`` / ``interval_on`` :class:`Interval`,
    ``adaptive`` :class:`Adaptive` (in a recipe, ``tcfg``, ``apg``, ``pag``, ``stg`` and ``adaptive``
    are tables: ``[guidance.pag]`` with ``scale`` and ``layers``); ``reduce`` is the dims of the
    stds, norms and SVDs of rescale, APG and TCFG. ``distilled``: the conditions whose scale the
    model takes as an input are guided through that input, not branches (module docstring,
    "Distilled guidance"; ``nested`` and ``independent`` modes only).
    ``guiders`` appends more guiders (a user's own classes); ``policy.methods`` is
    every guider of the policy in order, the keywords' first. Every invalid value is a
    :class:`GuidanceError`.
    """

    scales: tuple[tuple[str, float], ...] = ()
    mode: str = "nested"
    custom_terms: tuple[CFGTerm, ...] = ()
    rescale: float = 0.0
    rescale_space: str = "native"
    reduce: str = "all"
    apg: APG | None = None
    tcfg: TCFG | None = None
    pag: PAG | None = None
    stg: STG | None = None
    interval: tuple[float, float] | None = None
    interval_on: str = "t"
    zero_star: bool = False
    zero_init: float = 0.0
    adaptive: Adaptive | None = None
    distilled: bool = False  # scales of the model's guidance inputs go in as inputs, not branches
    guiders: tuple[Guider, ...] = ()  # more guiders, after the keywords' (user-defined ones, say)
    # ``methods`` (every guider, in order) is set by __post_init__; it is no field, so that
    # dataclasses.replace rebuilds the keywords' guiders instead of copying the old ones.

    def __post_init__(self) -> None:
        if isinstance(self.scales, Mapping):
            object.__setattr__(self, "scales", tuple(self.scales.items()))
        if self.mode not in _MODES:
            raise GuidanceError(f"guidance mode must be one of {', '.join(_MODES)}, got {self.mode!r}")
        for name, w in self.scales:
            if not math.isfinite(w) or w < 0:
                raise GuidanceError(f"guidance scale for {name!r} must be a finite number >= 0, got {w}")
        if self.mode == "joint" and len({w for _, w in self.scales}) > 1:
            raise GuidanceError("joint guidance takes one scale for all conditions")
        if self.reduce not in _REDUCE:
            raise GuidanceError(f"reduce must be one of {', '.join(_REDUCE)}, got {self.reduce!r}")
        if not isinstance(self.distilled, bool):
            raise GuidanceError(f"distilled must be true or false, got {self.distilled!r}")
        if self.distilled and self.mode not in ("nested", "independent"):
            raise GuidanceError(f"distilled guidance takes a nested or independent policy (a scale per condition), not mode {self.mode!r}")
        if self.mode == "terms":
            total = sum(t.weight for t in self.custom_terms)
            if not self.custom_terms or abs(total - 1.0) > 1e-6:
                raise GuidanceError(f"guidance term weights must sum to 1, got {total:.6g}")
        for name, cls in (("apg", APG), ("adaptive", Adaptive), ("tcfg", TCFG), ("pag", PAG), ("stg", STG)):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, cls) or (cls is PAG and isinstance(value, STG))):
                article = "an" if cls.__name__[0] in "AEIOU" else "a"
                raise GuidanceError(f"{name} must be {article} {cls.__name__} or None, got {value!r}")
        extra = tuple(self.guiders)
        for g in extra:
            if not isinstance(g, Guider):
                raise GuidanceError(f"guiders must be Guider objects, got {g!r}")
            _check_space(g.space, f"{g.key} space")
        built = tuple(g for cls in _KEYWORD_GUIDERS if (g := cls.from_policy(self)) is not None)
        every = built + extra
        combiners = [g.key for g in every if _overrides(g, "combine")]
        if len(combiners) > 1:
            raise GuidanceError(f"at most one guider may replace the weighted combination, got {', '.join(combiners)}")
        object.__setattr__(self, "guiders", extra)
        object.__setattr__(self, "methods", every)

    @property
    def frame_local(self) -> bool:
        """Whether each frame's guided prediction depends on that frame's predictions alone (every
        guider ``frame_local``): then rows of different lengths can share a padded batch."""
        return all(g.frame_local for g in self.methods)

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

    @property
    def needs(self) -> tuple[str, ...]:
        """The evaluators its guiders need bound (:meth:`bind`) before it can run, in order."""
        return tuple(dict.fromkeys(g.needs for g in self.methods if g.needs is not None))

    def bind(self, evaluators: Mapping[str, Callable[..., Any]]) -> Guidance:
        """A copy whose guiders that need an evaluator (:attr:`Guider.needs`) have it bound
        (:meth:`Guider.bind`); a missing one is a :class:`GuidanceError`. Such guiders live in
        ``guiders`` (a recipe's table for one of them is parsed into it), never in the keywords."""
        bound = []
        for g in self.guiders:
            if g.needs is not None:
                if g.needs not in evaluators:
                    raise GuidanceError(f"{g.key} needs a {g.needs}, and none is available here")
                g = g.bind(evaluators[g.needs])
            bound.append(g)
        return dataclasses.replace(self, guiders=tuple(bound))

    def with_scales(self, **scales: float) -> Guidance:
        """A copy with some scales replaced; unknown condition names are errors."""
        current = dict(self.scales)
        for name in scales:
            if name not in current:
                raise GuidanceError(
                    f"no guidance scale named {name!r}; this policy has {', '.join(current) or 'none'}"
                )
        current.update(scales)
        return dataclasses.replace(self, scales=tuple(current.items()))

    def override(
        self, *, cfg: float | None = None, scales: Mapping[str, float] | None = None, rescale: float | None = None
    ) -> Guidance:
        """This policy with one call's overrides, validated: ``cfg`` sets every scale, then ``scales``
        replaces the named ones (unknown names are errors), ``rescale`` sets the rescale phi."""
        policy = self
        try:
            if cfg is not None:
                policy = policy.with_scales(**{name: float(cfg) for name in policy.conditions})
            if scales:
                policy = policy.with_scales(**{name: float(w) for name, w in scales.items()})
            if rescale is not None:
                policy = dataclasses.replace(policy, rescale=float(rescale))
        except GuidanceError:
            raise
        except (TypeError, ValueError) as e:
            raise GuidanceError(f"guidance overrides must be numbers: {e}") from None
        return policy


def check_perturbations(policy: Guidance, perturbs: Mapping[str, int]) -> None:
    """Raise :class:`GuidanceError` unless a model that can perturb ``perturbs`` (kind -> number of
    layers, ``model.perturbable``) takes every :class:`Perturbed` branch the policy's guiders ask for."""
    for g in policy.methods:
        for b in g.branches_for(policy):
            if not isinstance(b, Perturbed):
                continue
            if b.perturb not in perturbs:
                can = ", ".join(sorted(perturbs)) or "nothing"
                raise GuidanceError(f"{g.key} needs a model that perturbs {b.perturb!r} per row; this model perturbs {can}")
            n = perturbs[b.perturb]
            if max(b.layers) >= n:
                raise GuidanceError(f"{g.key} layers {list(b.layers)}: the model has {n} layers (0 to {n - 1})")


def check_distilled(policy: Guidance, inputs: Sequence[str]) -> tuple[str, ...]:
    """The conditions a ``distilled`` policy guides through the model's guidance-scale inputs
    (``inputs``, ``model.guidance_inputs``), in the policy's order; ``()`` for a policy that is not
    distilled. A :class:`GuidanceError` when none of its conditions is such an input."""
    if not policy.distilled:
        return ()
    names = tuple(n for n in policy.conditions if n in inputs)
    if not names:
        takes = f"the scales of {', '.join(inputs)}" if inputs else "no guidance scale"
        raise GuidanceError(f"distilled guidance needs a model that takes the guidance scale of "
                            f"{' or '.join(policy.conditions) or 'a guided condition'} as an input; this model takes {takes}")
    return names


def check_policy(
    policy: Guidance, *, kind: str, cfgpp: bool, mean_flow: bool, perturbs: Mapping[str, int] | None = None,
    guidance_inputs: Sequence[str] | None = None,
) -> None:
    """Raise :class:`GuidanceError` unless ``policy`` applies to a model of ``kind`` (``"tokens"`` for
    codec LMs, else its prediction kind) sampled by a CFG++ (``cfgpp``) or mean-flow sampler: CFG++
    scales live in ``[0, 1]``, and every guider is asked (:meth:`Guider.check`). With ``perturbs``
    (what the model can perturb, ``model.perturbable`` or ``Model.perturbations(config)``) perturbed
    branches are checked too (:func:`check_perturbations`), and with ``guidance_inputs`` (the
    conditions whose scale the model takes as an input) a distilled policy (:func:`check_distilled`);
    :class:`GuidedField` always checks both."""
    if kind not in PREDICTION_KINDS + ("tokens",):
        raise GuidanceError(f"unknown model kind {kind!r}; one of tokens, {', '.join(PREDICTION_KINDS)}")
    if cfgpp:
        weights = [(name, w) for name, w in policy.scales] + [
            ("+".join(sorted(t.keep)) or "null", t.weight) for t in policy.custom_terms
        ]
        for name, w in weights:
            if not 0.0 <= w <= 1.0:
                raise GuidanceError(f"CFG++ scales live in [0, 1]; scale for {name!r} is {w}")
    for g in policy.methods:
        g.check(kind, cfgpp, mean_flow)
    if perturbs is not None:
        check_perturbations(policy, perturbs)
    if guidance_inputs is not None:
        check_distilled(policy, guidance_inputs)


# --------------------------------------------------------------------------------------------
# The guided vector field samplers call
# --------------------------------------------------------------------------------------------


@dataclass
class _State:
    """Per-generation state: each guider's own (:meth:`Guider.start`, in the order of
    ``policy.methods``), rows evaluated, and the model's prepared conditions."""

    guiders: list[Any] = field(default_factory=list)
    rows_evaluated: int = 0
    prepared: dict[frozenset[str], Cond] = field(default_factory=dict)  # per kept-condition subset
    frames: tuple[int, int] = (0, 0)  # the batch size and latent length ``prepared`` was computed for


class GuidedField:
    """``model(x, t, **extra) -> guided prediction`` for one generation; what samplers call.

    Binds a :class:`~audioguide.core.Denoiser`, its condition tensors and a :class:`Guidance`
    policy, and runs the policy's guiders' hooks around the weighted sum of its terms (see the
    module docstring). It holds per-generation state (each guider's, e.g. APG momentum and
    adaptive-guidance streaks), so build a new one for every generation. ``kind`` is the model's
    prediction kind and ``alpha_sigma`` its noise schedule; both are needed to move predictions
    into the space a guider declares. ``rows_evaluated`` counts network rows evaluated (NFE x
    batch), to measure savings. The model's step-invariant work (:func:`audioguide.core.prepare`)
    is done once per condition subset, the first time that subset is evaluated, and reused at
    every later step; a generation keeps one batch size, length and ``mask`` (a new length or
    batch size prepares again). A ``distilled`` policy passes the scales of the model's guidance
    inputs as its ``guidance`` input (module docstring, "Distilled guidance"); :meth:`conditional`
    passes none (scale 1).
    """

    def __init__(
        self,
        model: Denoiser,
        cond: Cond,
        policy: Guidance,
        kind: str = "flow",
        alpha_sigma: AlphaSigma = flow_alpha_sigma,
        extra: Mapping[str, Tensor] | None = None,
    ) -> None:
        if kind not in PREDICTION_KINDS:
            raise GuidanceError(f"unknown prediction kind {kind!r}")
        for g in policy.methods:
            g.check(kind)
        check_perturbations(policy, _perturbable(model))
        # distilled guidance: these conditions' scales are the model's ``guidance`` input, not branches
        self.inputs = tuple(getattr(model, "guidance_inputs", None) or ())
        self.distilled = check_distilled(policy, self.inputs)
        negatives = [n for n in self.distilled if f"{n}.negative" in cond]
        if negatives:
            raise GuidanceError(f"a negative prompt for {negatives[0]!r} replaces its unconditional branch, "
                                "which distilled guidance does not evaluate; use distilled = false")
        self.input_scales = tuple(dict(policy.scales)[n] if n in self.distilled else 1.0 for n in self.inputs)
        self.model, self.cond, self.policy = model, cond, policy
        self.extra = dict(extra or {})  # model inputs of every call, e.g. the frame ``mask`` of a padded batch
        self.kind, self.alpha_sigma = kind, alpha_sigma
        self.reference = frozenset(policy.conditions)
        self.terms = (policy.with_scales(**dict.fromkeys(self.distilled, 1.0)) if self.distilled else policy).terms
        # Branches other than the reference that carry weight; zero-weight branches are never run.
        self.others = tuple(tm for tm in self.terms if tm.keep != self.reference and tm.weight != 0.0)
        self.ref_weight = sum(tm.weight for tm in self.terms if tm.keep == self.reference)
        self.null: frozenset[str] = frozenset()
        keeps = [tm.keep for tm in self.others]
        self.extra_keeps: list[Branch] = []  # branches guiders ask for besides the terms
        for g in policy.methods:
            for k in g.branches_for(policy):
                k = k if isinstance(k, Perturbed) else frozenset(k)
                if k != self.reference and k not in keeps and k not in self.extra_keeps:
                    self.extra_keeps.append(k)
        # guiders whose hooks convert predictions out of the model's space (refused for r != t)
        self.converting = [f"{g.key} ({g.space})" for g in policy.methods if self._space(g) != kind]
        self.hooks = {h: [(i, g) for i, g in enumerate(policy.methods) if _overrides(g, h)] for h in _HOOKS}
        self.state = _State(guiders=[g.start() for g in policy.methods])

    @property
    def rows_evaluated(self) -> int:
        return self.state.rows_evaluated

    def state_of(self, guider: Guider) -> Any:
        """The per-generation state of one of the policy's guiders."""
        for i, g in enumerate(self.policy.methods):
            if g is guider:
                return self.state.guiders[i]
        raise GuidanceError(f"{guider!r} is not a guider of this policy")

    def __call__(self, x: Tensor, t: Tensor | float, **extra: Tensor) -> Tensor:
        return self._guide(x, t, {**self.extra, **extra}, want_uncond=False)[0]

    def pair(self, x: Tensor, t: Tensor | float, **extra: Tensor) -> tuple[Tensor, Tensor]:
        """``(guided, unconditional)`` predictions, for CFG++ samplers (one batched forward)."""
        guided, uncond = self._guide(x, t, {**self.extra, **extra}, want_uncond=True)
        assert uncond is not None
        return guided, uncond

    def conditional(self, x: Tensor, t: Tensor | float, **extra: Tensor) -> Tensor:
        """The reference prediction ``c`` alone (every condition of the policy kept, no guider):
        one forward of the batch's rows. The predictor of predictor-corrector guidance
        (``audioguide.sampling.corrector``) integrates it; its corrector calls the field itself."""
        extra = {**self.extra, **extra}
        B = x.shape[0]
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(B).contiguous()
        prepared = self._prepared([self.reference], x, extra.get("mask"))
        request = [(self.reference, torch.arange(B, device=x.device))]
        out = evaluate_branches(self.model, x, t, self.cond, request, self.policy.conditions, extra, prepared)[0]
        self.state.rows_evaluated += B
        return out

    # -- internals ---------------------------------------------------------------------------

    def _guide(
        self, x: Tensor, t: Tensor | float, extra: Mapping[str, Tensor], want_uncond: bool
    ) -> tuple[Tensor, Tensor | None]:
        p, B = self.policy, x.shape[0]
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(B).contiguous()
        r = extra.get("r")
        if r is not None and self.converting and not torch.equal(torch.as_tensor(r, dtype=t.dtype, device=t.device).expand(B), t):
            raise GuidanceError(
                f"a mean-flow model's average velocity u(z, r, t) with r != t has no other space to convert to, "
                f"as {', '.join(self.converting)} would; use the native space"
            )
        all_rows = torch.arange(B, device=x.device)
        other_keeps = [tm.keep for tm in self.others] + self.extra_keeps
        # CFG++ renoises with the unconditional prediction even where its weight is 0.
        if want_uncond and self.null != self.reference and self.null not in other_keeps:
            other_keeps.append(self.null)
        if other_keeps or self.distilled:  # rows on which guidance is on
            active = torch.ones_like(t, dtype=torch.bool)
            step = Step(self, x, t, None, {})
            for i, g in self.hooks["gate"]:
                step.state = self.state.guiders[i]
                rows = g.gate(step)
                if rows is not None:
                    active &= rows
        else:
            active = torch.zeros(B, dtype=torch.bool, device=x.device)
        act_rows = all_rows[active]
        requests = [(self.reference, all_rows)]
        if len(act_rows):
            requests += [(k, act_rows) for k in other_keeps]
        prepared = self._prepared([self.reference, *other_keeps], x, extra.get("mask"))
        if self.distilled:  # the distilled scales where guidance is on, 1 (none) elsewhere
            w = torch.tensor(self.input_scales, dtype=x.dtype, device=x.device)
            extra = {**extra, "guidance": torch.where(active[:, None], w, torch.ones_like(w))}
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
            if preds or self.extra_keeps:
                ra = None if r is None else torch.as_tensor(r, dtype=t.dtype, device=t.device).expand(B)[active]
                step = Step(self, x[active], t[active], active, {self.reference: ca, **by_keep}, ra)
                guided[active] = self._combine(step, ca, preds)
                for i, g in self.hooks["observe"]:
                    step.state = self.state.guiders[i]
                    g.observe(step, *self._to(g, step, ca, preds))
            if uncond is not None and self.null in by_keep:
                uncond[active] = by_keep[self.null]
        if self.hooks["post"]:
            step = Step(self, x, t, None, {})
            for i, g in self.hooks["post"]:
                step.state = self.state.guiders[i]
                guided = self._back(g, step, g.post(step, self._to(g, step, guided)))
        return guided, uncond

    def _space(self, g: Guider) -> str:
        return self.kind if g.space == "native" else g.space

    def _to(self, g: Guider, step: Step, pred: Tensor, preds: list[Tensor] | None = None) -> Any:
        """``pred`` (and ``preds``) moved from the model's space into ``g``'s."""
        space = self._space(g)
        if space == self.kind:
            return pred if preds is None else (pred, preds)
        a, s = self.alpha_sigma(step.t)
        out = convert_prediction(pred, self.kind, space, step.x, a, s)
        if preds is None:
            return out
        return out, [convert_prediction(q, self.kind, space, step.x, a, s) for q in preds]

    def _back(self, g: Guider, step: Step, pred: Tensor) -> Tensor:
        """``pred`` moved from ``g``'s space back into the model's."""
        space = self._space(g)
        if space == self.kind:
            return pred
        a, s = self.alpha_sigma(step.t)
        return convert_prediction(pred, space, self.kind, step.x, a, s)

    def _combine(self, step: Step, c: Tensor, preds: list[Tensor]) -> Tensor:
        """Guided prediction on the guided rows (``step.active``): adjust, combine, refine."""
        for i, g in self.hooks["adjust"]:
            step.state = self.state.guiders[i]
            adjusted = g.adjust(step, *self._to(g, step, c, preds))
            preds = [self._back(g, step, q) for q in adjusted]
        if self.hooks["combine"]:
            i, g = self.hooks["combine"][0]
            step.state = self.state.guiders[i]
            guided = self._back(g, step, g.combine(step, *self._to(g, step, c, preds)))
        elif preds:
            guided = self.ref_weight * c + combine(torch.stack(preds), [tm.weight for tm in self.others])
        else:  # no weighted branch besides the reference (its weight is then 1): guiders' branches only
            guided = c
        for i, g in self.hooks["refine"]:
            step.state = self.state.guiders[i]
            guided = self._back(g, step, g.refine(step, self._to(g, step, guided), self._to(g, step, c)))
        return guided

    def _prepared(self, keeps: Sequence[Branch], x: Tensor, mask: Tensor | None) -> dict[frozenset[str], Cond]:
        """``cond`` prepared for the condition subset of each branch in ``keeps`` (all rows), computed
        once per generation (a perturbed branch shares its subset's)."""
        state, B = self.state, x.shape[0]
        if state.frames != (B, x.shape[-1]):
            state.prepared, state.frames = {}, (B, x.shape[-1])
        for k in map(_keep_of, keeps):
            if k not in state.prepared:
                keep = {n: torch.full((B,), n in k, dtype=torch.bool, device=x.device) for n in self.policy.conditions}
                state.prepared[k] = prepare(self.model, self.cond, keep, x.shape[-1], mask)
        return state.prepared


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
    softmax.) Guiders that apply to logits (``logits = True``) then refine them, in policy order
    (:meth:`Guider.refine_logits`, or :meth:`Guider.refine_step` with the step's
    :class:`TokenStep` context, which the sampler passes as ``context``); the policy is refused if
    any guider does not (:meth:`Guider.check` with kind ``"tokens"``). Temperature, top-k and top-p
    apply afterwards (audiocraft, ``lm.py``).
    """

    def __init__(self, policy: Guidance) -> None:
        for g in policy.methods:
            g.check("tokens")
        self.policy = policy
        terms = [tm for tm in policy.terms if tm.weight != 0.0]
        self.keeps = tuple(tm.keep for tm in terms) or (frozenset(policy.conditions),)
        self.weights = tuple(tm.weight for tm in terms) or (1.0,)
        self.refiners = [g for g in policy.methods if _overrides(g, "refine_logits") or _overrides(g, "refine_step")]

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

    def __call__(self, logits: Tensor, context: TokenStep | None = None) -> Tensor:
        """Stacked logits ``[n_branches * B, ...]`` -> guided log-probabilities ``[B, ...]``;
        ``context`` is the AR loop's step (:class:`TokenStep`), for guiders that judge tokens in it."""
        n = self.n_branches
        per_branch = logits.float().log_softmax(-1).unflatten(0, (n, logits.shape[0] // n))
        guided = combine(per_branch, self.weights)
        if self.refiners:
            branches = dict(zip(self.keeps, per_branch.unbind(0)))
            for g in self.refiners:
                guided = g.refine_step(guided, branches, context)
        return guided
