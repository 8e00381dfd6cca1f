"""``summary(model, resolution)``: parameters and multiply-accumulates of one forward path.

MACs are counted by forward hooks on ``Conv2d`` (output elements · in/groups · kh · kw) and
``Linear`` (rows · in · out) for one image; BatchNorm, PReLU and additions are not counted
(BatchNorm folds into the convolutions at inference). This is the convention behind InsightFace's
published "GFLOPs" (r50: 6.3 at 112x112), which are MACs.

``path_params`` counts the parameters the path actually uses (for a BTNet branch: its owned layers,
its tail BatchNorm copies and the shared tail); ``total_params`` counts the whole model;
``owned_params`` is what a BTNet branch adds (0 for the trunk path and plain models).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ModelSummary:
    """Counts for one forward path at ``resolution`` (MACs per image)."""

    resolution: int
    macs: int
    path_params: int
    total_params: int
    owned_params: int

    def __str__(self) -> str:
        return (
            f"{self.resolution:>4}px  {self.macs / 1e9:7.3f} GMACs  path {self.path_params / 1e6:7.2f} M params  "
            f"(model {self.total_params / 1e6:.2f} M, branch-owned {self.owned_params / 1e6:.2f} M)"
        )


def summary(model: nn.Module, resolution: int | None = None) -> ModelSummary:
    """Count MACs and parameters of ``model`` on one (1, 3, r, r) input; r defaults to ``model.input_size``."""
    resolution = int(getattr(model, "input_size", 112) if resolution is None else resolution)
    macs = 0
    seen: dict[int, int] = {}

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            macs += output.numel() * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, nn.Linear):
            macs += output.numel() * module.in_features
        for p in module.parameters(recurse=False):
            seen[id(p)] = p.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    was_training = model.training
    try:
        model.eval()
        x = torch.zeros(1, 3, resolution, resolution, device=next(model.parameters()).device)
        with torch.no_grad():
            if hasattr(model, "branches") and hasattr(model, "trunk") and resolution != model.trunk.input_size:
                model(x, resolution=resolution)
            else:
                model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    owned = 0
    branches = getattr(model, "branches", None)
    if isinstance(branches, nn.ModuleDict) and str(resolution) in branches:
        owned = sum(p.numel() for p in branches[str(resolution)].parameters())
    return ModelSummary(
        resolution=resolution,
        macs=int(macs),
        path_params=sum(seen.values()),
        total_params=sum(p.numel() for p in model.parameters()),
        owned_params=owned,
    )
