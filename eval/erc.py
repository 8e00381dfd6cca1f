"""Error-versus-reject curves on verification pairs, with the model's embedding norm or a user array as quality.

MagFace and AdaFace train the norm of the un-normalised embedding to track face quality, so the norm
of each image's raw embedding (:attr:`mrface.eval.extract.Embeddings.norms`: |e|, or the mean of |e|
and |e'| with flip fusion) is a quality score. Pair quality = min of the two image qualities; the
curve is :func:`mrface.eval.metrics.erc_curve` (FNMR at a threshold fixed at ``fmr`` on all impostor
pairs, after rejecting the lowest-quality genuine pairs) on cosine similarities.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from torch import nn

from mrface.data.bins import VerificationPairs
from mrface.eval.metrics import (
    ERC_REJECT_FRACTIONS,
    ErcResult,
    VerificationResult,
    erc_curve,
    l2_normalize,
    pair_quality,
)
from mrface.eval.verification import ExtractOptions, embed_at, score_pairs

QUALITY_SOURCES = ("norm",)


def erc_from_features(
    features1: np.ndarray,
    features2: np.ndarray,
    issame: np.ndarray,
    quality1: np.ndarray,
    quality2: np.ndarray,
    fmr: float = 1e-3,
    reject_fractions: np.ndarray | tuple[float, ...] = ERC_REJECT_FRACTIONS,
    what: str = "quality",
) -> ErcResult:
    """Pair features (P, D) each, issame (P,), per-image qualities (P,) each -> ERC on cosine scores.

    Raises ``ValueError`` (naming ``what``) when the qualities are constant or not finite: such a
    quality cannot rank pairs, e.g. norms of a model whose output is already L2-normalised.
    """
    q1, q2 = np.asarray(quality1, np.float64), np.asarray(quality2, np.float64)
    p = len(np.asarray(issame))
    if q1.shape != (p,) or q2.shape != (p,):
        raise ValueError(f"{what}: expected ({p},) qualities per pair side, got {q1.shape} and {q2.shape}")
    q = np.concatenate([q1, q2])
    if not np.all(np.isfinite(q)):
        raise ValueError(f"{what}: contains NaN or inf")
    if np.ptp(q) <= 1e-5 * max(1.0, float(np.abs(q).max())):  # float32 unit vectors have norms 1 +- 1e-7
        raise ValueError(
            f"{what}: every image has the same quality ({q[0]:g}); for 'norm' the model must output "
            "un-normalised embeddings whose norm carries quality (MagFace, AdaFace)"
        )
    scores = np.sum(l2_normalize(features1) * l2_normalize(features2), axis=1)
    return erc_curve(scores, np.asarray(issame).astype(int), pair_quality(q1, q2), fmr, reject_fractions)


def load_quality_array(path: str | os.PathLike, num_images: int) -> np.ndarray:
    """A user's per-image quality ``.npy``: (2P,) floats in ``.bin`` order (pair i = images 2i, 2i+1)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"--erc {path}: no such file (expected 'norm' or a .npy of {num_images} per-image qualities in .bin order)"
        )
    try:
        q = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"{path}: not a numeric .npy array ({exc})") from None
    if q.shape != (num_images,) or q.dtype.kind not in "iuf":
        raise ValueError(
            f"{path}: expected a ({num_images},) numeric array (one quality per image of the .bin, "
            f"pair i = images 2i and 2i+1), got {q.dtype} {q.shape}"
        )
    return q.astype(np.float64)


def verification_erc(
    model: nn.Module,
    pairs: VerificationPairs,
    r1: int = 112,
    r2: int = 112,
    *,
    upsample: bool = False,
    options: ExtractOptions | None = None,
    quality: str | np.ndarray = "norm",
    fmr: float = 1e-3,
) -> tuple[VerificationResult, ErcResult]:
    """Verification at (r1, r2) plus its ERC; ``quality`` = ``"norm"`` or a (2P,) per-image array."""
    options = options or ExtractOptions()
    first, second = pairs.images[0::2], pairs.images[1::2]
    e1 = embed_at(model, first, r1, upsample, options, pairs.color)
    e2 = embed_at(model, second, r2, upsample, options, pairs.color)
    if isinstance(quality, str):
        if quality not in QUALITY_SOURCES:
            raise ValueError(f"quality={quality!r}: expected one of {QUALITY_SOURCES} or a per-image array")
        q1, q2, what = e1.norms, e2.norms, "embedding norms"
    else:
        q = np.asarray(quality, np.float64)
        if q.shape != (len(pairs.images),):
            raise ValueError(f"quality: expected ({len(pairs.images)},) per-image values, got {q.shape}")
        q1, q2, what = q[0::2], q[1::2], "quality array"
    ver = score_pairs(e1.features, e2.features, pairs.issame)
    return ver, erc_from_features(e1.features, e2.features, pairs.issame, q1, q2, fmr, what=what)
