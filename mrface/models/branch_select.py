"""Routing faces of any size through a multi-resolution model: branch choice, resize, run, scatter back.

This module is the one routing every entry point uses (:class:`~mrface.models.MultiResolutionFaceModel`,
the ONNX and TensorRT runners of :mod:`mrface.export`, evaluation's extraction): :func:`route_and_run`
picks a branch per face from its raw (w, h), groups the faces by branch, resizes each face to its
branch side with one named resizer, runs each group through that branch's callable and scatters the
results back in input order; :func:`run_by_branch` does the same for branches chosen by the caller.

Branch choice (REFERENCE.md §2).

``indicator`` turns a probe's raw (w, h) into one size: ``max``, ``avg`` ((w + h) // 2, an integer, as
BTNet's evaluation scripts), ``mean`` ((w + h) / 2, the exact midpoint: an option) or ``min``.
``strategy`` maps that size to an available branch resolution:

* ``ceil`` (default): the smallest branch >= size (the largest branch when none is).
* ``near``: the nearest branch, ties going to the smaller one.
* ``floor``: the largest branch <= size (the smallest branch when none is).

With branches {112, 28, 14, 7}: ceil ≥29→112, 15–28→28, 8–14→14, ≤7→7; near ≥71→112, 22–70→28,
11–21→14, ≤10→7; floor ≥112→112, 28–111→28, 14–27→14, ≤13→7.

Resizer (``resizer``), the same for every entry point; default ``"bilinear"``:

* ``bilinear`` (default): bilinear with half-pixel centres (``align_corners=False``) and no
  antialiasing, on the float face in the model's normalisation (bilinear weights sum to one, so this
  equals resizing the pixels and normalising after, without rounding to uint8). Chosen because it is
  what the branches are trained on: BTNet's ``train_multi_reso_distill.py`` shrinks the 112 px batch
  for the student with torchvision ``transforms.Resize`` on tensors (plain bilinear, no antialias),
  mrface's ``distill.filters: [bilinear]``; and it is the filter of BTNet's IJB-C evaluation
  (``cv2.resize``, INTER_LINEAR) up to cv2's uint8 rounding. Enlarging — the usual case under
  ``ceil`` — is the same with or without antialiasing, so the trunk's "resize to r and back up
  (antialiased bilinear)" training also sees this filter on the way up. The C++ edge runner resizes the
  same way (``tests/export/test_export_edge_cpp.py``).
* ``bilinear_aa``: the same with antialiasing (PIL BILINEAR-like when shrinking): an option.
* ``pil_bicubic``: PIL ``Image.resize(..., BICUBIC)`` on the uint8 crop, then normalisation: BTNet's
  ``eval_survface_1n_multi_reso.py``.
* ``cv2_linear``: ``cv2.resize`` INTER_LINEAR on the uint8 crop: BTNet's ``eval_ijbc_*_multi_reso.py``.
* ``cv2_area_linear``: cv2 INTER_AREA when shrinking, INTER_LINEAR when enlarging, on the uint8 crop:
  the fixed-size resizer of :func:`mrface.models.metadata.preprocess`.

The uint8 resizers need uint8 crops (they round to uint8 as the public scripts do); evaluation
protocols that reproduce a public script name its resizer explicitly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from mrface.models.metadata import COLOR_ORDERS, ModelMetadata

INDICATORS = ("max", "avg", "mean", "min")
STRATEGIES = ("ceil", "near", "floor")
FLOAT_RESIZERS = ("bilinear", "bilinear_aa")
UINT8_RESIZERS = ("pil_bicubic", "cv2_linear", "cv2_area_linear")
RESIZERS = FLOAT_RESIZERS + UINT8_RESIZERS
DEFAULT_RESIZER = "bilinear"

Out = TypeVar("Out", torch.Tensor, tuple[torch.Tensor, ...])
Face = np.ndarray | torch.Tensor


def size_indicator(width: float, height: float, indicator: str = "max") -> float:
    """One size for a (width, height) probe by ``indicator`` (max/avg/mean/min)."""
    if indicator == "max":
        return float(max(width, height))
    if indicator == "avg":
        return float((int(width) + int(height)) // 2)
    if indicator == "mean":
        return (width + height) / 2.0
    if indicator == "min":
        return float(min(width, height))
    raise ValueError(f"indicator={indicator!r}: expected one of {INDICATORS}")


def choose_resolution(size: float, resolutions: Iterable[int], strategy: str = "ceil") -> int:
    """Branch resolution for an indicator ``size`` by ``strategy`` (ceil/near/floor), see module docstring."""
    res = sorted({int(r) for r in resolutions})
    if not res:
        raise ValueError("resolutions: expected at least one branch resolution")
    if strategy == "ceil":
        return next((r for r in res if r >= size), res[-1])
    if strategy == "floor":
        return next((r for r in reversed(res) if r <= size), res[0])
    if strategy == "near":
        return min(res, key=lambda r: (abs(size - r), r))
    raise ValueError(f"strategy={strategy!r}: expected one of {STRATEGIES}")


def choose_branches(
    sizes: Sequence[tuple[float, float]],
    resolutions: Iterable[int],
    indicator: str = "max",
    strategy: str = "ceil",
) -> list[int]:
    """Branch resolution per (width, height) in ``sizes``."""
    res = list(resolutions)
    return [choose_resolution(size_indicator(w, h, indicator), res, strategy) for w, h in sizes]


def check_route_options(
    indicator: str = "max", strategy: str = "ceil", color_order: str = "RGB", resizer: str = DEFAULT_RESIZER
) -> None:
    """Raise ``ValueError`` naming the bad branch-choice, colour or resizer option."""
    if indicator not in INDICATORS:
        raise ValueError(f"indicator={indicator!r}: expected one of {INDICATORS}")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r}: expected one of {STRATEGIES}")
    if color_order not in COLOR_ORDERS:
        raise ValueError(f"color_order={color_order!r}: expected one of {COLOR_ORDERS}")
    if resizer not in RESIZERS:
        raise ValueError(f"resizer={resizer!r}: expected one of {RESIZERS}")


def face_list(images: Any) -> list[Face]:
    """Faces as a list: HxWx3 uint8 arrays (a list or an NxHxWx3 array) or (3, h, w) float tensors
    (a list or an (N, 3, H, W) float tensor, already in the model's colour order and normalisation)."""
    if isinstance(images, torch.Tensor) and images.is_floating_point():
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images: expected a float (N, 3, H, W) tensor, got shape {tuple(images.shape)}")
        return list(images)
    if isinstance(images, np.ndarray) and images.ndim == 4:
        images = list(images)
    if not isinstance(images, (list, tuple)) or not images:
        raise TypeError(
            "images: expected a non-empty list of HxWx3 uint8 arrays, an NxHxWx3 uint8 array "
            "or a float (N, 3, H, W) tensor"
        )
    out: list[Face] = []
    for i, im in enumerate(images):
        if isinstance(im, torch.Tensor) and im.is_floating_point():
            if im.dim() != 3 or im.shape[0] != 3:
                raise ValueError(f"images[{i}]: expected a float (3, h, w) tensor, got shape {tuple(im.shape)}")
            out.append(im)
            continue
        im = np.asarray(im)
        if im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3:
            raise ValueError(f"images[{i}]: expected an HxWx3 uint8 array, got shape {im.shape} dtype {im.dtype}")
        out.append(im)
    return out


def face_size(face: Face) -> tuple[int, int]:
    """(width, height) of an HxWx3 array or a (3, h, w) tensor."""
    if isinstance(face, torch.Tensor):
        return int(face.shape[2]), int(face.shape[1])
    return int(face.shape[1]), int(face.shape[0])


def _resize_uint8(im: np.ndarray, side: int, resizer: str) -> np.ndarray:
    im = np.ascontiguousarray(im)
    if resizer == "pil_bicubic":
        return np.array(Image.fromarray(im).resize((side, side), Image.BICUBIC))
    if resizer == "cv2_linear":
        return cv2.resize(im, (side, side), interpolation=cv2.INTER_LINEAR)
    shrink = im.shape[0] * im.shape[1] > side * side
    return cv2.resize(im, (side, side), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _normalise(im: np.ndarray, metadata: ModelMetadata, color_order: str) -> torch.Tensor:
    if color_order != metadata.color_order:
        im = im[:, :, ::-1]
    t = torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(metadata.mean).view(3, 1, 1)
    std = torch.tensor(metadata.std).view(3, 1, 1)
    return (t - mean) / std


def prepare_face(
    face: Face,
    side: int,
    resizer: str = DEFAULT_RESIZER,
    metadata: ModelMetadata | None = None,
    color_order: str = "RGB",
) -> torch.Tensor:
    """One face -> (3, side, side) float in the model's colour order and normalisation (module docstring).

    ``face``: an HxWx3 uint8 array in ``color_order`` (needs ``metadata``) or a (3, h, w) float tensor
    already normalised (float faces take the float resizers only). A face already side x side is not resized.
    """
    if resizer not in RESIZERS:
        raise ValueError(f"resizer={resizer!r}: expected one of {RESIZERS}")
    side = int(side)
    if isinstance(face, np.ndarray):
        if metadata is None:
            raise ValueError("uint8 faces need the model metadata (colour order, mean, std) to be normalised")
        if resizer in UINT8_RESIZERS and face.shape[:2] != (side, side):
            face = _resize_uint8(face, side, resizer)
        face = _normalise(face, metadata, color_order)
    elif resizer in UINT8_RESIZERS:
        raise ValueError(f"resizer={resizer!r} resizes uint8 crops; got an already normalised float face")
    if tuple(face.shape[1:]) == (side, side):
        return face
    return F.interpolate(
        face[None], size=(side, side), mode="bilinear", align_corners=False, antialias=resizer == "bilinear_aa"
    )[0]


def _scatter(out: Any, index: torch.Tensor, value: Any, n: int) -> Any:
    """Write ``value`` (a tensor or tuple of tensors) into rows ``index`` of ``out`` (allocated on first use)."""
    if isinstance(value, tuple):
        return tuple(_scatter(o, index, v, n) for o, v in zip(out or (None,) * len(value), value, strict=True))
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"a branch runner must return a tensor or a tuple of tensors, got {type(value).__name__}")
    if out is None:
        out = value.new_empty((n, *value.shape[1:]))
    out[index.to(out.device)] = value.to(out)
    return out


def run_by_branch(
    faces: Sequence[Face],
    branches: Sequence[int],
    runners: Mapping[int, Callable[[torch.Tensor], Out]],
    *,
    resizer: str = DEFAULT_RESIZER,
    metadata: ModelMetadata | None = None,
    color_order: str = "RGB",
) -> Out:
    """Group ``faces`` by their ``branches`` (one side per face), resize each (:func:`prepare_face`), run
    each group as one (n, 3, r, r) float batch through ``runners[r]`` and scatter the results back.

    A runner returns a tensor (n, ...) or a tuple of them; the result has the same structure with N
    rows in input order, on the device and dtype of the first group's result.
    """
    if len(faces) != len(branches):
        raise ValueError(f"{len(faces)} faces but {len(branches)} branches: expected one branch per face")
    if not faces:
        raise ValueError("faces: expected at least one face")
    missing = sorted({int(b) for b in branches} - {int(r) for r in runners})
    if missing:
        raise ValueError(f"branches {missing}: no runner (runners for {sorted(runners)})")
    out: Any = None
    for r in sorted({int(b) for b in branches}):
        idx = [i for i, b in enumerate(branches) if int(b) == r]
        batch = torch.stack([prepare_face(faces[i], r, resizer, metadata, color_order) for i in idx])
        out = _scatter(out, torch.tensor(idx), runners[r](batch), len(faces))
    return out


class Routed(NamedTuple):
    """outputs: what the runners returned, N rows in input order; branches: the side each face took."""

    outputs: Any
    branches: list[int]


def route_and_run(
    faces: Any,
    runners: Mapping[int, Callable[[torch.Tensor], Out]],
    *,
    indicator: str = "max",
    strategy: str = "ceil",
    resizer: str = DEFAULT_RESIZER,
    metadata: ModelMetadata | None = None,
    color_order: str = "RGB",
) -> Routed:
    """Faces of any size (see :func:`face_list`) -> branch per face from its raw (w, h) among the sides of
    ``runners`` (:func:`choose_branches`), then :func:`run_by_branch`."""
    check_route_options(indicator, strategy, color_order, resizer)
    faces = face_list(faces)
    branches = choose_branches([face_size(f) for f in faces], list(runners), indicator, strategy)
    outputs = run_by_branch(faces, branches, runners, resizer=resizer, metadata=metadata, color_order=color_order)
    return Routed(outputs, branches)
