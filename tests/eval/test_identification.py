"""Closed-set CMC (entry and subject ranks), prototypes and open-set search on constructed features."""

from __future__ import annotations

import numpy as np
import pytest

from mrface.eval.identification import closed_set_cmc, open_set_search, subject_prototypes
from mrface.eval.metrics import open_set_identification
from mrface.eval.protocols.scface import score_scface
from mrface.eval.protocols.survface import score_survface
from mrface.eval.protocols.tinyface import score_tinyface
from mrface.eval.synthface_bench import identity_oracle


def _at_cosines(cosines):
    """2-D unit vectors whose cosine with (1, 0) is each given value."""
    c = np.asarray(cosines, np.float64)
    return np.stack([c, np.sqrt(1 - c**2)], 1)


def test_hand_worked_entry_vs_subject_ranks():
    # probe label 1 at (1, 0); gallery cosines: distractor .95, subj2 .9, distractor .85, subj2 .8, mate .7, subj2 .1
    gallery = _at_cosines([0.9, 0.8, 0.7, 0.95, 0.85, 0.1])
    labels = np.array([2, 2, 1, -1, -1, 2])
    probe, plabel = np.array([[1.0, 0.0]]), np.array([1])
    # entry: .95 .9 .85 .8 above the mate -> rank 5; subject: distractor a, subject 2, distractor b -> rank 4
    # (were the two distractors collapsed into one subject "-1" the subject rank would wrongly be 3)
    entry = closed_set_cmc(probe, plabel, gallery, labels, ranks=(3, 4, 5), level="entry", backend="numpy")
    subject = closed_set_cmc(probe, plabel, gallery, labels, ranks=(3, 4, 5), level="subject")
    assert entry == {3: 0.0, 4: 0.0, 5: 1.0}
    assert subject == {3: 0.0, 4: 1.0, 5: 1.0}


def _brute_force(probe, plabels, gallery, glabels, ranks, level):
    p = probe / np.linalg.norm(probe, axis=1, keepdims=True)
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    found = []
    for i in range(len(p)):
        s = g @ p[i]
        if level == "entry":
            order = sorted(range(len(g)), key=lambda j: -s[j])
            found.append(next(k for k, j in enumerate(order, 1) if glabels[j] == plabels[i]))
        else:
            best = {}
            for j in range(len(g)):
                key = int(glabels[j]) if glabels[j] >= 0 else ("distractor", j)
                best[key] = max(best.get(key, -np.inf), s[j])
            mate = best[int(plabels[i])]
            found.append(1 + sum(v > mate for k, v in best.items() if k != int(plabels[i])))
    found = np.array(found)
    return {r: float(np.mean(found <= r)) for r in ranks}


@pytest.mark.parametrize("level", ["entry", "subject"])
def test_cmc_matches_brute_force(level):
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((15, 6))
    glabels = np.concatenate([np.repeat(np.arange(15), 2), -np.ones(25, int)])
    gallery = np.concatenate([centres[glabels[:30]] + 0.9 * rng.standard_normal((30, 6)), rng.standard_normal((25, 6))])
    plabels = rng.integers(0, 15, 40)
    probe = centres[plabels] + 0.9 * rng.standard_normal((40, 6))
    ranks = (1, 2, 5, 20)
    want = _brute_force(probe, plabels, gallery, glabels, ranks, level)
    assert 0 < want[1] < 1  # a case where the ranks matter
    for backend in ["numpy", "faiss"] if level == "entry" else ["numpy"]:
        got = closed_set_cmc(probe, plabels, gallery, glabels, ranks, level=level, backend=backend, block=7)
        assert got == pytest.approx(want)


def test_tinyface_oracle_is_perfect_and_chance_is_low():
    # identity one-hot oracle over 30 identities: probes/matches of ids 0..19, distractors of ids 20..29
    ids = np.arange(30)
    onehot = identity_oracle(ids)
    probe, match, distract = onehot[:20], onehot[:20], onehot[20:]
    cmc = score_tinyface(probe, ids[:20], match, ids[:20], distract, (1, 5, 20))
    assert cmc == {1: 1.0, 5: 1.0, 20: 1.0}
    rng = np.random.default_rng(0)
    noise = score_tinyface(
        rng.standard_normal((20, 16)),
        ids[:20],
        rng.standard_normal((20, 16)),
        ids[:20],
        rng.standard_normal((300, 16)),
        (1,),
    )
    assert noise[1] < 0.2  # 1 mate among 320 entries


def test_closed_set_errors():
    g, gl = np.eye(3), np.array([0, 1, -1])
    with pytest.raises(ValueError, match=r"no gallery entry \(e\.g\. \[5\]\)"):
        closed_set_cmc(np.eye(3)[:1], np.array([5]), g, gl)
    with pytest.raises(ValueError, match="level="):
        closed_set_cmc(np.eye(3)[:1], np.array([0]), g, gl, level="template")
    with pytest.raises(ValueError, match="NaN"):
        closed_set_cmc(np.full((1, 3), np.nan), np.array([0]), g, gl)
    with pytest.raises(ValueError, match="probe features are 2-d but gallery features 3-d"):
        closed_set_cmc(np.eye(2)[:1], np.array([0]), g, gl)


def test_prototypes_and_open_set_search():
    rng = np.random.default_rng(1)
    feats = rng.standard_normal((12, 5)) * rng.uniform(0.5, 4, (12, 1))
    labels = np.repeat([7, 3, 9], 4)
    protos, subjects = subject_prototypes(feats, labels)
    assert subjects.tolist() == [3, 7, 9]
    for k, s in enumerate(subjects):
        unit = feats[labels == s] / np.linalg.norm(feats[labels == s], axis=1, keepdims=True)
        want = unit.mean(0) / np.linalg.norm(unit.mean(0))
        np.testing.assert_allclose(protos[k], want, atol=1e-6)
    probes = rng.standard_normal((9, 5))
    plabels = np.array([3, 7, 9, 3, 100, 101, 102, 7, 103])
    got = open_set_search(
        probes, plabels, feats, labels, fpirs=(0.25, 0.5), rank=1, variant="nist", gallery="prototypes"
    )
    unit_p = probes / np.linalg.norm(probes, axis=1, keepdims=True)
    want = open_set_identification(unit_p @ protos.T, plabels, subjects, fpirs=(0.25, 0.5), rank=1)
    assert got.tpir == pytest.approx(want.tpir) and got.auc == pytest.approx(want.auc)


def test_survface_scoring_oracle_and_btnet_variant():
    # gallery: ids 1..10 (2 images each), mated probes of ids 1..10, unmated probes of ids 11..15
    onehot = identity_oracle(np.arange(16))
    gallery, gl = onehot[np.repeat(np.arange(1, 11), 2)], np.repeat(np.arange(1, 11), 2)
    mated, ml = onehot[1:11], np.arange(1, 11)
    unmated = onehot[11:16]
    for variant in ("nist", "btnet_survface"):
        for mode in ("entries", "prototypes"):
            res = score_survface(gallery, gl, mated, ml, unmated, rank=20, variant=variant, gallery_mode=mode)
            assert res.variant == variant
            assert all(v == 1.0 for v in res.tpir.values()), (variant, mode, res.tpir)
    nist = score_survface(gallery, gl, mated, ml, unmated, rank=1, variant="nist")
    assert nist.auc == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"not in the gallery \(e\.g\. \[12\]\)"):
        score_survface(gallery, gl, onehot[[1, 12]], np.array([1, 12]), unmated)


def test_scface_scoring_per_distance():
    onehot = identity_oracle(np.arange(5))
    rng = np.random.default_rng(2)
    gal, gl = onehot, np.arange(5)
    perfect = (onehot + 0.01 * rng.standard_normal((5, 5)), np.arange(5))
    swapped = (onehot[[1, 0, 2, 3, 4]], np.arange(5))  # two of five probes look like the other subject
    res = score_scface(gal, gl, {3: perfect, 1: swapped}, ranks=(1, 2))
    assert list(res) == [1, 3]
    assert res[3] == {1: 1.0, 2: 1.0} and res[1] == {1: 0.6, 2: 1.0}
    with pytest.raises(ValueError, match="one mugshot per subject"):
        score_scface(onehot[[0, 0]], np.array([0, 0]), {1: perfect})
