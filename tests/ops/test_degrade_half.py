"""degrade_* on bfloat16 and float16 inputs, which the C++ CPU kernel takes natively: every output must
equal the float32 route (compute on ``x.float()``, cast back with torch) bit for bit, ties to even,
NaN/inf included, for the batched and the per-image paths, with gradients as before."""

from __future__ import annotations

import pytest
import torch

from mrface.ops import degrade_per_sample, degrade_resolution, degrade_resolution_random, use_backend
from mrface.ops.backend import backend_runs_on
from mrface.ops.reference.degrade import degrade_reference

pytestmark = pytest.mark.skipif(not backend_runs_on("cpp", "cpu"), reason="C++ extension not built")

HALF_DTYPES = [torch.bfloat16, torch.float16]
ALL_FILTERS = ("nearest", "bilinear", "bicubic", "area", "bilinear_aa", "bicubic_aa", "lanczos")
ODD_SIZES = [(7, 5), (11, 13)]  # from 19 x 23


def _assert_same_bits(got: torch.Tensor, want: torch.Tensor, what: str = "") -> None:
    """Equal bit patterns, except that a NaN only has to be a NaN (torch's own casts differ in NaN payload)."""
    assert got.dtype == want.dtype and got.shape == want.shape, what
    nan = torch.isnan(want)
    assert torch.equal(torch.isnan(got), nan), f"{what}: NaN positions differ"
    g, w = got.view(torch.int16)[~nan], want.view(torch.int16)[~nan]
    if not torch.equal(g, w):
        bad = (g != w).nonzero()[0].item()
        raise AssertionError(f"{what}: {(g != w).sum()} elements differ, e.g. {got[~nan][bad]} vs {want[~nan][bad]}")


def _half_batch(dtype: torch.dtype, shape=(3, 2, 19, 23), seed: int = 0) -> torch.Tensor:
    """Random values at three scales: unit, near the dtype's largest finite (overshooting filters may
    round to inf) and near its smallest normal (subnormal outputs)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen)
    info = torch.finfo(dtype)
    x[1] *= info.max / 4
    x[2] *= info.tiny * 4
    return x.to(dtype)


def _float32_route(x: torch.Tensor, *args, **kwargs) -> list[torch.Tensor]:
    out = degrade_resolution(x.float(), *args, **kwargs)
    return [t.to(x.dtype) for t in list(out.down) + list(out.up or [])]


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=str)
@pytest.mark.parametrize("filter", ALL_FILTERS)
@pytest.mark.parametrize("up", [None, "cycle"])
def test_batched_equals_float32_route_bit_for_bit(dtype, filter, up):
    up = {"nearest": "nearest", "bicubic": "bicubic", "lanczos": "lanczos"}.get(filter, "bilinear") if up else None
    x = _half_batch(dtype)
    with use_backend("cpp"):
        got = degrade_resolution(x, ODD_SIZES, filter, up)
        want = _float32_route(x, ODD_SIZES, filter, up)
    levels = list(got.down) + list(got.up or [])
    assert len(levels) == (4 if up else 2)
    for k, (g, w) in enumerate(zip(levels, want, strict=True)):
        _assert_same_bits(g, w, f"{filter} up={up} output {k}")


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=str)
@pytest.mark.parametrize("width", [16, 14])  # 8 outputs a plane (a full vector) or 7 (scalar code only)
def test_ties_round_to_even_at_every_exponent(dtype, width):
    """2 -> 1 area averages of neighbouring representable values are exact ties in float32: every
    positive and negative finite pair of neighbours must round like torch's float64 -> dtype cast."""
    bits_type = torch.int16
    largest = torch.tensor(torch.finfo(dtype).max, dtype=dtype).view(bits_type).item()
    low = torch.arange(0, largest, dtype=torch.int32)
    pairs = torch.stack([low, low + 1], dim=1)
    pairs = torch.cat([pairs, pairs | 0x8000]).to(torch.int32)
    pairs = (pairs - ((pairs >> 15) << 16)).to(bits_type).view(dtype)  # int32 bits -> int16 (wraps 0x8000+)
    count = pairs.shape[0] // (width // 2) * (width // 2)
    x = pairs[:count].reshape(-1, 1, 1, width)
    with use_backend("cpp"):
        (got,), _ = degrade_resolution(x, [(1, width // 2)], "area")
    midpoint = (x.double().reshape(-1, 2).sum(1) / 2).to(dtype).reshape(got.shape)
    _assert_same_bits(got, midpoint, f"{dtype} ties")


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=str)
def test_non_finite_inputs_propagate_like_float32_route(dtype):
    x = _half_batch(dtype, seed=3)
    x[0, 0, 4, 5] = float("nan")
    x[0, 1, 10, 0] = float("inf")
    x[2, 0, 18, 22] = -float("inf")
    for filter in ("area", "bilinear_aa", "bicubic"):
        with use_backend("cpp"):
            got = degrade_resolution(x, ODD_SIZES, filter, "bilinear")
        want = _float32_route(x, ODD_SIZES, filter, "bilinear")
        assert any(torch.isnan(w).any() for w in want) and any(torch.isinf(w).any() for w in want)
        for g, w in zip(list(got.down) + list(got.up), want, strict=True):
            _assert_same_bits(g, w, f"{filter} non-finite")


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=str)
def test_batched_matches_reference(dtype):
    """Against the float64 reference: within the dtype's rounding of outputs in [0, 1]."""
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(2, 3, 40, 36, generator=gen).to(dtype)
    for filter, up in (("area", "bilinear"), ("bilinear_aa", "bicubic"), ("lanczos", "lanczos")):
        with use_backend("cpp"):
            got = degrade_resolution(x, [(20, 18), 9, (5, 7)], filter, up)
        ref_down, ref_up = degrade_reference(x.double(), [(20, 18), (9, 9), (5, 7)], filter, up)
        for g, w in zip(list(got.down) + list(got.up), ref_down + ref_up, strict=True):
            assert g.dtype == dtype
            torch.testing.assert_close(g.double(), w, rtol=0, atol=1e-2 if dtype == torch.bfloat16 else 2e-3)


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=str)
def test_per_sample_equals_float32_route_and_fills_poisoned_out(dtype):
    x = _half_batch(dtype, shape=(6, 3, 23, 19), seed=5)
    sides = torch.tensor([3, 23, 7, 11, 22, 1])
    filter_ids = torch.tensor([0, 1, 2, 3, 4, 2])
    for up in ("same", "bilinear", "lanczos"):
        with use_backend("cpp"):
            want = degrade_per_sample(x.float(), sides, filter_ids, up=up).to(dtype)
            _assert_same_bits(degrade_per_sample(x, sides, filter_ids, up=up), want, f"per-sample up={up}")
            out = torch.full_like(x, float("nan"))
            got = degrade_per_sample(x, sides, filter_ids, up=up, out=out)
        assert got is out and not torch.isnan(out).any()
        _assert_same_bits(out, want, f"per-sample out= up={up}")
    out = torch.full_like(x, float("nan"))
    with use_backend("cpp"):
        got, s, f = degrade_resolution_random(x, 2, 23, generator=torch.Generator().manual_seed(1), out=out)
        want = degrade_per_sample(x.float(), s, f).to(dtype)
    assert got is out and not torch.isnan(out).any()
    _assert_same_bits(out, want, "random out=")


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=str)
def test_gradient_equals_float32_route_cast(dtype):
    gen = torch.Generator().manual_seed(6)
    x32 = torch.rand(2, 3, 19, 23, generator=gen)
    weights = [torch.randn(2, 3, *s, generator=gen) for s in ODD_SIZES] + [torch.randn(2, 3, 19, 23, generator=gen)] * 2
    # Representable weights: the bf16 route's incoming output gradients are those of the float32 route.
    weights = [w.to(dtype).float() for w in weights]
    grads = []
    for x in (x32.to(dtype), x32.to(dtype).float()):
        x.requires_grad_(True)
        with use_backend("cpp"):
            out = degrade_resolution(x, ODD_SIZES, "bilinear_aa", "bilinear")
        sum((o.float() * w).sum() for o, w in zip(list(out.down) + list(out.up), weights, strict=True)).backward()
        grads.append(x.grad)
    assert grads[0].dtype == dtype
    torch.testing.assert_close(grads[0], grads[1].to(dtype), rtol=1.6e-2 if dtype == torch.bfloat16 else 1e-3, atol=0)

    sides, filter_ids = torch.tensor([5, 17]), torch.tensor([1, 3])
    per_image = []
    for x in (x32.to(dtype), x32.to(dtype).float()):
        x.requires_grad_(True)
        with use_backend("cpp"):
            (degrade_per_sample(x, sides, filter_ids).float() * weights[-1]).sum().backward()
        per_image.append(x.grad)
    assert per_image[0].dtype == dtype
    torch.testing.assert_close(
        per_image[0], per_image[1].to(dtype), rtol=1.6e-2 if dtype == torch.bfloat16 else 1e-3, atol=0
    )
