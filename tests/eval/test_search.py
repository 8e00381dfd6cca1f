"""Gallery search: numpy and faiss backends return the exact top-k of a brute-force loop."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from mrface.eval.metrics import l2_normalize
from mrface.eval.search import gallery_search

BACKENDS = ["numpy"] + (["faiss"] if importlib.util.find_spec("faiss") else [])


@pytest.mark.parametrize("backend", BACKENDS)
def test_topk_matches_brute_force(backend):
    rng = np.random.default_rng(0)
    g = l2_normalize(rng.standard_normal((157, 24))).astype(np.float32)
    q = l2_normalize(rng.standard_normal((33, 24))).astype(np.float32)
    scores, idx = gallery_search(q, g, k=7, backend=backend, block=10)
    for i in range(33):
        s = [float(np.dot(q[i].astype(np.float64), g[j].astype(np.float64))) for j in range(157)]
        want = sorted(range(157), key=lambda j: -s[j])[:7]
        assert idx[i].tolist() == want
        np.testing.assert_allclose(scores[i], [s[j] for j in want], rtol=1e-5, atol=1e-6)


def test_numpy_tie_break_and_errors():
    g = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], np.float32)
    scores, idx = gallery_search(np.array([[1.0, 0.0]], np.float32), g, k=5, backend="numpy")
    assert idx.tolist() == [[0, 1, 2]] and scores.shape == (1, 3)
    with pytest.raises(ValueError, match="share D"):
        gallery_search(np.zeros((2, 3)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="backend"):
        gallery_search(np.zeros((2, 3)), np.zeros((4, 3)), backend="gpu")
