"""Exact inner-product gallery search: faiss (``IndexFlatIP``, optional) or numpy, same results.

faiss is an optional dependency (``pip install 'mrface[faiss]'``); without it — or with
``backend="numpy"`` — the search is a blocked matrix product plus ``argpartition``. Both return
the top-k scores in descending order; ties are broken by the lower gallery index.
"""

from __future__ import annotations

import importlib.util

import numpy as np

BACKENDS = ("auto", "faiss", "numpy")


def faiss_available() -> bool:
    return importlib.util.find_spec("faiss") is not None


def _numpy_search(probes: np.ndarray, gallery: np.ndarray, k: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    p = probes.shape[0]
    scores = np.empty((p, k), np.float32)
    index = np.empty((p, k), np.int64)
    for lo in range(0, p, block):
        s = probes[lo : lo + block] @ gallery.T
        # stable sort on (-score, index) gives the lower index first on ties
        order = np.lexsort((np.broadcast_to(np.arange(s.shape[1]), s.shape), -s), axis=1)[:, :k]
        index[lo : lo + block] = order
        scores[lo : lo + block] = np.take_along_axis(s, order, 1)
    return scores, index


def gallery_search(
    probes: np.ndarray, gallery: np.ndarray, k: int = 20, backend: str = "auto", block: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` gallery entries per probe by inner product (cosine for unit vectors).

    Args:
        probes: (P, D) float; gallery: (G, D) float (same D).
        k: candidates per probe (clipped to G).
        backend: ``auto`` (faiss when installed), ``faiss`` or ``numpy``.
    Returns:
        scores (P, k) float32 descending, indices (P, k) int64 into the gallery.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}: expected one of {BACKENDS}")
    q = np.ascontiguousarray(probes, dtype=np.float32)
    g = np.ascontiguousarray(gallery, dtype=np.float32)
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(f"probes (P, D) and gallery (G, D) must share D, got {q.shape} and {g.shape}")
    k = min(int(k), g.shape[0])
    if k < 1:
        raise ValueError("gallery_search: need k >= 1 and a non-empty gallery")
    use_faiss = backend == "faiss" or (backend == "auto" and faiss_available())
    if backend == "faiss" and not faiss_available():
        raise ImportError("backend='faiss' needs faiss: pip install 'mrface[faiss]' (faiss-cpu)")
    if not use_faiss:
        return _numpy_search(q, g, k, block)
    import faiss

    index = faiss.IndexFlatIP(g.shape[1])
    index.add(g)
    scores, idx = index.search(q, k)
    return scores, idx.astype(np.int64)
