"""The C++ kernel's x passes (windowed in-register gathers on AVX2 CPUs, scalar elsewhere) on the row
shapes that stress them: rows narrower than a window (padded), widths that leave partial blocks,
odd tap counts and windows of 16 samples. float32 against the float64 reference; uint8 (fixed point)
within one grey level of the reference rounded, equal to it away from a half."""

from __future__ import annotations

import pytest
import torch

from mrface.ops import degrade_per_sample, degrade_resolution, use_backend
from mrface.ops.backend import backend_runs_on
from mrface.ops.reference.degrade import degrade_per_sample_reference, degrade_reference

pytestmark = pytest.mark.skipif(not backend_runs_on("cpp", "cpu"), reason="C++ extension not built")

# (height, width) and target sizes: widths 1-7 (padded rows), 9-15 (a 16-sample window), 5 and 11
# (partial blocks), factors of 1.5-5 (two to eleven taps), and up passes from each back to the input.
CASES = [
    ((20, 20), [(5, 5), (3, 7), (10, 6), (1, 1)]),
    ((17, 29), [(11, 13), (4, 9), (16, 15), (2, 3)]),
    ((40, 37), [(13, 12), (8, 11), (27, 25), (6, 5)]),
    ((112, 112), [(37, 37), (22, 22), (56, 56), (7, 7)]),
]
FILTERS = ("area", "bilinear", "bilinear_aa", "nearest", "bicubic")


@pytest.mark.parametrize("filter", FILTERS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0][0]}x{c[0][1]}")
def test_float32_rows_match_reference(filter, case):
    (h, w), sizes = case
    gen = torch.Generator().manual_seed(h * 1000 + w)
    x = torch.rand(2, 3, h, w, generator=gen) * 255
    with use_backend("cpp"):
        out = degrade_resolution(x, sizes, filter, "bilinear")
    ref_down, ref_up = degrade_reference(x.double(), sizes, filter, "bilinear")
    for k, (got, want) in enumerate(zip(out.down + out.up, ref_down + ref_up, strict=True)):
        torch.testing.assert_close(got.double(), want, rtol=0, atol=2e-3, msg=f"{filter} {h}x{w} output {k}")


@pytest.mark.parametrize("filter", ("area", "bilinear", "bilinear_aa", "nearest"))
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0][0]}x{c[0][1]}")
def test_uint8_rows_within_one_grey_level(filter, case, grey_check):
    (h, w), sizes = case
    gen = torch.Generator().manual_seed(h * 1000 + w + 1)
    x = torch.randint(0, 256, (2, 3, h, w), generator=gen, dtype=torch.uint8)
    with use_backend("cpp"):
        out = degrade_resolution(x, sizes, filter, "bilinear")
    ref_down, ref_up = degrade_reference(x.double(), sizes, filter, "bilinear")
    for k, (got, want) in enumerate(zip(out.down + out.up, ref_down + ref_up, strict=True)):
        grey_check(got, want, f"{filter} {h}x{w} output {k}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
def test_per_image_rows_every_side(dtype, grey_check):
    """Per-image tables (a plan per image): every side 1..24 of a 24 x 24 batch, each image its own."""
    n = 24
    gen = torch.Generator().manual_seed(7)
    x = (torch.rand(n, 2, 24, 24, generator=gen) * 255).to(dtype)
    sides = torch.arange(1, n + 1)
    filter_ids = torch.arange(n) % 2
    filters = ("bilinear", "area")
    with use_backend("cpp"):
        got = degrade_per_sample(x, sides, filter_ids, filters, "bilinear")
    want = degrade_per_sample_reference(x.double(), sides, [filters[i] for i in filter_ids], "bilinear")
    if dtype == torch.uint8:
        grey_check(got, want, "per-image")
    else:
        torch.testing.assert_close(got.double(), want, rtol=0, atol=2e-3)


@pytest.mark.parametrize("size", [56, 37, 28, 7])
def test_non_finite_samples_stay_in_their_windows(size):
    """Tap slots an output does not use read its own last sample, not sample 0: an inf in the first
    column makes only the outputs whose windows hold it non-finite, where PyTorch's antialiased resize
    puts them (it gives inf there; the kernel's zero-weight products make those NaN)."""
    x = torch.rand(1, 2, 112, 112, generator=torch.Generator().manual_seed(size))
    x[..., 0] = float("inf")
    with use_backend("cpp"):
        got = degrade_resolution(x, [size], "bilinear_aa").down[0]
    want = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
    assert torch.equal(torch.isfinite(got), torch.isfinite(want))
    torch.testing.assert_close(got[..., 1:], want[..., 1:], rtol=1e-5, atol=1e-5)
