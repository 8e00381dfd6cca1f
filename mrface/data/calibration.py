"""SynthFace difficulty calibration: a pixel-space PCA + cosine verification baseline at several resolutions.

The baseline fits PCA on images of training identities (disjoint from the test identities),
projects both images of each test pair, scores pairs by cosine similarity and reports 10-fold
accuracy (threshold chosen on 9 folds, accuracy on the 10th, pairs in order, REFERENCE.md §9).
Low resolution means down-sampling 112 -> s with area averaging and back up to 112 (bilinear),
with OpenCV (the same semantics as ``mrface.ops.degrade_resolution(filter='area', up='bilinear')``).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from mrface.data.synthface import SynthFace


def fold_accuracy(scores: np.ndarray, issame: np.ndarray, folds: int = 10) -> tuple[float, float]:
    """Mean and std of k-fold accuracy with the threshold on similarity ``scores`` fitted on k-1 folds."""
    scores, issame = np.asarray(scores, np.float64), np.asarray(issame, bool)
    idx = np.array_split(np.arange(len(scores)), folds)
    accs = []
    for k in range(folds):
        train = np.concatenate([idx[j] for j in range(folds) if j != k])
        cand = np.unique(scores[train])
        acc_train = [((scores[train] >= t) == issame[train]).mean() for t in cand]
        t = cand[int(np.argmax(acc_train))]
        accs.append(((scores[idx[k]] >= t) == issame[idx[k]]).mean())
    return float(np.mean(accs)), float(np.std(accs))


def verification_pairs(
    num_identities: int, num_pairs: int, first_identity: int, images_per_identity: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Alternating same/different pairs: (identities (P, 2), image ids (P, 2), issame (P,))."""
    rng = np.random.default_rng(seed)
    ids = np.empty((num_pairs, 2), np.int64)
    imgs = rng.integers(0, images_per_identity, (num_pairs, 2))
    issame = np.arange(num_pairs) % 2 == 0
    ids[:, 0] = first_identity + rng.integers(0, num_identities, num_pairs)
    other = first_identity + (ids[:, 0] - first_identity + rng.integers(1, num_identities, num_pairs)) % num_identities
    ids[:, 1] = np.where(issame, ids[:, 0], other)
    same_img = issame & (imgs[:, 0] == imgs[:, 1])
    imgs[same_img, 1] = (imgs[same_img, 1] + 1) % images_per_identity
    return ids, imgs, issame


def degrade(images: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W, 3) uint8 -> down to size x size (cv2 INTER_AREA) and back up (INTER_LINEAR), same shape."""
    h, w = images.shape[1:3]
    if size >= h:
        return images
    out = np.empty_like(images)
    for k, im in enumerate(images):
        small = cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA)
        out[k] = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    return out


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
        tr = degrade(train, size).reshape(len(train), -1).astype(np.float32) / 255
        te = degrade(test, size).reshape(len(test), -1).astype(np.float32) / 255
        mean = tr.mean(0)
        basis = pca_basis(tr - mean, components, whiten)
        proj = (te - mean) @ basis
        proj /= np.linalg.norm(proj, axis=1, keepdims=True) + 1e-12
        scores = (proj[0::2] * proj[1::2]).sum(1)
        acc, std = fold_accuracy(scores, issame)
        results.append(CalibrationResult(size, acc, std))
    return results


def main() -> None:
    for whiten in (False, True):
        for r in pca_baseline(whiten=whiten):
            name = "whitened PCA" if whiten else "PCA"
            print(f"{name:>12} + cosine {r.resolution:>4} px: {100 * r.accuracy:.2f} +- {100 * r.std:.2f}")


if __name__ == "__main__":
    main()
