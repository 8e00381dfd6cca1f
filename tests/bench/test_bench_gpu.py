"""``mrface bench gpu`` (mrface.bench.gpu): the dry run on the CPU, the pytest log, the goals, the budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from bench_helpers import run_bench

from mrface.bench.gpu import goals_entry, parse_pytest_log
from mrface.bench.specs import SECTION_NAMES


@pytest.fixture(scope="module")
def gpu_dry_run(tmp_path_factory) -> tuple[int, Path, str]:
    """``mrface bench gpu --dry-run``: every section of the GPU suite at tiny sizes on the CPU, stored and rendered."""
    out = tmp_path_factory.mktemp("gpu")
    code, stdout, err = run_bench(
        "gpu",
        "--dry-run",
        "--out",
        str(out),
        "--store",
        str(out / "stored"),
        "--markdown",
        str(out / "doc" / "BENCHMARKS.md"),
    )
    reports = sorted(out.glob("*.json"))
    assert len(reports) == 1, f"expected one report in {out}, found {reports}: {stdout}{err}"
    return code, reports[0], stdout + err


def test_gpu_dry_run_runs_every_section_and_records_machine_and_command(gpu_dry_run):

    code, path, log = gpu_dry_run
    assert code == 0, log
    report = json.loads(path.read_text())
    assert report["suite"] == "mrface bench gpu" and report["command"] == "mrface bench gpu --dry-run"
    assert report["device"] == "cpu" and report["quick"] is True
    assert report["machine"]["torch"] == torch.__version__ and report["machine"]["git_commit"]
    assert report["machine"]["versions"]["torch"] == torch.__version__
    benchmarks = report["benchmarks"]
    assert list(benchmarks) == list(SECTION_NAMES)
    assert {n: e["status"] for n, e in benchmarks.items()} == dict.fromkeys(SECTION_NAMES, "ok")
    assert all(e["seconds"] <= e["budget_s"] for n, e in benchmarks.items() if n != "goals")
    tests = benchmarks["gpu_tests"]
    assert tests["env"] == {"MRFACE_MARGIN_TRITON_HALF": "1"} and "-m gpu -x" in tests["command"]
    # No CUDA here: the file's gpu tests are collected and skipped, and counted per file.
    assert [(r["file"], r["passed"], r["failed"]) for r in tests["rows"]] == [("tests/ops/test_degrade.py", 0, 0)]
    assert tests["rows"][0]["skipped"] == tests["extra"]["totals"]["skipped"] > 0


def test_gpu_dry_run_benchmark_sections_hold_their_rows(gpu_dry_run):
    benchmarks = json.loads(gpu_dry_run[1].read_text())["benchmarks"]
    margin = benchmarks["margin_softmax"]
    assert margin["env"] == {"MRFACE_MARGIN_TRITON_HALF": "1"}
    got = {(r["dtype"], r["path"]) for r in margin["rows"]}
    assert got == {(d, p) for d in ("float32", "bfloat16", "float16") for p in ("fused", "reference", "liger")}
    assert all(r["ms"] > 0 for r in margin["rows"] if r["path"] != "liger")
    assert {r["backend"] for r in margin["rows"] if r["path"] == "fused"} == {"chunked"}  # CPU tensors
    assert all(r["note"] for r in margin["rows"] if r["path"] == "liger")  # GPU only: a note, not a number
    train = {r["variant"]: r for r in benchmarks["train"]["rows"]}
    assert list(train) == ["base", "reference_head", "recordio", "distill"]  # amp is the base here
    assert train["base"]["amp"] == "bf16" and train["reference_head"]["head"] == "reference"
    assert train["recordio"]["loader_images_per_s"] > 0 and train["distill"]["model"] == "btnet_tiny"
    assert all(r["images_per_s"] > 0 for r in train.values())
    assert [r["variant"] for r in benchmarks["train_compile"]["rows"]] == ["base", "compile"]
    backends = {(r["backend"], r["batch"]) for r in benchmarks["inference"]["rows"]}
    assert backends == {("eager-cpu", 1), ("eager-cpu", 2), ("ort-cpu", 1), ("ort-cpu", 2)}
    assert benchmarks["degrade"]["rows"] and benchmarks["gumbel_fps"]["rows"]
    goals = benchmarks["goals"]
    assert len(goals["rows"]) == 4 and "dry run" in goals["note"]


def test_gpu_dry_run_is_stored_and_rendered(gpu_dry_run):
    _, path, _ = gpu_dry_run
    stored = list((path.parent / "stored").glob("*.json"))
    assert [p.name for p in stored] == [f"cpu-gpu-quick-{json.loads(path.read_text())['date']}.json"]
    doc = (path.parent / "doc" / "BENCHMARKS.md").read_text()
    assert "## tests" in doc and "### gpu_tests" in doc and "### goals" in doc
    assert "| `pytest -m gpu` with MRFACE_MARGIN_TRITON_HALF=1 | " in doc
    assert "fused margin softmax fwd+bwd, 8×300×32, arcface, float16 (chunked)" in doc
    assert "(fused head, AMP bf16, in-memory batch); vs base: reference head" in doc
    assert "BTNet distillation step" in doc and "half-precision Triton margin softmax accuracy, float16" in doc


def test_pytest_log_counts_per_file_and_names_failures():

    log = """============ test session starts ============
tests/ops/test_a.py::test_x[float16] PASSED                  [ 20%]
tests/ops/test_a.py::test_x[bfloat16] SKIPPED (needs CUDA)   [ 40%]
tests/ops/test_a.py::test_y FAILED                           [ 60%]
tests/test_b.py::test_z PASSED                               [ 80%]
tests/test_b.py::test_w ERROR                                [100%]
FAILED tests/ops/test_a.py::test_y - AssertionError
"""
    rows, failures = parse_pytest_log(log)
    assert rows == [
        {"file": "tests/ops/test_a.py", "passed": 1, "failed": 1, "skipped": 1, "error": 0},
        {"file": "tests/test_b.py", "passed": 1, "failed": 0, "skipped": 0, "error": 1},
    ]
    assert failures == ["tests/ops/test_a.py::test_y", "tests/test_b.py::test_w"]


def test_goals_read_the_measured_rows():

    def report(fused_ms, fused_mib, of_floor, op_fb_ms, img_s, keeps):
        margin = [
            {
                "B": 512,
                "C": 100_000,
                "D": 512,
                "dtype": "bfloat16",
                "path": "fused",
                "ms": fused_ms,
                "speedup_vs_ref": 10.0 / fused_ms,
                "mem_ratio_vs_ref": fused_mib / 2000.0,
            },
            {"B": 512, "C": 100_000, "D": 512, "dtype": "bfloat16", "path": "reference", "ms": 10.0},
        ]
        degrade = [{"filter": "area", "up": True, "batch": 1024, "backend": "cuda", "of_floor": of_floor}]
        gumbel = [
            {"B": 64, "N": 200, "K": 8, "impl": "op[cuda]", "forward_backward_ms": op_fb_ms},
            {"B": 64, "N": 200, "K": 8, "impl": "torch batched loop", "forward_backward_ms": 10.0},
        ]
        train = [
            {"model": "iresnet50", "variant": "base", "batch": 256, "images_per_s": img_s},
            {"model": "iresnet50", "variant": "recordio", "loader_images_per_s": 5000.0, "loader_keeps_up": keeps},
        ]
        sections = {"margin_softmax": margin, "degrade": degrade, "gumbel_fps": gumbel, "train": train}
        return {"quick": False, "benchmarks": {n: {"rows": r} for n, r in sections.items()}}

    # 10 / 7.5 = 1.33x and 190 / 2000 = 0.095: met; 10 / 8 = 1.25x: not met; memory 0.11x: not met.
    met = [r["met"] for r in goals_entry(report(7.5, 190.0, 1.4, 2.0, 3100.0, True))["rows"]]
    assert met == [True, True, True, True]
    missed = [r["met"] for r in goals_entry(report(8.0, 190.0, 1.6, 2.5, 3100.0, False))["rows"]]
    assert missed == [False, False, False, False]
    assert goals_entry(report(7.5, 220.0, 1.4, 2.0, 2900.0, True))["rows"][0]["met"] is False
    empty = goals_entry({"quick": False, "benchmarks": {}})["rows"]
    assert [r["met"] for r in empty] == [None] * 4 and all(r["measured"] is None for r in empty)


def test_gpu_suite_budget_spent_skips_sections_and_fails(tmp_path):
    code, out, err = run_bench("gpu", "--dry-run", "--budget-s", "0.001", "--out", str(tmp_path))
    report = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert {e["status"] for n, e in report["benchmarks"].items() if n != "goals"} == {"skipped"}
    assert all("budget was spent" in e["note"] for n, e in report["benchmarks"].items() if n != "goals")
    assert code == 1 and "no section ran" in err


def test_gpu_suite_argument_errors(tmp_path):
    code, _, err = run_bench("gpu", "--dry-run", "--quick", "--out", str(tmp_path))
    assert code == 2 and "--quick does not apply" in err
    code, _, err = run_bench("kernels", "--dry-run", "--out", str(tmp_path))
    assert code == 2 and "belong to `mrface bench gpu`" in err
    if not torch.cuda.is_available():
        code, _, err = run_bench("gpu", "--out", str(tmp_path))
        assert code == 2 and "--dry-run" in err
