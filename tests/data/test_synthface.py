"""SynthFace: determinism, batch independence, identity structure, low-resolution loss of detail."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mrface.data.synthface import SIZE, SynthFace, hash_uniform


def test_shape_dtype_and_determinism():
    a = SynthFace(3).render([0, 1, 2], [0, 0, 5])
    b = SynthFace(3).render([0, 1, 2], [0, 0, 5])
    assert a.shape == (3, SIZE, SIZE, 3) and a.dtype == np.uint8
    assert a.tobytes() == b.tobytes()
    assert not np.array_equal(a, SynthFace(4).render([0, 1, 2], [0, 0, 5]))


def test_image_independent_of_batch_composition():
    sf = SynthFace(0, batch=4)
    batch = sf.render([7, 1, 7, 3, 9, 2], [2, 0, 0, 1, 4, 3])
    alone = SynthFace(0, batch=16, texture_cache=1).render([7], [2])
    np.testing.assert_array_equal(batch[0], alone[0])
    grid = sf.render_grid(2, 3, first_identity=5)
    np.testing.assert_array_equal(grid[4], sf.render([6], [1])[0])


def test_hash_uniform_is_uniform_and_keyed():
    u = hash_uniform(0, np.arange(20000), np.zeros(20000), 1, 2)
    assert 0 <= u.min() and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.005
    assert abs(np.corrcoef(u[:, 0], u[:, 1])[0, 1]) < 0.03
    assert not np.array_equal(u, hash_uniform(1, np.arange(20000), np.zeros(20000), 1, 2))


def test_same_identity_closer_than_different_identity():
    sf = SynthFace(0)
    n_id, n_img = 12, 6
    x = sf.render_grid(n_id, n_img).reshape(n_id, n_img, -1).astype(np.float32)
    # nearest-class-mean identification on raw pixels (leave-one-out means): chance is 1/12; the
    # per-image background and lighting keep it far from perfect, by design
    correct = 0
    for i in range(n_id):
        for j in range(n_img):
            means = x.mean(1)
            means[i] = np.delete(x[i], j, 0).mean(0)
            correct += int(np.argmin(((means - x[i, j]) ** 2).sum(1)) == i)
    assert correct / (n_id * n_img) > 0.25


def test_identity_texture_vanishes_at_low_resolution():
    sf = SynthFace(0)
    tex = sf._make_textures(np.arange(4)).reshape(4, SIZE, SIZE).astype(np.float32)
    band = tex - tex.mean((1, 2), keepdims=True)
    for t in band:
        low = cv2.resize(cv2.resize(t, (14, 14), interpolation=cv2.INTER_AREA), (SIZE, SIZE))
        assert low.std() < 0.3 * t.std()


def test_bad_arguments():
    with pytest.raises(ValueError, match="same length"):
        SynthFace(0).render([0, 1], [0])
    with pytest.raises(ValueError, match="non-negative"):
        SynthFace(0).render([-1], [0])
