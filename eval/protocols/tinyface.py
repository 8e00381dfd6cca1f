"""TinyFace closed-set identification (REFERENCE.md §8): probes searched in Gallery_Match + distractors.

Gallery = ``Gallery_Match`` (labelled by file-name prefix) ∪ ``Gallery_Distractor`` (unlabelled); every
probe's subject is in ``Gallery_Match``. Reported: CMC rank-1/5/20 (fractions) with the rank
definition named by ``level`` (:mod:`mrface.eval.identification`; ``"entry"`` is the published
TinyFace / AdaFace helper rule).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from mrface.data.protocols.tinyface import load_tinyface
from mrface.eval.crops import CropRouting, embed_files
from mrface.eval.identification import closed_set_cmc
from mrface.eval.verification import ExtractOptions

TINYFACE_RANKS = (1, 5, 20)


@dataclass
class TinyFaceResult:
    """CMC {rank: fraction}; counts of probes, gallery matches and distractors; the settings used."""

    cmc: dict[int, float]
    num_probes: int
    num_gallery_match: int
    num_distractors: int
    settings: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "cmc": {str(k): v for k, v in self.cmc.items()},
            "num_probes": self.num_probes,
            "num_gallery_match": self.num_gallery_match,
            "num_distractors": self.num_distractors,
        }


def score_tinyface(
    probe: np.ndarray,
    probe_labels: np.ndarray,
    match: np.ndarray,
    match_labels: np.ndarray,
    distractors: np.ndarray,
    ranks: Sequence[int] = TINYFACE_RANKS,
    level: str = "entry",
    backend: str = "auto",
) -> dict[int, float]:
    """Features (P, D), (M, D), (X, D) with labels (P,), (M,) -> CMC {rank: fraction}; distractors unlabelled."""
    gallery = np.concatenate([np.asarray(match), np.asarray(distractors)])
    labels = np.concatenate([np.asarray(match_labels, np.int64), np.full(len(distractors), -1, np.int64)])
    return closed_set_cmc(probe, probe_labels, gallery, labels, ranks, level=level, backend=backend)


def evaluate_tinyface(
    model: nn.Module,
    root: str | os.PathLike,
    *,
    options: ExtractOptions | None = None,
    routing: CropRouting | None = None,
    ranks: Sequence[int] = TINYFACE_RANKS,
    level: str = "entry",
    backend: str = "auto",
) -> TinyFaceResult:
    """Load ``root`` (missing folders listed), embed every crop, and score (see module docstring)."""
    options, routing = options or ExtractOptions(), routing or CropRouting()
    tf = load_tinyface(root)
    feats = {
        name: embed_files(model, [p for p, _ in items], options, routing, f"tinyface {name}").features
        for name, items in (("probe", tf.probe), ("match", tf.gallery_match), ("distractor", tf.gallery_distractor))
    }
    cmc = score_tinyface(
        feats["probe"],
        [lbl for _, lbl in tf.probe],
        feats["match"],
        [lbl for _, lbl in tf.gallery_match],
        feats["distractor"],
        ranks,
        level,
        backend,
    )
    settings = {
        "root": str(root),
        "ranks": list(ranks),
        "level": level,
        "routing": routing.as_dict(),
        "extraction": options.as_dict(),
    }
    return TinyFaceResult(cmc, len(tf.probe), len(tf.gallery_match), len(tf.gallery_distractor), settings)
