"""OnnxFaceRunner routes mixed-size faces like MultiResolutionFaceModel and matches its embeddings; every entry
point (PyTorch wrapper, ONNX runner, evaluation's extraction) feeds a crop's branch the same pixels."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from mrface.eval.extract import extract_embeddings
from mrface.export.errors import ExportError
from mrface.export.runner import OnnxFaceRunner
from mrface.export.tensorrt.engine import split_batches
from mrface.models import MultiResolutionFaceModel
from mrface.models.branch_select import route_and_run


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


def test_entry_points_share_pixels_on_odd_sized_crops(float_export, btnet, faces):
    """20 px and 50 px crops (and a non-square 19x23, a 130 px one): the PyTorch wrapper, the ONNX runner and
    evaluation's extraction give the embedding of the branch run on the crop resized by hand with
    ``F.interpolate`` (bilinear, half-pixel, no antialias) after (x/255 - 0.5)/0.5 -- so they share pixels."""
    sizes = [(20, 20), (50, 50), (19, 23), (130, 130)]  # (w, h) -> max + ceil: 28, 112, 28, 112
    crops = [cv2.resize(faces[i], size, interpolation=cv2.INTER_AREA) for i, size in enumerate(sizes)]
    expected, branches = [], []
    with torch.inference_mode():
        for crop in crops:
            r = 28 if max(crop.shape[:2]) <= 28 else 112
            x = (torch.from_numpy(crop).permute(2, 0, 1).float()[None] / 255 - 0.5) / 0.5
            x = torch.nn.functional.interpolate(x, size=(r, r), mode="bilinear", align_corners=False, antialias=False)
            expected.append(btnet(x, resolution=r)[0])
            branches.append(r)
        expected = torch.stack(expected).double()
        wrapper = MultiResolutionFaceModel(btnet)(crops)
    runner = OnnxFaceRunner(float_export.out_dir, threads=2)(crops)
    evaluated = extract_embeddings(btnet, crops, flip="none", batch_size=3)
    assert wrapper.branches == runner.branches == evaluated.paths.tolist() == branches
    for got in (wrapper.embeddings, torch.from_numpy(evaluated.features), torch.from_numpy(runner.embeddings)):
        torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-4)
    # the check can fail: the cv2 resizer model.preprocess uses (uint8 INTER_AREA/INTER_LINEAR) is further off
    other = extract_embeddings(btnet, crops, flip="none", resizer="cv2_area_linear").features
    assert np.abs(other - expected.numpy()).max() > 1e-2


def test_route_groups_cover_input_once(btnet, faces):
    images = mixed_faces(faces)
    seen: dict[int, list[tuple]] = {}

    def runner(r):
        def run(batch):
            seen.setdefault(r, []).append(tuple(batch.shape))
            return torch.full((len(batch), 1), float(r))

        return run

    routed = route_and_run(images, {r: runner(r) for r in btnet.resolutions}, metadata=btnet.metadata)
    # every face comes back in its own row with the value of the branch it took; one batch per branch
    assert routed.outputs[:, 0].tolist() == [float(b) for b in routed.branches]
    for r, shapes in seen.items():
        assert shapes == [(routed.branches.count(r), 3, r, r)]


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
