"""``MultiResolutionFaceModel``: faces of any size in, one embedding space out.

Wraps a :class:`~mrface.models.btnet.BTNet` and routes through :func:`mrface.models.branch_select.route_and_run`:
per face the size indicator of the raw (w, h) picks a branch by strategy, the face is resized to that
branch's side by the named ``resizer`` (default: plain bilinear, see :mod:`mrface.models.branch_select`),
faces are grouped by branch, each group runs as one batch, and embeddings come back in input order
with the branch each face used.

Inputs: a list of HxWx3 uint8 arrays (sizes may differ; channel order ``color_order``), an
NxHxWx3 uint8 array, or an already preprocessed float tensor (N, 3, H, W) in the model's colour
order and normalisation.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from mrface.models.branch_select import DEFAULT_RESIZER, check_route_options, face_list, route_and_run
from mrface.models.btnet import BTNet


class MultiResolutionOutput(NamedTuple):
    """embeddings (N, E) in input order; branches: resolution of the path each face took."""

    embeddings: torch.Tensor
    branches: list[int]


class MultiResolutionFaceModel(nn.Module):
    """Resolution-aware inference over a BTNet (see module docstring)."""

    def __init__(
        self,
        model: BTNet,
        *,
        indicator: str = "max",
        strategy: str = "ceil",
        resizer: str = DEFAULT_RESIZER,
        color_order: str = "RGB",
    ):
        super().__init__()
        check_route_options(indicator, strategy, color_order, resizer)
        self.model = model
        self.indicator, self.strategy = indicator, strategy
        self.resizer, self.color_order = resizer, color_order

    def forward(self, images: Any) -> MultiResolutionOutput:
        device = next(self.model.parameters()).device
        faces = [f.to(device) if isinstance(f, torch.Tensor) else f for f in face_list(images)]

        def runner(r: int):
            return lambda batch: self.model(batch.to(device), resolution=r)

        routed = route_and_run(
            faces,
            {r: runner(r) for r in self.model.resolutions},
            indicator=self.indicator,
            strategy=self.strategy,
            resizer=self.resizer,
            metadata=self.model.metadata or self.model.default_metadata(),
            color_order=self.color_order,
        )
        return MultiResolutionOutput(routed.outputs, routed.branches)
