"""INT8 calibration data: faces from a folder or SynthFace, batched in the graph's input format.

Per path (:func:`path_calibration_faces`): crops of any size from ``--calib DIR`` are routed like
the runners route faces (size indicator -> branch); a path gets the crops routed to it, or, when
fewer than ``min_routed`` are, every crop resized to its input (bigger crops shrunk with cv2
INTER_AREA, which is how low-resolution faces arise). Each path then keeps at most ``count`` of
them, chosen by a seeded permutation, so calibration is reproducible for a seed. SynthFace
calibration faces (seed 1 by default, never the parity faces of seed 0) go to every path.

:class:`CalibrationBatches` yields arrays shaped ``spec.input_shape(batch)`` prepared exactly as
the parity check prepares graph inputs (:func:`mrface.export.parity.graph_inputs`), so the
calibrator sees what the deployed graph will see. Full batches only (TensorRT's calibrator
interface has a fixed batch size); the remainder is dropped and reported by ``dropped``.

These faces serve both quantisers: the ONNX Q/DQ graphs (:mod:`mrface.export.quantize`) and
TensorRT's INT8 calibrators (:mod:`mrface.export.tensorrt.calibration`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from mrface.export.errors import ExportError
from mrface.export.parity import graph_inputs
from mrface.export.spec import GraphSpec
from mrface.models.metadata import ModelMetadata

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
FACE_SIZE = 112


def load_face_folder(folder: str | Path, limit: int | None = None, size: int = FACE_SIZE) -> np.ndarray:
    """Image files under ``folder`` (recursive, sorted) -> RGB uint8 (N, size, size, 3).

    Files are read with OpenCV and resized to ``size`` (INTER_AREA shrinking, INTER_LINEAR
    enlarging); an unreadable file raises naming it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ExportError(f"calibration folder {folder}: not a directory")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if limit is not None:
        files = files[:limit]
    if not files:
        raise ExportError(f"calibration folder {folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    out = np.empty((len(files), size, size, 3), dtype=np.uint8)
    for i, path in enumerate(files):
        im = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if im is None:
            raise ExportError(f"calibration image {path}: unreadable (expected an image OpenCV can decode)")
        if im.shape[:2] != (size, size):
            shrink = im.shape[0] * im.shape[1] > size * size
            im = cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        out[i] = im[:, :, ::-1]
    return out


def load_face_crops(folder: str | Path) -> tuple[list[np.ndarray], list[Path]]:
    """Image files under ``folder`` (recursive, sorted) at their own sizes -> (RGB uint8 HxWx3 list, files)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ExportError(f"calibration folder {folder}: not a directory")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ExportError(f"calibration folder {folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    crops = []
    for path in files:
        im = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if im is None:
            raise ExportError(f"calibration image {path}: unreadable (expected an image OpenCV can decode)")
        crops.append(np.ascontiguousarray(im[:, :, ::-1]))
    return crops, files


def resize_square(im: np.ndarray, size: int) -> np.ndarray:
    """HxWx3 uint8 -> size x size (cv2 INTER_AREA shrinking, INTER_LINEAR enlarging)."""
    if im.shape[:2] == (size, size):
        return im
    shrink = im.shape[0] * im.shape[1] > size * size
    return cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def path_calibration_faces(
    crops: list[np.ndarray],
    resolutions: tuple[int, ...],
    resolution: int,
    input_size: int,
    *,
    count: int,
    seed: int = 0,
    min_routed: int = 32,
    indicator: str = "max",
    strategy: str = "ceil",
) -> tuple[np.ndarray, dict[str, object]]:
    """Calibration faces for one path (see module docstring) -> (RGB uint8 (n, S, S, 3), provenance)."""
    from mrface.models.branch_select import choose_branches

    if count < 1:
        raise ExportError(f"calibration size {count}: expected >= 1")
    branches = choose_branches([(im.shape[1], im.shape[0]) for im in crops], resolutions, indicator, strategy)
    routed = [i for i, b in enumerate(branches) if b == resolution]
    chosen, source = (routed, "routed") if len(routed) >= min_routed else (list(range(len(crops))), "all resized")
    order = np.random.default_rng(seed).permutation(len(chosen))[:count]
    faces = np.stack([resize_square(crops[chosen[k]], input_size) for k in order])
    return faces, {"source": source, "routed": len(routed), "used": len(order), "seed": seed}


def synthface_calibration(count: int, seed: int = 1) -> np.ndarray:
    """``count`` SynthFace faces spread over identities and images (RGB uint8 (count, 112, 112, 3)).

    Seed 1 by default, so calibration never uses the parity images (seed 0).
    """
    from mrface.data.synthface import SynthFace

    ids = np.arange(count) // 4
    return SynthFace(seed).render(ids, np.arange(count) % 4)


class CalibrationBatches:
    """Fixed-size batches of graph inputs (see module docstring). Iterable more than once."""

    def __init__(self, images: np.ndarray, spec: GraphSpec, metadata: ModelMetadata, batch_size: int) -> None:
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
            raise ExportError(f"calibration images: expected RGB uint8 (N, H, W, 3), got {images.shape}")
        if batch_size < 1 or len(images) < batch_size:
            raise ExportError(f"calibration: {len(images)} images cannot fill one batch of {batch_size}")
        self.spec, self.metadata, self.batch_size = spec, metadata, int(batch_size)
        self.num_batches = len(images) // self.batch_size
        self.dropped = len(images) - self.num_batches * self.batch_size
        self._images = images[: self.num_batches * self.batch_size]

    @property
    def shape(self) -> tuple[int, ...]:
        return self.spec.input_shape(self.batch_size)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if self.spec.input_format == "uint8_nhwc" else np.float32)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(self.num_batches):
            chunk = self._images[i * self.batch_size : (i + 1) * self.batch_size]
            feed, _ = graph_inputs(chunk, self.spec, self.metadata)
            yield np.ascontiguousarray(feed, dtype=self.dtype)
