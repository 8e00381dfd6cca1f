"""10-fold verification accuracy of an exported graph on held-out SynthFace pairs, vs PyTorch float32.

Pairs come from SynthFace identities far from any the demo or the SynthFace writer trains on
(:data:`FIRST_IDENTITY` onwards), alternating genuine/impostor (``verification_pairs``). Both faces
of each pair are rendered at 112, brought to the graph's input exactly as the parity check does
(:func:`mrface.export.parity.graph_inputs`: cv2 INTER_AREA to the path's side), embedded by the
graph (onnxruntime) and by the PyTorch model in float32, scored by cosine, and scored with the
10-fold protocol (threshold fitted on 9 folds, accuracy on the 10th; REFERENCE.md §9).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from mrface.data.synthface import verification_pairs
from mrface.export.errors import ExportError
from mrface.export.parity import graph_inputs, reference_embedding
from mrface.export.spec import GraphSpec
from mrface.models.base import FaceModel

FIRST_IDENTITY = 500_000
IDENTITIES = 400
CHUNK = 64


def heldout_pairs(num_pairs: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(faces RGB uint8 (2P, 112, 112, 3) as [a0, b0, a1, b1, ...], issame (P,) bool)."""
    from mrface.data.synthface import SynthFace

    if num_pairs < 10:
        raise ExportError(f"accuracy pairs={num_pairs}: 10-fold accuracy needs at least 10 pairs")
    ids, imgs, issame = verification_pairs(IDENTITIES, num_pairs, FIRST_IDENTITY, 1000, seed)
    return SynthFace(seed).render(ids.ravel(), imgs.ravel()), issame


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


def _cosine_scores(emb: np.ndarray) -> np.ndarray:
    e = emb.astype(np.float64)
    e /= np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    return (e[0::2] * e[1::2]).sum(1)


def verification_accuracy(
    run: Callable[[np.ndarray], list[np.ndarray]],
    model: FaceModel,
    spec: GraphSpec,
    faces: np.ndarray,
    issame: np.ndarray,
) -> dict[str, Any]:
    """10-fold accuracy of the graph ``run`` and of PyTorch float32 on the same pairs, and the drop."""
    meta = model.metadata or model.default_metadata()
    graph, torch_ref = [], []
    for i in range(0, len(faces), CHUNK):
        feed, x = graph_inputs(faces[i : i + CHUNK], spec, meta)
        graph.append(np.asarray(run(np.ascontiguousarray(feed))[0], dtype=np.float32))
        torch_ref.append(reference_embedding(model, x, spec.resolution).numpy())
    acc, std = fold_accuracy(_cosine_scores(np.concatenate(graph)), issame)
    acc32, _ = fold_accuracy(_cosine_scores(np.concatenate(torch_ref)), issame)
    return {
        "pairs": int(len(issame)),
        "folds": 10,
        "accuracy": acc,
        "accuracy_std": std,
        "accuracy_fp32": acc32,
        "drop": acc32 - acc,
    }
