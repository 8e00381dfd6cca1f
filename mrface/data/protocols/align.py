"""The ArcFace 5-point alignment template and similarity alignment to it (Umeyama least squares, as skimage)."""

from __future__ import annotations

import cv2
import numpy as np

#: ArcFace (insightface) 5-point template (x, y) at 112x112: left eye, right eye, nose tip, mouth left, mouth right.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(2, 3) matrix M of the least-squares similarity with dst ~ M @ [src, 1] (Umeyama 1991).

    Args: src, dst: (K, 2) float point sets, K >= 2.
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"similarity_transform: need two (K, 2) point sets, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(cov) < 0:
        d[1] = -1
    rot = u @ np.diag(d) @ vt
    scale = (sig * d).sum() / s0.var(0).sum()
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """Warp ``image`` so its 5 landmarks (5, 2) (x, y) land on the ArcFace template; (size, size, C) out."""
    landmarks = np.asarray(landmarks, np.float64).reshape(5, 2)
    m = similarity_transform(landmarks, ARCFACE_TEMPLATE.astype(np.float64) * (size / 112.0))
    return cv2.warpAffine(image, m, (size, size), borderValue=0.0)
