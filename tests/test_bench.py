"""``mrface bench``: the suite runs the real benchmark scripts, writes a report, compares runs, fails clearly."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch

from mrface.bench import BenchError, Spec, compare_runs, find_bench_dir, run_spec
from mrface.bench_plots import plot_degrade, plot_heads
from mrface.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _bench(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["bench", *argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[int, Path, str]:
    """``mrface bench kernels --quick --device cpu`` limited to two scripts (this shared CPU is slow)."""
    out = tmp_path_factory.mktemp("bench")
    code, stdout, _ = _bench("kernels", "--quick", "--device", "cpu", "--only", "degrade", "heads", "--out", str(out))
    reports = sorted(out.glob("*.json"))
    assert len(reports) == 1, f"expected one report in {out}, found {reports}"
    return code, reports[0], stdout


def test_quick_kernels_writes_report_with_machine_and_rows(quick_run):
    code, path, stdout = quick_run
    assert code == 0, stdout
    report = json.loads(path.read_text())
    assert report["device"] == "cpu" and report["quick"] is True and report["area"] == "kernels"
    machine = report["machine"]
    assert machine["cores"] >= 1 and machine["torch"] == torch.__version__ and machine["cpu"]
    assert set(report["benchmarks"]) == {"degrade", "heads"}
    degrade = report["benchmarks"]["degrade"]
    assert degrade["status"] == "ok" and "--batches 2 8" in degrade["command"]
    assert {r["batch"] for r in degrade["rows"]} == {2, 8}
    assert {r["filter"] for r in degrade["rows"]} == {"area", "bilinear_aa"}
    assert all(r["ours_ms"] > 0 and r["loop_ms"] > 0 for r in degrade["rows"])
    heads = report["benchmarks"]["heads"]
    assert heads["status"] == "ok"
    assert sorted((r["head"], r["classes"]) for r in heads["rows"]) == [("arcface", 500), ("arcface", 2000)]
    # The per-script JSON and log stay in the run folder next to the report.
    run_dir = path.with_suffix("")
    assert (run_dir / "degrade.json").is_file() and (run_dir / "heads.log").is_file()


def test_quick_kernels_writes_markdown_and_degrade_plot(quick_run):
    _, path, stdout = quick_run
    md = path.with_suffix(".md").read_text()
    assert "## Machine" in md and "### degrade (ok)" in md and "### heads (ok)" in md
    assert "`python benchmarks/bench_degrade.py --device cpu --batches 2 8" in md
    assert "| filter | up | batch | backend |" in md
    plots = json.loads(path.read_text())["plots"]
    assert [Path(p).name for p in plots] == [path.stem + "-degrade.png"]
    assert Path(plots[0]).read_bytes()[:8] == PNG_MAGIC
    assert "===== kernels =====" in stdout


def test_compare_a_real_run_with_itself_gives_unit_ratios(quick_run):
    _, path, _ = quick_run
    report = json.loads(path.read_text())
    results, notes = compare_runs(report, report, threshold=0.1)
    measured = sum(1 for e in report["benchmarks"].values() for r in e["rows"] for c in ("ours_ms", "loop_ms", "ms")
                   if isinstance(r.get(c), float))  # fmt: skip
    assert len(results) == measured and notes == []
    assert all(r["new/old"] == 1.0 and r["flag"] == "" for r in results)


@pytest.mark.slow
def test_full_quick_kernels_suite_runs_every_kernel_script(tmp_path):
    code, stdout, _ = _bench("kernels", "--quick", "--device", "cpu", "--out", str(tmp_path))
    assert code == 0, stdout
    report = json.loads(next(tmp_path.glob("*.json")).read_text())
    statuses = {name: e["status"] for name, e in report["benchmarks"].items()}
    assert statuses == {"degrade": "ok", "gumbel_fps": "ok", "gumbel_fps_sweep": "skipped", "heads": "ok",
                        "margin_softmax": "ok", "margin_softmax_classes": "skipped"}  # fmt: skip
    paths = {r["path"] for r in report["benchmarks"]["margin_softmax"]["rows"]}
    assert paths == {"fused", "reference"}


def _report(benchmarks: dict, quick: bool = False) -> dict:
    return {"machine": {"cpu": "test cpu", "cores": 2}, "quick": quick, "benchmarks": benchmarks}


def _write(path: Path, report: dict) -> Path:
    path.write_text(json.dumps(report))
    return path


OLD = _report({
    "degrade": {"area": "kernels", "rows": [
        {"filter": "area", "batch": 64, "backend": "cpp", "ours_ms": 10.0, "loop_ms": 20.0, "speedup": 2.0},
        {"filter": "area", "batch": 256, "backend": "cpp", "ours_ms": 40.0, "loop_ms": 80.0, "speedup": 2.0},
    ]},
    "data": {"area": "data", "rows": [{"name": "render", "images_per_s": 100.0},
                                      {"name": "loader", "images_per_s": 100.0}]},
})  # fmt: skip
NEW = _report({
    "degrade": {"area": "kernels", "rows": [
        {"filter": "area", "batch": 256, "backend": "cpp", "ours_ms": 40.0, "loop_ms": 80.0, "speedup": 2.0},
        {"filter": "area", "batch": 64, "backend": "cpp", "ours_ms": 15.0, "loop_ms": 20.0, "speedup": 1.33},
        {"filter": "area", "batch": 1024, "backend": "cpp", "ours_ms": 99.0, "loop_ms": 99.0, "speedup": 1.0},
    ]},
    "data": {"area": "data", "rows": [{"name": "render", "images_per_s": 50.0},
                                      {"name": "loader", "images_per_s": 130.0}]},
})  # fmt: skip


def test_compare_matches_rows_by_keys_and_flags_regressions():
    results, notes = compare_runs(OLD, NEW, threshold=0.1)
    got = {(r["benchmark"], r["row"], r["metric"]): (r["new/old"], r["flag"]) for r in results}
    assert got == {
        ("degrade", "filter=area, batch=256, backend=cpp", "ours_ms"): (1.0, ""),
        ("degrade", "filter=area, batch=256, backend=cpp", "loop_ms"): (1.0, ""),
        ("degrade", "filter=area, batch=64, backend=cpp", "ours_ms"): (1.5, "REGRESSION"),
        ("degrade", "filter=area, batch=64, backend=cpp", "loop_ms"): (1.0, ""),
        ("data", "name=render", "images_per_s"): (0.5, "REGRESSION"),  # throughput: lower is worse
        ("data", "name=loader", "images_per_s"): (1.3, "better"),
    }
    assert notes == ["degrade: 1 rows without a partner in the other run (different sizes?)"]
    # A looser threshold no longer flags the 1.5x slowdown, but still the halved throughput.
    loose = {(r["row"], r["metric"]): r["flag"] for r in compare_runs(OLD, NEW, threshold=0.6)[0]}
    assert loose[("filter=area, batch=64, backend=cpp", "ours_ms")] == ""
    assert loose[("name=render", "images_per_s")] == "REGRESSION"


def test_compare_cli_on_two_files(tmp_path):
    old, new = _write(tmp_path / "old.json", OLD), _write(tmp_path / "new.json", NEW)
    code, stdout, _ = _bench("--compare", str(old), str(new), "--threshold", "0.1")
    assert code == 0
    assert "6 measurements compared, 2 regressions beyond 10%" in stdout
    assert stdout.count("REGRESSION") == 2
    code, _, _ = _bench("--compare", str(old), str(new), "--threshold", "0.1", "--fail-on-regression")
    assert code == 1
    code, _, _ = _bench("--compare", str(old), str(old), "--fail-on-regression")
    assert code == 0


def test_compare_rejects_unreadable_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, _, err = _bench("--compare", str(bad), str(_write(tmp_path / "new.json", NEW)))
    assert code == 2 and "bad.json" in err and "cannot read JSON" in err


def test_missing_benchmarks_dir_names_where_it_looked(tmp_path):
    with pytest.raises(BenchError, match="--bench-dir") as info:
        find_bench_dir(starts=[tmp_path / "a"])
    assert str(tmp_path / "a" / "benchmarks") in str(info.value) and str(tmp_path / "benchmarks") in str(info.value)
    code, _, err = _bench("kernels", "--device", "cpu", "--bench-dir", str(tmp_path), "--out", str(tmp_path / "o"))
    assert code == 2 and f"--bench-dir {tmp_path}" in err and "bench_degrade.py" in err
    assert not (tmp_path / "o").exists()


def test_finds_benchmarks_above_a_start_folder(tmp_path):
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "bench_degrade.py").write_text("")
    (tmp_path / "deep" / "er").mkdir(parents=True)
    assert find_bench_dir(starts=[tmp_path / "deep" / "er"]) == (tmp_path / "benchmarks").resolve()
    assert find_bench_dir(str(tmp_path)) == (tmp_path / "benchmarks").resolve()


STUB = """import argparse, json
p = argparse.ArgumentParser()
p.add_argument("--device")
p.add_argument("--size", type=int)
p.add_argument("--out")
a = p.parse_args()
if a.size < 0:
    raise SystemExit("negative size")
json.dump({"benchmark": "stub", "rows": [{"size": a.size, "ms": 1.5}], "extra_key": 7}, open(a.out, "w"))
"""


def test_run_spec_runs_script_and_collects_rows(tmp_path):
    (tmp_path / "bench_stub.py").write_text(STUB)
    entry = run_spec(Spec("stub", "kernels", "bench_stub.py", quick=("--size", "3")), tmp_path, tmp_path, "cpu", True)
    assert entry["status"] == "ok" and entry["rows"] == [{"size": 3, "ms": 1.5}]
    assert entry["extra"] == {"extra_key": 7}
    assert entry["command"] == "python benchmarks/bench_stub.py --device cpu --size 3 --out stub.json"


def test_run_spec_reports_failure_undeclared_flag_and_missing_script(tmp_path):
    (tmp_path / "bench_stub.py").write_text(STUB)
    failed = run_spec(Spec("stub", "kernels", "bench_stub.py", full=("--size", "-1")), tmp_path, tmp_path, "cpu", False)
    assert failed["status"] == "failed" and "stub.log" in failed["note"]
    assert "negative size" in (tmp_path / "stub.log").read_text()
    undeclared = run_spec(Spec("stub", "kernels", "bench_stub.py", quick=("--quick",)), tmp_path, tmp_path, "cpu", True)
    assert undeclared["status"] == "skipped" and "does not declare --quick" in undeclared["note"]
    missing = run_spec(Spec("train", "train", "bench_train.py"), tmp_path, tmp_path, "cpu", False)
    assert missing["status"] == "skipped" and "bench_train.py not found" in missing["note"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_gpu_is_a_clear_error(tmp_path):
    code, _, err = _bench("kernels", "--device", "cuda", "--out", str(tmp_path))
    assert code == 2 and "--device cuda" in err


def test_plots_need_two_x_values(tmp_path):
    row = {"filter": "area", "up": False, "batch": 64, "backend": "cpp", "ours_ms": 1.0, "loop_ms": 2.0}
    assert plot_degrade([row], tmp_path / "d.png") is None
    assert plot_degrade([row, row | {"batch": 256, "ours_ms": 3.0}], tmp_path / "d.png") == tmp_path / "d.png"
    assert (tmp_path / "d.png").read_bytes()[:8] == PNG_MAGIC
    heads = [{"B": 512, "C": c, "D": 512, "dtype": "float32", "margin": "arcface", "path": p, "ms": 1.0 + c / 1e4,
              "work_MiB": 2.0} for c in (10000, 30000) for p in ("fused", "reference")]  # fmt: skip
    assert plot_heads(heads[:2], tmp_path / "h.png") is None
    assert plot_heads(heads, tmp_path / "h.png") == tmp_path / "h.png"
