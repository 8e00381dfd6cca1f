"""QMUL-SurvFace open-set 1:N (REFERENCE.md §8–10): TPIR at rank R for target FPIRs, and AUC.

Gallery = ``gallery`` images (1-based subject ids from the .mat list); probes = ``mated_probe``
(their subject is enrolled) ∪ ``unmated_probe`` (not enrolled). Scores are cosines of the
L2-normalised features. The metric is :func:`mrface.eval.metrics.open_set_identification` with the
named ``variant`` (``nist``, or ``btnet_survface`` for BTNet's published SurvFace numbers: TPIR20 at
FPIR 0.3/0.2/0.1/0.01 and AUC); ``gallery`` = ``entries`` keeps every gallery image,
``prototypes`` pools them into one unit mean per subject.

AUC is the area under the TPIR-vs-FPIR curve the variant produces (``nist``: the exact step curve over
FPIR ∈ [0, 1]; ``btnet_survface``: trapezoids over its 1000-threshold grid); reported in [0, 1].
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from mrface.data.protocols.survface import load_survface
from mrface.eval.crops import CropRouting, embed_files
from mrface.eval.identification import open_set_search
from mrface.eval.metrics import OpenSetResult
from mrface.eval.verification import ExtractOptions

SURVFACE_FPIRS = (0.3, 0.2, 0.1, 0.01)


@dataclass
class SurvFaceResult:
    """The open-set result plus counts and settings."""

    open_set: OpenSetResult
    num_gallery: int
    num_mated: int
    num_unmated: int
    settings: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {**self.open_set.summary(), "thresholds": {str(k): v for k, v in self.open_set.thresholds.items()},
                "num_gallery": self.num_gallery, "num_mated": self.num_mated,
                "num_unmated": self.num_unmated}  # fmt: skip


def score_survface(
    gallery: np.ndarray, gallery_labels: np.ndarray, mated: np.ndarray, mated_labels: np.ndarray,
    unmated: np.ndarray, *, fpirs: Sequence[float] = SURVFACE_FPIRS, rank: int = 20, variant: str = "nist",
    gallery_mode: str = "entries",
) -> OpenSetResult:  # fmt: skip
    """Features (G, D), (M, D), (U, D), labels (G,), (M,) -> open-set result (see module docstring).

    Raises ``ValueError`` when a mated probe's subject is not in the gallery (the lists disagree).
    """
    gallery_labels = np.asarray(gallery_labels, np.int64)
    mated_labels = np.asarray(mated_labels, np.int64)
    stray = np.setdiff1d(mated_labels, gallery_labels)
    if stray.size:
        raise ValueError(f"SurvFace: {stray.size} mated-probe subject ids are not in the gallery "
                         f"(e.g. {stray[:5].tolist()})")  # fmt: skip
    # unmated probes get ids below every gallery id, so none can match
    unmated_labels = np.full(len(unmated), min(0, int(gallery_labels.min())) - 1, np.int64)
    probes = np.concatenate([np.asarray(mated), np.asarray(unmated)])
    labels = np.concatenate([mated_labels, unmated_labels])
    return open_set_search(probes, labels, gallery, gallery_labels, fpirs=fpirs, rank=rank, variant=variant,
                           gallery=gallery_mode)  # fmt: skip


def evaluate_survface(
    model: nn.Module,
    root: str | os.PathLike,
    *,
    options: ExtractOptions | None = None,
    routing: CropRouting | None = None,
    fpirs: Sequence[float] = SURVFACE_FPIRS,
    rank: int = 20,
    variant: str = "nist",
    gallery_mode: str = "entries",
) -> SurvFaceResult:
    """Load ``root`` (missing lists/images listed), embed every crop, and score."""
    options, routing = options or ExtractOptions(), routing or CropRouting()
    sf = load_survface(root)
    feats = {name: embed_files(model, [p for p, _ in items], options, routing, f"survface {name}").features
             for name, items in (("gallery", sf.gallery), ("mated", sf.mated_probe),
                                 ("unmated", sf.unmated_probe))}  # fmt: skip
    res = score_survface(feats["gallery"], [i for _, i in sf.gallery], feats["mated"],
                         [i for _, i in sf.mated_probe], feats["unmated"], fpirs=fpirs, rank=rank, variant=variant,
                         gallery_mode=gallery_mode)  # fmt: skip
    settings = {"root": str(root), "fpirs": list(fpirs), "rank": rank, "variant": variant, "gallery": gallery_mode,
                "routing": routing.as_dict(), "extraction": options.as_dict()}  # fmt: skip
    return SurvFaceResult(res, len(sf.gallery), len(sf.mated_probe), len(sf.unmated_probe), settings)
