"""The C++ kernel's uint8 fixed-point path (non-negative filters: nearest, bilinear, area, bilinear_aa)
against the float64 reference of the same uint8 input: every output within one grey level of the
reference rounded half up, and equal to it except where the reference lies close to a half."""

from __future__ import annotations

import pytest
import torch

from mrface.ops import degrade_per_sample, degrade_resolution, use_backend
from mrface.ops.backend import backend_runs_on
from mrface.ops.reference.degrade import degrade_per_sample_reference, degrade_reference

pytestmark = pytest.mark.skipif(not backend_runs_on("cpp", "cpu"), reason="C++ extension not built")

FIXED_FILTERS = ("area", "bilinear", "bilinear_aa", "nearest")


def _ref64(x: torch.Tensor, sizes, filter: str, up: str | None):
    return degrade_reference(x.double(), sizes, filter, up)


@pytest.mark.parametrize("filter", FIXED_FILTERS)
@pytest.mark.parametrize("shape", [(2, 3, 112, 112), (3, 1, 37, 53)], ids=str)
def test_batched_levels_and_up_within_one_grey_level(filter, shape, grey_check):
    gen = torch.Generator().manual_seed(hash((filter, shape)) % 2**31)  # fresh draws per case
    x = torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)
    h, w = shape[-2:]
    sizes = [(h // 2, w // 2), (h // 4, w // 4), (max(h // 7, 1), max(w // 5, 1)), (h - 3, w - 4)]
    if filter == "area":
        sizes = [s for s in sizes if s[0] <= h and s[1] <= w]
    with use_backend("cpp"):
        out = degrade_resolution(x, sizes, filter, "bilinear")
    ref_down, ref_up = _ref64(x, sizes, filter, "bilinear")
    for k, (got, want) in enumerate(zip(out.down + out.up, ref_down + ref_up, strict=True)):
        assert got.dtype == torch.uint8 and got.shape == want.shape
        grey_check(got, want, f"{filter} {shape} output {k}")


@pytest.mark.parametrize("filter", ["area", "bilinear_aa"])
def test_extremes_saturate_and_stay_exact(filter):
    """All-0 and all-255 planes come back exactly (the Q15 weight 1.0 saturates to 32767)."""
    x = torch.zeros(2, 2, 40, 40, dtype=torch.uint8)
    x[1] = 255
    with use_backend("cpp"):
        out = degrade_resolution(x, [(20, 20), (7, 9)], filter, "bilinear")
    for got in out.down + out.up:
        assert bool((got[0] == 0).all()) and bool((got[1] == 255).all())


def test_per_image_mix_of_fixed_and_float_filters_into_poisoned_out(grey_check):
    """Per-image filters mix the fixed-point (area, bilinear) and float (bicubic) paths in one call;
    a poisoned out= buffer is fully overwritten."""
    gen = torch.Generator().manual_seed(11)
    n = 8
    x = torch.randint(0, 256, (n, 3, 45, 45), generator=gen, dtype=torch.uint8)
    sides = torch.randint(5, 46, (n,), generator=gen)
    filter_ids = torch.arange(n) % 3
    filters = ("area", "bilinear", "bicubic")
    out = torch.full_like(x, 7)
    with use_backend("cpp"):
        degrade_per_sample(x, sides, filter_ids, filters, "same", out=out)
    names = [filters[int(i)] for i in filter_ids]
    ref = degrade_per_sample_reference(x.double(), sides, names, "same")
    for i in range(n):
        if names[i] == "bicubic":  # float32 path: rounds the float result, within one grey level
            rounded = torch.floor(ref[i] + 0.5).clamp(0, 255)
            assert (out[i].double() - rounded).abs().max() <= 1
        else:
            grey_check(out[i], ref[i], f"image {i} {names[i]} side {int(sides[i])}")
