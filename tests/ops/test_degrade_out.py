"""degrade_resolution(out=...): caller's buffers are filled in place, bit for bit the fresh result, on
every dtype and backend that runs here; misuse is refused with a message naming the buffer."""

from __future__ import annotations

import pytest
import torch

from mrface.ops import degrade_resolution, use_backend
from mrface.ops.backend import backend_runs_on
from mrface.ops.degrade import DegradedBatch

SIZES = [(8, 8), (5, 7), (3, 3)]


def _poisoned_like(result: DegradedBatch) -> DegradedBatch:
    def poison(t: torch.Tensor) -> torch.Tensor:
        return torch.full_like(t, 77) if t.dtype == torch.uint8 else torch.full_like(t, float("nan"))

    return DegradedBatch([poison(t) for t in result.down], [poison(t) for t in result.up] if result.up else None)


def _input(dtype: torch.dtype, seed: int) -> torch.Tensor:
    x = torch.rand(3, 2, 17, 19, generator=torch.Generator().manual_seed(seed)) * 255
    return x.to(dtype)


BACKENDS = [
    pytest.param("cpp", marks=pytest.mark.skipif(not backend_runs_on("cpp", "cpu"), reason="C++ extension not built")),
    pytest.param("reference"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.uint8], ids=str)
@pytest.mark.parametrize("up", [None, "bilinear"])
@pytest.mark.parametrize("filter", ["area", "bilinear_aa", "bicubic"])
def test_out_equals_fresh_result_and_is_reused(backend, dtype, up, filter):
    with use_backend(backend):
        first = degrade_resolution(_input(dtype, 0), SIZES, filter, up)
        out = _poisoned_like(first)
        returned = degrade_resolution(_input(dtype, 0), SIZES, filter, up, out=out)
        assert returned is out
        for got, want in zip(out.down + (out.up or []), first.down + (first.up or []), strict=True):
            assert torch.equal(got, want)
        second = degrade_resolution(_input(dtype, 1), SIZES, filter, up)  # the same buffers, another batch
        degrade_resolution(_input(dtype, 1), SIZES, filter, up, out=out)
        for got, want in zip(out.down + (out.up or []), second.down + (second.up or []), strict=True):
            assert torch.equal(got, want)


def test_non_contiguous_out_buffers_are_filled():
    x = _input(torch.float32, 2)
    want = degrade_resolution(x, SIZES, "area", "bilinear")

    def strided(t: torch.Tensor) -> torch.Tensor:  # the same shape, last two dims stored transposed
        return torch.full((*t.shape[:-2], t.shape[-1], t.shape[-2]), float("nan")).transpose(-1, -2)

    out = DegradedBatch([strided(t) for t in want.down], [strided(t) for t in want.up])
    assert not out.down[0].is_contiguous()
    degrade_resolution(x, SIZES, "area", "bilinear", out=out)
    for got, ref in zip(out.down + out.up, want.down + want.up, strict=True):
        assert torch.equal(got, ref)


def _buffers(x: torch.Tensor, up: bool = True) -> DegradedBatch:
    n, c, h, w = x.shape
    down = [torch.empty(n, c, a, b, dtype=x.dtype) for a, b in SIZES]
    return DegradedBatch(down, [torch.empty_like(x) for _ in SIZES] if up else None)


def test_bad_out_arguments_name_the_buffer():
    x = _input(torch.float32, 3)
    good = _buffers(x)
    with pytest.raises(TypeError, match="out must be a DegradedBatch"):
        degrade_resolution(x, SIZES, "area", "bilinear", out=(good.down, good.up))
    with pytest.raises(ValueError, match="out.up must be None"):
        degrade_resolution(x, SIZES, "area", None, out=good)
    with pytest.raises(ValueError, match="out.up must be a list"):
        degrade_resolution(x, SIZES, "area", "bilinear", out=_buffers(x, up=False))
    with pytest.raises(ValueError, match="expected 3 each"):
        degrade_resolution(x, SIZES, "area", "bilinear", out=DegradedBatch(good.down[:2], good.up))
    wrong_shape = DegradedBatch([good.down[0], torch.empty(3, 2, 4, 7), good.down[2]], good.up)
    with pytest.raises(ValueError, match=r"out.down\[1\] must be a tensor \(3, 2, 5, 7\)"):
        degrade_resolution(x, SIZES, "area", "bilinear", out=wrong_shape)
    wrong_dtype = DegradedBatch(good.down, [good.up[0], good.up[1], good.up[2].double()])
    with pytest.raises(ValueError, match=r"out.up\[2\] must be a tensor .* torch.float32"):
        degrade_resolution(x, SIZES, "area", "bilinear", out=wrong_dtype)
    shared = DegradedBatch(good.down, [good.up[0], good.up[0], good.up[2]])
    with pytest.raises(ValueError, match="must not share memory with each other"):
        degrade_resolution(x, SIZES, "area", "bilinear", out=shared)
    with pytest.raises(ValueError, match="does not support autograd"):
        degrade_resolution(x.clone().requires_grad_(), SIZES, "area", "bilinear", out=good)
    full = [(17, 19)]
    aliasing = DegradedBatch([x], None)
    with pytest.raises(ValueError, match=r"out.down\[0\] must not share memory with x"):
        degrade_resolution(x, full, "bilinear", None, out=aliasing)


def test_slices_of_one_allocation_are_accepted_and_filled():
    """Buffers cut side by side from one tensor share a storage but no byte: allowed."""
    x = _input(torch.float32, 4)
    want = degrade_resolution(x, SIZES, "bilinear", None)
    n, c = x.shape[:2]
    arena = torch.full((sum(h * w for h, w in SIZES) * n * c,), float("nan"))
    down, start = [], 0
    for h, w in SIZES:
        down.append(arena[start : start + n * c * h * w].view(n, c, h, w))
        start += n * c * h * w
    degrade_resolution(x, SIZES, "bilinear", None, out=DegradedBatch(down, None))
    for got, ref in zip(down, want.down, strict=True):
        assert torch.equal(got, ref)
    overlapping = DegradedBatch([down[0], arena[1 : 1 + n * c * 35].view(n, c, 5, 7), down[2]], None)
    with pytest.raises(ValueError, match="must not share memory with each other"):
        degrade_resolution(x, SIZES, "bilinear", None, out=overlapping)


def test_opcheck_out_op():
    x = torch.rand(2, 3, 16, 16)
    buffers = [torch.empty(2, 3, 8, 8), torch.empty(2, 3, 4, 4), torch.empty(2, 3, 16, 16), torch.empty(2, 3, 16, 16)]
    torch.library.opcheck(
        torch.ops.mrface.degrade_resolution_out.default, (x, [8, 8, 4, 4], "area", "bilinear", buffers)
    )
