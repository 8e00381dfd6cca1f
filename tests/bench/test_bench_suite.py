"""``mrface bench`` runs the real benchmark scripts (mrface.bench.suite) and fails clearly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from bench_helpers import PNG_MAGIC, run_bench

from mrface.bench.errors import BenchError
from mrface.bench.plots import plot_scaling
from mrface.bench.specs import Spec
from mrface.bench.suite import find_bench_dir, run_logged, run_spec


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


@pytest.mark.slow
def test_full_quick_kernels_suite_runs_every_kernel_script(tmp_path):
    code, stdout, _ = run_bench("kernels", "--quick", "--device", "cpu", "--out", str(tmp_path))
    assert code == 0, stdout
    report = json.loads(next(tmp_path.glob("*.json")).read_text())
    statuses = {name: e["status"] for name, e in report["benchmarks"].items()}
    assert statuses == {
        "degrade": "ok",
        "gumbel_fps": "ok",
        "gumbel_fps_sweep": "skipped",
        "heads": "ok",
        "margin_softmax": "ok",
        "margin_softmax_classes": "skipped",
    }
    paths = {r["path"] for r in report["benchmarks"]["margin_softmax"]["rows"]}
    assert paths == {"fused", "reference"}


def test_missing_benchmarks_dir_names_where_it_looked(tmp_path):
    with pytest.raises(BenchError, match="--bench-dir") as info:
        find_bench_dir(starts=[tmp_path / "a"])
    assert str(tmp_path / "a" / "benchmarks") in str(info.value) and str(tmp_path / "benchmarks") in str(info.value)
    code, _, err = run_bench("kernels", "--device", "cpu", "--bench-dir", str(tmp_path), "--out", str(tmp_path / "o"))
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
    code, _, err = run_bench("kernels", "--device", "cuda", "--out", str(tmp_path))
    assert code == 2 and "--device cuda" in err


def test_run_logged_stops_the_whole_process_group_at_its_timeout(tmp_path):
    import os
    import time

    script = "import subprocess, time; p = subprocess.Popen(['sleep', '60']); print(p.pid, flush=True); time.sleep(60)"
    start = time.perf_counter()
    code = run_logged([sys.executable, "-c", script], tmp_path, dict(os.environ), tmp_path / "log", timeout=3)
    assert code is None and time.perf_counter() - start < 30
    child = int((tmp_path / "log").read_text().split()[0])
    time.sleep(0.5)
    stat = Path(f"/proc/{child}/stat")  # the grandchild went with its parent: gone, or a zombie awaiting its reaper
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


SLOW_STUB = """
import argparse, json, time
p = argparse.ArgumentParser()
p.add_argument("--out")
a = p.parse_args()
json.dump({"benchmark": "slow", "partial": True, "rows": [{"size": 1, "ms": 2.0}]}, open(a.out, "w"))
time.sleep(60)
"""


def test_run_spec_timeout_keeps_the_rows_written_before(tmp_path):
    (tmp_path / "bench_slow.py").write_text(SLOW_STUB)
    entry = run_spec(
        Spec("slow", "kernels", "bench_slow.py"),
        tmp_path,
        tmp_path,
        "cpu",
        False,
        timeout=3,
        env_extra={"MRFACE_X": "1"},
    )
    assert entry["status"] == "timeout" and entry["rows"] == [{"size": 1, "ms": 2.0}]
    assert "3 s budget" in entry["note"] and entry["env"] == {"MRFACE_X": "1"} and entry["seconds"] < 30


# ----------------------------------------------------------------------------- scripts: roofline, train, scaling


@pytest.fixture
def bench_modules(monkeypatch):
    """The benchmarks/ folder on sys.path, so its scripts import as modules (they import ``common``)."""
    monkeypatch.syspath_prepend(str(find_bench_dir()))
    import common

    return common


def test_roofline_floor_is_the_larger_of_compute_and_memory(bench_modules):
    roof = bench_modules.roofline(0.004, flops=2e9, nbytes=1e9, peak_flops=1e12, bandwidth=1e12)
    assert roof.pop("bound") == "compute"
    assert roof == pytest.approx({"floor_ms": 2.0, "of_floor": 2.0, "achieved": 0.5})
    assert bench_modules.roofline(0.004, nbytes=2e9, bandwidth=1e12)["bound"] == "memory"
    assert bench_modules.roofline(0.004)["floor_ms"] is None


def test_channels_last_guard_skips_narrow_models_on_cpu(bench_modules):
    from bench_train import build_model, channels_last_problem

    assert "8 output channels" in channels_last_problem(build_model("iresnet_tiny", 0.125), "cpu")
    assert channels_last_problem(build_model("iresnet_tiny", None), "cpu") is None
    assert channels_last_problem(build_model("iresnet_tiny", 0.125), "cuda") is None


@pytest.mark.distributed
def test_scaling_script_runs_one_and_two_gloo_processes(tmp_path):
    script = find_bench_dir() / "bench_scaling.py"
    out = tmp_path / "scaling.json"
    cmd = [
        sys.executable,
        str(script),
        "--device",
        "cpu",
        "--quick",
        "--no-all-cores",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--classes",
        "16",
        "--batch",
        "2",
        "--width",
        "0.125",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["backend"], r["processes"], r["global_batch"]) for r in rows] == [("gloo", 1, 2), ("gloo", 2, 4)]
    assert all(r["images_per_s"] > 0 and r["efficiency"] > 0 for r in rows) and rows[0]["efficiency"] == 1.0
    assert plot_scaling(rows, tmp_path / "s.png") == tmp_path / "s.png"


@pytest.mark.slow
def test_quick_train_suite_runs_variants_and_scaling(tmp_path):
    code, stdout, _ = run_bench("train", "--quick", "--device", "cpu", "--out", str(tmp_path))
    assert code == 0, stdout
    report = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert {n: e["status"] for n, e in report["benchmarks"].items()} == {"train": "ok", "scaling": "ok"}
    variants = [r["variant"] for r in report["benchmarks"]["train"]["rows"]]
    assert variants == ["base", "reference_head", "amp", "channels_last", "recordio"]  # no compile under --quick
    assert [Path(p).name for p in report["plots"]] == [next(tmp_path.glob("*.json")).stem + "-scaling.png"]
