"""Numerical parity of an exported graph against the PyTorch model on real face images.

For each batch size b the first b images are fed to both sides: the graph through onnxruntime
(CPU), the model through PyTorch's own path (``model.preprocess`` then ``model(x, resolution=r)``;
degradation inside the graph is matched by the same integer box filter). Reported per batch size:
max |Δ| of the embedding (and of the norm output), min and mean cosine between the embeddings.
The check fails (``ParityError``, naming the path and the figure) when the criterion's cosine is
below the threshold, an output is not finite, or the norm output is off by more than
``NORM_RTOL`` of the largest norm. Thresholds by graph precision (:data:`PRECISION_THRESHOLDS`):
float32 and FP16 every cosine >= 0.9999 (``min``); INT8 mean cosine >= 0.995 (``mean``; the
minimum is reported).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from mrface.export.errors import ExportError, ParityError
from mrface.export.spec import GraphSpec
from mrface.models.base import FaceModel
from mrface.models.btnet import BTNet
from mrface.models.metadata import ModelMetadata, preprocess

DEFAULT_BATCH_SIZES = (1, 7, 64)
FP32_MIN_COSINE = 0.9999
#: precision -> (threshold, criterion): ``min`` = every face, ``mean`` = the mean over the batch.
PRECISION_THRESHOLDS = {"fp32": (FP32_MIN_COSINE, "min"), "fp16": (0.9999, "min"), "int8": (0.995, "mean")}
NORM_RTOL = 1e-3  # the norm output must match ||embedding|| to 0.1% of the largest norm


@dataclass(frozen=True)
class BatchParity:
    """Agreement at one batch size: max |Δ| (embedding, norm), max |Δ| / max |reference|, min/mean cosine."""

    batch: int
    max_abs: float
    min_cosine: float
    max_abs_norm: float | None = None
    max_rel: float = 0.0
    mean_cosine: float = 1.0


@dataclass(frozen=True)
class ParityReport:
    """Per-batch agreement of one graph; ``passed`` when the ``criterion`` cosine (``min``: every face,
    ``mean``: each batch's mean) >= ``threshold`` and all outputs are finite."""

    name: str
    threshold: float
    batches: list[BatchParity] = field(default_factory=list)
    passed: bool = False
    criterion: str = "min"

    @property
    def max_abs(self) -> float:
        return max(b.max_abs for b in self.batches)

    @property
    def max_rel(self) -> float:
        return max(b.max_rel for b in self.batches)

    @property
    def min_cosine(self) -> float:
        return min(b.min_cosine for b in self.batches)

    @property
    def mean_cosine(self) -> float:
        """The lowest per-batch mean cosine."""
        return min(b.mean_cosine for b in self.batches)

    @property
    def figure(self) -> float:
        """The cosine the threshold applies to (``min_cosine`` or ``mean_cosine``)."""
        return self.min_cosine if self.criterion == "min" else self.mean_cosine

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {
            "max_abs": self.max_abs,
            "max_rel": self.max_rel,
            "min_cosine": self.min_cosine,
            "mean_cosine": self.mean_cosine,
        }

    def summary(self) -> str:
        sizes = ",".join(str(b.batch) for b in self.batches)
        verdict = "ok" if self.passed else f"FAILED ({self.criterion} cos {self.figure:.5f} < {self.threshold})"
        return (
            f"{self.name}: batch {sizes} max|Δ| {self.max_abs:.3g} (rel {self.max_rel:.2g}) "
            f"min cos {self.min_cosine:.7f} mean cos {self.mean_cosine:.7f} {verdict}"
        )


def graph_inputs(images: np.ndarray, spec: GraphSpec, meta: ModelMetadata) -> tuple[np.ndarray, torch.Tensor]:
    """RGB uint8 (N, H, W, 3) faces -> (graph input, PyTorch model input (N, 3, r, r) float).

    The graph input follows ``spec`` (float NCHW preprocessed, or uint8 NHWC in
    ``spec.input_color_order``) at ``spec.input_size``; resizing to that size uses cv2 INTER_AREA
    (shrink) or INTER_LINEAR (enlarge), as ``mrface.models.preprocess`` does.
    """
    s = spec.input_size
    if spec.input_format == "float_nchw":
        x = preprocess(images, meta, color_order="RGB", size=s)
        feed = x.numpy()
    else:
        resized = []
        for im in images:
            if im.shape[:2] != (s, s):
                shrink = im.shape[0] * im.shape[1] > s * s
                im = cv2.resize(im, (s, s), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
            resized.append(im if spec.input_color_order == "RGB" else im[:, :, ::-1])
        feed = np.ascontiguousarray(np.stack(resized))
        x = preprocess(feed, meta, color_order=spec.input_color_order, size=s)
    if spec.degrade_factor > 1:
        x = F.avg_pool2d(x, spec.degrade_factor)
    return feed.astype(spec.input_dtype, copy=False), x


def reference_embedding(model: FaceModel, x: torch.Tensor, resolution: int) -> torch.Tensor:
    """PyTorch embedding (N, E) of preprocessed x (N, 3, r, r) through the model's own r path."""
    with torch.inference_mode():
        if isinstance(model, BTNet):
            return model(x, resolution=resolution).float()
        return model(x).float()


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    den = np.maximum(np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1), 1e-30)
    return (a64 * b64).sum(1) / den


RunGraph = Callable[[np.ndarray], list[np.ndarray]]


def compare_runtime(
    run: RunGraph,
    model: FaceModel,
    spec: GraphSpec,
    images: np.ndarray,
    *,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    min_cosine: float = FP32_MIN_COSINE,
    raise_on_failure: bool = True,
    source: str = "",
    criterion: str = "min",
) -> ParityReport:
    """Compare a runtime ``run(graph_input) -> [embedding, (norm)]`` with ``model`` on ``images``.

    ``images``: RGB uint8 (N, H, W, 3) with N >= max(batch_sizes). Raises ``ParityError``
    (carrying the report) when the check fails and ``raise_on_failure``.
    """
    if criterion not in ("min", "mean"):
        raise ExportError(f"parity criterion {criterion!r}: expected 'min' or 'mean'")
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise ExportError(f"parity images: expected RGB uint8 (N, H, W, 3), got {images.shape} {images.dtype}")
    if not batch_sizes or min(batch_sizes) < 1 or max(batch_sizes) > len(images):
        raise ExportError(f"parity batch sizes {list(batch_sizes)}: need 1 <= b <= {len(images)} (images given)")
    meta = model.metadata or model.default_metadata()
    feed_all, x_all = graph_inputs(images[: max(batch_sizes)], spec, meta)
    ref_all = reference_embedding(model, x_all, spec.resolution).numpy()
    rows, passed = [], True
    for b in batch_sizes:
        outputs = [np.asarray(o, dtype=np.float32) for o in run(np.ascontiguousarray(feed_all[:b]))]
        emb, ref = outputs[0], ref_all[:b]
        if emb.shape != ref.shape:
            raise ParityError(f"{spec.name}: batch {b} gave shape {emb.shape}, PyTorch {ref.shape}")
        ok = bool(np.isfinite(emb).all())
        cos = _cosine(emb, ref)
        max_abs_norm = None
        if "norm" in spec.outputs:
            ref_norm = np.linalg.norm(ref.astype(np.float64), axis=1, keepdims=True)
            max_abs_norm = float(np.abs(outputs[1] - ref_norm).max())
            ok = ok and bool(np.isfinite(outputs[1]).all()) and max_abs_norm <= NORM_RTOL * float(ref_norm.max())
        max_abs = float(np.abs(emb - ref).max())
        row = BatchParity(
            b,
            max_abs,
            float(cos.min()),
            max_abs_norm,
            max_abs / max(float(np.abs(ref).max()), 1e-30),
            float(cos.mean()),
        )
        rows.append(row)
        figure = row.min_cosine if criterion == "min" else row.mean_cosine
        passed = passed and ok and figure >= min_cosine  # NaN compares False: non-finite fails
    report = ParityReport(spec.name, float(min_cosine), rows, passed, criterion)
    if not passed and raise_on_failure:
        raise ParityError(
            f"parity check failed for the {spec.resolution}px path ({spec.precision}) {source or spec.name}: "
            f"{criterion} cosine to PyTorch float32 {report.figure:.5f} < {min_cosine}; {report.summary()}",
            report,
        )
    return report
