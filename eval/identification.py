"""Identification on extracted features: closed-set CMC (two rank definitions) and open-set 1:N.

Scores are inner products of L2-normalised features (cosine similarity).

Closed-set rank definitions (``level=``), both stated because published numbers use either:

* ``"entry"``: a probe is correct at rank R when any of the R highest-scoring gallery *entries*
  carries its label (the ``DIR_FAR`` closed-set rule of the AdaFace / Shi et al. TinyFace helper:
  several images of one wrong subject each take a rank). Computed from a top-``max(ranks)`` gallery
  search (:func:`mrface.eval.search.gallery_search`, faiss when installed); ties go to the lower
  gallery index.
* ``"subject"``: entries are first collapsed to one score per subject (max), the rank of the mate is
  1 + the number of other subjects scoring strictly higher (:func:`mrface.eval.metrics.cmc`).
  Unlabelled distractors (label < 0) each count as their own subject.

Open-set: :func:`open_set_search` scores every probe against the gallery (optionally collapsed
into one mean prototype per subject first) and calls
:func:`mrface.eval.metrics.open_set_identification` with the named ``variant``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mrface.eval.metrics import OpenSetResult, l2_normalize, mate_ranks, open_set_identification
from mrface.eval.search import gallery_search

CMC_LEVELS = ("entry", "subject")
GALLERY_MODES = ("entries", "prototypes")


def _features(name: str, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{name}: expected a non-empty (N, D) feature array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: contains NaN or inf (did extraction produce NaN embeddings?)")
    return l2_normalize(x).astype(np.float32)


def _labels(name: str, labels: np.ndarray, n: int) -> np.ndarray:
    labels = np.asarray(labels, np.int64)
    if labels.shape != (n,):
        raise ValueError(f"{name}: expected ({n},) integer labels, got shape {labels.shape}")
    return labels


def unique_distractor_labels(labels: np.ndarray) -> np.ndarray:
    """(G,) labels with every negative (unlabelled distractor) replaced by its own distinct negative id."""
    labels = np.asarray(labels, np.int64).copy()
    neg = labels < 0
    labels[neg] = -1 - np.arange(int(neg.sum()))
    return labels


def closed_set_cmc(
    probe_features: np.ndarray,
    probe_labels: np.ndarray,
    gallery_features: np.ndarray,
    gallery_labels: np.ndarray,
    ranks: Sequence[int] = (1, 5, 20),
    level: str = "entry",
    backend: str = "auto",
    block: int = 2048,
) -> dict[int, float]:
    """Rank-k identification rate (fraction) of every probe; see module docstring for ``level``.

    Args:
        probe_features: (P, D) features (any norm); probe_labels: (P,) int, each must be in the gallery.
        gallery_features: (G, D); gallery_labels: (G,) int, negative = unlabelled distractor.
        ranks: ranks to report.
        level: ``"entry"`` or ``"subject"``.
        backend: gallery search backend for ``entry`` (``auto``/``faiss``/``numpy``).
        block: probes scored at once for ``subject`` (memory: block x G float64).
    Returns:
        {rank: rate}.
    """
    if level not in CMC_LEVELS:
        raise ValueError(f"level={level!r}: expected one of {CMC_LEVELS}")
    if not ranks or min(ranks) < 1:
        raise ValueError(f"ranks: expected positive ranks, got {list(ranks)}")
    p = _features("probe_features", probe_features)
    g = _features("gallery_features", gallery_features)
    if p.shape[1] != g.shape[1]:
        raise ValueError(f"probe features are {p.shape[1]}-d but gallery features {g.shape[1]}-d")
    pl = _labels("probe_labels", probe_labels, len(p))
    gl = _labels("gallery_labels", gallery_labels, len(g))
    absent = np.setdiff1d(pl, gl[gl >= 0])
    if absent.size or (pl < 0).any():
        raise ValueError(
            f"closed-set identification: {absent.size} probe labels have no gallery entry "
            f"(e.g. {absent[:5].tolist()}); every probe must be enrolled"
        )
    if level == "entry":
        _, idx = gallery_search(p, g, k=max(ranks), backend=backend)
        hits = gl[idx] == pl[:, None]  # (P, k)
        first = np.where(hits.any(1), hits.argmax(1) + 1, np.iinfo(np.int64).max)
    else:
        gl_u = unique_distractor_labels(gl)
        first = np.concatenate(
            [mate_ranks(p[lo : lo + block] @ g.T, pl[lo : lo + block], gl_u)[1] for lo in range(0, len(p), block)]
        )
    return {int(r): float(np.mean(first <= r)) for r in ranks}


def subject_prototypes(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) features, (N,) labels -> (unit mean of each subject's unit features (S, D), sorted labels (S,))."""
    f = _features("features", features).astype(np.float64)
    labels = _labels("labels", labels, len(f))
    subjects, inverse = np.unique(labels, return_inverse=True)
    sums = np.zeros((subjects.size, f.shape[1]))
    np.add.at(sums, inverse, f)
    return l2_normalize(sums), subjects


def open_set_search(
    probe_features: np.ndarray,
    probe_labels: np.ndarray,
    gallery_features: np.ndarray,
    gallery_labels: np.ndarray,
    *,
    fpirs: Sequence[float],
    rank: int,
    variant: str,
    gallery: str = "entries",
) -> OpenSetResult:
    """Open-set 1:N on features: cosine scores (P, G) -> :func:`open_set_identification`.

    The full (P, G) float64 score matrix is held in memory (8·P·G bytes; pool the gallery into
    ``prototypes`` to shrink G).

    Args:
        probe_features: (P, D); probe_labels: (P,) int, a label absent from the gallery = unmated probe.
        gallery_features: (G, D); gallery_labels: (G,) int subject ids.
        fpirs, rank, variant: as :func:`mrface.eval.metrics.open_set_identification`.
        gallery: ``"entries"`` (every gallery image; the metric collapses them per subject by max) or
            ``"prototypes"`` (one unit mean feature per subject, BTNet's SurvFace set-up).
    """
    if gallery not in GALLERY_MODES:
        raise ValueError(f"gallery={gallery!r}: expected one of {GALLERY_MODES}")
    p = _features("probe_features", probe_features)
    pl = _labels("probe_labels", probe_labels, len(p))
    if gallery == "prototypes":
        g, gl = subject_prototypes(gallery_features, gallery_labels)
    else:
        g = _features("gallery_features", gallery_features)
        gl = _labels("gallery_labels", gallery_labels, len(g))
    if p.shape[1] != g.shape[1]:
        raise ValueError(f"probe features are {p.shape[1]}-d but gallery features {g.shape[1]}-d")
    scores = p.astype(np.float64) @ np.asarray(g, np.float64).T
    return open_set_identification(scores, pl, gl, fpirs=fpirs, rank=rank, variant=variant)
