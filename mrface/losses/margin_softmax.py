"""Margin softmax cross-entropy over a class shard without the (B, C) logits: ``margin_softmax_loss``.

Split of the work (the margin pieces come from :mod:`mrface.losses.margins`, the tiled statistics from
the op :func:`mrface.ops.margin_softmax.margin_softmax_stats`):

1. Per row, in plain torch on (B,) / (B, D) tensors: embedding norms, unit rows ``emb_hat``, the
   target cosine (one gathered dot product per row, no gradient), then ``margin.rows`` once
   (target logit z_y with its autograd graph, the non-target constants, the EMA updates) and the
   derivative dz_y/dcos_y by autograd on that (B,)-sized graph.
2. The op streams the local classes in tiles and returns per-row statistics only: the log-sum-exp
   ``lse`` of the non-target logits (B,) and the target cosine ``cos_y`` (B,).
3. Across ranks the per-row ``lse`` vectors are merged with two all-reduces (max, sum of exp).
   Loss per row: ``logaddexp(lse_nt, z_y) - z_y``.
4. Backward: the op recomputes the cosines tile by tile with the global statistics; the target term
   enters the same tiles through the gradient of ``cos_y`` (z_y reaches it through a first-order link
   ``z_y + dz_y/dcos_y * (cos_y - cos_y.detach())``), so the centres get one dense gradient.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from mrface.losses import _dist
from mrface.losses.margins import Margin, RowTransform
from mrface.ops.margin_softmax import NORM_EPS, margin_softmax_stats

__all__ = ["MarginSoftmaxRows", "margin_softmax_loss", "margin_softmax_per_row"]


class _MergeLSE(torch.autograd.Function):
    """Per-row log-sum-exp over the ranks' shards: all-reduce max, then sum of exp (B,) vectors.
    Backward: d lse / d lse_r = exp(lse_r - lse), local, no communication."""

    @staticmethod
    def forward(ctx, lse_local: Tensor, group) -> Tensor:
        top = _dist.all_reduce(lse_local.clone(), "max", group)
        shift = torch.where(torch.isfinite(top), top, 0.0)
        total = _dist.all_reduce(torch.exp(lse_local - shift), "sum", group)
        lse = torch.where(total > 0, shift + torch.log(total), -torch.inf)
        ctx.save_for_backward(lse_local, lse)
        return lse

    @staticmethod
    def backward(ctx, grad: Tensor):
        lse_local, lse = ctx.saved_tensors
        share = torch.exp(lse_local - torch.where(torch.isfinite(lse), lse, 0.0))
        return grad * share, None


# ---------------------------------------------------------------------------------- public API
class MarginSoftmaxRows(NamedTuple):
    """Per-row result of :func:`margin_softmax_per_row` for the N rows given.

    loss: (N,) float32 cross-entropy per row, 0 for rows that are not valid.
    rows: the margin's :class:`~mrface.losses.margins.RowTransform` (stats for logging).
    cos_y: (N,) float32 target cosine (global over the shards, detached).
    norms: (N,) float32 embedding norms (differentiable).
    valid: (N,) bool rows that take part in the loss.
    """

    loss: Tensor
    rows: RowTransform
    cos_y: Tensor
    norms: Tensor
    valid: Tensor


def _check_inputs(embeddings: object, weight: object, target: object, margin: object, valid: object) -> None:
    op = "margin_softmax_loss"
    if not isinstance(embeddings, Tensor) or embeddings.dim() != 2 or not embeddings.is_floating_point():
        raise ValueError(
            f"{op}: embeddings must be a floating-point (B, D) tensor, got "
            f"{getattr(embeddings, 'dtype', type(embeddings).__name__)} of shape "
            f"{tuple(getattr(embeddings, 'shape', ()))}"
        )
    b, d = embeddings.shape
    if not isinstance(weight, Tensor) or weight.dim() != 2 or not weight.is_floating_point() or weight.shape[1] != d:
        raise ValueError(
            f"{op}: weight must be a floating-point (C, D={d}) tensor, got shape {tuple(getattr(weight, 'shape', ()))}"
        )
    if weight.device != embeddings.device:
        raise ValueError(f"{op}: weight is on {weight.device} but embeddings on {embeddings.device}")
    if not isinstance(target, Tensor) or target.shape != (b,) or target.dtype not in (torch.int64, torch.int32):
        raise ValueError(
            f"{op}: labels must be an int64/int32 tensor of shape ({b},), got "
            f"{getattr(target, 'dtype', None)} of shape {tuple(getattr(target, 'shape', ()))}"
        )
    if b and (int(target.max()) >= weight.shape[0] or int(target.min()) < -1):
        raise ValueError(
            f"{op}: labels must be local columns in [0, {weight.shape[0]}) or -1, got range "
            f"[{int(target.min())}, {int(target.max())}]"
        )
    if not isinstance(margin, Margin):
        raise TypeError(f"{op}: margin must be a mrface.losses.margins.Margin, got {type(margin).__name__}")
    if valid is not None and (not isinstance(valid, Tensor) or valid.shape != (b,) or valid.dtype != torch.bool):
        raise ValueError(f"{op}: valid must be a bool tensor of shape ({b},) or None")


def _target_cosine(e_hat: Tensor, weight: Tensor, target: Tensor) -> Tensor:
    """(N,) clamped cosine of each row with its local target centre, 0 without one (no gradient)."""
    w = weight[target.clamp_min(0)].float()
    cos = (e_hat * w).sum(dim=1) / w.norm(dim=1).clamp_min(NORM_EPS)
    return torch.where(target >= 0, cos.clamp(-1.0, 1.0), 0.0)


def margin_softmax_per_row(
    embeddings: Tensor,
    weight: Tensor,
    labels: Tensor,
    margin: Margin,
    *,
    valid: Tensor | None = None,
    process_group=None,
) -> MarginSoftmaxRows:
    """Fused margin cross-entropy per row against a class shard (see the module docstring).

    Args:
        embeddings: (N, D) un-normalised, any float dtype; the same N rows on every rank of the group.
        weight: (C_local, D) centres of this rank's shard (or its sampled rows), any float dtype.
        labels: (N,) int local column of each row's class, -1 when it is not in this shard.
        margin: the margin; ``margin.rows`` runs once (EMAs update once per call in training mode).
        valid: (N,) bool rows taking part; default: rows whose class is in some rank's shard.
        process_group: the group the classes are sharded over; None: the default group when
            torch.distributed is initialised, else one process.

    Returns:
        :class:`MarginSoftmaxRows`; ``loss`` is identical on every rank. Each rank's gradients are
        those of its own shard's share: centres exact, embeddings to be summed over the ranks.
    """
    _check_inputs(embeddings, weight, labels, margin, valid)
    target = labels.long()
    group = process_group
    distributed = _dist.world_size(group) > 1
    with torch.autocast(embeddings.device.type, enabled=False):
        e = embeddings.float()
        norms = e.norm(dim=1)
        e_hat = F.normalize(e, dim=1)
        with torch.no_grad():
            cos_y = _target_cosine(e_hat, weight, target)
            if distributed:
                cos_y = _dist.all_reduce(cos_y, "sum", group)
            if valid is None:
                has = (target >= 0).to(torch.int32)
                valid = (_dist.all_reduce(has, "sum", group) if distributed else has) > 0
        need_grad = torch.is_grad_enabled() and (embeddings.requires_grad or weight.requires_grad)
        margin_norms = norms if margin.needs_norms else None
        if need_grad:
            cy = cos_y.clone().requires_grad_(True)
            rows = margin.rows(cy, valid, margin_norms)
            (dz_dc,) = torch.autograd.grad(
                rows.target_logit, cy, torch.ones_like(cy), retain_graph=True, allow_unused=True, materialize_grads=True
            )
        else:
            rows = margin.rows(cos_y, valid, margin_norms)
        lse_local, cos_y_op = margin_softmax_stats(
            e_hat,
            weight,
            target,
            rows.row_scale.detach().float().contiguous(),
            rows.hard_threshold.detach().float().contiguous(),
            rows.hard_t.detach().float(),
            float(rows.cos_lo),
            float(rows.cos_hi),
        )
        z = rows.target_logit.float()
        if need_grad:
            # Every rank computes the same z_y; only the rank owning the target passes its gradient on.
            z = torch.where(target >= 0, z, z.detach()) + dz_dc.detach() * (cos_y_op - cos_y_op.detach())
        lse_nt = _MergeLSE.apply(lse_local, group) if distributed else lse_local
        loss = torch.where(valid, torch.logaddexp(lse_nt, z) - z, 0.0)
    return MarginSoftmaxRows(loss, rows, cos_y, norms, valid)


def margin_softmax_loss(
    embeddings: Tensor,
    weight: Tensor,
    labels: Tensor,
    margin: Margin,
    *,
    valid: Tensor | None = None,
    process_group=None,
    reduction: str = "mean",
) -> Tensor:
    """Margin softmax cross-entropy (ArcFace, CosFace, CurricularFace, AdaFace, MagFace, QGFace, ...)
    without materialising the (B, C) logits. The scale s and the margins come from ``margin``.

    Args: as :func:`margin_softmax_per_row`; ``reduction``: ``"mean"`` over the valid rows (a ()
    float32 tensor; 0 with none), ``"sum"`` or ``"none"`` ((N,) float32, 0 for invalid rows).
    MagFace's norm regulariser is not included (``margin.regularizer(norms)``; PartialFC adds it).
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"margin_softmax_loss: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    out = margin_softmax_per_row(embeddings, weight, labels, margin, valid=valid, process_group=process_group)
    if reduction == "none":
        return out.loss
    if reduction == "sum":
        return out.loss.sum()
    return out.loss.sum() / out.valid.sum().clamp_min(1)
