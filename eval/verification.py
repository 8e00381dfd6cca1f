"""Verification ``.bin`` protocol at any resolution pair, and the BTNet cross-resolution matrix.

A pair set is evaluated at (r1, r2): image 1 of each pair is degraded 112 -> r1, image 2 -> r2
(``mrface.ops.degrade_resolution``; default filter ``bilinear`` = cv2 INTER_LINEAR without
antialias, what BTNet evaluates with, REFERENCE.md §7), each goes through the model's branch for
its resolution, or — ``upsample=True`` / no such branch — is resized back to 112 and goes through
the trunk (the baseline that shows the branch gain). Embeddings are flip-fused, L2-normalised and
scored with :func:`mrface.eval.metrics.verification_kfold` (10 folds, squared L2 thresholds).

The cross-resolution matrix (:func:`crossres_matrix`) extracts every image once per resolution
and forms the rows ``112&r`` for each r, ``r&r`` and ``112&112`` from those features.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from mrface.data.bins import VerificationPairs
from mrface.eval.extract import Embeddings, extract_embeddings
from mrface.eval.metrics import VerificationResult, squared_l2, verification_kfold
from mrface.ops import degrade_resolution


def degrade_images(images: np.ndarray, size: int, filter: str = "bilinear", up: str | None = None) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, size, size, 3) uint8 (or back at (H, W) with ``up``)."""
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"images: expected (N, H, W, 3) uint8, got {images.dtype} {images.shape}")
    if size == images.shape[1] and size == images.shape[2]:
        return images
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
    out = degrade_resolution(x, [int(size)], filter=filter, up=up)
    y = (out.up if up else out.down)[0]
    return np.ascontiguousarray(y.permute(0, 2, 3, 1).numpy())


@dataclass
class ExtractOptions:
    """Extraction settings shared by every evaluation (recorded in the report)."""

    flip: str = "pre_norm_vector_add"
    filter: str = "bilinear"
    batch_size: int = 128
    amp: str | None = None
    device: str | None = None
    progress: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def embed_at(
    model: nn.Module, images: np.ndarray, resolution: int, upsample: bool, options: ExtractOptions, color: str = "RGB"
) -> Embeddings:
    """Embeddings of (N, 112, 112, 3) images degraded to ``resolution`` (branch, or trunk when upsampled)."""
    input_size = int(getattr(model, "input_size", 112))
    low = degrade_images(images, resolution, options.filter, up="bilinear" if upsample else None)
    routed_res = input_size if upsample else resolution
    return extract_embeddings(
        model,
        low,
        color_order=color,
        flip=options.flip,
        resolution=routed_res,
        upsample=False,
        batch_size=options.batch_size,
        amp=options.amp,
        device=options.device,
        progress=options.progress,
        description=f"extract@{resolution}{'↑' if upsample else ''}",
    )


def score_pairs(
    features1: np.ndarray, features2: np.ndarray, issame: np.ndarray, num_folds: int = 10, far_target: float = 1e-3
) -> VerificationResult:
    """Pair features (P, D) each -> 10-fold result on the squared L2 of the unit vectors."""
    return verification_kfold(squared_l2(features1, features2), issame, num_folds, far_target)


def evaluate_pairs(
    model: nn.Module,
    pairs: VerificationPairs,
    r1: int = 112,
    r2: int = 112,
    *,
    upsample: bool = False,
    options: ExtractOptions | None = None,
) -> VerificationResult:
    """One verification set at resolution pair (r1, r2); see module docstring."""
    options = options or ExtractOptions()
    first, second = pairs.images[0::2], pairs.images[1::2]
    f1 = embed_at(model, first, r1, upsample, options, pairs.color).features
    f2 = embed_at(model, second, r2, upsample, options, pairs.color).features
    return score_pairs(f1, f2, pairs.issame)


def crossres_rows(resolutions: Sequence[int], high: int = 112) -> list[tuple[int, int]]:
    """BTNet table rows: (112, r) for r ascending, then (r, r), then (112, 112)."""
    low = sorted({int(r) for r in resolutions if int(r) != high})
    return [(high, r) for r in low] + [(r, r) for r in low] + [(high, high)]


def crossres_matrix(
    model: nn.Module,
    sets: Mapping[str, VerificationPairs],
    resolutions: Sequence[int] = (112, 28, 14, 7),
    *,
    baseline: bool = False,
    options: ExtractOptions | None = None,
) -> list[dict[str, Any]]:
    """Accuracy table over resolution pairs for each set (and the upsampled-trunk baseline when asked).

    Returns rows ``{"pair": "112&7", "mode": "branch"|"upsampled", "results": {set: summary},
    "average": mean accuracy over sets}`` (fractions).
    """
    options = options or ExtractOptions()
    high = int(getattr(model, "input_size", 112))
    rows_pairs = crossres_rows(resolutions, high)
    needed = sorted({r for pair in rows_pairs for r in pair})
    modes = [False, True] if baseline else [False]
    rows = []
    for upsample in modes:
        feats: dict[tuple[str, int], np.ndarray] = {}
        for name, pairs in sets.items():
            for r in needed:
                feats[name, r] = embed_at(model, pairs.images, r, upsample and r != high, options, pairs.color).features
        for r1, r2 in rows_pairs:
            results = {}
            for name, pairs in sets.items():
                res = score_pairs(feats[name, r1][0::2], feats[name, r2][1::2], pairs.issame)
                results[name] = res.summary()
            rows.append(
                {
                    "pair": f"{r1}&{r2}",
                    "r1": r1,
                    "r2": r2,
                    "mode": "upsampled" if upsample else "branch",
                    "results": results,
                    "average": float(np.mean([v["accuracy"] for v in results.values()])),
                }
            )
    return rows
