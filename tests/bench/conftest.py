"""Shared fixture of the ``mrface bench`` tests: one quick CPU kernels run, stored and rendered."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench_helpers import run_bench


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory) -> tuple[int, Path, str]:
    """``mrface bench kernels --quick --device cpu`` limited to two scripts (this shared CPU is slow), its report
    stored in ``<out>/stored`` and the benchmark document rendered to ``<out>/doc/BENCHMARKS.md``."""
    out = tmp_path_factory.mktemp("bench")
    code, stdout, _ = run_bench(
        "kernels",
        "--quick",
        "--device",
        "cpu",
        "--only",
        "degrade",
        "heads",
        "--out",
        str(out),
        "--store",
        str(out / "stored"),
        "--markdown",
        str(out / "doc" / "BENCHMARKS.md"),
    )
    reports = sorted(out.glob("*.json"))
    assert len(reports) == 1, f"expected one report in {out}, found {reports}"
    return code, reports[0], stdout
