"""Extraction: flip fusion modes, metadata preprocessing, resolution routing, resumable cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mrface.eval.extract import extract_embeddings, fuse_flip, route
from mrface.models import get_model


def _manual(model, images_rgb):
    """Raw embeddings of the images and of their mirrors, preprocessing written out by hand."""
    meta = model.metadata
    x = images_rgb.astype(np.float64) / 255.0
    if meta.color_order == "BGR":
        x = x[..., ::-1]
    x = (x - np.array(meta.mean)) / np.array(meta.std)
    t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).float()
    with torch.no_grad():
        return model(t).double(), model(t.flip(3)).double()


def test_flip_modes_against_hand_fusion(pooled_linear, synth_images):
    images = synth_images[0][:10]
    e, ef = _manual(pooled_linear, images)
    expect = {
        "none": e,
        "pre_norm_vector_add": e + ef,
        "sum": e / e.norm(dim=1, keepdim=True) + ef / ef.norm(dim=1, keepdim=True),
        "concat": torch.cat([e, ef], 1),
    }
    for mode, want in expect.items():
        got = extract_embeddings(pooled_linear, images, flip=mode, batch_size=4)
        np.testing.assert_allclose(got.features, want.numpy(), rtol=1e-4, atol=1e-4, err_msg=mode)
        want_norm = e.norm(dim=1) if mode == "none" else (e.norm(dim=1) + ef.norm(dim=1)) / 2
        np.testing.assert_allclose(got.norms, want_norm.numpy(), rtol=1e-4)
    # the modes really differ (a flip-invariant model would hide a broken flip)
    assert not np.allclose(expect["sum"].numpy(), expect["pre_norm_vector_add"].numpy(), atol=1e-3)
    with pytest.raises(ValueError, match="flip="):
        extract_embeddings(pooled_linear, images, flip="mean")
    with pytest.raises(ValueError, match="needs the flipped"):
        fuse_flip(e, None, "sum")


def test_colour_order_follows_model_metadata(pooled_linear, synth_images):
    images = synth_images[0][:6]
    rgb = extract_embeddings(pooled_linear, images, color_order="RGB", flip="none").features
    bgr = extract_embeddings(
        pooled_linear, np.ascontiguousarray(images[..., ::-1]), color_order="BGR", flip="none"
    ).features
    np.testing.assert_allclose(rgb, bgr, rtol=1e-5)
    wrong = extract_embeddings(pooled_linear, images, color_order="BGR", flip="none").features
    assert not np.allclose(rgb, wrong, atol=1e-3)


def test_routing_multiresolution_model(synth_images):
    torch.manual_seed(0)
    model = get_model("btnet_tiny", width=0.125).eval()
    assert route(model, [(14, 14)] * 2, resolution=14).tolist() == [14, 14]
    assert route(model, [(14, 14)], resolution=14, upsample=True).tolist() == [112]
    assert route(model, [(20, 20)], resolution=20).tolist() == [112]  # no branch for 20: trunk
    assert route(model, [(7, 7), (20, 18), (50, 40), (112, 112)]).tolist() == [7, 28, 112, 112]
    assert route(model, [(20, 18)], strategy="floor").tolist() == [14]
    # per-face routing: embeddings equal the branch run on the face normalised then resized by the routing's
    # default resizer (bilinear, half-pixel centres, no antialias)
    faces = [synth_images[0][0][:7, :7], synth_images[0][1][:20, :18], synth_images[0][2]]
    got = extract_embeddings(model, faces, flip="none", batch_size=8)
    assert got.paths.tolist() == [7, 28, 112]
    for face, path, row in zip(faces, got.paths, got.features, strict=True):
        with torch.no_grad():
            x = (torch.from_numpy(np.ascontiguousarray(face)).permute(2, 0, 1).float()[None] / 255 - 0.5) / 0.5
            x = F.interpolate(x, size=(int(path), int(path)), mode="bilinear", align_corners=False, antialias=False)
            want = model(x, resolution=int(path))[0]
        np.testing.assert_allclose(row, want.numpy(), rtol=1e-4, atol=1e-5)


def test_cache_resumes_after_interruption(pooled_linear, synth_images, tmp_path):
    images = synth_images[0][:20]
    full = extract_embeddings(pooled_linear, images, batch_size=4)
    calls = {"n": 0}
    original = pooled_linear.forward

    def failing(x):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("interrupted")
        return original(x)

    pooled_linear.forward = failing
    with pytest.raises(RuntimeError, match="interrupted"):
        extract_embeddings(pooled_linear, images, batch_size=4, cache_dir=tmp_path / "c")
    assert json.loads((tmp_path / "c" / "meta.json").read_text())["done"] == 8
    pooled_linear.forward = original
    before = pooled_linear.calls
    resumed = extract_embeddings(pooled_linear, images, batch_size=4, cache_dir=tmp_path / "c")
    assert pooled_linear.calls - before == 3  # batches 3..5 only
    np.testing.assert_allclose(resumed.features, full.features, rtol=1e-6)
    again = extract_embeddings(pooled_linear, images, batch_size=4, cache_dir=tmp_path / "c")
    assert pooled_linear.calls - before == 3  # complete cache: no forward pass
    np.testing.assert_array_equal(again.features, resumed.features)
    with pytest.raises(ValueError, match="meta.json.*other settings"):
        extract_embeddings(pooled_linear, images, batch_size=4, flip="none", cache_dir=tmp_path / "c")


def test_bad_images_are_named(pooled_linear):
    with pytest.raises(ValueError, match=r"images\[1\]"):
        extract_embeddings(pooled_linear, [np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8)])
    with pytest.raises(ValueError, match="uint8"):
        extract_embeddings(pooled_linear, np.zeros((2, 8, 8, 3), np.float32))
