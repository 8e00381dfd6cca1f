"""DCR: Deep Coupled ResNet — a trunk plus coupled branches, one per scale (REFERENCE.md §3).

Follows the public implementation gyfastas/CS7319E1G16 (``models/branch.py``, ``models/DCR.py``,
``losses/cm_loss.py``, ``losses/center_buffer.py``, ``utils/core.py``):

* branch s = ``mapping`` Linear(E, M) (public ``fc1``) -> embedding (L2-normalised when
  ``normalized_embeddings``) -> a one-parameter ``prelu`` -> ``classifier`` Linear(M, C) (public ``fc2``);
  the PReLU feeds only the classifier. The trunk's embedding (normalised too under the same flag) feeds
  every branch;
* branch 0 is the HR branch (key: the trunk's input size), trained with the others (``hr_branch``);
  ``hr_branch=False`` keeps mrface's older variant: the frozen trunk embedding is the HR target;
* specialised initialisation (``identity_init``): ``mapping`` = identity with zero bias; the stage also
  copies the trunk's classifier into every branch classifier (:meth:`DCR.init_classifiers`);
* the loss (:func:`dcr_loss`) over the S scales (HR first)::

      mean_s CE(logits_s, y) + λc · mean_s mse(e_s, c_s[y]) + λd · Σ_s mse(e_0, e_s)

  with ``mse`` the element mean (over N·D, as ``F.mse_loss``), λc = λd = 0.008 and one centre table c_s
  per scale (:class:`DCRCentres`), updated *before* the loss with the batch's embeddings.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from mrface.models.base import FaceModel
from mrface.models.iresnet import TINY, iresnet
from mrface.models.registry import register_model

DCR_LOSS_WEIGHT = 0.008
DCR_CENTER_RATE = 0.6


class CoupledBranch(nn.Module):
    """Linear(E, M) -> embedding (N, M) [-> L2 norm]; logits = Linear(M, C)(PReLU_1(embedding))."""

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        identity_init: bool = True,
        normalized_embeddings: bool = False,
        mid_size: int | None = None,
    ):
        super().__init__()
        mid = int(mid_size or embedding_size)
        self.normalized_embeddings = normalized_embeddings
        self.mapping = nn.Linear(embedding_size, mid)
        self.prelu = nn.PReLU()
        self.classifier = nn.Linear(mid, num_classes)
        if identity_init:
            if mid != embedding_size:
                raise ValueError(f"identity_init needs mid_size == embedding_size, got {mid} and {embedding_size}")
            nn.init.eye_(self.mapping.weight)
            nn.init.zeros_(self.mapping.bias)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        """feature (N, E) -> branch embedding (N, M)."""
        embedding = self.mapping(feature)
        return F.normalize(embedding, dim=-1) if self.normalized_embeddings else embedding

    def logits(self, embedding: torch.Tensor) -> torch.Tensor:
        """embedding (N, M) -> class logits (N, C)."""
        return self.classifier(self.prelu(embedding))


class DCROutput(NamedTuple):
    """e_hr (N, M) the HR branch's (or, without one, the trunk's) embedding; per scale k: e_k and logits."""

    e_hr: torch.Tensor
    embeddings: dict[int, torch.Tensor]
    logits: dict[int, torch.Tensor]


class DCR(FaceModel):
    """Trunk + coupled branches. ``forward(x, resolution=None)``: None -> trunk embedding, k -> branch k's.

    ``resolutions`` are the LR sides; with ``hr_branch`` a branch keyed by the trunk's input size (the
    public branch 0) is added in front.
    """

    def __init__(
        self,
        trunk: FaceModel,
        num_classes: int,
        resolutions: Sequence[int] = (8, 12, 16, 20),
        *,
        identity_init: bool = True,
        normalized_embeddings: bool = False,
        hr_branch: bool = True,
    ):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes={num_classes}: expected a positive number of identities")
        self.trunk = trunk
        self.input_size = trunk.input_size
        self.embedding_size = trunk.embedding_size
        self.normalized_embeddings = normalized_embeddings
        self.hr_resolution = int(trunk.input_size) if hr_branch else None
        self.lr_resolutions = tuple(int(r) for r in resolutions)
        if self.hr_resolution in self.lr_resolutions:
            raise ValueError(f"resolutions={list(resolutions)}: the HR branch already has {self.hr_resolution}")
        keys = ([self.hr_resolution] if hr_branch else []) + list(self.lr_resolutions)
        self.branches = nn.ModuleDict(
            {
                str(r): CoupledBranch(trunk.embedding_size, num_classes, identity_init, normalized_embeddings)
                for r in keys
            }
        )
        self.num_classes = num_classes

    @property
    def resolutions(self) -> tuple[int, ...]:
        """The LR sides with a branch (the HR branch, if any, is :attr:`hr_resolution`)."""
        return self.lr_resolutions

    def branch(self, resolution: int) -> CoupledBranch:
        key = str(int(resolution))
        if key not in self.branches:
            raise ValueError(f"resolution={resolution}: DCR has branches for {list(self.branches)} only")
        return self.branches[key]

    def trunk_embedding(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, 3, S, S) -> trunk embedding (N, E), L2-normalised when ``normalized_embeddings``."""
        feature = self.trunk(x)
        return F.normalize(feature, dim=-1) if self.normalized_embeddings else feature

    def forward(self, x: torch.Tensor, resolution: int | None = None) -> torch.Tensor:
        """x: (N, 3, S, S) (LR faces upsampled to S) -> (N, E) trunk or (N, M) branch embedding."""
        feature = self.trunk_embedding(x)
        return feature if resolution is None else self.branch(resolution)(feature)

    @torch.no_grad()
    def init_classifiers(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        """Copy a trunk classifier (weight (C, M), bias (C,) or None: zero) into every branch classifier."""
        for branch in self.branches.values():
            if tuple(weight.shape) != tuple(branch.classifier.weight.shape):
                raise ValueError(
                    f"trunk classifier {tuple(weight.shape)} vs branch {tuple(branch.classifier.weight.shape)}"
                )
            branch.classifier.weight.copy_(weight)
            branch.classifier.bias.copy_(bias if bias is not None else torch.zeros_like(branch.classifier.bias))

    def branch_outputs(self, x_hr: torch.Tensor, x_lr: Mapping[int, torch.Tensor]) -> DCROutput:
        """HR branch (or trunk) on x_hr (N, 3, S, S) and, per resolution k, branch k on x_lr[k] (N, 3, S, S).

        With an HR branch its embedding and logits are also in ``embeddings`` / ``logits``, first.
        """
        embeddings, logits = {}, {}
        inputs = ({self.hr_resolution: x_hr} if self.hr_resolution is not None else {}) | dict(x_lr)
        for k, x in inputs.items():
            branch = self.branch(k)
            embeddings[int(k)] = branch(self.trunk_embedding(x))
            logits[int(k)] = branch.logits(embeddings[int(k)])
        e_hr = embeddings[self.hr_resolution] if self.hr_resolution is not None else self.trunk_embedding(x_hr)
        return DCROutput(e_hr, embeddings, logits)


# --------------------------------------------------------------------------------------- loss
def center_loss(embeddings: torch.Tensor, labels: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """mse(e_i, c_{y_i}) averaged over all N·D elements; embeddings (N, D), labels (N,), centers (C, D)."""
    return (embeddings.float() - centers[labels].float()).pow(2).mean()


def coupling_loss(e_hr: torch.Tensor, embeddings: Mapping[int, torch.Tensor]) -> torch.Tensor:
    """Σ_k mse(e_HR, e_k), each an element mean over N·D (the HR term itself, if present, is 0)."""
    return sum((e_hr.float() - e.float()).pow(2).mean() for e in embeddings.values())


@torch.no_grad()
def update_centers(
    centers: torch.Tensor, embeddings: torch.Tensor, labels: torch.Tensor, rate: float = DCR_CENTER_RATE
) -> None:
    """In place: c_j += rate · Σ_{i: y_i = j}(e_i − c_j) / n_j for every class j in the batch (n_j its count)."""
    residual = embeddings.to(centers.dtype) - centers[labels]
    delta = torch.zeros_like(centers).index_add_(0, labels, residual)
    counts = torch.zeros(centers.shape[0], dtype=centers.dtype, device=centers.device)
    counts.index_add_(0, labels, torch.ones_like(labels, dtype=centers.dtype))
    centers += rate * delta / counts.clamp_min(1)[:, None]


def _gather(x: torch.Tensor, group) -> torch.Tensor:
    """Every rank's equally shaped x concatenated along dim 0 (x itself outside a process group)."""
    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size(group) == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, x.contiguous(), group=group)
    return torch.cat(parts, 0)


class DCRCentres(nn.Module):
    """One centre table (C, D) per scale, buffers ``centres_<k>``, initialised N(0, 2 / C) from ``seed``.

    :meth:`update` applies :func:`update_centers` with the global batch: every rank gathers the
    embeddings and labels of all ranks (``process_group``), so R ranks give what one process gives.
    """

    def __init__(
        self,
        scales: Sequence[int],
        num_classes: int,
        embedding_size: int,
        rate: float = DCR_CENTER_RATE,
        seed: int = 0,
        process_group=None,
    ) -> None:
        super().__init__()
        if not 0 < rate <= 1:
            raise ValueError(f"centre rate must be in (0, 1], got {rate}")
        self.scales, self.rate, self.group = tuple(int(s) for s in scales), float(rate), process_group
        g = torch.Generator().manual_seed(int(seed))
        for s in self.scales:
            table = torch.randn(num_classes, embedding_size, generator=g) * math.sqrt(2.0 / num_classes)
            self.register_buffer(f"centres_{s}", table)

    def table(self, scale: int) -> torch.Tensor:
        return getattr(self, f"centres_{int(scale)}")

    @torch.no_grad()
    def update(self, scale: int, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        x = _gather(embeddings.detach().float(), self.group)
        y = _gather(labels.long(), self.group)
        update_centers(self.table(scale), x, y, self.rate)


def dcr_loss(
    out: DCROutput,
    labels: torch.Tensor,
    centres: DCRCentres,
    centre_weight: float = DCR_LOSS_WEIGHT,
    coupling_weight: float = DCR_LOSS_WEIGHT,
    update: bool = True,
) -> tuple[torch.Tensor, dict]:
    """The public CMLoss: per scale (HR first) update its centres, then CE and centre loss; plus coupling.

    Returns (loss, logs): ``mean_s CE + centre_weight · mean_s mse(e_s, c_s[y]) + coupling_weight ·
    Σ_s mse(e_HR, e_s)``; ``e_HR`` keeps its gradient (the HR branch trains with the others).
    """
    ce = cen = 0.0
    for k, e in out.embeddings.items():
        if update:
            centres.update(k, e, labels)
        ce = ce + F.cross_entropy(out.logits[k].float(), labels)
        cen = cen + center_loss(e, labels, centres.table(k))
    scales = len(out.embeddings)
    coup = coupling_loss(out.e_hr, out.embeddings)
    loss = ce / scales + centre_weight * cen / scales + coupling_weight * coup
    return loss, {"dcr/ce": ce.detach() / scales, "dcr/centre": cen.detach() / scales, "dcr/coupling": coup.detach()}


# ------------------------------------------------------------------------------ registrations
def _dcr_over(
    trunk: FaceModel,
    num_classes: int,
    resolutions: Any = (8, 12, 16, 20),
    identity_init: bool = True,
    normalized_embeddings: bool = False,
    hr_branch: bool = True,
) -> FaceModel:
    return DCR(
        trunk,
        num_classes,
        tuple(resolutions),
        identity_init=identity_init,
        normalized_embeddings=normalized_embeddings,
        hr_branch=hr_branch,
    )


_DCR_OPTIONS = ("resolutions", "identity_init", "normalized_embeddings", "hr_branch")


def _split_dcr_options(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(DCR options, trunk keyword arguments) from one keyword dict."""
    options = {k: kwargs.pop(k) for k in _DCR_OPTIONS if k in kwargs}
    return options, kwargs


@register_model("dcr_iresnet50", description="DCR: iResNet-50 trunk + coupled branches 8/12/16/20")
def _dcr_iresnet50(num_classes: int, **kwargs: Any) -> FaceModel:
    options, trunk_args = _split_dcr_options(kwargs)
    return _dcr_over(iresnet(50, **trunk_args), num_classes, **options)


@register_model("dcr_tiny", description="DCR over iresnet_tiny")
def _dcr_tiny(num_classes: int, **kwargs: Any) -> FaceModel:
    options, trunk_args = _split_dcr_options(kwargs)
    return _dcr_over(iresnet(**{**TINY, **trunk_args}), num_classes, **options)
