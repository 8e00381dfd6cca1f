"""Face-recognition metrics (REFERENCE.md §9), vectorised numpy on precomputed scores.

Verification (``.bin`` sets, InsightFace ``verification.py`` semantics):

* :func:`verification_kfold`: squared L2 distances of unit embeddings, thresholds
  ``np.arange(0, 4, 0.01)`` (0.00 … 3.99; a pair is "same" when ``dist < threshold``), 10 folds over
  pairs in file order (``KFold(shuffle=False)``: the first ``P % 10`` folds hold one extra pair),
  best threshold on the 9 training folds (first maximum), accuracy on the held-out fold; mean ± std
  (population std, ``np.std``). VAL@FAR likewise, on its own finer grid ``np.arange(0, 4, 0.001)``
  (:data:`VAL_THRESHOLDS`, as arcface_torch's ``eval/verification.py``): on the training folds the
  threshold reaching the
  target FAR is interpolated linearly from the (FAR, threshold) table (duplicate FAR values keep the
  smallest threshold, which is what ``interp1d(kind='slinear')`` did before SciPy refused duplicates);
  0 when the target FAR is never reached.

1:1 ROC (IJB): :func:`tar_at_far` picks, for each FAR, the ROC point (``sklearn.metrics.roc_curve``)
whose FPR is nearest, ties to the higher TPR (InsightFace's IJB script).

Open-set 1:N: :func:`open_set_identification` with ``variant=`` one of :data:`OPEN_SET_VARIANTS`:

* ``"nist"``: gallery scores are collapsed to one score per subject (max over its entries); a mated
  probe's rank is 1 + the number of other subjects scoring strictly higher than its mate.
  FPIR(t) = fraction of unmated probes whose best score is > t; TPIR_R(t) = fraction of mated probes
  whose mate is within rank R and scores >= t. For a target FPIR f with U unmated probes, t is the
  (⌊f·U⌋+1)-th largest unmated best score (the smallest t with FPIR(t) <= f); -inf when ⌊f·U⌋ >= U.
* ``"btnet_survface"``: BTNet's QMUL-SurvFace script: 1000 thresholds ``linspace(min(top-R mated
  scores ∪ unmated best scores), max(unmated best scores))``, a mated probe counts when its mate is
  in the top R *and* scores > t, FPIR counts unmated best scores > t; the reported TPIR at f is the
  grid point whose FPIR is nearest f (first on ties); AUC is ``sklearn.metrics.auc`` over the grid.
* ``"insightface_1n"``: InsightFace's / BTNet's IJB 1:N script: every probe is mated; the negatives
  are all non-mate (probe, gallery-entry) scores, t is the ⌈f·P⌉-th largest of them (P probes, not
  the number of negatives), TPIR = fraction of probes whose mate score is > t (no rank condition).

Closed-set: :func:`cmc` (rank-k identification rate). ERC: :func:`erc_curve`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import auc as sklearn_auc
from sklearn.metrics import roc_curve
from sklearn.model_selection import KFold

#: Squared-L2 thresholds of the InsightFace verification protocol: 0.00, 0.01, …, 3.99.
VERIFICATION_THRESHOLDS = np.arange(0, 4, 0.01)
#: Squared-L2 thresholds of InsightFace's VAL@FAR: 0.000, 0.001, …, 3.999.
VAL_THRESHOLDS = np.arange(0, 4, 0.001)
#: FAR points of the IJB 1:1 ROC table.
ROC_FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
OPEN_SET_VARIANTS = ("nist", "btnet_survface", "insightface_1n")
#: Default rejected fractions of an ERC curve: 0, 0.05, …, 0.9.
ERC_REJECT_FRACTIONS = tuple(round(0.05 * i, 2) for i in range(19))


# ------------------------------------------------------------------------------------- helpers
def _as_1d(name: str, values: object, dtype: type | None = None) -> np.ndarray:
    arr = np.asarray(values) if dtype is None else np.asarray(values, dtype=dtype)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {arr.shape}")
    return arr


def _check_same_length(**arrays: np.ndarray) -> None:
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"arrays must have the same length, got {lengths}")


def l2_normalize(x: np.ndarray, axis: int = 1) -> np.ndarray:
    """Rows (or ``axis``) scaled to unit L2 norm; zero rows stay zero."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def squared_l2(embeddings1: np.ndarray, embeddings2: np.ndarray, normalize: bool = True) -> np.ndarray:
    """(P, D), (P, D) -> (P,) squared L2 distance, of the unit vectors when ``normalize`` (range 0..4)."""
    e1, e2 = np.asarray(embeddings1, np.float64), np.asarray(embeddings2, np.float64)
    if e1.ndim != 2 or e1.shape != e2.shape:
        raise ValueError(f"embeddings must be two (P, D) arrays of the same shape, got {e1.shape} and {e2.shape}")
    if normalize:
        e1, e2 = l2_normalize(e1), l2_normalize(e2)
    return np.sum((e1 - e2) ** 2, axis=1)


def fold_splits(num_pairs: int, num_folds: int = 10) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) index arrays of ``KFold(num_folds, shuffle=False)``; one fold: train = test = all."""
    if num_folds < 1:
        raise ValueError(f"num_folds must be >= 1, got {num_folds}")
    indices = np.arange(num_pairs)
    if num_folds == 1:
        return [(indices, indices)]
    if num_pairs < num_folds:
        raise ValueError(f"num_folds={num_folds} needs at least that many pairs, got {num_pairs}")
    return list(KFold(n_splits=num_folds, shuffle=False).split(indices))


# -------------------------------------------------------------------------------- verification
@dataclass
class VerificationResult:
    """10-fold verification numbers (fractions in [0, 1]); per-fold arrays have length ``num_folds``.

    ``tpr``/``fpr`` (T,) are the fold-averaged rates at each threshold of ``thresholds`` (the ROC
    InsightFace plots); ``val``/``far`` are per fold at the interpolated FAR-target threshold.
    """

    accuracy: float
    accuracy_std: float
    fold_accuracies: np.ndarray
    best_thresholds: np.ndarray
    val: float
    val_std: float
    far: float
    far_target: float
    fold_val: np.ndarray
    fold_far: np.ndarray
    thresholds: np.ndarray
    tpr: np.ndarray
    fpr: np.ndarray

    def summary(self) -> dict[str, float]:
        """Scalar numbers for reports (JSON-ready)."""
        return {
            "accuracy": float(self.accuracy),
            "accuracy_std": float(self.accuracy_std),
            "val": float(self.val),
            "val_std": float(self.val_std),
            "far": float(self.far),
            "far_target": float(self.far_target),
        }


def _rates(dist: np.ndarray, issame: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per threshold: (tp, fp, tn, fn) counts, each (T,), for the rule ``dist < threshold``."""
    predict = dist[None, :] < thresholds[:, None]  # (T, n)
    tp = np.sum(predict & issame[None, :], axis=1)
    fp = np.sum(predict & ~issame[None, :], axis=1)
    n_same = int(issame.sum())
    n_diff = issame.size - n_same
    return tp, fp, n_diff - fp, n_same - tp


def _accuracy(dist: np.ndarray, issame: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    tp, _, tn, _ = _rates(dist, issame, thresholds)
    return (tp + tn) / max(dist.size, 1)


def _val_far(dist: np.ndarray, issame: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tp, fp, _, _ = _rates(dist, issame, thresholds)
    n_same = int(issame.sum())
    n_diff = issame.size - n_same
    # InsightFace divides by zero here (nan); a fold without positives/negatives has no VAL/FAR: 0.
    val = tp / n_same if n_same else np.zeros(len(thresholds))
    far = fp / n_diff if n_diff else np.zeros(len(thresholds))
    return val, far


def _threshold_at_far(far_train: np.ndarray, thresholds: np.ndarray, far_target: float) -> float:
    if far_train.max() < far_target:
        return 0.0
    far_unique, first = np.unique(far_train, return_index=True)
    return float(np.interp(far_target, far_unique, thresholds[first]))


def verification_kfold(
    distances: np.ndarray,
    issame: np.ndarray,
    num_folds: int = 10,
    far_target: float = 1e-3,
    thresholds: np.ndarray | None = None,
    val_thresholds: np.ndarray | None = None,
) -> VerificationResult:
    """k-fold verification accuracy and VAL@FAR from squared L2 distances (see module docstring).

    Args:
        distances: (P,) squared L2 distances between the unit embeddings of each pair (0..4).
        issame: (P,) bool, True for a genuine pair; pairs in file order.
        num_folds: folds over pairs (10 in the protocol).
        far_target: FAR for VAL@FAR (1e-3 in the protocol).
        thresholds: (T,) candidate thresholds of the accuracy and ROC; default :data:`VERIFICATION_THRESHOLDS`.
        val_thresholds: (V,) candidate thresholds of VAL@FAR; default :data:`VAL_THRESHOLDS`.
    """
    dist = _as_1d("distances", distances, np.float64)
    same = _as_1d("issame", issame).astype(bool)
    _check_same_length(distances=dist, issame=same)
    if not np.all(np.isfinite(dist)):
        raise ValueError("distances: contains NaN or inf (did extraction produce NaN embeddings?)")
    thr = VERIFICATION_THRESHOLDS if thresholds is None else _as_1d("thresholds", thresholds, np.float64)
    val_thr = VAL_THRESHOLDS if val_thresholds is None else _as_1d("val_thresholds", val_thresholds, np.float64)
    splits = fold_splits(dist.size, num_folds)
    acc = np.zeros(len(splits))
    best = np.zeros(len(splits))
    val = np.zeros(len(splits))
    far = np.zeros(len(splits))
    tprs = np.zeros((len(splits), thr.size))
    fprs = np.zeros((len(splits), thr.size))
    for k, (train, test) in enumerate(splits):
        best[k] = thr[int(np.argmax(_accuracy(dist[train], same[train], thr)))]
        acc[k] = _accuracy(dist[test], same[test], best[k : k + 1])[0]
        tp, fp, tn, fn = _rates(dist[test], same[test], thr)
        tprs[k] = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), 0.0)
        fprs[k] = np.where(fp + tn > 0, fp / np.maximum(fp + tn, 1), 0.0)
        _, far_train = _val_far(dist[train], same[train], val_thr)
        t_far = _threshold_at_far(far_train, val_thr, far_target)
        v, f = _val_far(dist[test], same[test], np.array([t_far]))
        val[k], far[k] = v[0], f[0]
    return VerificationResult(
        accuracy=float(acc.mean()),
        accuracy_std=float(acc.std()),
        fold_accuracies=acc,
        best_thresholds=best,
        val=float(val.mean()),
        val_std=float(val.std()),
        far=float(far.mean()),
        far_target=float(far_target),
        fold_val=val,
        fold_far=far,
        thresholds=thr,
        tpr=tprs.mean(0),
        fpr=fprs.mean(0),
    )


def evaluate_verification(
    embeddings1: np.ndarray, embeddings2: np.ndarray, issame: np.ndarray, num_folds: int = 10, far_target: float = 1e-3
) -> VerificationResult:
    """Pair embeddings (P, D) each (any norm; L2-normalised here) -> :func:`verification_kfold`."""
    return verification_kfold(squared_l2(embeddings1, embeddings2), issame, num_folds, far_target)


# --------------------------------------------------------------------------------------- ROC 1:1
@dataclass
class RocResult:
    """ROC of similarity scores: fpr/tpr/thresholds as ``roc_curve`` returns them; tar_at_far per FAR."""

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    tar_at_far: dict[float, float] = field(default_factory=dict)
    auc: float = float("nan")


def tar_at_far(
    scores: np.ndarray, labels: np.ndarray, fars: Sequence[float] = ROC_FARS, drop_intermediate: bool = True
) -> RocResult:
    """TAR at the ROC point nearest each FAR (IJB 1:1 table).

    Args:
        scores: (P,) similarities (higher = more alike); labels: (P,) 1 genuine / 0 impostor.
        fars: FAR values of the table.
        drop_intermediate: passed to ``roc_curve`` (True, its default, is what InsightFace used).
    """
    s = _as_1d("scores", scores, np.float64)
    y = _as_1d("labels", labels).astype(int)
    _check_same_length(scores=s, labels=y)
    if not (np.any(y == 1) and np.any(y == 0)):
        raise ValueError("labels: need at least one genuine (1) and one impostor (0) pair for a ROC")
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=drop_intermediate)
    # nearest FPR; on ties the later ROC point (higher TPR), as min() over the flipped arrays did.
    fpr_f, tpr_f = fpr[::-1], tpr[::-1]
    table = {float(f): float(tpr_f[int(np.argmin(np.abs(fpr_f - f)))]) for f in fars}
    return RocResult(fpr, tpr, thr, table, float(sklearn_auc(fpr, tpr)))


# ------------------------------------------------------------------------------ identification
@dataclass
class OpenSetResult:
    """TPIR at each target FPIR (fractions); thresholds used; curve (fpir, tpir) for plots and AUC."""

    variant: str
    rank: int
    tpir: dict[float, float]
    thresholds: dict[float, float]
    curve_fpir: np.ndarray
    curve_tpir: np.ndarray
    auc: float
    rank_rates: dict[int, float] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        return {
            "variant": self.variant,
            "rank": self.rank,
            "tpir": {str(k): v for k, v in self.tpir.items()},
            "auc": self.auc,
            "rank_rates": {str(k): v for k, v in self.rank_rates.items()},
        }


def _subject_scores(scores: np.ndarray, gallery_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(P, G) entry scores -> (P, S) max score per subject, subjects (S,) sorted."""
    subjects, col = np.unique(gallery_labels, return_inverse=True)
    if subjects.size == gallery_labels.size:
        order = np.argsort(col)
        return scores[:, order], subjects
    out = np.full((scores.shape[0], subjects.size), -np.inf)
    np.maximum.at(out.T, col, scores.T)
    return out, subjects


def _check_identification(
    scores: np.ndarray, probe_labels: np.ndarray, gallery_labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = np.asarray(scores, np.float64)
    p = _as_1d("probe_labels", probe_labels)
    g = _as_1d("gallery_labels", gallery_labels)
    if s.ndim != 2 or s.shape != (p.size, g.size):
        raise ValueError(f"scores: expected shape (probes, gallery) = ({p.size}, {g.size}), got {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores: contains NaN or inf")
    return s, p, g


def mate_ranks(
    scores: np.ndarray, probe_labels: np.ndarray, gallery_labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Subject-level search results.

    Returns (mated (P,) bool, rank (P,) int — 1-based rank of the mate, 0 for unmated probes,
    mate_score (P,) — nan for unmated, best_score (P,) — the top subject score).
    """
    s, p, g = _check_identification(scores, probe_labels, gallery_labels)
    subj_scores, subjects = _subject_scores(s, g)
    pos = np.searchsorted(subjects, p)
    pos = np.clip(pos, 0, subjects.size - 1)
    mated = subjects[pos] == p
    rows = np.arange(p.size)
    mate = np.where(mated, subj_scores[rows, pos], np.nan)
    higher = np.sum(subj_scores > np.where(mated, mate, np.inf)[:, None], axis=1)
    rank = np.where(mated, higher + 1, 0)
    return mated, rank, mate, subj_scores.max(axis=1)


def cmc(
    scores: np.ndarray, probe_labels: np.ndarray, gallery_labels: np.ndarray, ranks: Sequence[int] = (1, 5, 20)
) -> dict[int, float]:
    """Closed-set identification rate at each rank (subject level). Every probe must have a mate."""
    mated, rank, _, _ = mate_ranks(scores, probe_labels, gallery_labels)
    if not mated.all():
        missing = np.asarray(probe_labels)[~mated][:5]
        raise ValueError(
            f"cmc: {int((~mated).sum())} probes have no mate in the gallery (e.g. labels {missing}); "
            "closed-set identification needs every probe enrolled"
        )
    return {int(r): float(np.mean(rank <= r)) for r in ranks}


def _nist(scores, probe_labels, gallery_labels, fpirs, rank) -> OpenSetResult:
    mated, ranks, mate, best = mate_ranks(scores, probe_labels, gallery_labels)
    if not mated.any() or mated.all():
        raise ValueError(
            "open-set identification needs both mated and unmated probes "
            f"(got {int(mated.sum())} mated, {int((~mated).sum())} unmated)"
        )
    unmated_best = np.sort(best[~mated])[::-1]
    hit_scores = mate[mated & (ranks <= rank)]
    n_mated, n_unmated = int(mated.sum()), unmated_best.size
    tpir, thresholds = {}, {}
    for f in fpirs:
        k = int(np.floor(f * n_unmated + 1e-9))
        t = -np.inf if k >= n_unmated else float(unmated_best[k])
        thresholds[float(f)] = t
        tpir[float(f)] = float(np.sum(hit_scores >= t) / n_mated)
    # curve over every distinct unmated score, from FPIR 0 (t = max) to 1 (t = -inf)
    cand = np.concatenate([np.unique(unmated_best)[::-1], [-np.inf]])
    curve_fpir = np.array([np.sum(unmated_best > t) / n_unmated for t in cand])
    curve_tpir = np.array([np.sum(hit_scores >= t) / n_mated for t in cand])
    # TPIR(f) is the value at the largest curve FPIR <= f: a left-closed step function over [0, 1]
    area = float(np.sum(np.diff(curve_fpir) * curve_tpir[:-1]))
    rank_rates = {r: float(np.mean(ranks[mated] <= r)) for r in sorted({1, 5, 10, 20, rank})}
    return OpenSetResult("nist", rank, tpir, thresholds, curve_fpir, curve_tpir, area, rank_rates)


def _btnet_survface(scores, probe_labels, gallery_labels, fpirs, rank, grid: int = 1000) -> OpenSetResult:
    mated, ranks, mate, best = mate_ranks(scores, probe_labels, gallery_labels)
    if not mated.any() or mated.all():
        raise ValueError("btnet_survface needs both mated and unmated probes")
    s, _, g = _check_identification(scores, probe_labels, gallery_labels)
    subj_scores, _ = _subject_scores(s, g)
    k = min(rank, subj_scores.shape[1])
    top_k = -np.sort(-subj_scores[mated], axis=1)[:, :k]
    unmated_best = best[~mated]
    hit = mate[mated]
    hit_in_rank = ranks[mated] <= rank
    thr = np.linspace(min(top_k.min(), unmated_best.min()), unmated_best.max(), grid)
    dir_ = np.array([np.sum(hit_in_rank & (hit > t)) / hit.size for t in thr])
    far = np.array([np.sum(unmated_best > t) / unmated_best.size for t in thr])
    tpir, thresholds = {}, {}
    for f in fpirs:
        i = int(np.argmin(np.abs(far - f)))
        tpir[float(f)], thresholds[float(f)] = float(dir_[i]), float(thr[i])
    return OpenSetResult("btnet_survface", rank, tpir, thresholds, far, dir_, float(sklearn_auc(far, dir_)))


def _insightface_1n(scores, probe_labels, gallery_labels, fpirs, rank) -> OpenSetResult:
    s, p, g = _check_identification(scores, probe_labels, gallery_labels)
    if np.unique(g).size != g.size:
        raise ValueError("insightface_1n: gallery_labels must be unique (one template per subject)")
    mated, ranks, mate, _ = mate_ranks(s, p, g)
    if not mated.all():
        raise ValueError(f"insightface_1n: every probe must have a mate; {int((~mated).sum())} do not")
    col = np.searchsorted(np.sort(g), p)
    order = np.argsort(g)
    mate_col = order[col]
    neg = s.copy()
    neg[np.arange(p.size), mate_col] = -np.inf
    neg = np.sort(neg[np.isfinite(neg)])[::-1]
    tpir, thresholds = {}, {}
    for f in fpirs:
        k = int(np.ceil(p.size * f))
        if not 1 <= k <= neg.size:
            raise ValueError(f"insightface_1n: FPIR {f} needs the {k}-th largest of {neg.size} negative scores")
        t = float(neg[k - 1])
        thresholds[float(f)], tpir[float(f)] = t, float(np.sum(mate > t) / p.size)
    rank_rates = {r: float(np.mean(ranks <= r)) for r in (1, 5, 10)}
    fpir_grid = np.array(sorted(tpir))
    return OpenSetResult(
        "insightface_1n",
        rank,
        tpir,
        thresholds,
        fpir_grid,
        np.array([tpir[f] for f in fpir_grid]),
        float("nan"),
        rank_rates,
    )


def open_set_identification(
    scores: np.ndarray,
    probe_labels: np.ndarray,
    gallery_labels: np.ndarray,
    fpirs: Sequence[float] = (0.3, 0.2, 0.1, 0.01),
    rank: int = 1,
    variant: str = "nist",
) -> OpenSetResult:
    """Open-set identification: TPIR at rank ``rank`` for each target FPIR (see module docstring).

    Args:
        scores: (P, G) similarity of each probe to each gallery entry.
        probe_labels: (P,) subject ids; a probe whose id is not in ``gallery_labels`` is unmated.
        gallery_labels: (G,) subject id of each gallery entry (several entries per subject allowed
            for ``nist``/``btnet_survface``; pool them into prototypes first for BTNet's exact setup).
        fpirs: target false-positive identification rates.
        rank: R of TPIR_R.
        variant: one of :data:`OPEN_SET_VARIANTS`.
    """
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    if variant == "nist":
        return _nist(scores, probe_labels, gallery_labels, fpirs, rank)
    if variant == "btnet_survface":
        return _btnet_survface(scores, probe_labels, gallery_labels, fpirs, rank)
    if variant == "insightface_1n":
        return _insightface_1n(scores, probe_labels, gallery_labels, fpirs, rank)
    raise ValueError(f"variant={variant!r}: expected one of {OPEN_SET_VARIANTS}")


# ------------------------------------------------------------------------------------------ ERC
@dataclass
class ErcResult:
    """FNMR (fraction) after rejecting each fraction of the lowest-quality genuine pairs."""

    reject_fractions: np.ndarray
    fnmr: np.ndarray
    threshold: float
    fmr: float


def pair_quality(quality1: np.ndarray, quality2: np.ndarray) -> np.ndarray:
    """Pair quality = min of the two image qualities (REFERENCE.md §9)."""
    return np.minimum(np.asarray(quality1, np.float64), np.asarray(quality2, np.float64))


def erc_curve(
    scores: np.ndarray,
    labels: np.ndarray,
    quality: np.ndarray,
    fmr: float = 1e-3,
    reject_fractions: Sequence[float] | np.ndarray = ERC_REJECT_FRACTIONS,
) -> ErcResult:
    """Error-versus-reject curve.

    The threshold is fixed once: the smallest similarity t with FMR(t) = fraction of impostor scores
    >= t not above ``fmr``. Then, for each fraction r, the ⌊r·G⌋ lowest-quality genuine pairs (G
    genuine pairs, stable order on ties) are rejected and FNMR = fraction of the remaining genuine
    pairs scoring < t.

    Args:
        scores: (P,) similarities; labels: (P,) 1 genuine / 0 impostor; quality: (P,) pair quality
            (see :func:`pair_quality`; e.g. MagFace/AdaFace embedding norms or any user score).
    """
    s = _as_1d("scores", scores, np.float64)
    y = _as_1d("labels", labels).astype(bool)
    q = _as_1d("quality", quality, np.float64)
    _check_same_length(scores=s, labels=y, quality=q)
    imp = np.sort(s[~y])[::-1]
    gen_s, gen_q = s[y], q[y]
    if imp.size == 0 or gen_s.size == 0:
        raise ValueError("erc_curve: needs genuine and impostor pairs")
    k = int(np.floor(fmr * imp.size + 1e-9))  # impostors allowed at or above t
    t = float(np.nextafter(imp[k], np.inf)) if k < imp.size else -np.inf
    order = np.argsort(gen_q, kind="stable")
    fr = np.asarray(reject_fractions, np.float64)
    if np.any((fr < 0) | (fr >= 1)):
        raise ValueError("reject_fractions must lie in [0, 1)")
    fnmr = np.array([np.mean(gen_s[order[int(np.floor(r * gen_s.size + 1e-9)) :]] < t) for r in fr])
    return ErcResult(fr, fnmr, t, float(fmr))
