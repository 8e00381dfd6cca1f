"""Scaling plots of the benchmark document (mrface.bench.plots) are drawn only from enough measured rows."""

from __future__ import annotations

from bench_helpers import PNG_MAGIC

from mrface.bench.plots import plot_degrade, plot_heads


def test_plots_need_two_x_values(tmp_path):
    row = {"filter": "area", "up": False, "batch": 64, "backend": "cpp", "ours_ms": 1.0, "loop_ms": 2.0}
    assert plot_degrade([row], tmp_path / "d.png") is None
    assert plot_degrade([row, row | {"batch": 256, "ours_ms": 3.0}], tmp_path / "d.png") == tmp_path / "d.png"
    assert (tmp_path / "d.png").read_bytes()[:8] == PNG_MAGIC
    heads = [
        {
            "B": 512,
            "C": c,
            "D": 512,
            "dtype": "float32",
            "margin": "arcface",
            "path": p,
            "ms": 1.0 + c / 1e4,
            "work_MiB": 2.0,
        }
        for c in (10000, 30000)
        for p in ("fused", "reference")
    ]
    assert plot_heads(heads[:2], tmp_path / "h.png") is None
    assert plot_heads(heads, tmp_path / "h.png") == tmp_path / "h.png"
