"""BTNet's distillation loss (REFERENCE.md §2).

* :class:`BTNetDistillLoss`: margin loss of the student embedding through the frozen TNet
  classifier + feature_weight * MSE(feature maps at the implant level) + embedding_weight *
  MSE(512-d embeddings), on raw (un-normalised) tensors; teacher tensors are detached.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from mrface.losses.partial_fc import PartialFC

__all__ = ["BTNetDistillLoss"]


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
