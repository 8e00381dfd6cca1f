"""SynthFace calibration baseline: the degradation matches OpenCV's area-down / bilinear-up, and a tiny run scores."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mrface.data.synthface import SynthFace
from mrface.eval.synthface_calibration import _degraded, pca_baseline


@pytest.mark.parametrize("size", [14, 7])
def test_degradation_matches_cv2_area_down_bilinear_up(size):
    faces = SynthFace(0).render(np.arange(3), np.zeros(3, int))
    ref = np.stack(
        [
            cv2.resize(
                cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA), (112, 112), interpolation=cv2.INTER_LINEAR
            )
            for f in faces
        ]
    )
    ours = _degraded(faces, size)
    assert ours.shape == faces.shape and ours.dtype == np.uint8
    assert np.abs(ours.astype(int) - ref.astype(int)).max() <= 1  # uint8 rounding only
    assert _degraded(faces, 112) is faces


def test_tiny_baseline_reports_each_resolution():
    results = pca_baseline(sizes=(112, 14), train_identities=12, train_images=2, num_pairs=40, components=8)
    assert [r.resolution for r in results] == [112, 14]
    for r in results:
        assert 0.0 <= r.accuracy <= 1.0 and r.std >= 0.0
        assert r.accuracy * 40 == pytest.approx(round(r.accuracy * 40))  # mean of 10 folds of 4 pairs each
