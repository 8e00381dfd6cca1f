"""degrade_resolution / degrade_per_sample: every backend against the float64 reference, the
reference against torch, OpenCV and Pillow, autograd, opcheck, torch.compile and bad input."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import mrface
from mrface.ops import degrade_per_sample, degrade_resolution, degrade_resolution_random, use_backend
from mrface.ops.backend import backend_runs_on
from mrface.ops.reference.degrade import degrade_per_sample_reference, degrade_reference, resize_matrix

FILTERS = ("area", "bilinear", "bilinear_aa", "bicubic_aa", "bicubic", "nearest")


def _backend_params():
    params = [pytest.param("cpp", "cpu", id="cpp")]
    params.append(pytest.param("triton", "cpu", id="triton-interpreter", marks=pytest.mark.triton_interpreter))
    for backend in ("cuda", "triton"):
        params.append(pytest.param(backend, "cuda", id=f"{backend}-gpu", marks=pytest.mark.gpu))
    return params


def _skip_unless_runs(backend: str, device: str) -> None:
    if not backend_runs_on(backend, device):
        pytest.fail(f"backend {backend} cannot run on {device} here (build or environment problem)")


def _levels_of(out) -> list[torch.Tensor]:
    return list(out.down) + list(out.up or [])


# --------------------------------------------------------------------- reference vs other tools
@pytest.mark.parametrize("size", [56, 28, 14, 7])
def test_reference_area_is_avg_pool(size):
    x = torch.rand(2, 3, 112, 112, dtype=torch.float64)
    (down,), _ = degrade_reference(x, [(size, size)], "area", None)
    torch.testing.assert_close(down, F.avg_pool2d(x, 112 // size), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("filter", "mode", "antialias"),
    [
        ("bilinear_aa", "bilinear", True),
        ("bicubic_aa", "bicubic", True),
        ("bilinear", "bilinear", False),
        ("bicubic", "bicubic", False),
    ],
)
@pytest.mark.parametrize("size", [(56, 56), (14, 14), (7, 7), (33, 17)])
def test_reference_matches_torch_interpolate(filter, mode, antialias, size):
    x = torch.rand(2, 3, 112, 96, dtype=torch.float64)
    (down,), _ = degrade_reference(x, [size], filter, None)
    expected = F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=antialias)
    torch.testing.assert_close(down, expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize("up", ["bilinear", "bicubic"])
def test_reference_up_matches_torch_interpolate(up):
    x = torch.rand(2, 3, 112, 112, dtype=torch.float64)
    (down,), (back,) = degrade_reference(x, [(14, 14)], "area", up)
    expected = F.interpolate(down, size=(112, 112), mode=up, align_corners=False)
    torch.testing.assert_close(back, expected, rtol=0, atol=1e-9)


def test_reference_nearest_matches_torch_at_integer_factors():
    x = torch.rand(1, 2, 112, 112, dtype=torch.float64)
    downs, _ = degrade_reference(x, [(56, 56), (7, 7)], "nearest", None)
    for down in downs:
        torch.testing.assert_close(down, F.interpolate(x, size=down.shape[-2:], mode="nearest"), rtol=0, atol=0)


def _uint8_image(seed: int, h: int = 112, w: int = 112) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = cv2.GaussianBlur(rng.uniform(0, 255, (h, w, 3)).astype(np.float32), (0, 0), 2.0)
    return np.clip(smooth * 1.8 - 100 + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("size", [(56, 56), (28, 28), (14, 14), (7, 7), (40, 40), (23, 31)])
def test_uint8_area_and_linear_match_opencv(size):
    image = _uint8_image(1)
    x = torch.from_numpy(image).permute(2, 0, 1)[None]
    for filter, flag in (("area", cv2.INTER_AREA), ("bilinear", cv2.INTER_LINEAR)):
        with use_backend("cpp"):
            (down,) = degrade_resolution(x, [size], filter).down
        expected = cv2.resize(image, (size[1], size[0]), interpolation=flag)
        diff = np.abs(down[0].permute(1, 2, 0).numpy().astype(int) - expected.astype(int))
        assert diff.max() <= 1, f"{filter} {size}: max grey-level difference {diff.max()} vs OpenCV"


@pytest.mark.parametrize("size", [(56, 56), (14, 14), (7, 7), (37, 29)])
def test_uint8_antialiased_filters_match_pillow(size):
    image = _uint8_image(2)
    x = torch.from_numpy(image).permute(2, 0, 1)[None]
    for filter, resample in (("bilinear_aa", Image.Resampling.BILINEAR), ("bicubic_aa", Image.Resampling.BICUBIC)):
        with use_backend("cpp"):
            (down,) = degrade_resolution(x, [size], filter).down
        expected = np.asarray(Image.fromarray(image).resize((size[1], size[0]), resample=resample))
        diff = np.abs(down[0].permute(1, 2, 0).numpy().astype(int) - expected.astype(int))
        assert diff.max() <= 1, f"{filter} {size}: max grey-level difference {diff.max()} vs Pillow"


def test_area_non_integer_factor_matches_opencv_float():
    image = np.random.default_rng(3).random((112, 112, 3), dtype=np.float32)
    x = torch.from_numpy(image).permute(2, 0, 1)[None]
    (down,) = degrade_resolution(x, [45], "area").down
    expected = cv2.resize(image, (45, 45), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(down[0].permute(1, 2, 0).numpy(), expected, atol=1e-5)


@pytest.mark.parametrize(("in_size", "out_size"), [(112, 14), (112, 37), (20, 112), (7, 112), (56, 113)])
def test_lanczos_matches_opencv_float(in_size, out_size):
    """cv2 INTER_LANCZOS4 on float32 images (down and up; OpenCV keeps its weights in float32)."""
    image = np.random.default_rng(4).random((in_size, in_size + 3, 3), dtype=np.float32)
    expected = cv2.resize(image, (out_size + 2, out_size), interpolation=cv2.INTER_LANCZOS4)
    x = torch.from_numpy(image).permute(2, 0, 1)[None]
    want = torch.from_numpy(expected).permute(2, 0, 1)[None].double()
    got_reference = (
        resize_matrix(in_size, out_size, "lanczos")
        @ x[0].double()
        @ resize_matrix(in_size + 3, out_size + 2, "lanczos").T
    )
    torch.testing.assert_close(got_reference[None], want, rtol=0, atol=2e-5)
    if out_size < in_size:
        with use_backend("cpp"):
            (down,) = degrade_resolution(x, [(out_size, out_size + 2)], "lanczos").down
        torch.testing.assert_close(down.double(), want, rtol=0, atol=2e-5)


# --------------------------------------------------------------------------- backends vs reference
CASES = [
    # (shape, sizes, filter, up)
    ((3, 3, 112, 112), [56, 28, 14, 7], "area", "bilinear"),
    ((1, 1, 112, 112), [56, 28, 14, 7], "bilinear_aa", "bicubic"),
    ((5, 3, 40, 24), [(20, 12), (10, 6), (5, 3)], "area", "bilinear"),
    ((2, 3, 37, 29), [(17, 13), 5], "bicubic_aa", None),
    ((3, 1, 30, 30), [15, 7], "bilinear", "nearest"),
    ((2, 3, 21, 33), [(9, 20)], "bicubic", "bicubic"),
    ((1, 3, 16, 16), [8, 4, 3], "nearest", "bilinear"),
    ((2, 3, 45, 45), [22, 11], "area", "bicubic"),
    ((2, 3, 40, 36), [20, 9], "lanczos", "lanczos"),
]
SMALL_CASES = [
    ((2, 3, 16, 12), [(8, 6), (4, 3)], "area", "bilinear"),
    ((1, 1, 13, 11), [(5, 4)], "bicubic_aa", "bicubic"),
    ((3, 1, 9, 9), [4], "bilinear", None),
    ((1, 2, 12, 10), [5], "lanczos", "bilinear"),
]


def _check_backend_against_reference(backend, device, cases, dtype):
    _skip_unless_runs(backend, device)
    for shape, sizes, filter, up in cases:
        gen = torch.Generator().manual_seed(hash((shape, filter)) % 2**31)
        x = torch.rand(shape, generator=gen)
        x = (x * 255).round().to(torch.uint8) if dtype == torch.uint8 else x.to(dtype)
        with use_backend(backend):
            out = degrade_resolution(x.to(device), sizes, filter, up)
        pairs = [(s, s) if isinstance(s, int) else s for s in sizes]
        ref_down, ref_up = degrade_reference(x, pairs, filter, up)
        for got, want in zip(_levels_of(out), ref_down + ref_up, strict=True):
            assert got.dtype == dtype and got.shape == want.shape
            got = got.cpu()
            if dtype == torch.uint8:
                assert (got.int() - want.int()).abs().max() <= 1, f"{filter} {shape}"
            elif dtype == torch.float32:
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
            else:  # fp16/bf16: the error bound against float32 truth is test_half_precision_error_bound
                torch.testing.assert_close(
                    got.float(), want.float(), rtol=0, atol=1e-2 if dtype == torch.bfloat16 else 2e-3
                )


@pytest.mark.parametrize(("backend", "device"), _backend_params())
@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8, torch.float16], ids=str)
def test_backend_matches_reference(backend, device, dtype):
    cases = SMALL_CASES if (backend == "triton" and device == "cpu") else CASES
    _check_backend_against_reference(backend, device, cases, dtype)


@pytest.mark.gpu
def test_cuda_bfloat16_matches_reference():
    _check_backend_against_reference("cuda", "cuda", CASES, torch.bfloat16)


@pytest.mark.parametrize(("backend", "device"), _backend_params())
def test_half_precision_error_bound(backend, device):
    """fp16 error vs the float32 ground truth <= the reference's own fp16 error + 1e-3 (DESIGN.md §3)."""
    _skip_unless_runs(backend, device)
    x32 = torch.rand(2, 3, 28, 28, generator=torch.Generator().manual_seed(5))
    truth_down, truth_up = degrade_reference(x32, [(14, 14), (7, 7)], "bilinear_aa", "bilinear")
    ref_down, ref_up = degrade_reference(x32.half(), [(14, 14), (7, 7)], "bilinear_aa", "bilinear")
    with use_backend(backend):
        out = degrade_resolution(x32.half().to(device), [14, 7], "bilinear_aa", "bilinear")
    for got, ref, truth in zip(_levels_of(out), ref_down + ref_up, truth_down + truth_up, strict=True):
        ref_error = (ref.float() - truth).abs().max()
        assert (got.cpu().float() - truth).abs().max() <= ref_error + 1e-3


@pytest.mark.parametrize(("backend", "device"), _backend_params())
def test_per_sample_matches_reference(backend, device):
    _skip_unless_runs(backend, device)
    small = backend == "triton" and device == "cpu"
    shape = (4, 3, 16, 12) if small else (9, 3, 112, 112)
    gen = torch.Generator().manual_seed(7)
    x = torch.rand(shape, generator=gen)
    filters = ("nearest", "bilinear", "area", "bicubic", "bilinear_aa")
    sides = torch.randint(3, shape[2] + 1, (shape[0],), generator=gen)
    filter_ids = torch.arange(shape[0]) % len(filters)
    for up in ("same", "bilinear"):
        with use_backend(backend):
            got = degrade_per_sample(x.to(device), sides, filter_ids, filters, up)
        want = degrade_per_sample_reference(x, sides, [filters[i] for i in filter_ids], up)
        torch.testing.assert_close(got.cpu(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["cpp", "reference"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8, torch.bfloat16])
def test_per_sample_out_buffer_is_overwritten_and_returned(backend, dtype):
    """out= with a poisoned buffer: every element is rewritten and equals the allocating call."""
    gen = torch.Generator().manual_seed(11)
    x = (torch.rand(5, 3, 23, 19, generator=gen) * 255).to(dtype)
    sides = torch.tensor([3, 23, 7, 11, 22])
    filter_ids = torch.tensor([0, 1, 2, 3, 1])
    with use_backend(backend):
        want = degrade_per_sample(x, sides, filter_ids)
        out = torch.full_like(x, 7 if dtype == torch.uint8 else float("nan"))
        got = degrade_per_sample(x, sides, filter_ids, out=out)
        assert got is out and torch.equal(got, want)
        again, s2, f2 = degrade_resolution_random(x, 3, 23, generator=torch.Generator().manual_seed(2), out=out)
        assert again is out and torch.equal(again, degrade_per_sample(x, s2, f2))


def test_per_sample_out_buffer_bad_arguments():
    x = torch.rand(2, 3, 8, 8)
    sides, ids = torch.tensor([4, 5]), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="out must be a tensor"):
        degrade_per_sample(x, sides, ids, out=torch.empty(2, 3, 8, 7))
    with pytest.raises(ValueError, match="out must be a tensor"):
        degrade_per_sample(x, sides, ids, out=torch.empty(2, 3, 8, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="does not support autograd"):
        degrade_per_sample(x.requires_grad_(), sides, ids, out=torch.empty(2, 3, 8, 8))
    with pytest.raises(ValueError, match="must not share memory"):
        degrade_per_sample(x.detach(), sides, ids, out=x.detach())
    arena = torch.empty(2 * 3 * 8 * 8 + 64)  # out starts inside x: a partial overlap, not the same pointer
    with pytest.raises(ValueError, match="out must not share memory with x"):
        degrade_per_sample(arena[:384].view(2, 3, 8, 8), sides, ids, out=arena[64:].view(2, 3, 8, 8))


@pytest.mark.parametrize("filter,interp", [("bilinear", cv2.INTER_LINEAR), ("nearest", cv2.INTER_NEAREST)])
def test_uint8_round_trip_matches_opencv(filter, interp):
    """uint8 down + up within one grey level of two cv2.resize calls (cv2 also rounds the small image to
    uint8 in between; mrface keeps it in float32 and rounds once, half up, saturated)."""
    image = np.random.default_rng(5).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].contiguous()
    for side in (22, 37, 75):
        with use_backend("cpp"):
            got = degrade_per_sample(x, torch.tensor([side]), torch.tensor([0]), (filter,), "same")
        down = cv2.resize(image, (side, side), interpolation=interp)
        expected = cv2.resize(down, (112, 112), interpolation=interp)
        diff = np.abs(got[0].permute(1, 2, 0).numpy().astype(int) - expected.astype(int))
        assert diff.max() <= 1 and diff.mean() < 0.5, (side, diff.max(), diff.mean())


def test_cascade_equals_direct_area():
    """The C++ kernel cascades 56->28->14->7; the result equals box averages of the input."""
    x = torch.rand(4, 3, 112, 112, dtype=torch.float32)
    with use_backend("cpp"):
        out = degrade_resolution(x, [56, 28, 14, 7], "area")
    for down in out.down:
        torch.testing.assert_close(down, F.avg_pool2d(x, 112 // down.shape[-1]), rtol=1e-5, atol=1e-6)


def test_random_degradation_is_seeded_and_in_range():
    x = torch.rand(6, 3, 112, 112)
    a, sides_a, fid_a = degrade_resolution_random(x, 22, 112, generator=torch.Generator().manual_seed(3))
    b, sides_b, fid_b = degrade_resolution_random(x, 22, 112, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and torch.equal(sides_a, sides_b) and torch.equal(fid_a, fid_b)
    assert int(sides_a.min()) >= 22 and int(sides_a.max()) <= 112
    want = degrade_per_sample_reference(x, sides_a, [mrface.ops.degrade.ADAFACE_FILTERS[i] for i in fid_a], "same")
    torch.testing.assert_close(a, want, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------- autograd etc.
def test_gradient_matches_reference_autograd():
    x = torch.rand(2, 3, 28, 20, requires_grad=True)
    out = degrade_resolution(x, [(14, 10), (7, 5)], "bilinear_aa", "bicubic")
    weights = [torch.randn_like(t) for t in _levels_of(out)]
    sum(((t * w).sum() for t, w in zip(_levels_of(out), weights, strict=True))).backward()

    x64 = x.detach().double().requires_grad_(True)
    ref_down, ref_up = degrade_reference(x64, [(14, 10), (7, 5)], "bilinear_aa", "bicubic")
    sum(((t * w.double()).sum() for t, w in zip(ref_down + ref_up, weights, strict=True))).backward()
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-4, atol=1e-5)


def test_per_sample_gradient_matches_reference_autograd():
    x = torch.rand(3, 1, 20, 20, requires_grad=True)
    sides, fids = torch.tensor([5, 11, 20]), torch.tensor([0, 2, 3])
    out = degrade_per_sample(x, sides, fids)
    weight = torch.randn_like(out)
    (out * weight).sum().backward()
    x64 = x.detach().double().requires_grad_(True)
    filters = [mrface.ops.degrade.ADAFACE_FILTERS[i] for i in fids]
    (degrade_per_sample_reference(x64, sides, filters, "same") * weight.double()).sum().backward()
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-4, atol=1e-5)


def test_opcheck():
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    torch.library.opcheck(torch.ops.mrface.degrade_resolution.default, (x, [8, 8, 4, 4], "area", "bilinear"))
    torch.library.opcheck(
        torch.ops.mrface.degrade_per_sample.default,
        (x, torch.tensor([5, 9]), torch.tensor([1, 2]), "nearest,bilinear,area,bicubic", "same"),
    )


def test_torch_compile_fullgraph():
    def degrade_sum(x):
        out = degrade_resolution(x, [8, 4], "area", "bilinear")
        return out.up[0] + out.up[1]

    x = torch.rand(2, 3, 16, 16)
    compiled = torch.compile(degrade_sum, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), degrade_sum(x))


# ---------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"x": torch.rand(3, 16, 16)}, ValueError, "rank 4"),
        ({"sizes": [32]}, ValueError, "larger than the input"),
        ({"sizes": [0]}, ValueError, "positive"),
        ({"sizes": [-3]}, ValueError, "positive"),
        ({"filter": "lanczos3"}, ValueError, "filter='lanczos3'"),
        ({"up": "area"}, ValueError, "up='area'"),
        ({"x": torch.rand(1, 3, 16, 16, dtype=torch.float64)}, TypeError, "x.dtype"),
        ({"sizes": [8.5]}, TypeError, "int"),
        ({"sizes": list(range(1, 11))}, ValueError, "1..8"),
    ],
)
def test_bad_input(kwargs, error, match):
    args = {"x": torch.rand(1, 3, 16, 16), "sizes": [8], "filter": "area", "up": None} | kwargs
    with pytest.raises(error, match=match):
        degrade_resolution(args["x"], args["sizes"], args["filter"], args["up"])


def test_bad_per_sample_input():
    x = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match="sides must lie in"):
        degrade_per_sample(x, torch.tensor([0, 5]), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="filter_ids"):
        degrade_per_sample(x, torch.tensor([3, 5]), torch.tensor([0, 5]))  # 5 default filters: ids 0..4
    with pytest.raises(ValueError, match="sides must be an integer tensor"):
        degrade_per_sample(x, torch.tensor([3.0, 5.0]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="min_size"):
        degrade_resolution_random(x, 12, 20)


def test_forcing_an_unavailable_backend_raises():
    with use_backend("cuda"), pytest.raises(RuntimeError, match="cannot run on cpu"):
        degrade_resolution(torch.rand(1, 1, 8, 8), [4])
    with pytest.raises(ValueError, match="unknown backend"), use_backend("tpu"):
        pass


def test_resize_matrix_rows_sum_to_one():
    for filter in FILTERS:
        m = resize_matrix(112, 17, filter)
        torch.testing.assert_close(m.sum(1), torch.ones(17, dtype=torch.float64))


@pytest.mark.parametrize("filter", ["lanczos", "bicubic"])
def test_uint8_overshoot_saturates_like_rounded_float(filter):
    """uint8 stores round half up and saturate: hard 0/255 stripes overshoot under lanczos/bicubic; the
    result is the float64 reference rounded and clipped by numpy, within one grey level. Odd widths
    exercise the vector store's tail."""
    stripes = ((np.arange(53) // 3) % 2 * 255).astype(np.uint8)
    x = torch.from_numpy(np.broadcast_to(stripes, (2, 3, 37, 53)).copy())
    sides, ids = torch.tensor([17, 29]), torch.tensor([0, 0])
    with use_backend("cpp"):
        got = degrade_per_sample(x, sides, ids, (filter,), "same").numpy().astype(int)
    exact = degrade_per_sample_reference(x.double(), sides, [filter, filter], "same").numpy()
    assert exact.min() < -1 and exact.max() > 256  # the stripes do overshoot
    expected = np.clip(np.floor(exact + 0.5), 0, 255).astype(int)
    assert np.abs(got - expected).max() <= 1
    assert (got[exact < -1] == 0).all() and (got[exact > 256] == 255).all()
