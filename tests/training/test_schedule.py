"""Learning-rate factors against the public schedulers' closed forms, worked by hand."""

from __future__ import annotations

import pytest

from mrface.training.config import ScheduleConfig
from mrface.training.schedule import lr_factor


def test_poly_power1_with_warmup_matches_polynomial_lr_warmup_closed_form():
    """arcface_torch PolynomialLRWarmup(warmup_iters=4, total_iters=12, power=1): step k <= 4 ->
    k / 4; k > 4 -> 1 - (k - 4) / 8. BTNet's PolyScheduler gives the same for k < 4 (and 0 at k = 0)."""
    cfg = ScheduleConfig(kind="poly", power=1.0)
    got = [lr_factor(k, 12, 4, cfg, []) for k in range(12)]
    expected = [0.0, 0.25, 0.5, 0.75, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125]
    assert got == pytest.approx(expected)


def test_poly_power2_no_warmup():
    cfg = ScheduleConfig(kind="poly", power=2.0)
    assert [lr_factor(k, 4, 0, cfg, []) for k in range(4)] == pytest.approx([1.0, 0.5625, 0.25, 0.0625])
