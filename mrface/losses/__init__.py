"""Margin heads, Partial FC and distillation losses.

One interface: ``loss, logs = head(embeddings, labels)``; build heads with :func:`get_head`.
"""

from mrface.losses.contrastive import QGFaceContrastive
from mrface.losses.distill import BTNetDistillLoss
from mrface.losses.margin_softmax import MarginSoftmaxRows, margin_softmax_loss, margin_softmax_per_row
from mrface.losses.margins import (
    AdaFace,
    CombinedMargin,
    CurricularFace,
    MagFace,
    Margin,
    QGFace,
    RowTransform,
    apply_nontarget,
    magface_min_lambda_g,
)
from mrface.losses.partial_fc import PartialFC, reshard_centres, reshard_state_dicts, shard_range
from mrface.losses.registry import get_head, get_margin, list_heads

__all__ = [
    "AdaFace",
    "BTNetDistillLoss",
    "CombinedMargin",
    "CurricularFace",
    "MagFace",
    "Margin",
    "MarginSoftmaxRows",
    "PartialFC",
    "QGFace",
    "QGFaceContrastive",
    "RowTransform",
    "apply_nontarget",
    "get_head",
    "get_margin",
    "list_heads",
    "magface_min_lambda_g",
    "margin_softmax_loss",
    "margin_softmax_per_row",
    "reshard_centres",
    "reshard_state_dicts",
    "shard_range",
]
