"""Metrics against independent computations on constructed scores (REFERENCE.md §9)."""

from __future__ import annotations

import bisect
import heapq
import math

import numpy as np
import pytest

from mrface.eval import metrics as M


# ------------------------------------------------------------------------------- verification
def test_fold_boundaries_first_folds_hold_the_extra_pairs():
    splits = M.fold_splits(23, 10)
    tests = [t.tolist() for _, t in splits]
    # 23 = 10*2 + 3: folds 0..2 hold 3 pairs, folds 3..9 hold 2, contiguous and in order.
    starts = [0, 3, 6, 9, 11, 13, 15, 17, 19, 21]
    sizes = [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]
    assert tests == [list(range(s, s + n)) for s, n in zip(starts, sizes, strict=True)]
    for train, test in splits:
        assert sorted(np.concatenate([train, test]).tolist()) == list(range(23))
        assert not set(train) & set(test)
    assert [t.tolist() for t, _ in M.fold_splits(5, 1)] == [list(range(5))]
    with pytest.raises(ValueError, match="at least"):
        M.fold_splits(5, 10)


def test_perfectly_separable_pairs_give_100_percent():
    rng = np.random.default_rng(0)
    p = 600
    issame = np.arange(p) % 2 == 0
    base = rng.standard_normal((p, 64))
    e1 = base.copy()
    e2 = np.where(issame[:, None], base + 0.01 * rng.standard_normal((p, 64)), rng.standard_normal((p, 64)))
    res = M.evaluate_verification(e1, e2, issame)
    assert res.accuracy == 1.0 and res.accuracy_std == 0.0
    assert len(res.fold_accuracies) == 10


def test_best_threshold_is_first_maximum_and_strict_less():
    # genuine distance exactly 0.5, impostor 1.5: thresholds 0.51 .. 1.50 all separate; first is 0.51
    d = np.array([0.5, 1.5] * 50)
    same = np.array([True, False] * 50)
    res = M.verification_kfold(d, same)
    assert res.accuracy == 1.0
    np.testing.assert_allclose(res.best_thresholds, 0.51)


def test_all_wrong_labels_give_accuracy_of_majority_rule():
    # genuine pairs far apart, impostors close: the best rule rejects everything -> 50 % accuracy
    d = np.array([3.0, 0.2] * 50)
    same = np.array([True, False] * 50)
    res = M.verification_kfold(d, same)
    assert res.accuracy == pytest.approx(0.5)
    assert np.all(res.best_thresholds == 0.0)


def _slow_kfold(dist, issame, far_target):
    """Plain-Python loop over folds and thresholds; threshold at FAR by explicit segment search.
    Accuracy on the 0.01 grid, VAL@FAR on the 0.001 grid (arcface_torch eval/verification.py evaluate())."""
    thresholds = [i / 100 for i in range(400)]
    val_thresholds = [i / 1000 for i in range(4000)]
    n = len(dist)
    k = 10
    sizes = [n // k + (1 if i < n % k else 0) for i in range(k)]
    accs, vals = [], []
    start = 0
    for size in sizes:
        test = list(range(start, start + size))
        train = [i for i in range(n) if not start <= i < start + size]
        start += size

        def acc(t, idx):
            return sum((dist[i] < t) == issame[i] for i in idx) / len(idx)

        def far(t, idx):
            neg = [i for i in idx if not issame[i]]
            return sum(dist[i] < t for i in neg) / len(neg)

        def val(t, idx):
            pos = [i for i in idx if issame[i]]
            return sum(dist[i] < t for i in pos) / len(pos)

        train_accs = [acc(t, train) for t in thresholds]
        best = thresholds[train_accs.index(max(train_accs))]
        accs.append(acc(best, test))
        neg_train = sorted(dist[i] for i in train if not issame[i])
        fars = [bisect.bisect_left(neg_train, t) / len(neg_train) for t in val_thresholds]  # #{d < t} / n
        if max(fars) < far_target:
            t_far = 0.0
        else:
            pts = []  # (far, threshold) with the first threshold of each distinct far
            for f, t in zip(fars, val_thresholds, strict=True):
                if not pts or f != pts[-1][0]:
                    pts.append((f, t))
            pts.sort()
            t_far = pts[0][1]
            for (f0, t0), (f1, t1) in zip(pts, pts[1:], strict=False):
                if f0 <= far_target <= f1:
                    t_far = t0 + (t1 - t0) * (far_target - f0) / (f1 - f0)
                    break
        vals.append(val(t_far, test))
    return sum(accs) / k, float(np.std(accs)), sum(vals) / k


@pytest.mark.parametrize("seed", [0, 1])
def test_kfold_accuracy_and_val_match_slow_loop(seed):
    rng = np.random.default_rng(seed)
    p = 437  # not a multiple of 10
    issame = rng.random(p) < 0.5
    dist = np.where(issame, rng.normal(0.9, 0.35, p), rng.normal(1.6, 0.3, p)).clip(0, 4)
    res = M.verification_kfold(dist, issame, far_target=0.02)
    acc, std, val = _slow_kfold(dist.tolist(), issame.tolist(), 0.02)
    assert res.accuracy == pytest.approx(acc, abs=1e-12)
    assert res.accuracy_std == pytest.approx(std, abs=1e-12)
    assert res.val == pytest.approx(val, abs=1e-12)
    assert 0.6 < res.accuracy < 1.0  # a non-trivial case
    coarse = M.verification_kfold(dist, issame, far_target=0.02, val_thresholds=np.arange(0, 4, 0.01))
    assert coarse.val != pytest.approx(val, abs=1e-12)  # the grid matters: the test sees the 0.001 grid


def test_verification_rejects_bad_input():
    with pytest.raises(ValueError, match="same length"):
        M.verification_kfold(np.zeros(20), np.zeros(19, bool))
    with pytest.raises(ValueError, match="NaN"):
        M.verification_kfold(np.full(20, np.nan), np.zeros(20, bool))
    with pytest.raises(ValueError, match="same shape"):
        M.evaluate_verification(np.zeros((4, 3)), np.zeros((4, 2)), np.zeros(4, bool))


# ----------------------------------------------------------------------------------------- ROC
def test_tar_at_far_known_points_and_tie_to_higher_tpr():
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.35, 0.5, 0.6, 0.7])
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    roc = M.tar_at_far(scores, labels, fars=(1e-6, 0.1, 0.2, 0.5))
    # ROC points: t=.5 -> (0, 3/4); t=.4 -> (1/4, 3/4); t=.35 -> (1/4, 1); t=.3 -> (2/4, 1)
    assert roc.tar_at_far[1e-6] == 0.75  # FPR-0 points (0, 0) and (0, 0.75): the higher TPR wins
    assert roc.tar_at_far[0.1] == 0.75  # nearest FPR is 0
    assert roc.tar_at_far[0.2] == 1.0  # nearest FPR 1/4, where (1/4, 1) beats (1/4, 3/4)
    assert roc.tar_at_far[0.5] == 1.0
    assert roc.auc == pytest.approx(15 / 16)  # 15 of 16 genuine/impostor orderings correct


def test_tar_at_far_needs_both_classes():
    with pytest.raises(ValueError, match="genuine"):
        M.tar_at_far(np.array([0.1, 0.2]), np.array([1, 1]))


# ------------------------------------------------------------------------------ identification
def _hand_example():
    # gallery: subjects 10, 20, 30 (one entry each). Probes 0-3 mated, 4-8 unmated.
    gallery = np.array([10, 20, 30])
    probes = np.array([10, 20, 30, 10, -1, -2, -3, -4, -5])
    scores = np.array(
        [
            [0.90, 0.10, 0.20],  # mate 10 rank 1, score .9
            [0.50, 0.60, 0.10],  # mate 20 rank 1, score .6
            [0.70, 0.40, 0.30],  # mate 30 rank 3, score .3
            [0.40, 0.55, 0.20],  # mate 10 rank 2, score .4
            [0.80, 0.10, 0.10],  # unmated best .8
            [0.10, 0.65, 0.10],  # .65
            [0.50, 0.20, 0.10],  # .5
            [0.10, 0.10, 0.35],  # .35
            [0.20, 0.10, 0.10],  # .2
        ]
    )
    return scores, probes, gallery


def test_open_set_nist_hand_worked():
    scores, probes, gallery = _hand_example()
    # unmated best sorted: .8 .65 .5 .35 .2 (U=5).
    # FPIR 0.2 -> k=1 false positive allowed -> t = .65 (FPIR(.65) = 1/5: only .8 is above).
    #   rank 1: mated hits with rank<=1 and score>=.65: probe 0 (.9) -> 1/4
    # FPIR 0.4 -> t = .5: rank 1 hits .9, .6 -> 2/4; rank 2 adds probe 3 (.4 < .5) -> still 2/4
    # FPIR 0.0 -> t = .8 -> probe 0 -> 1/4. FPIR 1.0 -> t = -inf -> rank-1 rate 2/4, rank-3 rate 4/4
    r1 = M.open_set_identification(scores, probes, gallery, fpirs=(0.0, 0.2, 0.4, 1.0), rank=1)
    assert r1.tpir == {0.0: 0.25, 0.2: 0.25, 0.4: 0.5, 1.0: 0.5}
    assert r1.thresholds[0.2] == 0.65 and r1.thresholds[1.0] == -np.inf
    r2 = M.open_set_identification(scores, probes, gallery, fpirs=(0.4, 0.6), rank=2)
    # FPIR .6 -> t = .35: rank<=2 hits .9, .6, .4 -> 3/4
    assert r2.tpir == {0.4: 0.5, 0.6: 0.75}
    r3 = M.open_set_identification(scores, probes, gallery, fpirs=(1.0,), rank=3)
    assert r3.tpir[1.0] == 1.0
    assert r1.rank_rates[1] == 0.5 and r1.rank_rates[5] == 1.0
    # curve: step function over FPIR in [0, 1]; AUC computed by hand from the steps
    # t=.8: fpir 0, tpir 1/4 ; t=.65: 1/5, 1/4 ; t=.5: 2/5, 2/4 ; t=.35: 3/5, 2/4 ; t=.2: 4/5, 2/4 ; -inf: 1, 2/4
    # TPIR(f) for f in [0, .2) and [.2, .4) is 1/4, then 2/4 up to 1
    assert r1.auc == pytest.approx(0.2 * 0.25 + 0.2 * 0.25 + 0.2 * 0.5 + 0.2 * 0.5 + 0.2 * 0.5)


def test_open_set_multiple_gallery_entries_collapse_to_subject_max():
    scores, probes, gallery = _hand_example()
    # add a second, weaker entry of subject 20 and a duplicate stronger entry of 30: results as max
    extra = np.concatenate([scores, scores[:, 1:2] - 0.05, scores[:, 2:3] + 0.0], axis=1)
    r = M.open_set_identification(extra, probes, np.array([10, 20, 30, 20, 30]), fpirs=(0.2, 0.4))
    assert r.tpir == {0.2: 0.25, 0.4: 0.5}


def test_cmc_hand_worked():
    scores, probes, gallery = _hand_example()
    res = M.cmc(scores[:4], probes[:4], gallery, ranks=(1, 2, 3))
    assert res == {1: 0.5, 2: 0.75, 3: 1.0}
    with pytest.raises(ValueError, match="no mate"):
        M.cmc(scores, probes, gallery)


def _btnet_survface_loop(scores, probes, gallery, rank, fars):
    """The BTNet SurvFace script's logic written out (top-k, linspace grid, nearest FAR)."""
    mated = np.isin(probes, gallery)
    k_sim, u_sim, k_lab = scores[mated], scores[~mated], probes[mated]
    pred = np.argsort(-k_sim, axis=1, kind="stable")[:, :rank]
    k_val = np.take_along_axis(k_sim, pred, 1)
    u_val = u_sim.max(1)
    corr = gallery[pred] == k_lab[:, None]
    out = []
    for th in np.linspace(min(k_val.min(), u_val.min()), u_val.max(), 1000):
        out.append((th, (corr & (k_val > th)).sum() / len(k_sim), (u_val > th).sum() / len(u_sim)))
    out = np.array(out)
    return {f: out[np.argmin(np.abs(out[:, 2] - f)), 1] for f in fars}, out


def test_btnet_survface_variant_matches_script_logic():
    rng = np.random.default_rng(3)
    gallery = np.arange(40)
    probes = np.concatenate([rng.integers(0, 40, 120), -np.arange(1, 81)])
    scores = rng.normal(0, 0.2, (200, 40))
    scores[np.arange(120), probes[:120]] += 0.5
    res = M.open_set_identification(scores, probes, gallery, fpirs=(0.3, 0.1, 0.01), rank=20, variant="btnet_survface")
    expect, table = _btnet_survface_loop(scores, probes, gallery, 20, (0.3, 0.1, 0.01))
    for f in expect:
        assert res.tpir[f] == pytest.approx(expect[f])
    from sklearn.metrics import auc

    assert res.auc == pytest.approx(auc(table[:, 2], table[:, 1]))


def _insightface_1n_loop(query, gallery_feats, mask, fars):
    sim = query @ gallery_feats.T
    required = [math.ceil(len(query) * f) for f in fars]
    pos = np.array([sim[i, mask[i]] for i in range(len(query))])
    neg = sim.copy()
    for i in range(len(query)):
        neg[i, mask[i]] = -2.0
    negs = heapq.nlargest(max(required), neg[neg > -2.0])
    return {f: np.sum(pos > negs[k - 1]) / len(query) for f, k in zip(fars, required, strict=True)}


def test_insightface_1n_variant_matches_script_logic():
    rng = np.random.default_rng(4)
    g = M.l2_normalize(rng.standard_normal((30, 16)))
    labels = rng.permutation(np.arange(100, 130))
    mask = rng.integers(0, 30, 90)
    q = M.l2_normalize(g[mask] + 0.9 * rng.standard_normal((90, 16)))
    res = M.open_set_identification(q @ g.T, labels[mask], labels, fpirs=(0.01, 0.1), variant="insightface_1n")
    expect = _insightface_1n_loop(q, g, mask, (0.01, 0.1))
    assert res.tpir == pytest.approx(expect)
    assert res.rank_rates[1] == pytest.approx(np.mean(np.argmax(q @ g.T, 1) == mask))


def test_open_set_errors():
    scores, probes, gallery = _hand_example()
    with pytest.raises(ValueError, match="variant"):
        M.open_set_identification(scores, probes, gallery, variant="nope")
    with pytest.raises(ValueError, match="shape"):
        M.open_set_identification(scores[:, :2], probes, gallery)
    with pytest.raises(ValueError, match="unmated"):
        M.open_set_identification(scores[:4], probes[:4], gallery)


# ------------------------------------------------------------------------------------------ ERC
def test_erc_rejecting_low_quality_removes_the_errors():
    # 10 genuine pairs: the 3 lowest-quality score below the threshold; impostors all at .0-.29
    gen = np.array([0.1, 0.2, 0.25] + [0.9] * 7)
    gen_q = np.array([0.0, 0.1, 0.2] + [1.0] * 7)
    imp = np.linspace(0.0, 0.29, 100)
    scores = np.concatenate([gen, imp])
    labels = np.concatenate([np.ones(10), np.zeros(100)])
    quality = np.concatenate([gen_q, np.ones(100)])
    res = M.erc_curve(scores, labels, quality, fmr=0.01, reject_fractions=[0.0, 0.1, 0.2, 0.3, 0.5])
    # FMR 1 % of 100 impostors: one impostor (.29) may score >= t, so t lies just above .2871
    assert imp[-2] < res.threshold <= imp[-1]
    np.testing.assert_allclose(res.fnmr, [3 / 10, 2 / 9, 1 / 8, 0.0, 0.0])
    assert np.mean(imp >= res.threshold) <= 0.01
    np.testing.assert_array_equal(M.pair_quality([1, 5], [3, 2]), [1, 2])
