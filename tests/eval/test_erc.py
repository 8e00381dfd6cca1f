"""ERC on verification pairs: a hand-worked curve, embedding norms as quality, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mrface.data.bins import VerificationPairs
from mrface.eval.erc import erc_from_features, load_quality_array, verification_erc
from mrface.eval.verification import ExtractOptions
from mrface.models import FaceModel


def _at_cosines(cosines):
    c = np.asarray(cosines, np.float64)
    return np.stack([c, np.sqrt(1 - c**2)], 1)


def test_hand_worked_erc():
    # genuine cosines .9 .35 .8 .2 (pair qualities 5 1 4 2); impostors .1 .2 .3 .4; FMR 0 -> threshold just above .4
    cos = [0.9, 0.35, 0.8, 0.2, 0.1, 0.2, 0.3, 0.4]
    issame = np.array([1, 1, 1, 1, 0, 0, 0, 0], bool)
    f1, f2 = np.tile([[1.0, 0.0]], (8, 1)), _at_cosines(cos)
    q1 = np.array([5, 1, 9, 2, 3, 3, 3, 3], float)
    q2 = np.array([7, 8, 4, 6, 3, 3, 3, 1], float)  # pair quality = min: 5 1 4 2
    erc = erc_from_features(f1, f2, issame, q1, q2, fmr=0.0, reject_fractions=(0.0, 0.25, 0.5))
    # no rejection: .35 and .2 fail (2/4); drop q=1 (.35): 1/3; drop q=1, 2: 0
    np.testing.assert_allclose(erc.fnmr, [0.5, 1 / 3, 0.0])
    assert 0.4 < erc.threshold < 0.4 + 1e-12


def _pairs(synth_images):
    images, _ = synth_images  # 20 identities x 3 images, identity-major
    first = np.concatenate([images[0::3][:10], images[0::3][:10]])
    second = np.concatenate([images[1::3][:10], images[1::3][np.roll(np.arange(10), 1)]])
    return VerificationPairs(np.stack([first, second], 1).reshape(-1, 112, 112, 3), np.arange(20) < 10, "RGB")


def test_norm_quality_matches_direct_norms(synth_images, pooled_linear):
    pairs = _pairs(synth_images)
    opts = ExtractOptions(flip="sum", batch_size=16)
    ver, erc = verification_erc(pooled_linear, pairs, 112, 112, options=opts, quality="norm", fmr=0.1)
    with torch.no_grad():
        x = pooled_linear.preprocess(pairs.images, color_order="RGB")
        e, ef = pooled_linear(x).double().numpy(), pooled_linear(x.flip(3)).double().numpy()
    norms = (np.linalg.norm(e, axis=1) + np.linalg.norm(ef, axis=1)) / 2  # documented flip-mode quality
    fused = e / np.linalg.norm(e, axis=1, keepdims=True) + ef / np.linalg.norm(ef, axis=1, keepdims=True)
    want = erc_from_features(fused[0::2], fused[1::2], pairs.issame, norms[0::2], norms[1::2], fmr=0.1)
    np.testing.assert_allclose(erc.fnmr, want.fnmr)
    assert erc.threshold == pytest.approx(want.threshold)
    # a user array ranks differently: reversed norms give a different curve from the same scores
    _, rev = verification_erc(pooled_linear, pairs, options=opts, quality=-norms, fmr=0.1)
    want_rev = erc_from_features(fused[0::2], fused[1::2], pairs.issame, -norms[0::2], -norms[1::2], fmr=0.1)
    np.testing.assert_allclose(rev.fnmr, want_rev.fnmr)
    assert 0 <= ver.accuracy <= 1


class _Normalised(FaceModel):
    """Wraps a model and L2-normalises its output: every norm is 1, so norms carry no quality."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.metadata = inner, inner.metadata

    def forward(self, x):
        return torch.nn.functional.normalize(self.inner(x), dim=1)


def test_constant_norms_and_bad_arrays_are_clear_errors(synth_images, pooled_linear, tmp_path):
    pairs = _pairs(synth_images)
    with pytest.raises(ValueError, match="un-normalised embeddings"):
        verification_erc(_Normalised(pooled_linear), pairs, options=ExtractOptions(flip="none"))
    with pytest.raises(ValueError, match=r"expected \(40,\) per-image values"):
        verification_erc(pooled_linear, pairs, quality=np.ones(20))
    with pytest.raises(ValueError, match="quality='magface'"):
        verification_erc(pooled_linear, pairs, quality="magface")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_quality_array(tmp_path / "q.npy", 40)
    np.save(tmp_path / "q.npy", np.ones((20, 2)))
    with pytest.raises(ValueError, match=r"q\.npy: expected a \(40,\) numeric array"):
        load_quality_array(tmp_path / "q.npy", 40)
