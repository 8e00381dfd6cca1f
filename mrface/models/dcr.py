"""DCR: Deep Coupled ResNet — a trunk plus coupled branches per low resolution (REFERENCE.md §3).

The trunk (any :class:`FaceModel`) is trained on HR and LR-upsampled faces (softmax + centre
loss). Branch k (one per LR resolution, e.g. 8/12/16/20 px) is ``mapping`` Linear(E, E) (the
coupled mapping; optional identity initialisation) -> ``prelu`` -> ``classifier`` Linear(E, C).

Interpretation used here (the reference states the loss, not the wiring): ``e_HR`` is the trunk
embedding of the HR face and ``e_k = prelu(mapping_k(trunk(x_k)))`` the coupled embedding of the
LR face at resolution k (upsampled to the trunk's input size), so the identity initialisation
starts the branches at the trunk's space. Branch-training loss::

    mean_k [ CE(classifier_k(e_k), y) + λ·‖e_k − c_y‖² ] + λ·Σ_k ‖e_HR − e_k‖²,   λ = 0.008

with squared norms averaged over the batch and centres updated with rate α = 0.6
(:func:`update_centers`). Pieces are exposed for the trainer: :func:`center_loss`,
:func:`coupling_loss`, :func:`update_centers`, :func:`dcr_branch_loss`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from mrface.models.base import FaceModel

DCR_LOSS_WEIGHT = 0.008
DCR_CENTER_RATE = 0.6


class CoupledBranch(nn.Module):
    """Linear(E, E) -> PReLU -> (classifier Linear(E, C)). ``forward``: (N, E) -> coupled (N, E)."""

    def __init__(self, embedding_size: int, num_classes: int, identity_init: bool = True):
        super().__init__()
        self.mapping = nn.Linear(embedding_size, embedding_size)
        self.prelu = nn.PReLU(embedding_size)
        self.classifier = nn.Linear(embedding_size, num_classes)
        if identity_init:
            nn.init.eye_(self.mapping.weight)
            nn.init.zeros_(self.mapping.bias)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return self.prelu(self.mapping(feature))


class DCROutput(NamedTuple):
    """e_hr (N, E) trunk embedding of the HR faces; per resolution k: coupled e_k (N, E) and logits (N, C)."""

    e_hr: torch.Tensor
    embeddings: dict[int, torch.Tensor]
    logits: dict[int, torch.Tensor]


class DCR(FaceModel):
    """Trunk + coupled branches. ``forward(x, resolution=None)``: None -> trunk embedding, k -> branch k's."""

    def __init__(
        self,
        trunk: FaceModel,
        num_classes: int,
        resolutions: Sequence[int] = (8, 12, 16, 20),
        *,
        identity_init: bool = True,
    ):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes={num_classes}: expected a positive number of identities")
        self.trunk = trunk
        self.input_size = trunk.input_size
        self.embedding_size = trunk.embedding_size
        self.branches = nn.ModuleDict(
            {str(int(r)): CoupledBranch(trunk.embedding_size, num_classes, identity_init) for r in resolutions}
        )
        self.num_classes = num_classes

    @property
    def resolutions(self) -> tuple[int, ...]:
        return tuple(int(r) for r in self.branches)

    def branch(self, resolution: int) -> CoupledBranch:
        key = str(int(resolution))
        if key not in self.branches:
            raise ValueError(f"resolution={resolution}: DCR has branches for {list(self.branches)} only")
        return self.branches[key]

    def forward(self, x: torch.Tensor, resolution: int | None = None) -> torch.Tensor:
        """x: (N, 3, S, S) (LR faces upsampled to S) -> (N, E)."""
        feature = self.trunk(x)
        return feature if resolution is None else self.branch(resolution)(feature)

    def branch_outputs(self, x_hr: torch.Tensor, x_lr: Mapping[int, torch.Tensor]) -> DCROutput:
        """Trunk on x_hr (N, 3, S, S) and, per resolution k, branch k on x_lr[k] (N, 3, S, S)."""
        e_hr = self.trunk(x_hr)
        embeddings, logits = {}, {}
        for k, x in x_lr.items():
            branch = self.branch(k)
            embeddings[int(k)] = branch(self.trunk(x))
            logits[int(k)] = branch.classifier(embeddings[int(k)])
        return DCROutput(e_hr, embeddings, logits)


def center_loss(embeddings: torch.Tensor, labels: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """mean_i ‖e_i − c_{y_i}‖²; embeddings (N, E), labels (N,) int, centers (C, E). Float32."""
    diff = embeddings.float() - centers[labels].float()
    return diff.pow(2).sum(dim=1).mean()


def coupling_loss(e_hr: torch.Tensor, embeddings: Mapping[int, torch.Tensor]) -> torch.Tensor:
    """Σ_k mean_i ‖e_HR,i − e_k,i‖²."""
    return sum((e_hr.float() - e.float()).pow(2).sum(dim=1).mean() for e in embeddings.values())


@torch.no_grad()
def update_centers(
    centers: torch.Tensor, embeddings: torch.Tensor, labels: torch.Tensor, rate: float = DCR_CENTER_RATE
) -> None:
    """Centre-loss update in place: c_j −= rate · Σ_{i: y_i = j}(c_j − e_i) / (1 + n_j)."""
    diff = centers[labels] - embeddings.to(centers.dtype)
    delta = torch.zeros_like(centers).index_add_(0, labels, diff)
    counts = torch.zeros(centers.shape[0], dtype=centers.dtype, device=centers.device)
    counts.index_add_(0, labels, torch.ones_like(labels, dtype=centers.dtype))
    centers -= rate * delta / (1.0 + counts)[:, None]


def dcr_branch_loss(
    out: DCROutput,
    labels: torch.Tensor,
    centers: Mapping[int, torch.Tensor],
    weight: float = DCR_LOSS_WEIGHT,
) -> torch.Tensor:
    """mean_k [CE_k + weight·center_k] + weight·coupling (see module docstring); centers[k]: (C, E)."""
    per_branch = [
        F.cross_entropy(out.logits[k].float(), labels) + weight * center_loss(e, labels, centers[k])
        for k, e in out.embeddings.items()
    ]
    return torch.stack(per_branch).mean() + weight * coupling_loss(out.e_hr, out.embeddings)
