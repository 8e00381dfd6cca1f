"""OnnxFaceRunner routes mixed-size faces like MultiResolutionFaceModel and matches its embeddings."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from mrface.export.errors import ExportError
from mrface.export.routing import route_faces, split_batches
from mrface.export.runner import OnnxFaceRunner
from mrface.models import MultiResolutionFaceModel
from mrface.models.multires import normalised_faces


def mixed_faces(faces: np.ndarray, seed: int = 0) -> list[np.ndarray]:
    """Faces resized to sides spanning every branch (5..130 px, some non-square)."""
    rng = np.random.default_rng(seed)
    sides = [5, 7, 8, 11, 14, 15, 21, 22, 28, 29, 40, 70, 71, 111, 112, 130]
    out = []
    for i, s in enumerate(sides):
        w = s if i % 3 else max(4, s - int(rng.integers(0, 4)))
        interp = cv2.INTER_AREA if s < 112 else cv2.INTER_LINEAR
        out.append(cv2.resize(faces[i], (w, s), interpolation=interp))
    return out


@pytest.mark.parametrize(("strategy", "indicator", "color_order"), [("ceil", "max", "RGB"), ("near", "min", "BGR")])
def test_runner_matches_multiresolution_model(float_export, btnet, faces, strategy, indicator, color_order):
    images = mixed_faces(faces)
    if color_order == "BGR":
        images = [np.ascontiguousarray(im[:, :, ::-1]) for im in images]
    runner = OnnxFaceRunner(
        float_export.out_dir, strategy=strategy, indicator=indicator, color_order=color_order, threads=2
    )
    ref_model = MultiResolutionFaceModel(btnet, strategy=strategy, indicator=indicator, color_order=color_order)
    with torch.inference_mode():
        ref = ref_model(images)
    out = runner(images)
    assert out.branches == ref.branches
    assert len(set(out.branches)) == 4  # every path used
    e, r = out.embeddings.astype(np.float64), ref.embeddings.numpy().astype(np.float64)
    cos = (e * r).sum(1) / (np.linalg.norm(e, axis=1) * np.linalg.norm(r, axis=1))
    assert cos.min() >= 0.9999


def test_route_groups_cover_input_once(btnet, faces):
    faces_t = normalised_faces(mixed_faces(faces), btnet.metadata, "RGB")
    groups = route_faces(faces_t, btnet.resolutions)
    indices = sorted(i for g in groups for i in g.indices)
    assert indices == list(range(len(faces_t)))
    for g in groups:
        assert g.batch.shape == (len(g.indices), 3, g.resolution, g.resolution)


def test_split_batches():
    assert split_batches(10, 4) == [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert split_batches(0, 4) == []
    with pytest.raises(ValueError, match="max_batch=0"):
        split_batches(3, 0)


def test_runner_refuses_uint8_export(u8_export):
    with pytest.raises(ExportError, match="float_nchw"):
        OnnxFaceRunner(u8_export.out_dir)


def test_runner_needs_a_finished_export(tmp_path):
    with pytest.raises(ExportError, match="no manifest.json"):
        OnnxFaceRunner(tmp_path)


def test_runner_bad_images(float_export):
    runner = OnnxFaceRunner(float_export.out_dir, threads=1)
    with pytest.raises(ValueError, match=r"images\[1\]: expected an HxWx3 uint8"):
        runner([np.zeros((20, 20, 3), np.uint8), np.zeros((20, 20), np.uint8)])
    with pytest.raises(ValueError, match="strategy='round'"):
        OnnxFaceRunner(float_export.out_dir, strategy="round")
