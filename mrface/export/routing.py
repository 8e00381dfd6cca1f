"""Routing faces of mixed sizes to resolution paths, exactly as ``MultiResolutionFaceModel`` does.

Shared by the onnxruntime runner and the TensorRT embedder so every runtime groups, resizes and
orders faces the same way: size indicator of the raw (w, h) -> branch by strategy
(:func:`mrface.models.choose_branches`); each face is converted to float in the model's colour
order and normalisation, then resized to the branch side (bilinear, ``align_corners=False``,
optional antialias); faces are grouped per branch and results scattered back in input order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mrface.models.branch_select import choose_branches


@dataclass(frozen=True)
class RouteGroup:
    """Faces sent to one path: ``indices`` into the input list and their batch (n, 3, r, r) float32."""

    resolution: int
    indices: list[int]
    batch: torch.Tensor


def resize_face(face: torch.Tensor, resolution: int, antialias: bool) -> torch.Tensor:
    """(3, h, w) -> (3, r, r), bilinear ``align_corners=False`` (no-op when already r x r)."""
    if face.shape[1:] == (resolution, resolution):
        return face
    return F.interpolate(
        face[None], size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=antialias
    )[0]


def route_faces(
    faces: Sequence[torch.Tensor],
    resolutions: Sequence[int],
    *,
    indicator: str = "max",
    strategy: str = "ceil",
    antialias: bool = False,
) -> list[RouteGroup]:
    """Group (3, h, w) faces by branch (ascending resolution), each resized into one batch."""
    sizes = [(f.shape[2], f.shape[1]) for f in faces]
    branches = choose_branches(sizes, resolutions, indicator, strategy)
    groups = []
    for r in sorted(set(branches)):
        idx = [i for i, b in enumerate(branches) if b == r]
        groups.append(RouteGroup(r, idx, torch.stack([resize_face(faces[i], r, antialias) for i in idx])))
    return groups


def split_batches(n: int, max_batch: int) -> list[slice]:
    """Slices covering range(n) in chunks of at most ``max_batch`` (engine profiles cap the batch)."""
    if max_batch < 1:
        raise ValueError(f"max_batch={max_batch}: expected >= 1")
    return [slice(i, min(i + max_batch, n)) for i in range(0, n, max_batch)]
