"""Distillation and coupling losses of the multi-resolution methods (REFERENCE.md §2-3).

* :class:`BTNetDistillLoss`: margin loss of the student embedding through the frozen TNet
  classifier + feature_weight * MSE(feature maps at the implant level) + embedding_weight *
  MSE(512-d embeddings), on raw (un-normalised) tensors; teacher tensors are detached.
* :class:`CentreLoss`: centre loss with centres as buffers updated without gradient
  (Wen et al.: c_j -= alpha * sum_{i: y_i = j} (c_j - x_i) / (1 + n_j)), over the global batch
  (embeddings and labels all-gathered, so every rank applies the same update).
* :class:`DCRLoss`: DCR's branch loss, mean over branches k of (CE_k + centre_weight *
  ||e_k - c_y||^2) + coupling_weight * sum_k ||e_HR - e_k||^2 (squared norms averaged over rows).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mrface.losses import _dist
from mrface.losses.partial_fc import PartialFC

__all__ = ["BTNetDistillLoss", "CentreLoss", "DCRLoss"]


def _same_shape(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


class BTNetDistillLoss(nn.Module):
    """BTNet branch loss.

    Args:
        classifier: TNet's margin head (CurricularFace s=64 m=0.5 in the paper). With
            ``freeze_classifier`` its centres get ``requires_grad=False`` and the head stays in
            eval mode (no class sampling) while its margin follows this module's mode, so margin
            state (CurricularFace's t) keeps updating as in the public runs, whose frozen head runs
            in train mode; ``update_margin_state=False`` freezes that state too.
        feature_weight, embedding_weight: 0.5 and 0.5 in the paper.

    Call: ``loss, logs = fn(student_feature, teacher_feature, student_embedding,
    teacher_embedding, labels)``; feature maps (B, C, H, W), embeddings (B, D), labels (B,).
    """

    def __init__(
        self,
        classifier: PartialFC,
        feature_weight: float = 0.5,
        embedding_weight: float = 0.5,
        freeze_classifier: bool = True,
        update_margin_state: bool = True,
    ) -> None:
        super().__init__()
        if feature_weight < 0 or embedding_weight < 0:
            raise ValueError(
                f"feature_weight and embedding_weight must be >= 0, got {feature_weight} and {embedding_weight}"
            )
        self.classifier = classifier
        self.feature_weight, self.embedding_weight = float(feature_weight), float(embedding_weight)
        self.freeze_classifier, self.update_margin_state = freeze_classifier, update_margin_state
        if freeze_classifier:
            classifier.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> BTNetDistillLoss:
        super().train(mode)
        if self.freeze_classifier:
            self.classifier.eval()
            self.classifier.margin.train(mode and self.update_margin_state)
        return self

    def forward(
        self,
        student_feature: Tensor,
        teacher_feature: Tensor,
        student_embedding: Tensor,
        teacher_embedding: Tensor,
        labels: Tensor,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        _same_shape("student_feature", student_feature, "teacher_feature", teacher_feature)
        _same_shape("student_embedding", student_embedding, "teacher_embedding", teacher_embedding)
        fm = F.mse_loss(student_feature.float(), teacher_feature.detach().float())
        em = F.mse_loss(student_embedding.float(), teacher_embedding.detach().float())
        cls, logs = self.classifier(student_embedding, labels)
        loss = cls + self.feature_weight * fm + self.embedding_weight * em
        logs = {**logs, "distill/feature_mse": fm.detach(), "distill/embedding_mse": em.detach()}
        return loss, logs


class CentreLoss(nn.Module):
    """Mean over rows of ||x_i - c_{y_i}||^2 with centres (C, D) in a buffer (start 0).

    :meth:`update` moves the centres without gradient at rate ``alpha`` (0.6 in DCR) using the
    global batch of ``process_group`` (every rank must call it, with the same B).
    """

    def __init__(self, num_classes: int, embedding_size: int, alpha: float = 0.6, process_group=None) -> None:
        super().__init__()
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha, self.group = float(alpha), process_group
        self.register_buffer("centres", torch.zeros(num_classes, embedding_size))

    def _check(self, embeddings: Tensor, labels: Tensor) -> None:
        c, d = self.centres.shape
        if embeddings.dim() != 2 or embeddings.shape[1] != d:
            raise ValueError(f"embeddings must be (B, {d}), got {tuple(embeddings.shape)}")
        if labels.shape != (embeddings.shape[0],):
            raise ValueError(f"labels must be (B,) with B={embeddings.shape[0]}, got {tuple(labels.shape)}")
        if bool(((labels < 0) | (labels >= c)).any()):
            raise ValueError(f"labels must be in [0, {c})")

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        self._check(embeddings, labels)
        return (embeddings.float() - self.centres[labels]).pow(2).sum(1).mean()

    @torch.no_grad()
    def update(self, embeddings: Tensor, labels: Tensor) -> None:
        self._check(embeddings, labels)
        x = _dist.all_gather_cat(embeddings.detach().float(), self.group)
        y = _dist.all_gather_cat(labels.long(), self.group)
        diff = torch.zeros_like(self.centres).index_add_(0, y, self.centres[y] - x)
        count = torch.zeros(self.centres.shape[0], device=x.device).index_add_(
            0, y, torch.ones_like(y, dtype=torch.float32)
        )
        self.centres -= self.alpha * diff / (1 + count)[:, None]


class DCRLoss(nn.Module):
    """DCR coupled-branch loss (weights 0.008 and 0.008, centre rate 0.6 in the paper).

    Call: ``loss, logs = fn(branch_embeddings, branch_logits, hr_embedding, labels)`` with K
    branch embeddings (B, D), K branch logits (B, C) and the trunk's HR embedding (B, D),
    detached when ``detach_hr`` (the trunk is fixed while branches train). In training mode the
    centres are updated once per call with all branch embeddings, after the loss is computed.
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        centre_weight: float = 0.008,
        coupling_weight: float = 0.008,
        alpha: float = 0.6,
        detach_hr: bool = True,
        process_group=None,
    ) -> None:
        super().__init__()
        self.centre = CentreLoss(num_classes, embedding_size, alpha, process_group)
        self.centre_weight, self.coupling_weight = float(centre_weight), float(coupling_weight)
        self.detach_hr = detach_hr

    def forward(
        self, branch_embeddings: Sequence[Tensor], branch_logits: Sequence[Tensor], hr_embedding: Tensor, labels: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        if len(branch_embeddings) == 0 or len(branch_embeddings) != len(branch_logits):
            raise ValueError(
                f"need as many branch_logits as branch_embeddings (>= 1), got "
                f"{len(branch_logits)} and {len(branch_embeddings)}"
            )
        hr = hr_embedding.detach() if self.detach_hr else hr_embedding
        ce = cen = coup = 0.0
        for e, z in zip(branch_embeddings, branch_logits, strict=True):
            _same_shape("branch embedding", e, "hr_embedding", hr)
            ce = ce + F.cross_entropy(z.float(), labels)
            cen = cen + self.centre(e, labels)
            coup = coup + (hr.float() - e.float()).pow(2).sum(1).mean()
        k = len(branch_embeddings)
        loss = (ce + self.centre_weight * cen) / k + self.coupling_weight * coup
        if self.training:
            self.centre.update(torch.cat([e.detach() for e in branch_embeddings]), labels.repeat(k))
        logs = {"dcr/ce": ce.detach() / k, "dcr/centre": cen.detach() / k, "dcr/coupling": coup.detach()}
        return loss, logs
