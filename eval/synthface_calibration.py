"""SynthFace difficulty calibration: a pixel-space PCA + cosine verification baseline at several resolutions.

    python -m mrface.eval.synthface_calibration

The baseline fits PCA on images of training identities (disjoint from the test identities),
projects both images of each test pair onto unit vectors and scores the pairs with the 10-fold
verification protocol of :func:`mrface.eval.metrics.verification_kfold` (squared L2 of the unit
projections, i.e. 2 - 2 cosine; REFERENCE.md §9). Low resolution means the degradation op,
``mrface.ops.degrade_resolution(filter='area', up='bilinear')``: area down-sampling 112 -> s and
bilinear back up to 112.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mrface.data.synthface import SynthFace, verification_pairs
from mrface.eval.metrics import squared_l2, verification_kfold
from mrface.eval.verification import degrade_images


def pca_basis(centred: np.ndarray, components: int, whiten: bool = False) -> np.ndarray:
    """(D, k) top principal directions of centred (N, D) data via the N x N Gram matrix (N << D).

    Unit-norm directions; with ``whiten`` each is further divided by its singular value so the
    projections have unit variance on the training data.
    """
    gram = centred @ centred.T
    vals, vecs = np.linalg.eigh(gram.astype(np.float64))
    order = np.argsort(vals)[::-1][:components]
    vals, vecs = np.clip(vals[order], 1e-12, None), vecs[:, order]
    basis = (centred.T @ vecs.astype(np.float32)) / np.sqrt(vals).astype(np.float32)
    return basis / np.sqrt(vals).astype(np.float32) if whiten else basis


def _degraded(images: np.ndarray, size: int) -> np.ndarray:
    """(N, 112, 112, 3) uint8 -> area down to ``size`` and bilinear back up (unchanged at full size)."""
    return images if size >= images.shape[1] else degrade_images(images, size, filter="area", up="bilinear")


@dataclass
class CalibrationResult:
    resolution: int
    accuracy: float
    std: float


def pca_baseline(
    seed: int = 0,
    sizes: tuple[int, ...] = (112, 14, 7),
    train_identities: int = 300,
    train_images: int = 4,
    num_pairs: int = 2000,
    components: int = 128,
    whiten: bool = False,
) -> list[CalibrationResult]:
    """Accuracy of PCA (optionally whitened) + cosine on pixels for SynthFace(seed) at each size."""
    sf = SynthFace(seed)
    train = sf.render_grid(train_identities, train_images, first_identity=0)
    ids, imgs, issame = verification_pairs(1000, num_pairs, train_identities, 50, seed)
    test = sf.render(ids.reshape(-1), imgs.reshape(-1))
    results = []
    for size in sizes:
        tr = _degraded(train, size).reshape(len(train), -1).astype(np.float32) / 255
        te = _degraded(test, size).reshape(len(test), -1).astype(np.float32) / 255
        mean = tr.mean(0)
        basis = pca_basis(tr - mean, components, whiten)
        proj = (te - mean) @ basis
        result = verification_kfold(squared_l2(proj[0::2], proj[1::2]), issame)
        results.append(CalibrationResult(size, result.accuracy, result.accuracy_std))
    return results


def main() -> None:
    for whiten in (False, True):
        for r in pca_baseline(whiten=whiten):
            name = "whitened PCA" if whiten else "PCA"
            print(f"{name:>12} + cosine {r.resolution:>4} px: {100 * r.accuracy:.2f} +- {100 * r.std:.2f}")


if __name__ == "__main__":
    main()
