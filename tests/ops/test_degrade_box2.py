"""Area levels that halve both sides (each step of a 112 -> 56 -> 28 -> 14 -> 7 cascade) take the C++
kernel's 2 x 2 box path: AVX2 blocks, SSE2 blocks and scalar tails, reading float32 in place, widening
16-bit floats and uint8 as they are read. Each is checked against a closed form written here:

* float: the generic passes' arithmetic, t = 0.5 a + 0.5 b down each column pair, then
  (0 + 0.5 t_left) + 0.5 t_right, evaluated with float32 tensor ops (bit for bit);
* uint8: exact integer block sums S of the level's 2^k x 2^k blocks. The fixed-point cascade (Q7) keeps
  levels 0-2 exact, so they are round-half-up(S / 4^k) = (S + 4^k / 2) >> 2k; the 7 px level of a 112
  px image rounds twice, once to Q7 and once to the byte: (((S + 1) >> 1) + 64) >> 7.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mrface.ops import degrade_per_sample, degrade_resolution, use_backend
from mrface.ops.backend import backend_runs_on
from mrface.ops.reference.degrade import degrade_per_sample_reference

pytestmark = pytest.mark.skipif(not backend_runs_on("cpp", "cpu"), reason="C++ extension not built")

# (height, width), halving sizes: widths that fill AVX2 blocks (56 outputs: 3 x 16 + 8), that end in
# SSE2 blocks and scalar tails (28, 14, 7, 5, 3), and a single output.
CASES = [
    ((112, 112), [(56, 56), (28, 28), (14, 14), (7, 7)]),
    ((48, 40), [(24, 20), (12, 10), (6, 5)]),
    ((36, 2), [(18, 1)]),
]


def _box2_float(x: torch.Tensor) -> torch.Tensor:
    """One halving step in float32, in the generic passes' order of operations."""
    half = torch.tensor(0.5, dtype=torch.float32)
    column = half * x[..., 0::2, :] + half * x[..., 1::2, :]
    return (torch.zeros((), dtype=torch.float32) + half * column[..., 0::2]) + half * column[..., 1::2]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0][0]}x{c[0][1]}")
def test_float_cascade_is_the_generic_arithmetic(dtype, case):
    (h, w), sizes = case
    gen = torch.Generator().manual_seed(h + w)
    x = (torch.randn(2, 3, h, w, generator=gen) * 3).to(dtype)
    x[0, 0, 0, :2] = -0.0  # a block of negative zeros: 0 + (-0) is +0 in the generic order
    x[0, 0, 1, :2] = -0.0
    with use_backend("cpp"):
        out = degrade_resolution(x, sizes, "area")
    level = x.float()
    for k, got in enumerate(out.down):
        level = _box2_float(level)
        want = level.to(dtype)
        assert got.dtype == dtype
        assert torch.equal(
            got.view(torch.int16) if dtype != torch.float32 else got.view(torch.int32),
            want.view(torch.int16) if dtype != torch.float32 else want.view(torch.int32),
        ), f"{dtype} {h}x{w} level {k}: max diff {(got.double() - want.double()).abs().max()}"
    assert not torch.signbit(out.down[0][0, 0, 0, 0]), "negative-zero block must give +0, as the generic passes do"


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0][0]}x{c[0][1]}")
def test_uint8_cascade_is_exact_integer_sums(case):
    (h, w), sizes = case
    gen = torch.Generator().manual_seed(h * w)
    x = torch.randint(0, 256, (2, 3, h, w), generator=gen, dtype=torch.uint8)
    x[1, 2] = 255  # saturated blocks: sums at their largest
    with use_backend("cpp"):
        out = degrade_resolution(x, sizes, "area", "bilinear")
    for k, got in enumerate(out.down):
        block = 2 ** (k + 1)
        sums = (F.avg_pool2d(x.double(), block) * block * block).round().long()
        if k < 3:
            want = (sums + block * block // 2) >> (2 * (k + 1))
        else:  # Q7 of the 7 px level is S / 2, rounded half up before the byte is
            want = (((sums + 1) >> 1) + 64) >> 7
        assert torch.equal(got.long(), want), f"uint8 {h}x{w} level {k}: {(got.long() - want).abs().max()} off"


def test_uint8_box_level_in_the_float_fallback(grey_check):
    """Per-image tables whose up filter has negative lobes (bicubic) run uint8 in float32; a halving area
    level there reads the widened plane."""
    n = 4
    gen = torch.Generator().manual_seed(3)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8)
    sides = torch.tensor([16, 16, 8, 12])
    filter_ids = torch.zeros(n, dtype=torch.long)
    with use_backend("cpp"):
        got = degrade_per_sample(x, sides, filter_ids, ("area",), "bicubic")
    want = degrade_per_sample_reference(x.double(), sides, ["area"] * n, "bicubic")
    grey_check(got, want, "area down, bicubic up, uint8")
