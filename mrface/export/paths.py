"""Deployable resolution paths: one plain ``nn.Module`` per input resolution of a model.

A BTNet (``mrface.models.BTNet``) has a trunk path at its input size (TNet at 112) and one path
per branch: the branch's own layers followed by the shared tail of the trunk, with the branch's
BatchNorm copies (``branch_bn=True``) put in place of the trunk's. The result is an ordinary module
``x (N, 3, r, r) float -> (N, E)`` with no ``functional_call`` or resolution switch, which traces
cleanly for ONNX export. Any other :class:`~mrface.models.FaceModel` (iResNet, MobileFaceNet) has
a single path at ``input_size``.

Paths are deep copies in eval mode with autocast switched off (graphs are exported in float32 and
converted to FP16 / INT8 afterwards, see ``precision`` and ``quantize``), so exporting never
changes the caller's model.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn

from mrface.export.errors import ExportError
from mrface.models.base import FaceModel
from mrface.models.btnet import BTNet, norm_key


class BranchPath(nn.Module):
    """Branch layers + shared trunk tail: x (N, 3, r, r) -> (N, E)."""

    def __init__(self, branch_net: nn.Module, tail: FaceModel, start_unit: int) -> None:
        super().__init__()
        self.branch = branch_net
        self.tail = tail
        self.start_unit = start_unit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.branch(x), start_unit=self.start_unit)


def exportable_resolutions(model: FaceModel) -> tuple[int, ...]:
    """``model.resolutions`` when each is a separable path (BTNet trunk + branches, or a single-resolution
    model); raise :class:`ExportError` for other multi-resolution models (DCR's coupled branches)."""
    resolutions = tuple(model.resolutions)
    if not isinstance(model, BTNet) and len(resolutions) != 1:
        raise ExportError(
            f"{type(model).__name__}: export supports BTNet branches and single-resolution models; "
            f"this model has resolution-dependent outputs {resolutions} that are not separable paths"
        )
    return resolutions


def check_exportable(model: nn.Module) -> None:
    """Raise :class:`ExportError` unless ``model`` is a FaceModel entirely in eval mode."""
    if not isinstance(model, FaceModel):
        raise ExportError(f"model: expected an mrface FaceModel (from mrface.models.get_model), got {type(model)}")
    training = [name or "<root>" for name, m in model.named_modules() if m.training]
    if training:
        more = f" (+{len(training) - 3} more)" if len(training) > 3 else ""
        raise ExportError(
            f"model is in training mode (modules {', '.join(training[:3])}{more}); call model.eval() before "
            "export: BatchNorm must use its running statistics and dropout must be off"
        )


def _plain_copy(module: nn.Module) -> nn.Module:
    out = copy.deepcopy(module).eval()
    for m in out.modules():
        if hasattr(m, "amp_dtype"):
            m.amp_dtype = None
        if hasattr(m, "grad_checkpointing"):
            m.grad_checkpointing = False
    for p in out.parameters():
        p.requires_grad_(False)
    return out


def resolution_path(model: FaceModel, resolution: int) -> nn.Module:
    """The deployable module for one input side of ``model`` (see module docstring)."""
    resolution = int(resolution)
    available = exportable_resolutions(model)
    if resolution not in available:
        raise ExportError(f"resolution {resolution}: {type(model).__name__} has paths for {available} only")
    if not isinstance(model, BTNet):
        return _plain_copy(model)
    if resolution == model.trunk.input_size:
        return _plain_copy(model.trunk)
    branch = model.branch(resolution)
    tail = copy.deepcopy(model.trunk)
    if branch.norms is not None:
        for name in model.tail_norm_names(resolution):
            tail.set_submodule(name, copy.deepcopy(branch.norms[norm_key(name)]))
    return _plain_copy(BranchPath(branch.net, tail, branch.implant_unit + 1))


def select_resolutions(model: FaceModel, resolutions: Iterable[int] | None) -> tuple[int, ...]:
    """Validate a user's choice of resolutions (None = all paths), keeping the model's order."""
    available = exportable_resolutions(model)
    if resolutions is None:
        return available
    wanted = [int(r) for r in resolutions]
    unknown = [r for r in wanted if r not in available]
    if unknown:
        raise ExportError(f"resolutions {unknown}: unknown branch resolution; {type(model).__name__} has {available}")
    return tuple(r for r in available if r in wanted)
