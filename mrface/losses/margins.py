"""Margin functions: cosine logits + labels (+ embedding norms) -> scaled margin logits.

Every margin splits into two pieces so that a fused margin-softmax kernel (which never holds the
B x C logits) can reuse them:

* :meth:`Margin.rows` runs once per row and returns a :class:`RowTransform`: the scaled target
  logit ``z_y`` (B,) as a differentiable function of the target cosine (and norms), plus the
  per-row constants of the non-target transform. It is also the only place where EMA state is
  updated (once per call, in training mode).
* :func:`apply_nontarget` is the element-wise non-target transform, the same closed form for all
  margins, with per-row constants that carry no gradient::

      c' = clamp(c, cos_lo, cos_hi)
      z  = row_scale * (c' * (hard_t + c')  if c' > hard_threshold  else  c')

  (``hard_threshold = +inf`` except for CurricularFace; ``row_scale = s`` except for QGFace's gate.)

A kernel computes ``cos_y`` by one dot product per row, calls ``rows``, and receives ``z_y`` with
its autograd graph: its backward only needs ``dL/dz_y = p_y - 1`` per row, which autograd carries
through the margin to the embeddings and centres.

All arithmetic is float32 whatever the input dtype (DESIGN.md §4), except that float64 inputs stay
float64 (the ground truth of the tests); formulas: REFERENCE.md §4.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

__all__ = [
    "AdaFace",
    "CombinedMargin",
    "CurricularFace",
    "MagFace",
    "Margin",
    "QGFace",
    "RowTransform",
    "apply_nontarget",
    "magface_min_lambda_g",
]

_SIN_EPS = 1e-7  # floor of 1 - cos^2: keeps d sin(theta)/d cos finite at cos = +-1


@dataclass
class RowTransform:
    """Per-row quantities of a margin for B rows (see the module docstring).

    Attributes:
        target_logit: (B,) float32, scaled target logit; differentiable. Undefined (but finite) for
            rows without a target (ignored labels).
        row_scale: (B,) float32, scale of the non-target logits (no gradient).
        hard_threshold: (B,) float32, non-targets with clamped cosine above it are "hard" (no grad).
        hard_t: () float32, hard non-target cosine c becomes c * (hard_t + c).
        cos_lo, cos_hi: clamp range applied to non-target cosines.
        stats: detached scalars worth logging (margin statistics).
    """

    target_logit: Tensor
    row_scale: Tensor
    hard_threshold: Tensor
    hard_t: Tensor
    cos_lo: float = -1.0
    cos_hi: float = 1.0
    stats: dict[str, Tensor] = field(default_factory=dict)


def apply_nontarget(cos: Tensor, rows: RowTransform) -> Tensor:
    """Non-target logits from cosines.

    Args:
        cos: (B, K) cosines between embeddings and (a subset of) class centres, any float dtype.
        rows: per-row constants from :meth:`Margin.rows` for the same B rows.

    Returns:
        (B, K) float32 logits; the target column is *not* special-cased here (callers overwrite it
        with ``rows.target_logit``).
    """
    c = _f32(cos).clamp(rows.cos_lo, rows.cos_hi)
    c = torch.where(c > rows.hard_threshold[:, None], c * (rows.hard_t + c), c)
    return c * rows.row_scale[:, None]


def _f32(x: Tensor) -> Tensor:
    """float32 copy/view of x, float64 kept as is."""
    return x if x.dtype == torch.float64 else x.float()


def _sin_from_cos(c: Tensor) -> Tensor:
    return torch.sqrt((1.0 - c * c).clamp_min(_SIN_EPS))


def _arc_with_fallback(c: Tensor, m: Tensor | float, fallback: str) -> Tensor:
    """cos(theta + m) with the fallback for theta + m > pi ("linear": cos theta - m sin m)."""
    m = torch.as_tensor(m, dtype=c.dtype, device=c.device)
    cos_m = c * torch.cos(m) - _sin_from_cos(c) * torch.sin(m)
    if fallback == "linear":
        return torch.where(c > torch.cos(math.pi - m), cos_m, c - torch.sin(m) * m)
    if fallback == "easy":
        return torch.where(c > 0, cos_m, c)
    return cos_m


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _check_positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


class Margin(nn.Module):
    """Base class. Subclasses implement :meth:`rows`; EMA state lives in buffers.

    ``needs_norms``: whether :meth:`rows` needs the (un-normalised) embedding norms.
    """

    needs_norms: bool = False

    def __init__(self, s: float) -> None:
        super().__init__()
        _check_positive("s", s)
        self.s = float(s)

    def rows(self, cos_y: Tensor, valid: Tensor, norms: Tensor | None = None) -> RowTransform:
        """Per-row transform.

        Args:
            cos_y: (B,) cosine of each row's target class (any value where ``valid`` is False).
            valid: (B,) bool, rows that have a target (labels other than the ignore value).
            norms: (B,) embedding norms (before normalisation), for margins with ``needs_norms``.
        """
        raise NotImplementedError

    def regularizer(self, norms: Tensor) -> Tensor | None:
        """Extra per-batch loss term from the norms (B,) or None; MagFace's lambda_g * g(a)."""
        return None

    def _constant_rows(self, target_logit: Tensor, **kw) -> RowTransform:
        b = target_logit.shape[0]
        dev = target_logit.device
        return RowTransform(
            target_logit=target_logit,
            row_scale=kw.pop("row_scale", torch.full((b,), self.s, device=dev)),
            hard_threshold=kw.pop("hard_threshold", torch.full((b,), math.inf, device=dev)),
            hard_t=kw.pop("hard_t", torch.zeros((), device=dev)),
            **kw,
        )

    def forward(self, cos: Tensor, labels: Tensor, norms: Tensor | None = None) -> Tensor:
        """Full margin logits (reference path).

        Args:
            cos: (B, C) cosines; labels: (B,) int64 class ids, negative = ignored row.
            norms: (B,) embedding norms when ``needs_norms``.

        Returns:
            (B, C) float32 logits.
        """
        if cos.dim() != 2 or labels.shape != (cos.shape[0],):
            raise ValueError(f"cos must be (B, C) and labels (B,), got {tuple(cos.shape)} and {tuple(labels.shape)}")
        if self.needs_norms and (norms is None or norms.shape != labels.shape):
            raise ValueError(f"{type(self).__name__} needs norms of shape (B,)")
        valid = labels >= 0
        idx = labels.clamp_min(0)[:, None]
        cos32 = _f32(cos)
        cos_y = cos32.gather(1, idx)[:, 0]
        rows = self.rows(cos_y, valid, norms)
        logits = apply_nontarget(cos32, rows)
        tgt = torch.where(valid, rows.target_logit, logits.gather(1, idx)[:, 0])
        return logits.scatter(1, idx, tgt[:, None])


class CombinedMargin(Margin):
    """target = s * (cos(m1 * theta_y + m2) - m3); non-targets s * cos theta_j.

    ArcFace (1, 0.5, 0), CosFace (1, 0, 0.4 as every arcface_torch config; 0.35 in the paper).

    Defaults follow InsightFace arcface_torch's ``CombinedMarginLoss``: ``gradient="straight_through"``
    keeps the forward value but back-propagates ``dz_y/dcos_y = s`` (its transform runs under no_grad)
    and ``fallback="none"`` applies the raw formula even where m1*theta + m2 > pi. Options:
    ``gradient="exact"`` differentiates through the margin; ``fallback="linear"``
    (cos theta - m3 - m2 sin m2, the older ArcFace class, e.g. BTNet's ``losses.py``: preset
    ``arcface_btnet``) or ``"easy"`` (cos theta - m3 where cos theta <= 0).

    With m2 and m3 both non-zero this applies the original combined margin cos(m1*theta + m2) - m3;
    arcface_torch's class differs there: it ignores m2 whenever m3 > 0 (and m1 != 1 raises).
    """

    def __init__(
        self,
        s: float = 64.0,
        m1: float = 1.0,
        m2: float = 0.5,
        m3: float = 0.0,
        gradient: str = "straight_through",
        fallback: str = "none",
    ) -> None:
        super().__init__(s)
        _check_positive("m1", m1)
        if m2 < 0 or m3 < 0:
            raise ValueError(f"m2 and m3 must be >= 0, got m2={m2}, m3={m3}")
        _check_choice("gradient", gradient, ("exact", "straight_through"))
        _check_choice("fallback", fallback, ("linear", "easy", "none"))
        self.m1, self.m2, self.m3 = float(m1), float(m2), float(m3)
        self.gradient, self.fallback = gradient, fallback

    def _angular(self, c: Tensor) -> Tensor:
        if self.m1 == 1.0:
            if self.m2 == 0.0:
                return c
            return _arc_with_fallback(c, self.m2, self.fallback)
        theta = torch.acos(c.clamp(-1 + _SIN_EPS, 1 - _SIN_EPS))
        raw = torch.cos(self.m1 * theta + self.m2)
        if self.fallback == "linear":
            return torch.where(self.m1 * theta + self.m2 < math.pi, raw, c - math.sin(self.m2) * self.m2)
        if self.fallback == "easy":
            return torch.where(c > 0, raw, c)
        return raw

    def rows(self, cos_y: Tensor, valid: Tensor, norms: Tensor | None = None) -> RowTransform:
        c = _f32(cos_y).clamp(-1.0, 1.0)
        f = self._angular(c) - self.m3
        if self.gradient == "straight_through":
            f = c + (f - c).detach()
        return self._constant_rows(self.s * f, stats={"margin/m": torch.tensor(self.m2 + self.m3)})

    def extra_repr(self) -> str:
        return (
            f"s={self.s}, m1={self.m1}, m2={self.m2}, m3={self.m3}, gradient={self.gradient}, fallback={self.fallback}"
        )


class CurricularFace(Margin):
    """CurricularFace: ArcFace target; a non-target with cos theta_j > cos(theta_y + m) becomes
    cos theta_j * (t + cos theta_j), t an EMA (``momentum``, start 0) of the mean target cosine,
    updated before use as in the public code. Buffer: ``t`` ()."""

    def __init__(self, s: float = 64.0, m: float = 0.5, momentum: float = 0.01) -> None:
        super().__init__(s)
        _check_positive("m", m)
        if not 0 <= momentum <= 1:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        self.m, self.momentum = float(m), float(momentum)
        self.register_buffer("t", torch.zeros(()))

    def rows(self, cos_y: Tensor, valid: Tensor, norms: Tensor | None = None) -> RowTransform:
        c = _f32(cos_y).clamp(-1.0, 1.0)
        cos_m = c * math.cos(self.m) - _sin_from_cos(c) * math.sin(self.m)
        target = torch.where(c > math.cos(math.pi - self.m), cos_m, c - math.sin(self.m) * self.m)
        if self.training:
            with torch.no_grad():
                n = valid.sum()
                mean_cos = (c.detach() * valid).sum() / n.clamp_min(1)
                new_t = (1 - self.momentum) * self.t + self.momentum * mean_cos
                self.t.copy_(torch.where(n > 0, new_t, self.t))
        thr = torch.where(valid, cos_m.detach(), torch.full_like(c, math.inf))
        return self._constant_rows(
            self.s * target, hard_threshold=thr, hard_t=self.t.clone(), stats={"curricular/t": self.t.detach().clone()}
        )

    def extra_repr(self) -> str:
        return f"s={self.s}, m={self.m}, momentum={self.momentum}"


class AdaFace(Margin):
    """AdaFace: z_hat = clip(h (||z|| - mu) / (sigma + eps), -1, 1) with mu, sigma EMAs of the
    batch norm mean / (unbiased) std (``momentum``, start 20 and 100), norms detached and clipped
    to [1e-3, 100]; target = s (cos(clip(theta_y - m z_hat, eps, pi - eps)) - (m + m z_hat));
    all cosines are clamped to [-1 + eps, 1 - eps] as in the public code.

    z_hat = -1 gives ArcFace (m), 0 CosFace (m), +1 the hard regime (angle -m, additive 2m).
    Buffers: ``batch_mean``, ``batch_std``.
    """

    needs_norms = True

    def __init__(
        self, s: float = 64.0, m: float = 0.4, h: float = 0.333, momentum: float = 0.01, eps: float = 1e-3
    ) -> None:
        super().__init__(s)
        _check_positive("m", m)
        _check_positive("h", h)
        self.m, self.h, self.momentum, self.eps = float(m), float(h), float(momentum), float(eps)
        self.register_buffer("batch_mean", torch.tensor(20.0))
        self.register_buffer("batch_std", torch.tensor(100.0))

    def z_hat(self, norms: Tensor) -> Tensor:
        """(B,) normalised norm in [-1, 1] (no gradient); updates the EMAs in training mode."""
        safe = _f32(norms.detach()).clamp(1e-3, 100.0)
        if self.training and safe.numel() > 1:
            with torch.no_grad():
                a = self.momentum
                self.batch_mean.mul_(1 - a).add_(a * safe.mean())
                self.batch_std.mul_(1 - a).add_(a * safe.std())
        return (self.h * (safe - self.batch_mean) / (self.batch_std + self.eps)).clamp(-1.0, 1.0)

    def target_from_z_hat(self, cos_y: Tensor, z_hat: Tensor) -> Tensor:
        """(B,) unscaled AdaFace target cosine for given z_hat (B,)."""
        c = _f32(cos_y).clamp(-1 + self.eps, 1 - self.eps)
        theta = torch.acos(c) - self.m * z_hat
        return torch.cos(theta.clamp(self.eps, math.pi - self.eps)) - (self.m + self.m * z_hat)

    def rows(self, cos_y: Tensor, valid: Tensor, norms: Tensor | None = None) -> RowTransform:
        if norms is None:
            raise ValueError("AdaFace needs norms (B,)")
        zh = self.z_hat(norms)
        target = self.s * self.target_from_z_hat(cos_y, zh)
        return self._constant_rows(target, cos_lo=-1 + self.eps, cos_hi=1 - self.eps, stats=self._stats(zh))

    def _stats(self, zh: Tensor) -> dict[str, Tensor]:
        return {
            "adaface/z_hat": zh.mean().detach(),
            "adaface/norm_mean": self.batch_mean.clone(),
            "adaface/norm_std": self.batch_std.clone(),
        }

    def extra_repr(self) -> str:
        return f"s={self.s}, m={self.m}, h={self.h}, momentum={self.momentum}, eps={self.eps}"


def magface_min_lambda_g(s: float, l_a: float, u_a: float, l_m: float, u_m: float) -> float:
    """Smallest lambda_g for which MagFace's loss has a unique optimal norm:
    s * k * u_a^2 l_a^2 / (u_a^2 - l_a^2), k = (u_m - l_m) / (u_a - l_a)."""
    k = (u_m - l_m) / (u_a - l_a)
    return s * k * u_a**2 * l_a**2 / (u_a**2 - l_a**2)


class MagFace(Margin):
    """MagFace: a = clamp(||z||, l_a, u_a), m(a) = l_m + (u_m - l_m)(a - l_a)/(u_a - l_a);
    target s cos(theta_y + m(a)) (``kind="arc"``) or
    s (cos theta_y - m(a)) (``kind="cos"``, Mag-CosFace). The margin is differentiable in a.
    :meth:`regularizer` returns lambda_g * mean(a / u_a^2 + 1 / a). Warns when lambda_g is below
    :func:`magface_min_lambda_g` (22.6 for the defaults).

    ``fallback`` (``kind="arc"``): "easy" (default, the public MagLinear's ``easy_margin=True``: the
    target keeps cos theta_y where cos theta_y <= 0), "linear" (cos theta_y - m sin m where
    theta_y + m > pi, MagLinear's easy_margin=False) or "none"."""

    needs_norms = True

    def __init__(
        self,
        s: float = 64.0,
        l_a: float = 10.0,
        u_a: float = 110.0,
        l_m: float = 0.45,
        u_m: float = 0.8,
        lambda_g: float = 35.0,
        kind: str = "arc",
        fallback: str = "easy",
    ) -> None:
        super().__init__(s)
        if not 0 < l_a < u_a:
            raise ValueError(f"need 0 < l_a < u_a, got l_a={l_a}, u_a={u_a}")
        if not 0 <= l_m <= u_m:
            raise ValueError(f"need 0 <= l_m <= u_m, got l_m={l_m}, u_m={u_m}")
        if lambda_g < 0:
            raise ValueError(f"lambda_g must be >= 0, got {lambda_g}")
        _check_choice("kind", kind, ("arc", "cos"))
        _check_choice("fallback", fallback, ("linear", "easy", "none"))
        self.l_a, self.u_a, self.l_m, self.u_m = float(l_a), float(u_a), float(l_m), float(u_m)
        self.lambda_g, self.kind, self.fallback = float(lambda_g), kind, fallback
        bound = magface_min_lambda_g(s, l_a, u_a, l_m, u_m)
        if self.lambda_g < bound:
            warnings.warn(
                f"MagFace lambda_g={lambda_g} is below the feasibility bound "
                f"s*k*u_a^2*l_a^2/(u_a^2-l_a^2) = {bound:.2f}; the optimal norm is not "
                "unique and the magnitude loses its meaning as quality",
                stacklevel=2,
            )

    def clamped_norm(self, norms: Tensor) -> Tensor:
        return _f32(norms).clamp(self.l_a, self.u_a)

    def margin_of(self, norms: Tensor) -> Tensor:
        """(B,) margin m(a) from norms (B,), differentiable."""
        a = self.clamped_norm(norms)
        return self.l_m + (self.u_m - self.l_m) * (a - self.l_a) / (self.u_a - self.l_a)

    def rows(self, cos_y: Tensor, valid: Tensor, norms: Tensor | None = None) -> RowTransform:
        if norms is None:
            raise ValueError("MagFace needs norms (B,)")
        c = _f32(cos_y).clamp(-1.0, 1.0)
        m = self.margin_of(norms)
        f = _arc_with_fallback(c, m, self.fallback) if self.kind == "arc" else c - m
        return self._constant_rows(self.s * f, stats={"magface/margin": m.detach().mean()})

    def regularizer(self, norms: Tensor) -> Tensor:
        a = self.clamped_norm(norms)
        return self.lambda_g * (a / self.u_a**2 + 1.0 / a).mean()

    def extra_repr(self) -> str:
        return (
            f"s={self.s}, l_a={self.l_a}, u_a={self.u_a}, l_m={self.l_m}, u_m={self.u_m}, "
            f"lambda_g={self.lambda_g}, kind={self.kind}"
        )


class QGFace(AdaFace):
    """QGFace identity head (IsidoreSong/QGFace ``head.py``, ``SoftmaxFace._quality_scaler``): the AdaFace
    margin with every logit of a row (target and non-targets) multiplied by the quality gate
    ``g = sigmoid(2 s (q - q_thr))``, q = (z_hat + 1) / 2 — the public ``sigmoid(s (z_hat + 2 (0.5 - q_thr)))``,
    whose steepness is tied to s. ``gate_threshold = 0`` switches the gate off (g = 1), as the public code
    does for ``quality_scale = 0``. The norm EMAs start at 0 (``SoftmaxFace`` registers zeros), not at
    AdaFace's 20 / 100. The gate carries no gradient (z_hat is computed from detached norms).

    The public configs do not give q_thr; ``gate_threshold = 0.25`` (q = 0.25 is z_hat = -0.5, about 1.5 EMA
    standard deviations below the mean norm at h = 0.333) is our documented choice: rows above it keep
    the AdaFace logits, rows well below it have their identity logits switched off and learn through
    :class:`mrface.losses.contrastive.QGFaceContrastive` instead.
    """

    def __init__(
        self,
        s: float = 64.0,
        m: float = 0.4,
        h: float = 0.333,
        momentum: float = 0.01,
        eps: float = 1e-3,
        gate_threshold: float = 0.25,
    ) -> None:
        super().__init__(s, m, h, momentum, eps)
        if not 0 <= gate_threshold <= 1:
            raise ValueError(f"gate_threshold must be in [0, 1], got {gate_threshold}")
        self.gate_threshold = float(gate_threshold)
        self.batch_mean.zero_()
        self.batch_std.zero_()

    def gate(self, z_hat: Tensor) -> Tensor:
        """(B,) gate in (0, 1] from z_hat (B,): sigmoid(2 s (q - gate_threshold)), or 1 when the threshold is 0."""
        if self.gate_threshold == 0:
            return torch.ones_like(z_hat)
        return torch.sigmoid(2.0 * self.s * ((z_hat + 1) / 2 - self.gate_threshold))

    def quality(self, norms: Tensor) -> Tensor:
        """(B,) z_hat of ``norms`` (B,) under the current EMAs, without updating them (the public
        ``margin_scaler`` the head returns to the contrastive term)."""
        safe = _f32(norms.detach()).clamp(1e-3, 100.0)
        return (self.h * (safe - self.batch_mean) / (self.batch_std + self.eps)).clamp(-1.0, 1.0)

    def rows(self, cos_y: Tensor, valid: Tensor, norms: Tensor | None = None) -> RowTransform:
        if norms is None:
            raise ValueError("QGFace needs norms (B,)")
        zh = self.z_hat(norms)
        g = self.gate(zh)
        target = self.s * g * self.target_from_z_hat(cos_y, zh)
        stats = self._stats(zh)
        stats["qgface/gate"] = g.mean().detach()
        return self._constant_rows(target, row_scale=self.s * g, cos_lo=-1 + self.eps, cos_hi=1 - self.eps, stats=stats)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", gate_threshold={self.gate_threshold}"
