"""Training objectives for continuous generators: flow matching, discrete diffusion, MeanFlow.

Every objective is a pure function ``(model, x0, cond, keep, generator, ...) -> (loss, logs)``:
``loss`` a scalar tensor to back-propagate, ``logs`` plain floats. All randomness (times, noise,
which rows are flow rows) comes from the explicit ``generator``. ``keep`` is the per-condition
dropout of :func:`audioguide.training.conditions.draw_keep`; ``mask`` ``[B, T]`` (True = real
frame) restricts every loss to valid frames, so padding never changes a loss.

Conventions (see :mod:`audioguide.core`): ``x_t = alpha_t x_0 + sigma_t eps`` with ``t = 1`` the
noise end; for flows ``x_t = (1 - t) x_0 + t eps`` and ``v = eps - x_0``.

MeanFlow with folded guidance
-----------------------------
MeanFlow (Geng et al. 2025, arXiv 2505.13447) trains the average velocity
``u(z_t, r, t) = 1/(t - r) int_r^t v(z_tau, tau) dtau`` through the MeanFlow identity (eq. 6)
``u = v - (t - r) du/dt`` with ``du/dt = v d_z u + d_t u`` (eq. 8), computed as one Jacobian-vector
product of the network with tangents ``(v, 0, 1)`` for ``(z, r, t)`` (Alg. 1), and a
stop-gradient target ``u_tgt = sg(v - (t - r) du/dt)`` (eq. 10). MeanAudio (arXiv 2508.06098)
uses it for text-to-audio, after plain flow-matching pre-training (see
:func:`curriculum_flow_ratio`).

Guidance is folded into training (MeanFlow §4.2 and its appendix; MeanAudio): the velocity on
rows whose guided conditions were kept is replaced by

    v_tgt = omega v + kappa u(z_t, t, t | c) + (1 - omega - kappa) u(z_t, t, t | null),

(model terms without gradient). At convergence ``u(c) = v_tgt`` on the conditional rows, so
``u(c) = u(null) + omega / (1 - kappa) (v - u(null))``: classifier-free guidance with the
effective scale ``w = omega / (1 - kappa)`` in our convention (``u + w (c - u)``, see
:mod:`audioguide.guidance`), baked into a one-step sampler that needs no guidance at inference.
``omega = 1``, ``kappa = 0`` is no guidance.

Guidance distillation
---------------------
Where folded guidance bakes in one scale, distillation (Meng et al. 2023, §3.1, eq. 6-7;
:func:`distillation_loss`) trains a student that takes the scale ``w`` as an input
(``guidance_embed``) to give, in one forward, the guided prediction of a frozen teacher at any
``w`` drawn from a range: the target is :class:`~audioguide.guidance.GuidedField` itself over the
teacher (the recipe's policy at ``w``), for a mean-flow model the guided average velocity at
``(r, t)``. No JVP: the teacher's guided ``u`` is the target directly.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch
from torch import Tensor, nn

from audioguide.core import Cond, Keep, expand_like, from_x0_eps, prepare
from audioguide.guidance import Guidance, GuidedField, combine
from audioguide.models.dit import math_attention
from audioguide.sampling import DiffusionSchedule
from audioguide.sampling.diffusion import DIFFUSION_KINDS
from audioguide.train_config import DistillConfig, MeanFlowConfig

Logs = dict[str, float]
T_DISTS: tuple[str, ...] = ("logit-normal", "uniform")


# ---------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------


def _randn(shape: tuple[int, ...], generator: torch.Generator, like: Tensor) -> Tensor:
    """Standard normal noise drawn from ``generator`` (on its device), moved to ``like``."""
    return torch.randn(shape, generator=generator, device=generator.device).to(like.device, like.dtype)


def _rand(n: int, generator: torch.Generator, like: Tensor) -> Tensor:
    return torch.rand(n, generator=generator, device=generator.device).to(like.device, like.dtype)


def logit_normal(n: int, generator: torch.Generator, like: Tensor, mu: float, sigma: float) -> Tensor:
    """``t = sigmoid(mu + sigma n)``, ``n ~ N(0, 1)``: logit-normal sampling (SD3, Esser et al. 2024, §3.1)."""
    return torch.sigmoid(mu + sigma * _randn((n,), generator, like))


def draw_times(
    n: int, generator: torch.Generator, like: Tensor, t_dist: str, mu: float, sigma: float
) -> Tensor:
    """``n`` times in ``(0, 1)`` from ``"logit-normal"`` (mu, sigma) or ``"uniform"``."""
    if t_dist == "logit-normal":
        return logit_normal(n, generator, like, mu, sigma)
    if t_dist == "uniform":
        return _rand(n, generator, like)
    raise ValueError(f"unknown t_dist {t_dist!r}; choose one of {', '.join(T_DISTS)}")


def frame_weights(x0: Tensor, mask: Tensor | None) -> Tensor:
    """Per-frame weights ``[B, 1, T]`` (1 on valid frames, 0 on padding) in ``x0``'s dtype."""
    if mask is None:
        return torch.ones(x0.shape[0], 1, x0.shape[-1], dtype=x0.dtype, device=x0.device)
    if mask.shape != (x0.shape[0], x0.shape[-1]):
        raise ValueError(f"mask must be [B, T] = {(x0.shape[0], x0.shape[-1])}, got {tuple(mask.shape)}")
    return mask.to(x0.device, x0.dtype)[:, None, :]


def per_sample_mse(err: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of ``err**2`` ``[B, C, T]`` over channels and valid frames, per sample -> ``[B]``."""
    w = frame_weights(err, mask)
    denom = (w.sum(dim=(1, 2)) * err.shape[1]).clamp_min(1.0)
    return (err.square() * w).sum(dim=(1, 2)) / denom


def masked_mse(err: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of ``err**2`` over every valid element of the batch (padding excluded) -> scalar."""
    w = frame_weights(err, mask)
    return (err.square() * w).sum() / (w.sum() * err.shape[1]).clamp_min(1.0)


def _extra(mask: Tensor | None, **more: Tensor) -> dict[str, Tensor]:
    """Keyword extras for ``model(...)``; ``mask`` is passed only when given."""
    return ({} if mask is None else {"mask": mask}) | more


# ---------------------------------------------------------------------------------------------
# Flow matching and diffusion
# ---------------------------------------------------------------------------------------------


def flow_matching_loss(
    model: nn.Module,
    x0: Tensor,
    cond: Cond,
    keep: Keep,
    generator: torch.Generator,
    mask: Tensor | None = None,
    t_dist: str = "logit-normal",
    mu: float = 0.0,
    sigma: float = 1.0,
) -> tuple[Tensor, Logs]:
    """Conditional flow matching / rectified flow (Lipman et al. 2023, eq. 23; Liu et al. 2023, eq. 1).

    ``x_t = (1 - t) x_0 + t eps``, target ``v = eps - x_0``, loss ``E ||v_theta(x_t, t) - v||^2``
    over valid frames; ``t`` logit-normal (SD3, Esser et al. 2024, §3.1) or uniform.
    """
    if getattr(model, "kind", "flow") != "flow":
        raise ValueError(f"flow matching trains a 'flow' model, got kind {model.kind!r}")
    B = x0.shape[0]
    t = draw_times(B, generator, x0, t_dist, mu, sigma)
    eps = _randn(tuple(x0.shape), generator, x0)
    te = expand_like(t, x0)
    x_t = (1.0 - te) * x0 + te * eps
    pred = model(x_t, t, cond, keep, **_extra(mask))
    loss = masked_mse(pred - (eps - x0), mask)
    return loss, {"loss": loss.item()}


def diffusion_loss(
    model: nn.Module,
    x0: Tensor,
    cond: Cond,
    keep: Keep,
    generator: torch.Generator,
    schedule: DiffusionSchedule,
    kind: str,
    mask: Tensor | None = None,
) -> tuple[Tensor, Logs]:
    """Denoising loss on a discrete schedule (Ho et al. 2020, eq. 14, "simple" loss).

    ``n ~ U{0, .., N-1}``, ``x_t = sqrt(abar_n) x_0 + sqrt(1 - abar_n) eps``, model input
    ``t = n / (N - 1)``; the target is ``eps``, ``v = alpha eps - sigma x_0`` (Salimans & Ho 2022,
    eq. 3.3) or ``x_0`` per ``kind``.
    """
    if kind not in DIFFUSION_KINDS:
        raise ValueError(f"diffusion kind must be one of {', '.join(DIFFUSION_KINDS)}, got {kind!r}")
    B, N = x0.shape[0], schedule.num_train_steps
    n = torch.randint(0, N, (B,), generator=generator, device=generator.device).to(x0.device)
    acp = schedule.alphas_cumprod.to(x0.device)[n]
    alpha, sigma = acp.sqrt().to(x0.dtype), (1.0 - acp).sqrt().to(x0.dtype)
    eps = _randn(tuple(x0.shape), generator, x0)
    x_t = expand_like(alpha, x0) * x0 + expand_like(sigma, x0) * eps
    t = n.to(x0.dtype) / (N - 1)
    pred = model(x_t, t, cond, keep, **_extra(mask))
    loss = masked_mse(pred - from_x0_eps(x0, eps, kind, alpha, sigma), mask)
    return loss, {"loss": loss.item()}


# ---------------------------------------------------------------------------------------------
# MeanFlow
# ---------------------------------------------------------------------------------------------


class MeanFlowTerms(NamedTuple):
    """Everything the mean-flow loss is built from (exposed for tests and diagnostics)."""

    r: Tensor  # [B]
    t: Tensor  # [B]
    z: Tensor  # z_t = (1 - t) x0 + t eps
    v: Tensor  # eps - x0, the conditional velocity
    v_tgt: Tensor  # v with guidance folded in (equals v without guidance)
    u: Tensor  # network output u(z, r, t), with gradient
    dudt: Tensor  # total derivative d/dt u = v_tgt d_z u + d_t u (detached)
    u_tgt: Tensor  # sg(v_tgt - (t - r) du/dt)


def draw_interval(
    n: int, generator: torch.Generator, like: Tensor, config: MeanFlowConfig
) -> tuple[Tensor, Tensor]:
    """``(r, t)``: two logit-normal draws, ``t = max``, ``r = min``; ``r = t`` on ``flow_ratio`` of the rows.

    MeanFlow §4.3 / Alg. 1; the rows with ``r = t`` are a random ``int(flow_ratio * n)`` of the batch.
    """
    a = logit_normal(n, generator, like, config.mu, config.sigma)
    b = logit_normal(n, generator, like, config.mu, config.sigma)
    t, r = torch.maximum(a, b), torch.minimum(a, b)
    flow_rows = torch.randperm(n, generator=generator, device=generator.device)[: int(config.flow_ratio * n)]
    r = r.clone()
    r[flow_rows.to(r.device)] = t[flow_rows.to(t.device)]
    return r, t


def kept_rows(keep: Keep, names: tuple[str, ...], batch: int, device: torch.device) -> Tensor:
    """Rows ``[B]`` on which every condition in ``names`` (all of ``keep`` if empty) was kept."""
    rows = torch.ones(batch, dtype=torch.bool, device=device)
    for name in names or tuple(keep):
        if name not in keep:
            raise ValueError(f"guided condition {name!r} is not in keep ({', '.join(keep) or 'none'})")
        rows = rows & keep[name].to(device)
    return rows


@torch.no_grad()
def guided_velocity(
    model: nn.Module,
    z: Tensor,
    t: Tensor,
    v: Tensor,
    cond: Cond,
    keep: Keep,
    config: MeanFlowConfig,
    mask: Tensor | None = None,
) -> Tensor:
    """``v_tgt = omega v + kappa u(z, t, t | c) + (1 - omega - kappa) u(z, t, t | null)`` on kept rows.

    MeanFlow §4.2 (eq. 13 and its kappa variant in the appendix; MeanAudio). Both model terms come
    from ONE no-grad forward with the conditional and null rows stacked; rows on which a guided
    condition was dropped keep ``v``. Always computes the formula (``omega = 1``, ``kappa = 0``
    returns ``v``).
    """
    B = z.shape[0]
    guided = list(config.guided_conditions or tuple(keep))
    rows = kept_rows(keep, tuple(guided), B, z.device)
    null_keep = {n: (torch.zeros_like(k) if n in guided else k) for n, k in keep.items()}
    both = {n: torch.cat([keep[n], null_keep[n]]) for n in keep}
    mask2 = None if mask is None else torch.cat([mask, mask])
    # the null rows need their own prepared states; the conditional rows reuse cond's (if prepared)
    null = prepare(model, cond, null_keep, z.shape[-1], mask)
    if null.keys() != cond.keys():
        cond = prepare(model, cond, keep, z.shape[-1], mask)
    cond2 = {k: torch.cat([cond[k], null[k]]) for k in null}
    out = model(torch.cat([z, z]), torch.cat([t, t]), cond2, both, **_extra(mask2, r=torch.cat([t, t])))
    u_c, u_null = out.detach().chunk(2)
    # the combination itself is guidance math: audioguide.guidance.combine
    folded = combine(torch.stack([v, u_c, u_null]), [config.omega, config.kappa, 1.0 - config.omega - config.kappa])
    return torch.where(rows.reshape(-1, *([1] * (v.ndim - 1))), folded, v)


def mean_flow_jvp(
    model: nn.Module,
    z: Tensor,
    r: Tensor,
    t: Tensor,
    v: Tensor,
    cond: Cond,
    keep: Keep,
    mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """``(u, du/dt)`` in ONE ``torch.func.jvp`` of ``(z, r, t) -> u`` with tangents ``(v, 0, 1)``.

    MeanFlow eq. 8 / Alg. 1: ``du/dt = v d_z u + 0 d_r u + d_t u``. ``u`` keeps its graph (it is
    the prediction being trained); ``du/dt`` is returned detached. Attention runs on its explicit
    math path during the JVP (:func:`audioguide.models.dit.math_attention`).
    """

    def u_of(z_: Tensor, r_: Tensor, t_: Tensor) -> Tensor:
        return model(z_, t_, cond, keep, **_extra(mask, r=r_))

    with math_attention(model):
        u, dudt = torch.func.jvp(u_of, (z, r, t), (v, torch.zeros_like(r), torch.ones_like(t)))
    return u, dudt.detach()


def average_velocity(
    model: nn.Module,
    z: Tensor,
    r: Tensor,
    t: Tensor,
    v: Tensor,
    cond: Cond,
    keep: Keep,
    mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """``(u, du/dt)`` as :func:`mean_flow_jvp`, with the JVP only on the rows where ``r < t``.

    On rows with ``r = t`` the JVP term is multiplied by ``t - r = 0`` (MeanFlow eq. 10), so they
    get one ordinary forward and ``du/dt = 0``; forward-mode AD, the costly part, runs on the
    others only. Rows are independent, so this equals the JVP over the whole batch.
    """
    flow = r == t
    if bool(flow.all()):
        return model(z, t, cond, keep, **_extra(mask, r=r)), torch.zeros_like(z)
    if not bool(flow.any()):
        return mean_flow_jvp(model, z, r, t, v, cond, keep, mask)
    fi, mi = flow.nonzero().squeeze(1), (~flow).nonzero().squeeze(1)

    def rows(i: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor | None]:
        return {k: c[i] for k, c in cond.items()}, {k: k_[i] for k, k_ in keep.items()}, None if mask is None else mask[i]

    cond_f, keep_f, mask_f = rows(fi)
    u_f = model(z[fi], t[fi], cond_f, keep_f, **_extra(mask_f, r=r[fi]))
    cond_m, keep_m, mask_m = rows(mi)
    u_m, dudt_m = mean_flow_jvp(model, z[mi], r[mi], t[mi], v[mi], cond_m, keep_m, mask_m)
    u = torch.zeros_like(z, dtype=u_f.dtype).index_copy(0, fi, u_f).index_copy(0, mi, u_m)
    return u, torch.zeros_like(z, dtype=dudt_m.dtype).index_copy(0, mi, dudt_m)


def mean_flow_target(v_tgt: Tensor, r: Tensor, t: Tensor, dudt: Tensor) -> Tensor:
    """``u_tgt = sg(v_tgt - (t - r) du/dt)`` (MeanFlow eq. 10)."""
    return (v_tgt - expand_like(t - r, v_tgt) * dudt).detach()


def adaptive_weighted_loss(delta: Tensor, mask: Tensor | None, p: float, c: float) -> tuple[Tensor, Tensor]:
    """MeanFlow §4.3 adaptive weighting: ``mean_b sg(w_b) ||delta_b||^2``, ``w_b = 1 / (||delta_b||^2 + c)^p``.

    ``||delta_b||^2`` is the per-sample MEAN square over channels and valid frames (not the sum),
    so ``c`` means the same for any latent size and padding. Returns ``(loss, per-sample mse)``.
    """
    mse = per_sample_mse(delta, mask)
    w = 1.0 / (mse.detach() + c) ** p
    return (w * mse).mean(), mse.detach()


def mean_flow_terms(
    model: nn.Module,
    x0: Tensor,
    cond: Cond,
    keep: Keep,
    generator: torch.Generator,
    config: MeanFlowConfig,
    mask: Tensor | None = None,
) -> MeanFlowTerms:
    """Draw ``(r, t, eps)``, fold guidance, and compute ``u``, ``du/dt`` and the target (Alg. 1).

    Rows with ``r = t`` skip the JVP (its term vanishes there; :func:`average_velocity`).
    """
    if not getattr(model, "mean_flow", True):
        raise ValueError("mean_flow_loss needs a mean-flow model (config mean_flow = true)")
    B = x0.shape[0]
    r, t = draw_interval(B, generator, x0, config)
    eps = _randn(tuple(x0.shape), generator, x0)
    te = expand_like(t, x0)
    z = (1.0 - te) * x0 + te * eps
    v = eps - x0
    v_tgt = guided_velocity(model, z, t, v, cond, keep, config, mask) if config.guided else v
    # rows with r = t (all of them in the curriculum's flow-matching phase) skip the JVP
    u, dudt = average_velocity(model, z, r, t, v_tgt, cond, keep, mask)
    return MeanFlowTerms(r, t, z, v, v_tgt, u, dudt, mean_flow_target(v_tgt, r, t, dudt))


def mean_flow_loss(
    model: nn.Module,
    x0: Tensor,
    cond: Cond,
    keep: Keep,
    generator: torch.Generator,
    config: MeanFlowConfig = MeanFlowConfig(),
    mask: Tensor | None = None,
) -> tuple[Tensor, Logs]:
    """MeanFlow loss (Geng et al. 2025, eq. 9-10, Alg. 1) with MeanAudio's folded guidance.

    ``model(z, t, cond, keep, r=r, mask=mask)`` predicts ``u(z, r, t)``. Logs: the weighted
    ``loss``, the unweighted ``mse``, and ``mse_flow`` / ``mse_mean`` on the rows with ``r = t``
    and ``r < t`` (NaN when a group is empty).
    """
    terms = mean_flow_terms(model, x0, cond, keep, generator, config, mask)
    loss, mse = adaptive_weighted_loss(terms.u - terms.u_tgt, mask, config.p, config.c)
    flow = terms.r == terms.t
    logs = {
        "loss": loss.item(),
        "mse": mse.mean().item(),
        "mse_flow": mse[flow].mean().item() if bool(flow.any()) else float("nan"),
        "mse_mean": mse[~flow].mean().item() if bool((~flow).any()) else float("nan"),
    }
    return loss, logs


# ---------------------------------------------------------------------------------------------
# Flow matching -> MeanFlow curriculum
# ---------------------------------------------------------------------------------------------


def curriculum_flow_ratio(step: int, warmup_steps: int, final_ratio: float) -> float:
    """``flow_ratio`` at ``step``: linear from 1.0 (pure flow matching, ``r = t`` always) to ``final_ratio``.

    MeanAudio (arXiv 2508.06098) first trains plain flow matching, then fine-tunes with the
    mean-flow loss; ramping the share of ``r < t`` rows over ``warmup_steps`` is a smooth version of
    that hand-over (``warmup_steps = 0`` switches at once). Constant ``final_ratio`` afterwards.
    """
    if warmup_steps < 0 or step < 0:
        raise ValueError(f"step and warmup_steps must be >= 0, got {step}, {warmup_steps}")
    if not 0.0 <= final_ratio <= 1.0:
        raise ValueError(f"final_ratio must be in [0, 1], got {final_ratio}")
    if step >= warmup_steps:
        return final_ratio
    return 1.0 + (final_ratio - 1.0) * step / warmup_steps


def flow_to_mean_flow(config: MeanFlowConfig, step: int, warmup_steps: int) -> MeanFlowConfig:
    """``config`` with ``flow_ratio`` replaced by :func:`curriculum_flow_ratio` at ``step``."""
    ratio = curriculum_flow_ratio(step, warmup_steps, config.flow_ratio)
    return dataclasses.replace(config, flow_ratio=ratio)


# ---------------------------------------------------------------------------------------------
# Guidance distillation
# ---------------------------------------------------------------------------------------------


class _Dropped:
    """``model`` with the conditions ``dropped`` replaced by their nulls on every row, whatever
    ``keep`` says: one training row's dropout, held under every branch guidance evaluates. A
    :class:`~audioguide.core.Denoiser` with the model's ``prepare`` and ``perturbable``."""

    def __init__(self, model: nn.Module, dropped: tuple[str, ...]) -> None:
        self.model, self.dropped = model, dropped

    @property
    def perturbable(self) -> dict[str, int]:
        return dict(getattr(self.model, "perturbable", None) or {})

    def _keep(self, keep: Keep, rows: int, device: torch.device) -> dict[str, Tensor]:
        return {**keep, **{n: torch.zeros(rows, dtype=torch.bool, device=device) for n in self.dropped}}

    def prepare(self, cond: Cond, keep: Keep, frames: int, mask: Tensor | None = None) -> dict[str, Tensor]:
        first = next(iter(cond.values()))
        return prepare(self.model, cond, self._keep(keep, first.shape[0], first.device), frames, mask)

    def __call__(self, x: Tensor, t: Tensor, cond: Cond, keep: Keep, **extra: Tensor) -> Tensor:
        return self.model(x, t, cond, self._keep(keep, x.shape[0], x.device), **extra)


def distillation_policy(policy: Guidance, scales: dict[str, float]) -> Guidance:
    """The policy whose guided prediction a distilled student learns at ``scales`` (condition ->
    scale): ``policy`` with those scales, every other condition's scale 1 (their guidance stays
    branches at sampling, on top of the student's prediction) and no gate (:class:`Interval`,
    :class:`Adaptive`): the student learns the guided prediction at every time, and which times are
    guided stays the sampler's choice, made through the scale input."""
    base = dataclasses.replace(policy, distilled=False, interval=None, adaptive=None)
    return base.with_scales(**({n: 1.0 for n in policy.conditions} | scales))


@torch.no_grad()
def distillation_targets(
    teacher: nn.Module,
    z: Tensor,
    t: Tensor,
    cond: Cond,
    keep: Keep,
    policy: Guidance,
    names: tuple[str, ...],
    w: Tensor,
    mask: Tensor | None = None,
    r: Tensor | None = None,
) -> Tensor:
    """The teacher's guided predictions: row ``b`` is :class:`~audioguide.guidance.GuidedField`'s
    output for the teacher under :func:`distillation_policy` at scales ``w[b]`` ``[n]`` of ``names``,
    with the conditions that row dropped (``keep``) dropped in every branch; a mean-flow teacher is
    called with ``r``, giving the guided average velocity ``u_w(z, r, t)``.

    Rows that share their scales and dropout go through one field, i.e. one batched forward of their
    branches; with scales drawn from a continuous range that is one field per row (the guidance
    math, rescale included, is :mod:`audioguide.guidance`'s, which takes scalar scales).
    """
    out = torch.empty_like(z)
    order = list(keep)
    groups: dict[tuple[tuple[float, ...], tuple[str, ...]], list[int]] = {}
    for b in range(z.shape[0]):
        dropped = tuple(n for n in order if not bool(keep[n][b]))
        groups.setdefault((tuple(w[b].tolist()), dropped), []).append(b)
    kind = getattr(teacher, "kind", "flow")
    for (scales, dropped), rows in groups.items():
        i = torch.tensor(rows, device=z.device)
        model = _Dropped(teacher, dropped) if dropped else teacher
        extra = {k: v[i] for k, v in (("mask", mask), ("r", r)) if v is not None}
        field = GuidedField(model, {k: v[i] for k, v in cond.items()}, distillation_policy(policy, dict(zip(names, scales))),
                            kind, extra=extra)
        out[i] = field(z[i], t[i])
    return out


class DistillTerms(NamedTuple):
    """What the distillation loss is built from (exposed for tests and diagnostics)."""

    r: Tensor  # [B] (equal to t for a flow model)
    t: Tensor  # [B]
    z: Tensor  # z_t = (1 - t) x0 + t eps
    w: Tensor  # [B, n] the scales drawn, columns in the order of the student's guidance inputs
    target: Tensor  # the teacher's guided prediction (no gradient)
    pred: Tensor  # the student's one-row prediction at w, with gradient


def distillation_terms(
    student: nn.Module,
    teacher: nn.Module,
    x0: Tensor,
    cond: Cond,
    teacher_cond: Cond,
    keep: Keep,
    generator: torch.Generator,
    policy: Guidance,
    config: DistillConfig,
    mask: Tensor | None = None,
    interval: MeanFlowConfig | None = None,
    t_dist: str = "logit-normal",
) -> DistillTerms:
    """Draw scales ``w ~ U[lo, hi]`` per row and distilled condition, times (a flow model: ``t`` from
    ``t_dist``; a mean-flow model: ``(r, t)`` as :func:`draw_interval` with ``interval``) and noise,
    in that order, then ``z = (1 - t) x0 + t eps``; the target is the teacher's guided prediction
    (:func:`distillation_targets`, on ``teacher_cond``: the teacher's own encoding of the batch) and
    the prediction the student's at ``guidance = w`` (Meng et al. 2023, eq. 6-7, for flows)."""
    names = tuple(getattr(student, "guidance_inputs", ()))
    if not names:
        raise ValueError("guidance distillation needs a student that takes guidance scales as inputs (guidance_embed)")
    if getattr(student, "kind", "flow") != "flow":
        raise ValueError(f"guidance distillation trains a flow or mean-flow model, got kind {student.kind!r}")
    B = x0.shape[0]
    lo, hi = config.scales
    w = lo + (hi - lo) * _rand(B * len(names), generator, x0).view(B, len(names))
    if getattr(student, "mean_flow", False):
        r, t = draw_interval(B, generator, x0, interval or MeanFlowConfig())
    else:
        t = draw_times(B, generator, x0, t_dist, 0.0, 1.0)
        r = None
    eps = _randn(tuple(x0.shape), generator, x0)
    te = expand_like(t, x0)
    z = (1.0 - te) * x0 + te * eps
    target = distillation_targets(teacher, z, t, teacher_cond, keep, policy, names, w, mask, r)
    pred = student(z, t, cond, keep, guidance=w, **_extra(mask, **({} if r is None else {"r": r})))
    return DistillTerms(t if r is None else r, t, z, w, target, pred)


def distillation_loss(
    student: nn.Module,
    teacher: nn.Module,
    x0: Tensor,
    cond: Cond,
    teacher_cond: Cond,
    keep: Keep,
    generator: torch.Generator,
    policy: Guidance,
    config: DistillConfig,
    mask: Tensor | None = None,
    interval: MeanFlowConfig | None = None,
    t_dist: str = "logit-normal",
) -> tuple[Tensor, Logs]:
    """Guidance distillation (Meng et al. 2023, "On Distillation of Guided Diffusion Models", §3.1,
    stage one, eq. 6-7): ``E ||x_eta(z_t, w) - x_hat_w(z_t)||^2`` over valid frames, the student's
    one-row prediction at scale ``w`` against the teacher's guided one (:func:`distillation_terms`).
    Logs the ``loss``."""
    terms = distillation_terms(student, teacher, x0, cond, teacher_cond, keep, generator, policy, config, mask, interval, t_dist)
    loss = masked_mse(terms.pred - terms.target, mask)
    return loss, {"loss": loss.item()}


__all__ = [
    "DistillTerms",
    "MeanFlowTerms",
    "adaptive_weighted_loss",
    "average_velocity",
    "curriculum_flow_ratio",
    "diffusion_loss",
    "distillation_loss",
    "distillation_policy",
    "distillation_targets",
    "distillation_terms",
    "draw_interval",
    "draw_times",
    "flow_matching_loss",
    "flow_to_mean_flow",
    "guided_velocity",
    "kept_rows",
    "logit_normal",
    "masked_mse",
    "mean_flow_jvp",
    "mean_flow_loss",
    "mean_flow_target",
    "mean_flow_terms",
    "per_sample_mse",
]
