"""StudentResize: the distillation inputs, one filter per image drawn per step, rank-independent."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mrface.training.augment import StudentResize

RES = [28, 14, 7]


def _images(n: int = 12) -> torch.Tensor:
    return torch.rand(n, 3, 112, 112, generator=torch.Generator().manual_seed(3))


def _torch_down(x: torch.Tensor, r: int, name: str) -> torch.Tensor:
    """Independent expectation: torch's own resampling for the two filters used here."""
    if name == "area":
        return F.avg_pool2d(x, 112 // r)
    return F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False, antialias=name == "bilinear_aa")


def test_single_filter_matches_torch_resize():
    x = _images()
    outs = StudentResize(RES, ["bilinear_aa"], seed=0, rank=0, world_size=1, accumulate=1)(x, step=5, micro=0)
    for r, out in zip(RES, outs, strict=True):
        torch.testing.assert_close(out, _torch_down(x, r, "bilinear_aa"), atol=1e-5, rtol=1e-5)


def test_each_image_uses_one_drawn_filter_at_every_resolution():
    x = _images(32)
    filters = ["bilinear_aa", "area"]
    outs = StudentResize(RES, filters, seed=1, rank=0, world_size=1, accumulate=1)(x, step=2, micro=0)
    used = []
    for i in range(x.shape[0]):
        matches = [
            f
            for f in filters
            if all(
                torch.allclose(o[i], _torch_down(x[i : i + 1], r, f)[0], atol=1e-5)
                for r, o in zip(RES, outs, strict=True)
            )
        ]
        assert len(matches) == 1, (i, matches)
        used.append(matches[0])
    assert set(used) == set(filters)  # 32 draws: both filters occur


def test_draws_depend_on_step_and_not_on_rank_split():
    x = _images(16)
    filters = ["bilinear_aa", "bilinear"]
    whole = StudentResize(RES, filters, seed=4, rank=0, world_size=1, accumulate=1)(x, step=7, micro=0)
    again = StudentResize(RES, filters, seed=4, rank=0, world_size=1, accumulate=1)(x, step=7, micro=0)
    other_step = StudentResize(RES, filters, seed=4, rank=0, world_size=1, accumulate=1)(x, step=8, micro=0)
    halves = [
        StudentResize(RES, filters, seed=4, rank=k, world_size=2, accumulate=1)(x[8 * k : 8 * k + 8], 7, 0)
        for k in range(2)
    ]
    for j in range(len(RES)):
        assert torch.equal(whole[j], again[j])
        torch.testing.assert_close(torch.cat([halves[0][j], halves[1][j]]), whole[j])
    assert any(not torch.allclose(a, b) for a, b in zip(whole, other_step, strict=True))
