"""Shared checks of the ops tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch


def _within_one_grey_level(got: torch.Tensor, ref64: torch.Tensor, what: str) -> None:
    """got: uint8; ref64: the float64 result before rounding. Every output within one grey level of the
    reference rounded half up, and equal to it except where the reference lies within 0.1 of a half
    (the documented error of the fixed-point path)."""
    rounded = torch.floor(ref64 + 0.5).clamp(0, 255)
    diff = (got.double() - rounded).abs()
    assert diff.max() <= 1, f"{what}: max grey-level difference {diff.max()}"
    near_half = ((ref64 - torch.floor(ref64)) - 0.5).abs() < 0.1
    assert not bool((diff > 0)[~near_half].any()), f"{what}: mismatch away from a half"


@pytest.fixture
def grey_check() -> Callable[[torch.Tensor, torch.Tensor, str], None]:
    return _within_one_grey_level
