"""Plain-PyTorch references of the fused margin-softmax: they materialise the (B, C) logits.

Two levels, both written for clarity, not speed:

* :func:`margin_softmax_loss_reference`: the whole loss the way InsightFace-style code computes it,
  cosine GEMM -> margin logits -> ``F.cross_entropy``; the ground truth of the tests.
* :func:`margin_softmax_fwd_reference` / :func:`margin_softmax_bwd_reference`: the two kernel
  entry points of :mod:`mrface.ops.margin_softmax` (per-row statistics forward, recompute
  backward) on full (B, C) tensors; the ``reference`` backend of the op.

Conventions shared with the kernels: ``emb_hat`` (B, D) float32 unit rows; ``weight`` (C, D) raw
(un-normalised) centres of the local shard, any float dtype; ``target`` (B,) int64 local column of
each row's class or -1; per-row constants (B,) ``row_scale`` and ``hard_threshold``, () ``hard_t`` and
the clamp range ``cos_lo``, ``cos_hi`` of the non-target cosines.

:func:`sample_margin_inputs` draws the embeddings, centres and labels the margin-softmax tests and
benchmarks/check_margin_half.py share.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

NORM_EPS = 1e-12  # F.normalize's clamp of the centre norms


class MarginLogits(Protocol):
    """A margin applied to full logits: ``margin(cos (B, C), labels (B,), norms (B,) or None) -> (B, C)``
    logits; ``needs_norms`` says whether it reads the embedding norms (e.g. mrface.losses.margins.Margin)."""

    needs_norms: bool

    def __call__(self, cos: Tensor, labels: Tensor, norms: Tensor | None) -> Tensor: ...


def sample_margin_inputs(
    b: int, c: int, d: int, seed: int, device: str | torch.device = "cpu"
) -> tuple[Tensor, Tensor, Tensor]:
    """float64 centres ``weight`` (C, D) of norm about 1, embeddings ``emb`` (B, D) with norms 5..60 pulled
    towards their targets (target cosines from random to about 0.8: losses of order 1, so float32 rounding
    does not swamp the gradients) and int64 ``labels`` (B,) with -1 in row 1 (when B > 2) and targets at
    both ends of the class range; drawn on the CPU from ``seed``, then moved to ``device``."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(c, d, generator=g, dtype=torch.float64) * 0.05
    labels = torch.randint(0, c, (b,), generator=g)
    labels[0] = c - 1
    if b > 2:
        labels[1], labels[2] = -1, 0
    emb = torch.randn(b, d, generator=g, dtype=torch.float64)
    pull = torch.linspace(0.0, 1.5, b, dtype=torch.float64)[torch.randperm(b, generator=g)]
    emb += pull[:, None] * F.normalize(weight[labels.clamp_min(0)], dim=1) * d**0.5
    emb = F.normalize(emb, dim=1) * torch.linspace(5, 60, b, dtype=torch.float64)[:, None]
    return weight.to(device), emb.to(device), labels.to(device)


def margin_softmax_loss_reference(
    embeddings: Tensor, weight: Tensor, labels: Tensor, margin: MarginLogits, gemm_dtype: torch.dtype | None = None
) -> Tensor:
    """Mean margin cross-entropy over rows with ``labels >= 0`` (0 when there are none).

    Args:
        embeddings: (B, D) un-normalised; weight: (C, D); labels: (B,) class ids, -1 = ignored.
        margin: applied to the full (B, C) cosine matrix (updates its EMAs like any forward).
        gemm_dtype: dtype of the normalised operands of the cosine GEMM (None: float32), i.e. the
            "reference path in the same dtype" of mixed-precision training.

    Returns:
        () float32 loss (float64 for float64 inputs: the tests' ground truth). Differentiable in
        embeddings and weight.
    """
    dtype = torch.float64 if embeddings.dtype == torch.float64 else torch.float32
    e = embeddings.to(dtype)
    norms = e.norm(dim=1)
    e_hat, w_hat = F.normalize(e, dim=1), F.normalize(weight.to(dtype), dim=1)
    if gemm_dtype is not None:
        e_hat, w_hat = e_hat.to(gemm_dtype), w_hat.to(gemm_dtype)
    cos = (e_hat @ w_hat.T).to(dtype).clamp(-1.0, 1.0)
    logits = margin(cos, labels, norms if margin.needs_norms else None)
    if not bool((labels >= 0).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels.long(), ignore_index=-1)


def transformed_logits(
    emb_hat: Tensor,
    weight: Tensor,
    row_scale: Tensor,
    hard_threshold: Tensor,
    hard_t: Tensor,
    cos_lo: float,
    cos_hi: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Full non-target logits.

    Returns:
        z (B, C) float32 non-target margin logits of every column, cos (B, C) float32 raw cosines
        (before any clamp), w_inv_norm (C,) float32 = 1 / max(||w_j||, 1e-12).
    """
    w = weight.float()
    w_inv = 1.0 / w.norm(dim=1).clamp_min(NORM_EPS)
    cos = (emb_hat.float() @ w.T) * w_inv
    c = cos.clamp(-1.0, 1.0).clamp(cos_lo, cos_hi)
    c = torch.where(c > hard_threshold[:, None], c * (hard_t + c), c)
    return c * row_scale[:, None], cos, w_inv


def _target_mask(target: Tensor, num_classes: int) -> Tensor:
    cols = torch.arange(num_classes, device=target.device)
    return cols[None, :] == target[:, None]


def margin_softmax_fwd_reference(
    emb_hat: Tensor,
    weight: Tensor,
    target: Tensor,
    row_scale: Tensor,
    hard_threshold: Tensor,
    hard_t: Tensor,
    cos_lo: float,
    cos_hi: float,
) -> tuple[Tensor, Tensor]:
    """Per-row statistics of the local shard.

    Returns:
        lse (B,) float32: log-sum-exp of the non-target logits of the local columns (-inf when a
        row has none); cos_y (B,) float32: clamped cosine of the target column (0 without one).
    """
    z, cos, _ = transformed_logits(emb_hat, weight, row_scale, hard_threshold, hard_t, cos_lo, cos_hi)
    is_target = _target_mask(target, weight.shape[0])
    lse = torch.logsumexp(z.masked_fill(is_target, -torch.inf), dim=1)
    cos_y = (cos.clamp(-1.0, 1.0) * is_target).sum(dim=1)
    return lse, cos_y


def margin_softmax_bwd_reference(
    grad_lse: Tensor,
    grad_cos_y: Tensor,
    emb_hat: Tensor,
    weight: Tensor,
    target: Tensor,
    row_scale: Tensor,
    hard_threshold: Tensor,
    hard_t: Tensor,
    lse: Tensor,
    cos_lo: float,
    cos_hi: float,
) -> tuple[Tensor, Tensor]:
    """Gradients of ``sum(grad_lse * lse + grad_cos_y * cos_y)`` with the forward's ``lse``, on full
    (B, C) tensors, written out (custom-op bodies run below autograd):

    G_ij = grad_lse_i * exp(z_ij - lse_i) * dz/dc * [c inside the clamp] for non-targets,
    G_iy = grad_cos_y_i for the target; cos_ij = e_i . w_j / ||w_j|| gives
    d e_i = sum_j G_ij w_j / ||w_j||, d w_j = (sum_i G_ij e_i) / ||w_j|| - (sum_i G_ij cos_ij) w_j / ||w_j||^2.

    Returns:
        (d emb_hat (B, D), d weight (C, D)), float32.
    """
    e, w = emb_hat.float(), weight.float()
    norm = w.norm(dim=1)
    w_inv = 1.0 / norm.clamp_min(NORM_EPS)
    cos = (e @ w.T) * w_inv
    lo, hi = max(cos_lo, -1.0), min(cos_hi, 1.0)
    c = cos.clamp(lo, hi)
    is_hard = c > hard_threshold[:, None]
    z = torch.where(is_hard, c * (hard_t + c), c) * row_scale[:, None]
    dz_dc = torch.where(is_hard, hard_t + 2 * c, 1.0) * row_scale[:, None]
    is_target = _target_mask(target, weight.shape[0])
    lse_safe = torch.where(torch.isfinite(lse), lse, 0.0)
    p = torch.exp(z.masked_fill(is_target, -torch.inf) - lse_safe[:, None])
    grad = p * grad_lse[:, None] * dz_dc * ((cos >= lo) & (cos <= hi))
    grad = torch.where(is_target, grad_cos_y[:, None] * (cos.abs() <= 1.0), grad)
    d_e = (grad * w_inv) @ w
    d_w = (grad.T @ e) * w_inv[:, None] - w * ((grad * cos).sum(0) * w_inv**2 * (norm >= NORM_EPS))[:, None]
    return d_e, d_w
