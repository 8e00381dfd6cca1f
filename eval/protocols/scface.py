"""SCface identification (REFERENCE.md §8): per-distance closed-set rank-1, gallery = frontal mugshots.

For each distance d ∈ {1, 2, 3} (d1 farthest, 4.20 m; d3 nearest, 1.00 m) the surveillance crops of
the test subjects (``cams``, visible 1–5 by default) are searched among the mugshots of the same
test subjects (one per subject, so entry and subject ranks coincide). Protocols
(:data:`mrface.data.protocols.scface.PROTOCOLS`): ``finetune50`` tests subjects 51–130 (fine-tuning
on 1–50 is the caller's step, done before passing the model), ``all130`` tests all 130 zero-shot.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from mrface.data.protocols.scface import load_scface
from mrface.eval.crops import CropRouting, embed_files
from mrface.eval.identification import closed_set_cmc
from mrface.eval.verification import ExtractOptions


@dataclass
class SCfaceResult:
    """Per-distance {distance: {rank: fraction}}, counts, settings."""

    protocol: str
    per_distance: dict[int, dict[int, float]]
    num_gallery: int
    num_probes: dict[int, int]
    settings: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "per_distance": {f"d{d}": {str(r): v for r, v in c.items()} for d, c in self.per_distance.items()},
            "num_gallery": self.num_gallery,
            "num_probes": {f"d{d}": n for d, n in self.num_probes.items()},
        }


def score_scface(
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    probes: dict[int, tuple[np.ndarray, np.ndarray]],
    ranks: Sequence[int] = (1,),
) -> dict[int, dict[int, float]]:
    """Mugshot features (G, D) + labels (G,), {distance: (features (P, D), labels (P,))} -> {d: {rank: rate}}."""
    labels = np.asarray(gallery_labels, np.int64)
    if np.unique(labels).size != labels.size:
        raise ValueError("SCface: the gallery must hold one mugshot per subject")
    return {
        d: closed_set_cmc(f, lbl, gallery, labels, ranks, level="subject", backend="numpy")
        for d, (f, lbl) in sorted(probes.items())
    }


def evaluate_scface(
    model: nn.Module,
    root: str | os.PathLike,
    *,
    protocol: str = "finetune50",
    cams: tuple[int, ...] = (1, 2, 3, 4, 5),
    options: ExtractOptions | None = None,
    routing: CropRouting | None = None,
    ranks: Sequence[int] = (1,),
    subjects: int = 130,
) -> SCfaceResult:
    """Load ``root`` for ``protocol`` (missing images listed), embed, score per distance.

    ``subjects`` caps the subject ids (130 in SCface; smaller only for partial copies and tests).
    """
    options, routing = options or ExtractOptions(), routing or CropRouting()
    sc = load_scface(root, protocol, cams, subjects)
    gallery = embed_files(model, [p for p, _ in sc.gallery], options, routing, "scface mugshots").features
    probes = {
        d: (
            embed_files(model, [p for p, _ in items], options, routing, f"scface d{d}").features,
            np.array([s for _, s in items], np.int64),
        )
        for d, items in sc.probes.items()
    }
    per_distance = score_scface(gallery, [s for _, s in sc.gallery], probes, ranks)
    settings = {
        "root": str(root),
        "protocol": protocol,
        "cams": list(cams),
        "ranks": list(ranks),
        "test_subjects": len(sc.gallery),
        "finetune_subjects": len(sc.train_subjects),
        "routing": routing.as_dict(),
        "extraction": options.as_dict(),
    }
    return SCfaceResult(protocol, per_distance, len(sc.gallery), {d: len(v) for d, v in sc.probes.items()}, settings)
