"""``MultiResolutionFaceModel``: faces of any size in, one embedding space out.

Wraps a :class:`~mrface.models.btnet.BTNet`. For each face it computes the size indicator of the
raw (w, h), picks a branch by strategy (:mod:`mrface.models.branch_select`), resizes the face to
that branch's resolution (bilinear, ``align_corners=False``, optional antialias), groups faces by
branch, runs each group as one batch and returns embeddings in input order plus the branch used.

Inputs: a list of HxWx3 uint8 arrays (sizes may differ; channel order ``color_order``), an
NxHxWx3 uint8 array, or an already preprocessed float tensor (N, 3, H, W) in the model's colour
order and normalisation.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mrface.models.branch_select import INDICATORS, STRATEGIES, choose_branches
from mrface.models.btnet import BTNet
from mrface.models.metadata import COLOR_ORDERS, ModelMetadata


def check_route_options(indicator: str, strategy: str, color_order: str) -> None:
    """Raise ``ValueError`` naming the bad branch-choice or colour option."""
    if indicator not in INDICATORS:
        raise ValueError(f"indicator={indicator!r}: expected one of {INDICATORS}")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r}: expected one of {STRATEGIES}")
    if color_order not in COLOR_ORDERS:
        raise ValueError(f"color_order={color_order!r}: expected one of {COLOR_ORDERS}")


def normalised_faces(images: Any, metadata: ModelMetadata, color_order: str) -> list[torch.Tensor]:
    """uint8 HxWx3 faces (list or NxHxWx3 array) in ``color_order`` -> list of (3, h, w) float tensors
    in the model's colour order and normalisation (``metadata``)."""
    if isinstance(images, np.ndarray) and images.ndim == 4:
        images = list(images)
    if not isinstance(images, (list, tuple)) or not images:
        raise TypeError(
            "images: expected a non-empty list of HxWx3 uint8 arrays, an NxHxWx3 uint8 array "
            "or a float (N, 3, H, W) tensor"
        )
    mean = torch.tensor(metadata.mean).view(3, 1, 1)
    std = torch.tensor(metadata.std).view(3, 1, 1)
    faces = []
    for i, im in enumerate(images):
        im = np.asarray(im)
        if im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3:
            raise ValueError(f"images[{i}]: expected an HxWx3 uint8 array, got shape {im.shape} dtype {im.dtype}")
        if color_order != metadata.color_order:
            im = im[:, :, ::-1]
        t = torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1).float().div_(255.0)
        faces.append((t - mean) / std)
    return faces


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
        antialias: bool = False,
        color_order: str = "RGB",
    ):
        super().__init__()
        check_route_options(indicator, strategy, color_order)
        self.model = model
        self.indicator, self.strategy = indicator, strategy
        self.antialias, self.color_order = antialias, color_order

    def _faces(self, images: Any) -> list[torch.Tensor]:
        """Input -> list of (3, h, w) float tensors in the model's colour order and normalisation."""
        if isinstance(images, torch.Tensor) and images.is_floating_point():
            if images.dim() != 4 or images.shape[1] != 3:
                raise ValueError(f"images: expected a float (N, 3, H, W) tensor, got shape {tuple(images.shape)}")
            return list(images)
        return normalised_faces(images, self.model.metadata or self.model.default_metadata(), self.color_order)

    def forward(self, images: Any) -> MultiResolutionOutput:
        faces = self._faces(images)
        sizes = [(f.shape[2], f.shape[1]) for f in faces]
        branches = choose_branches(sizes, self.model.resolutions, self.indicator, self.strategy)
        device = next(self.model.parameters()).device
        out: torch.Tensor | None = None
        for r in sorted(set(branches)):
            idx = [i for i, b in enumerate(branches) if b == r]
            batch = torch.stack([self._resize(faces[i].to(device), r) for i in idx])
            emb = self.model(batch, resolution=r)
            if out is None:
                out = emb.new_empty(len(faces), emb.shape[1])
            out[torch.tensor(idx, device=device)] = emb
        assert out is not None
        return MultiResolutionOutput(out, branches)

    def _resize(self, face: torch.Tensor, r: int) -> torch.Tensor:
        if face.shape[1:] == (r, r):
            return face
        return F.interpolate(face[None], size=(r, r), mode="bilinear", align_corners=False, antialias=self.antialias)[0]
