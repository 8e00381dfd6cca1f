"""BTNet: one trunk (TNet) plus resolution branches (BNets) implanted into it (REFERENCE.md §2).

The trunk is any *implantable* network: :class:`~mrface.models.iresnet.IResNet` or
:class:`~mrface.models.mobilefacenet.MobileFaceNet`. Such a network is a list of units (unit 0 =
stem, then one unit per block) followed by a head, and offers ``unit_output_sizes()``,
``forward_units(x, start, stop)``, ``forward(x, start_unit)``, ``module_unit(name)`` and
``make_branch(input_size, num_units)``.

The branch for resolution r owns the units of the trunk up to and including the *first unit whose
trunk output is r x r*, rebuilt for an r x r input (stage strides follow the resolution rule), so
for iResNet: BNet28 = stem + layer1 + layer2.0, BNet14 = ... + layer3.0, BNet7 = ... + layer4.0.
Its output replaces the trunk's feature map after that unit (the *implant level*), and the trunk's
remaining units and head (the *shared tail*) finish the job.

Shared weights are stored once (in ``trunk``). With ``branch_bn=True`` (the public behaviour) each
branch also keeps its own copy of every BatchNorm of the shared tail (``branches.<r>.norms``,
keys = trunk module names with '.' -> '_'), used in place of the trunk's when running that
branch, in the branch's train/eval mode (so ``model.train(); model.trunk.eval()`` trains a
branch and its BN copies against a frozen teacher); with ``branch_bn=False`` the tail is fully
shared and follows the trunk's mode. Trainable set (BTNet ``train_multi_reso_distill.py``: a
shared parameter stays frozen when its name holds no "bn"): the copies of ``bn*`` modules train
their affine parameters, the copies of ``features`` and ``downsample.1`` keep theirs frozen
(their running statistics still update in train mode).

State-dict layout: ``trunk.*`` (InsightFace names), ``branches.<r>.net.*`` (InsightFace names of
the owned layers), ``branches.<r>.norms.*``.

Shapes: ``forward(x)`` with x (N, 3, r, r) for r in ``resolutions`` -> (N, E) embedding.
"""

from __future__ import annotations

import copy
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.func import functional_call

from mrface.models.base import FaceModel
from mrface.models.iresnet import TINY, iresnet
from mrface.models.mobilefacenet import MobileFaceNet
from mrface.models.registry import register_model

_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d)


class BranchOutput(NamedTuple):
    """Embedding (N, E) and implant-level feature map (N, C, r', r') of one path."""

    embedding: torch.Tensor
    feature: torch.Tensor


class DistillOutput(NamedTuple):
    """Student (branch on the LR image) and teacher (trunk on the HR image) outputs at the same level."""

    student_embedding: torch.Tensor
    student_feature: torch.Tensor
    teacher_embedding: torch.Tensor
    teacher_feature: torch.Tensor


def norm_key(module_name: str) -> str:
    """Trunk BatchNorm module name -> key in a branch's ``norms`` ModuleDict ('layer2.1.bn1' -> 'layer2_1_bn1')."""
    return module_name.replace(".", "_")


class Branch(nn.Module):
    """A BNet: the owned layers (``net``, a truncated trunk-class network) and optional tail BN copies."""

    def __init__(self, net: nn.Module, implant_unit: int, norms: nn.ModuleDict | None):
        super().__init__()
        self.net = net
        self.implant_unit = implant_unit
        self.norms = norms

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 3, r, r) -> implant-level feature map."""
        return self.net(x)


class BTNet(FaceModel):
    """Trunk + branches. ``forward(x)`` picks the path from x's side; see module docstring."""

    def __init__(self, trunk: FaceModel, resolutions: tuple[int, ...] = (28, 14, 7), *, branch_bn: bool = True):
        super().__init__()
        self.trunk = trunk
        self.branch_bn = branch_bn
        self.input_size = trunk.input_size
        self.embedding_size = trunk.embedding_size
        self.branches = nn.ModuleDict()
        self._norm_names: dict[int, list[str]] = {}
        sizes = trunk.unit_output_sizes()
        for r in sorted({int(r) for r in resolutions}, reverse=True):
            if r >= trunk.input_size or r not in sizes:
                raise ValueError(
                    f"resolution {r}: no trunk unit outputs {r}x{r} (trunk unit sizes {sorted(set(sizes))})"
                )
            j = sizes.index(r)
            net = trunk.make_branch(r, j + 1)
            norms = None
            names = [
                name
                for name, m in trunk.named_modules()
                if isinstance(m, _BN_TYPES) and (trunk.module_unit(name) is None or trunk.module_unit(name) > j)
            ]
            self._norm_names[r] = names
            if branch_bn:
                norms = nn.ModuleDict({norm_key(n): copy.deepcopy(trunk.get_submodule(n)) for n in names})
                for n in names:
                    if "bn" not in n:  # the public name rule (features, downsample.1): affine frozen
                        norms[norm_key(n)].requires_grad_(False)
            self.branches[str(r)] = Branch(net, j, norms)

    # ------------------------------------------------------------------------------- structure
    @property
    def resolutions(self) -> tuple[int, ...]:
        """Input sides with a path: the trunk's first, then the branches' in decreasing order."""
        return (self.trunk.input_size, *(int(r) for r in self.branches))

    def branch(self, resolution: int) -> Branch:
        key = str(int(resolution))
        if key not in self.branches:
            raise ValueError(f"resolution={resolution}: this BTNet has branches for {list(self.branches)} only")
        return self.branches[key]

    def implant_level(self, resolution: int) -> str:
        """Trunk unit name after which branch ``resolution`` is implanted (e.g. 28 -> 'layer2.0')."""
        return self.trunk.unit_names[self.branch(resolution).implant_unit]

    def tail_norm_names(self, resolution: int) -> list[str]:
        """Trunk BatchNorm module names in the shared tail of branch ``resolution``."""
        self.branch(resolution)
        return list(self._norm_names[int(resolution)])

    def branch_parameters(self, resolution: int) -> list[nn.Parameter]:
        """Parameters a branch trains: its owned layers plus (with ``branch_bn``) its tail BN copies."""
        return [p for p in self.branch(resolution).parameters() if p.requires_grad]

    # --------------------------------------------------------------------------------- forward
    def _tail(self, feature: torch.Tensor, resolution: int) -> torch.Tensor:
        branch = self.branch(resolution)
        start = branch.implant_unit + 1
        if branch.norms is None:
            return self.trunk(feature, start_unit=start)
        overrides = {}
        trunk_norms = []
        for name in self._norm_names[int(resolution)]:
            bn = branch.norms[norm_key(name)]
            trunk_norms.append(self.trunk.get_submodule(name))
            for pname, tensor in list(bn.named_parameters()) + list(bn.named_buffers()):
                overrides[f"{name}.{pname}"] = tensor
        # The copies run in the branch's mode (train the branch while the trunk/teacher is in eval).
        saved = [m.training for m in trunk_norms]
        for m in trunk_norms:
            m.training = branch.training
        try:
            return functional_call(self.trunk, overrides, (feature,), {"start_unit": start}, strict=False)
        finally:
            for m, mode in zip(trunk_norms, saved, strict=True):
                m.training = mode

    def forward_branch(self, x: torch.Tensor, resolution: int) -> BranchOutput:
        """Branch path: x (N, 3, r, r) -> embedding and the implant-level feature map."""
        branch = self.branch(resolution)
        branch.net.check_input(x, resolution)
        feature = branch(x)
        return BranchOutput(self._tail(feature, resolution), feature)

    def forward_trunk(self, x: torch.Tensor, level_of: int | None = None) -> BranchOutput:
        """Trunk path on x (N, 3, S, S); ``feature`` is the trunk's map at the implant level of branch ``level_of``."""
        self.trunk.check_input(x)
        if level_of is None:
            feature = self.trunk.forward_units(x)
            return BranchOutput(self.trunk(feature, start_unit=self.trunk.num_units), feature)
        stop = self.branch(level_of).implant_unit + 1
        feature = self.trunk.forward_units(x, 0, stop)
        return BranchOutput(self.trunk(feature, start_unit=stop), feature)

    def distill(
        self, x_hr: torch.Tensor, x_lr: torch.Tensor, resolution: int, *, teacher_grad: bool = False
    ) -> DistillOutput:
        """Both paths for branch training: trunk on x_hr (N, 3, S, S), branch on x_lr (N, 3, r, r).

        The teacher runs under ``torch.no_grad()`` unless ``teacher_grad``; put the trunk in eval mode
        to freeze its BatchNorm statistics (the recipe's frozen teacher).
        """
        with torch.set_grad_enabled(teacher_grad and torch.is_grad_enabled()):
            teacher = self.forward_trunk(x_hr, level_of=resolution)
        student = self.forward_branch(x_lr, resolution)
        return DistillOutput(student.embedding, student.feature, teacher.embedding, teacher.feature)

    def forward(self, x: torch.Tensor, resolution: int | None = None) -> torch.Tensor:
        """x: (N, 3, r, r) -> (N, E); ``resolution`` defaults to x's side."""
        resolution = int(x.shape[-1]) if resolution is None else int(resolution)
        if resolution == self.trunk.input_size:
            return self.trunk(x)
        return self.forward_branch(x, resolution).embedding


# ------------------------------------------------------------------------------ registrations
def _btnet(trunk: FaceModel, resolutions: Any = (28, 14, 7), branch_bn: bool = True) -> BTNet:
    return BTNet(trunk, tuple(resolutions), branch_bn=branch_bn)


@register_model("btnet_r50", description="BTNet: iResNet-50 trunk + branches 28/14/7")
def _btnet_r50(resolutions: Any = (28, 14, 7), branch_bn: bool = True, **kwargs: Any) -> FaceModel:
    return _btnet(iresnet(50, **kwargs), resolutions, branch_bn)


@register_model("btnet_tiny", description="BTNet over iresnet_tiny")
def _btnet_tiny(resolutions: Any = (28, 14, 7), branch_bn: bool = True, **kwargs: Any) -> FaceModel:
    return _btnet(iresnet(**{**TINY, **kwargs}), resolutions, branch_bn)


@register_model("btnet_mobilefacenet", description="BTNet over MobileFaceNet (multi-resolution edge model)")
def _btnet_mobilefacenet(resolutions: Any = (28, 14, 7), branch_bn: bool = True, **kwargs: Any) -> FaceModel:
    return _btnet(MobileFaceNet(**kwargs), resolutions, branch_bn)
