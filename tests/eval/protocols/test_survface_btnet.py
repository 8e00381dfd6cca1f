"""BTNet's SurvFace 1:N set-up (eval_survface_1n_multi_reso.py): raw-feature prototypes, PIL bicubic resize."""

from __future__ import annotations

import numpy as np
from PIL import Image

from mrface.eval.crops import CropRouting
from mrface.eval.protocols.survface import pil_bicubic_to_branch, score_survface


def test_raw_prototypes_average_raw_features_then_normalise():
    """Subject 1 has a long and a short gallery feature: the raw mean leans to the long one, the mean of unit
    features does not. Hand values: raw mean of (10, 0) and (0, 1) = (5, 0.5) -> unit (0.995, 0.0995);
    unit mean of (1, 0), (0, 1) -> (0.707, 0.707). A probe at (0.6, 0.8) then scores 0.677 against subject 1
    with raw prototypes (so subject 2 at (0, 1)... wins with 0.8), 0.990 with unit prototypes (subject 1 wins)."""
    gallery = np.array([[10.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    gl = np.array([1, 1, 2])
    mated = np.array([[0.6, 0.8]])
    unmated = np.array([[-1.0, 0.0], [-0.6, -0.8]])
    raw = score_survface(gallery, gl, mated, np.array([1]), unmated, rank=1, gallery_mode="raw_prototypes")
    unit = score_survface(gallery, gl, mated, np.array([1]), unmated, rank=1, gallery_mode="prototypes")
    assert raw.rank_rates[1] == 0.0  # subject 2 (score 0.8) beats subject 1 (0.6 * 0.995 + 0.8 * 0.0995 = 0.677)
    assert unit.rank_rates[1] == 1.0  # subject 1 (0.990) beats subject 2 (0.8)


def test_pil_bicubic_resize_to_the_branch_side():
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((30, 20), (12, 10), (6, 9), (29, 28))]
    out = pil_bicubic_to_branch(crops, (112, 28, 14, 7), CropRouting(indicator="avg", strategy="ceil"))
    # avg (w + h) // 2: 25 -> 28, 11 -> 14, 7 -> 7, 28 -> 28 (ceil: smallest branch >= size)
    assert [o.shape[0] for o in out] == [28, 14, 7, 28]
    for crop, o, r in zip(crops, out, (28, 14, 7, 28), strict=True):
        np.testing.assert_array_equal(o, np.asarray(Image.fromarray(crop).resize((r, r), Image.BICUBIC)))
