"""IJB template pooling against InsightFace's slow loop; test-mode flags move results as documented."""

from __future__ import annotations

import numpy as np
import pytest

from mrface.eval.protocols.ijb import IjbFlags, identify_1toN, template_features, verify_1to1


def _slow_templates(feats, flip_feats, faceness, templates, medias, flags):
    """InsightFace's image2template_feature loop, with its test-mode preamble."""
    x = feats + flip_feats if flags.flip else feats.copy()
    if not flags.norm_weighting:
        x = x / np.sqrt(np.sum(x**2, -1, keepdims=True))
    if flags.detector_score:
        x = x * faceness[:, None]
    uniq = np.unique(templates)
    out = np.zeros((len(uniq), x.shape[1]))
    for c, t in enumerate(uniq):
        (ind_t,) = np.where(templates == t)
        f, m = x[ind_t], medias[ind_t]
        media_feats = []
        for u in np.unique(m):
            (ind_m,) = np.where(m == u)
            media_feats.append(np.mean(f[ind_m], 0) if len(ind_m) > 1 else f[ind_m][0])
        out[c] = np.sum(media_feats, 0)
    return out / np.sqrt(np.sum(out**2, -1, keepdims=True)), uniq


def _data(seed=0, n=300, t=40, d=16):
    rng = np.random.default_rng(seed)
    templates = rng.integers(0, t, n) * 3 + 5  # non-contiguous ids
    medias = rng.integers(0, 4, n)
    feats = rng.standard_normal((n, d)) * rng.uniform(0.2, 3, (n, 1))
    flip = feats + 0.3 * rng.standard_normal((n, d))
    faceness = rng.uniform(0.1, 1.0, n)
    return feats, flip, faceness, templates, medias


@pytest.mark.parametrize(
    "flags",
    [
        IjbFlags(True, False, True),
        IjbFlags(False, True, False),
        IjbFlags(True, True, True),
        IjbFlags(False, False, False),
    ],
)
def test_pooling_matches_slow_loop(flags):
    feats, flip, face, tids, mids = _data()
    got, ids = template_features(feats, tids, mids, flags, flip, face)
    want, want_ids = _slow_templates(feats, flip, face, tids, mids, flags)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def _junk_setup(seed=1, subjects=60, d=32):
    """Templates of 3 good images (identity + noise, norm ~10, faceness ~0.9) and 2 junk images
    (random direction, low norm ~1, low faceness ~0.1). Pairs: genuine = two templates of a subject."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((subjects, d))
    feats, tids, mids, face = [], [], [], []
    for s in range(subjects):
        for k in range(2):
            t = 2 * s + k
            for i in range(5):
                good = i < 3
                f = (centres[s] + 0.8 * rng.standard_normal(d)) * 10 if good else rng.standard_normal(d) * 3
                feats.append(f)
                tids.append(t)
                mids.append(10 * t + i)
                face.append(rng.uniform(0.8, 1.0) if good else rng.uniform(0.05, 0.15))
    feats = np.array(feats)
    pairs = [(2 * s, 2 * s + 1, 1) for s in range(subjects)]
    pairs += [(2 * s, 2 * ((s + o) % subjects) + 1, 0) for s in range(subjects) for o in range(1, 11)]
    pairs = np.array(pairs)
    return feats, np.array(tids), np.array(mids), np.array(face), pairs


def test_flags_move_results_in_documented_direction():
    feats, tids, mids, face, pairs = _junk_setup()

    def score(flags):
        t, ids = template_features(feats, tids, mids, flags, feats, face)
        scores, roc = verify_1to1(t, ids, pairs[:, :2], pairs[:, 2], fars=(1e-2,))
        return scores[pairs[:, 2] == 1].mean() - scores[pairs[:, 2] == 0].mean(), roc.auc

    plain = score(IjbFlags(False, False, False))
    detector = score(IjbFlags(False, False, True))
    norm = score(IjbFlags(False, True, False))
    # low-faceness / low-norm junk gets down-weighted: genuine-impostor separation grows
    assert detector[0] > plain[0] + 0.05 and detector[1] >= plain[1]
    assert norm[0] > plain[0] + 0.05 and norm[1] >= plain[1]


def test_1to1_and_1toN_end_to_end():
    feats, tids, mids, face, pairs = _junk_setup(seed=2)
    flags = IjbFlags(False, False, True)
    t, ids = template_features(feats, tids, mids, flags, None, face)
    scores, roc = verify_1to1(t, ids, pairs[:, :2], pairs[:, 2])
    assert set(roc.tar_at_far) == {1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1}
    # gallery: template 2s of subjects 0..39; probes: template 2s+1 of all 60 subjects (20 unmated)
    res = identify_1toN(
        t, ids, 2 * np.arange(40), np.arange(40), 2 * np.arange(60) + 1, np.arange(60), fpirs=(0.1, 1.0)
    )
    assert res.rank_rates[1] > 0.9 and res.tpir[1.0] == res.rank_rates[1]
    with pytest.raises(ValueError, match="no images"):
        verify_1to1(t, ids, np.array([[0, 999]]), np.array([1]))
    with pytest.raises(ValueError, match="flip_features"):
        template_features(feats, tids, mids, IjbFlags(True, False, False))


def test_ijb_presets_name_the_public_set_ups():
    """insightface arcface_torch/eval_ijbc.py: use_norm_score, use_detector_score, use_flip_test all True;
    BTNet eval_ijbc_11_multi_reso.py / eval_ijbc_1n_multi_reso.py: use_norm_score False, the others True."""
    assert IjbFlags.preset("arcface_torch") == IjbFlags(flip=True, norm_weighting=True, detector_score=True)
    assert IjbFlags.preset("btnet") == IjbFlags(flip=True, norm_weighting=False, detector_score=True)
    with pytest.raises(ValueError, match="IJB preset 'insightface'"):
        IjbFlags.preset("insightface")
