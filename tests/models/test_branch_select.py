"""Branch choice: the 9 indicator x strategy combinations at the interval boundaries
(REFERENCE.md §2), the resolution-aware wrapper against running the branches by hand, and the shared
routing's resizers against PIL / cv2 / F.interpolate."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from mrface.models import MultiResolutionFaceModel, choose_branches, get_model
from mrface.models.branch_select import route_and_run, run_by_branch
from mrface.models.metadata import ModelMetadata

BRANCHES = (112, 28, 14, 7)
# Intervals copied from REFERENCE.md §2: (lowest size, branch) from the top down.
TABLE = {
    "ceil": [(29, 112), (15, 28), (8, 14), (0, 7)],
    "near": [(71, 112), (22, 28), (11, 14), (0, 7)],
    "floor": [(112, 112), (28, 28), (14, 14), (0, 7)],
}
BOUNDARIES = [1, 7, 8, 10, 11, 13, 14, 15, 21, 22, 27, 28, 29, 70, 71, 111, 112, 200]


def _expected(size: float, strategy: str) -> int:
    return next(branch for low, branch in TABLE[strategy] if size >= low)


def _probe(size: int, indicator: str) -> tuple[int, int]:
    """A non-square (w, h) whose indicator equals ``size``."""
    if indicator == "max":
        return (size, max(size - 3, 1))
    if indicator == "min":
        return (size + 5, size)
    return (size - 1, size + 1) if size > 1 else (1, 1)


@pytest.mark.parametrize("strategy", ["ceil", "near", "floor"])
@pytest.mark.parametrize("indicator", ["max", "mean", "min"])
def test_intervals_at_boundaries(indicator, strategy):
    probes = [_probe(s, indicator) for s in BOUNDARIES]
    got = choose_branches(probes, BRANCHES, indicator, strategy)
    assert got == [_expected(s, strategy) for s in BOUNDARIES]


def test_indicators_differ_on_the_same_probe():
    probe = [(20, 40)]  # max 40, mean 30, min 20
    assert choose_branches(probe, BRANCHES, "max", "ceil") == [112]
    assert choose_branches(probe, BRANCHES, "mean", "ceil") == [112]
    assert choose_branches(probe, BRANCHES, "min", "ceil") == [28]
    assert choose_branches([(28, 29)], BRANCHES, "mean", "floor") == [28]  # 28.5
    assert choose_branches([(28, 29)], BRANCHES, "mean", "ceil") == [112]
    # BTNet eval_survface_1n_multi_reso.py: reso = (w + h) // 2 -> 57 // 2 = 28 -> ceil 28, not 112
    assert choose_branches([(28, 29)], BRANCHES, "avg", "ceil") == [28]
    assert choose_branches([(14, 15), (6, 9)], BRANCHES, "avg", "ceil") == [14, 7]


def test_unknown_indicator_or_strategy():
    with pytest.raises(ValueError, match="indicator='median'"):
        choose_branches([(7, 7)], BRANCHES, "median", "ceil")
    with pytest.raises(ValueError, match="strategy='round'"):
        choose_branches([(7, 7)], BRANCHES, "max", "round")


def test_multi_resolution_model_groups_by_branch_and_keeps_order(generator):
    torch.manual_seed(0)
    model = get_model("btnet_tiny").eval()
    rng = np.random.default_rng(0)
    shapes = [(112, 112), (20, 24), (9, 6), (120, 100), (28, 28), (5, 7)]  # (h, w)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in shapes]
    wrapper = MultiResolutionFaceModel(model, indicator="max", strategy="ceil", color_order="BGR")
    with torch.no_grad():
        out = wrapper(images)
        assert out.branches == [112, 28, 14, 112, 28, 7]
        for im, r, emb in zip(images, out.branches, out.embeddings, strict=True):
            # by hand: BGR -> RGB, (x/255 - 0.5)/0.5, bilinear resize to the branch side, run that path
            t = torch.from_numpy(im[:, :, ::-1].copy()).permute(2, 0, 1).float() / 255.0
            t = (t - 0.5) / 0.5
            if t.shape[1:] != (r, r):
                t = F.interpolate(t[None], size=(r, r), mode="bilinear", align_corners=False)[0]
            # float32 convolutions pick batch-size-dependent algorithms: a grouped batch and a single image
            # agree to rounding, not bit for bit
            torch.testing.assert_close(emb, model(t[None], resolution=r)[0], rtol=1e-4, atol=1e-4)


def test_multi_resolution_model_on_a_preprocessed_batch(generator):
    model = get_model("btnet_tiny").eval()
    x = torch.randn(3, 3, 20, 20, generator=generator)
    with torch.no_grad():
        out = MultiResolutionFaceModel(model, strategy="floor")(x)
        expected = model(F.interpolate(x, size=(14, 14), mode="bilinear", align_corners=False), resolution=14)
    assert out.branches == [14, 14, 14]
    torch.testing.assert_close(out.embeddings, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="strategy='up'"):
        MultiResolutionFaceModel(model, strategy="up")


def _normalised(im: np.ndarray) -> torch.Tensor:
    """insightface preset by hand: RGB, (x/255 - 0.5)/0.5, (3, h, w)."""
    return (torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1).float() / 255 - 0.5) / 0.5


@pytest.mark.parametrize(
    ("resizer", "reference"),
    [
        ("pil_bicubic", lambda im, r: np.array(Image.fromarray(im).resize((r, r), Image.BICUBIC))),
        ("cv2_linear", lambda im, r: cv2.resize(im, (r, r), interpolation=cv2.INTER_LINEAR)),
        ("cv2_area_linear", lambda im, r: cv2.resize(im, (r, r), interpolation=cv2.INTER_AREA)),  # all shrink here
    ],
)
def test_uint8_resizers_feed_the_public_scripts_pixels(resizer, reference):
    rng = np.random.default_rng(1)
    crops = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((40, 33), (17, 16), (120, 118))]
    seen = {}

    def runner(r):
        def run(batch):
            seen[r] = batch
            return torch.zeros(len(batch), 2)

        return run

    meta = ModelMetadata(architecture="x")
    out = run_by_branch(crops, [28, 14, 112], {r: runner(r) for r in (112, 28, 14)}, resizer=resizer, metadata=meta)
    assert out.shape == (3, 2)
    for crop, r in zip(crops, (28, 14, 112), strict=True):
        torch.testing.assert_close(seen[r][0], _normalised(reference(crop, r)), rtol=0, atol=1e-6)


def test_float_resizers_and_scatter_order():
    rng = np.random.default_rng(2)
    crops = [rng.integers(0, 256, (h, h, 3), dtype=np.uint8) for h in (9, 30, 20, 7)]
    meta = ModelMetadata(architecture="x")

    def runner(r):
        return lambda b: (b.mean((1, 2, 3))[:, None], torch.full((len(b),), r))

    runners = {r: runner(r) for r in (28, 14, 7)}
    for resizer, aa in (("bilinear", False), ("bilinear_aa", True)):
        means, sides = run_by_branch(crops, [14, 28, 28, 7], runners, resizer=resizer, metadata=meta)
        assert sides.tolist() == [14, 28, 28, 7]
        for k, (crop, r) in enumerate(zip(crops, (14, 28, 28, 7), strict=True)):
            x = F.interpolate(_normalised(crop)[None], size=(r, r), mode="bilinear", align_corners=False, antialias=aa)
            torch.testing.assert_close(means[k, 0], x.mean(), rtol=0, atol=1e-6)


def test_routing_refuses_bad_input():
    meta = ModelMetadata(architecture="x")
    face = np.zeros((20, 20, 3), np.uint8)
    run = {28: lambda b: torch.zeros(len(b), 1)}
    with pytest.raises(ValueError, match="resizer='pil_bicubic' resizes uint8 crops"):
        run_by_branch([torch.zeros(3, 20, 20)], [28], run, resizer="pil_bicubic")
    with pytest.raises(ValueError, match="resizer='lanczos'"):
        route_and_run([face], run, metadata=meta, resizer="lanczos")
    with pytest.raises(ValueError, match=r"branches \[14\]: no runner"):
        run_by_branch([face], [14], run, metadata=meta)
    with pytest.raises(ValueError, match="2 faces but 1 branches"):
        run_by_branch([face, face], [28], run, metadata=meta)
    with pytest.raises(ValueError, match="need the model metadata"):
        run_by_branch([face], [28], run)
