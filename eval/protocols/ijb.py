"""IJB-B/C evaluation on extracted image features: template pooling, 1:1 TAR@FAR, 1:N search.

Test-mode flags are explicit (InsightFace's names in brackets), never defaults hidden in code:

* ``flip`` (F2): add the mirrored image's feature to each image feature before anything else.
* ``norm_weighting`` (N1): keep each image feature's norm as its weight instead of L2-normalising.
* ``detector_score`` (D1): multiply each image feature by its faceness score.

Presets (:data:`IJB_PRESETS`, ``IjbFlags.preset(name)``) name the two public set-ups:
``arcface_torch`` (insightface ``recognition/arcface_torch/eval_ijbc.py``: flip, norm score N1 and
detector score D1 all on) and ``btnet`` (BTNet ``eval_ijbc_11_multi_reso.py`` /
``eval_ijbc_1n_multi_reso.py``: flip and detector score on, norm score off).

Pooling (REFERENCE.md §9, :func:`mrface.models.template_pooling.pool_templates`): media mean,
template sum, L2. 1:1 scores are cosines between the two templates of each pair; TAR at the ROC
point nearest each FAR 1e-6 … 1e-1 (:func:`mrface.eval.metrics.tar_at_far`). 1:N: the gallery
templates (G1 ∪ G2 for IJB-C) are searched by every probe template
(:func:`mrface.eval.metrics.open_set_identification`, ``variant`` selects NIST or the
InsightFace/BTNet script), plus CMC rank-1/5/10 over the mated probes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from mrface.eval.metrics import ROC_FARS, OpenSetResult, RocResult, open_set_identification, tar_at_far
from mrface.models.template_pooling import pool_templates


@dataclass(frozen=True)
class IjbFlags:
    """Test-mode flags; InsightFace's usual IJB run is flip=True, norm_weighting=False, detector_score=True."""

    flip: bool
    norm_weighting: bool
    detector_score: bool

    def as_dict(self) -> dict[str, bool]:
        return asdict(self)

    @classmethod
    def preset(cls, name: str) -> IjbFlags:
        """Flags of a public set-up by name (see :data:`IJB_PRESETS`)."""
        if name not in IJB_PRESETS:
            raise ValueError(f"IJB preset {name!r}: expected one of {sorted(IJB_PRESETS)}")
        return cls(**IJB_PRESETS[name])


#: The public IJB set-ups: arcface_torch's eval_ijbc.py and BTNet's eval_ijbc_{11,1n}_multi_reso.py.
IJB_PRESETS: dict[str, dict[str, bool]] = {
    "arcface_torch": {"flip": True, "norm_weighting": True, "detector_score": True},
    "btnet": {"flip": True, "norm_weighting": False, "detector_score": True},
}


def template_features(
    features: np.ndarray,
    template_ids: np.ndarray,
    media_ids: np.ndarray,
    flags: IjbFlags,
    flip_features: np.ndarray | None = None,
    faceness: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-image (N, D) features -> (unit template features (T, D), sorted template ids (T,))."""
    if flags.flip and flip_features is None:
        raise ValueError("IjbFlags.flip=True needs flip_features (the mirrored images' features)")
    if flags.detector_score and faceness is None:
        raise ValueError("IjbFlags.detector_score=True needs faceness scores (meta/*_name_5pts_score.txt)")
    pooled = pool_templates(
        torch.as_tensor(np.asarray(features, np.float64)),
        torch.as_tensor(np.asarray(template_ids, np.int64)),
        torch.as_tensor(np.asarray(media_ids, np.int64)),
        flip_features=torch.as_tensor(np.asarray(flip_features, np.float64)) if flags.flip else None,
        faceness=torch.as_tensor(np.asarray(faceness, np.float64)) if faceness is not None else None,
        norm_weighting=flags.norm_weighting,
        faceness_weighting=flags.detector_score,
    )
    return pooled.templates.numpy(), pooled.template_ids.numpy()


def _rows_of(ids: np.ndarray, wanted: np.ndarray, what: str) -> np.ndarray:
    pos = np.searchsorted(ids, wanted)
    pos = np.clip(pos, 0, ids.size - 1)
    bad = ids[pos] != wanted
    if bad.any():
        raise ValueError(f"{what}: {int(bad.sum())} template ids have no images (e.g. {wanted[bad][:5].tolist()})")
    return pos


def verify_1to1(
    templates: np.ndarray,
    template_ids: np.ndarray,
    pairs: np.ndarray,
    labels: np.ndarray,
    fars: Sequence[float] = ROC_FARS,
) -> tuple[np.ndarray, RocResult]:
    """(T, D) unit templates, (M, 2) template-id pairs, (M,) 0/1 labels -> (cosine scores (M,), ROC)."""
    pairs = np.asarray(pairs, np.int64)
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise ValueError(f"pairs: expected (M, 2) template ids, got shape {pairs.shape}")
    a = templates[_rows_of(template_ids, pairs[:, 0], "pairs[:, 0]")]
    b = templates[_rows_of(template_ids, pairs[:, 1], "pairs[:, 1]")]
    scores = np.sum(a * b, axis=1)
    return scores, tar_at_far(scores, labels, fars)


def identify_1toN(
    templates: np.ndarray,
    template_ids: np.ndarray,
    gallery_templates: np.ndarray,
    gallery_subjects: np.ndarray,
    probe_templates: np.ndarray,
    probe_subjects: np.ndarray,
    fpirs: Sequence[float] = (0.01, 0.1),
    rank: int = 1,
    variant: str = "nist",
) -> OpenSetResult:
    """1:N over pooled templates: gallery/probe template ids with their subject ids."""
    g = templates[_rows_of(template_ids, np.asarray(gallery_templates, np.int64), "gallery templates")]
    p = templates[_rows_of(template_ids, np.asarray(probe_templates, np.int64), "probe templates")]
    return open_set_identification(
        p @ g.T, np.asarray(probe_subjects), np.asarray(gallery_subjects), fpirs=fpirs, rank=rank, variant=variant
    )
