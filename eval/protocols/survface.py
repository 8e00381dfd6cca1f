"""QMUL-SurvFace open-set 1:N (REFERENCE.md §8–10): TPIR at rank R for target FPIRs, and AUC.

Gallery = ``gallery`` images (1-based subject ids from the .mat list); probes = ``mated_probe``
(their subject is enrolled) ∪ ``unmated_probe`` (not enrolled). Scores are cosines of the
L2-normalised features. The metric is :func:`mrface.eval.metrics.open_set_identification` with the
named ``variant`` (``nist``, or ``btnet_survface`` for BTNet's published SurvFace numbers: TPIR20 at
FPIR 0.3/0.2/0.1/0.01 and AUC); ``gallery`` = ``entries`` keeps every gallery image,
``prototypes`` pools them into one unit mean of unit features per subject, ``raw_prototypes``
averages the raw (un-normalised) features of each subject and then normalises, as BTNet's
``eval_survface_1n_multi_reso.py``.

``setup="btnet"`` is BTNet's whole set-up in one name: each crop resized with PIL's bicubic
``Image.resize`` (Pillow's default filter) straight to the side of the branch its (w, h) routes to
(the routing's ``resizer="pil_bicubic"``), ``raw_prototypes``, the ``btnet_survface`` variant and no flip
(``ExtractOptions(flip="none")``).

AUC is the area under the TPIR-vs-FPIR curve the variant produces (``nist``: the exact step curve over
FPIR ∈ [0, 1]; ``btnet_survface``: trapezoids over its 1000-threshold grid); reported in [0, 1].
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from torch import nn

from mrface.data.protocols.survface import load_survface
from mrface.eval.crops import CropRouting, embed_files
from mrface.eval.identification import open_set_search
from mrface.eval.metrics import OpenSetResult
from mrface.eval.verification import ExtractOptions

SURVFACE_FPIRS = (0.3, 0.2, 0.1, 0.01)
SETUPS = ("mrface", "btnet")


def raw_prototypes(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) raw features, (N,) labels -> (mean raw feature of each subject (S, D), sorted labels (S,))."""
    f = np.asarray(features, np.float64)
    subjects, inverse, counts = np.unique(np.asarray(labels, np.int64), return_inverse=True, return_counts=True)
    sums = np.zeros((subjects.size, f.shape[1]))
    np.add.at(sums, inverse, f)
    return sums / counts[:, None], subjects


@dataclass
class SurvFaceResult:
    """The open-set result plus counts and settings."""

    open_set: OpenSetResult
    num_gallery: int
    num_mated: int
    num_unmated: int
    settings: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            **self.open_set.summary(),
            "thresholds": {str(k): v for k, v in self.open_set.thresholds.items()},
            "num_gallery": self.num_gallery,
            "num_mated": self.num_mated,
            "num_unmated": self.num_unmated,
        }


def score_survface(
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    mated: np.ndarray,
    mated_labels: np.ndarray,
    unmated: np.ndarray,
    *,
    fpirs: Sequence[float] = SURVFACE_FPIRS,
    rank: int = 20,
    variant: str = "nist",
    gallery_mode: str = "entries",
) -> OpenSetResult:
    """Features (G, D), (M, D), (U, D), labels (G,), (M,) -> open-set result (see module docstring).

    Raises ``ValueError`` when a mated probe's subject is not in the gallery (the lists disagree).
    """
    gallery_labels = np.asarray(gallery_labels, np.int64)
    mated_labels = np.asarray(mated_labels, np.int64)
    if gallery_mode == "raw_prototypes":
        gallery, gallery_labels = raw_prototypes(gallery, gallery_labels)
        gallery_mode = "entries"
    stray = np.setdiff1d(mated_labels, gallery_labels)
    if stray.size:
        raise ValueError(
            f"SurvFace: {stray.size} mated-probe subject ids are not in the gallery (e.g. {stray[:5].tolist()})"
        )
    # unmated probes get ids below every gallery id, so none can match
    unmated_labels = np.full(len(unmated), min(0, int(gallery_labels.min())) - 1, np.int64)
    probes = np.concatenate([np.asarray(mated), np.asarray(unmated)])
    labels = np.concatenate([mated_labels, unmated_labels])
    return open_set_search(
        probes, labels, gallery, gallery_labels, fpirs=fpirs, rank=rank, variant=variant, gallery=gallery_mode
    )


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
    setup: str = "mrface",
) -> SurvFaceResult:
    """Load ``root`` (missing lists/images listed), embed every crop, and score.

    ``setup="btnet"`` overrides ``variant``, ``gallery_mode`` and the flip with BTNet's (module docstring)."""
    if setup not in SETUPS:
        raise ValueError(f"setup={setup!r}: expected one of {SETUPS}")
    options, routing = options or ExtractOptions(), routing or CropRouting()
    if setup == "btnet":
        options = ExtractOptions(**{**options.as_dict(), "flip": "none"})
        variant, gallery_mode = "btnet_survface", "raw_prototypes"
        routing = replace(routing, resizer="pil_bicubic")
    sf = load_survface(root)

    def embed(paths: list, name: str) -> np.ndarray:
        return embed_files(model, paths, options, routing, f"survface {name}").features

    feats = {
        name: embed([p for p, _ in items], name)
        for name, items in (("gallery", sf.gallery), ("mated", sf.mated_probe), ("unmated", sf.unmated_probe))
    }
    res = score_survface(
        feats["gallery"],
        [i for _, i in sf.gallery],
        feats["mated"],
        [i for _, i in sf.mated_probe],
        feats["unmated"],
        fpirs=fpirs,
        rank=rank,
        variant=variant,
        gallery_mode=gallery_mode,
    )
    settings = {
        "root": str(root),
        "setup": setup,
        "fpirs": list(fpirs),
        "rank": rank,
        "variant": variant,
        "gallery": gallery_mode,
        "routing": routing.as_dict(),
        "extraction": options.as_dict(),
    }
    return SurvFaceResult(res, len(sf.gallery), len(sf.mated_probe), len(sf.unmated_probe), settings)
