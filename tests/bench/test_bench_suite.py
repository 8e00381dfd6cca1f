"""``mrface bench``: the suite runs the real benchmark scripts, writes a report, compares runs, fails clearly."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mrface.bench.suite import BenchError, Spec, compare_runs, find_bench_dir, run_spec
from mrface.bench.plots import plot_degrade, plot_heads, plot_scaling
from mrface.bench.report import headline_rows, load_runs, parse_notes, parse_run, select, store_run
from mrface.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _bench(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["bench", *argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[int, Path, str]:
    """``mrface bench kernels --quick --device cpu`` limited to two scripts (this shared CPU is slow), its report
    stored in ``<out>/stored`` and the benchmark document rendered to ``<out>/doc/BENCHMARKS.md``."""
    out = tmp_path_factory.mktemp("bench")
    code, stdout, _ = _bench(
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
    measured = sum(
        1
        for e in report["benchmarks"].values()
        for r in e["rows"]
        for c in ("ours_ms", "loop_ms", "ms")
        if isinstance(r.get(c), float)
    )
    assert len(results) == measured and notes == []
    assert all(r["new/old"] == 1.0 and r["flag"] == "" for r in results)


@pytest.mark.slow
def test_full_quick_kernels_suite_runs_every_kernel_script(tmp_path):
    code, stdout, _ = _bench("kernels", "--quick", "--device", "cpu", "--out", str(tmp_path))
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


def _report(benchmarks: dict, quick: bool = False) -> dict:
    return {"machine": {"cpu": "test cpu", "cores": 2}, "quick": quick, "benchmarks": benchmarks}


def _write(path: Path, report: dict) -> Path:
    path.write_text(json.dumps(report))
    return path


OLD = _report(
    {
        "degrade": {
            "area": "kernels",
            "rows": [
                {"filter": "area", "batch": 64, "backend": "cpp", "ours_ms": 10.0, "loop_ms": 20.0, "speedup": 2.0},
                {"filter": "area", "batch": 256, "backend": "cpp", "ours_ms": 40.0, "loop_ms": 80.0, "speedup": 2.0},
            ],
        },
        "data": {
            "area": "data",
            "rows": [{"name": "render", "images_per_s": 100.0}, {"name": "loader", "images_per_s": 100.0}],
        },
    }
)
NEW = _report(
    {
        "degrade": {
            "area": "kernels",
            "rows": [
                {"filter": "area", "batch": 256, "backend": "cpp", "ours_ms": 40.0, "loop_ms": 80.0, "speedup": 2.0},
                {"filter": "area", "batch": 64, "backend": "cpp", "ours_ms": 15.0, "loop_ms": 20.0, "speedup": 1.33},
                {"filter": "area", "batch": 1024, "backend": "cpp", "ours_ms": 99.0, "loop_ms": 99.0, "speedup": 1.0},
            ],
        },
        "data": {
            "area": "data",
            "rows": [{"name": "render", "images_per_s": 50.0}, {"name": "loader", "images_per_s": 130.0}],
        },
    }
)


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


# ----------------------------------------------------------------------------- the benchmark document


def test_quick_run_is_stored_and_rendered_into_a_document(quick_run):
    code, path, _ = quick_run
    assert code == 0
    out = path.parent
    stored = sorted((out / "stored").glob("*.json"))
    assert [p.name for p in stored] == [f"cpu-kernels-quick-{path.stem}.json"]
    assert "plots" not in json.loads(stored[0].read_text())  # local PNG paths stay out of the stored data
    doc = (out / "doc" / "BENCHMARKS.md").read_text()
    assert f"`mrface bench report {out / 'stored'} --out {out / 'doc' / 'BENCHMARKS.md'}`" in doc
    assert doc.index("## Headline ratios") < doc.index("## Runs") < doc.index("### degrade") < doc.index("### heads")
    assert "quick run: not for publishing" in doc and "`degrade_resolution` area 112→{56,28,14,7} down+up, N=8" in doc
    assert "`python benchmarks/bench_degrade.py --device cpu --batches 2 8 --repeats 2 --out degrade.json`" in doc
    # benchmarks/notes.md of the checkout: the hand-recorded H100 numbers stay while no CUDA run is stored.
    assert "Recorded by hand on 2026-11-23 on an H100" in doc
    plot = next((out / "stored" / "plots").glob("cpu-*-degrade.png"))
    assert f"](../stored/plots/{plot.name})" in doc and plot.read_bytes()[:8] == PNG_MAGIC


def _gpu_looking(cpu_report: dict) -> dict:
    """A real CPU report turned into what a full H100 run of another day looks like (same schema)."""
    gpu = json.loads(json.dumps(cpu_report))
    gpu.pop("plots", None)
    gpu |= {
        "device": "cuda",
        "quick": False,
        "date": "20991231T235959Z",
        "command": "mrface bench kernels --device cuda",
    }
    gpu["machine"] |= {"gpu": "NVIDIA H100 80GB HBM3", "gpu_memory_gib": 79.1, "cuda": "13.0", "gpu_driver": "580.1"}
    degrade = gpu["benchmarks"]["degrade"]
    degrade["command"] = degrade["command"].replace("--device cpu", "--device cuda")
    degrade["rows"] = [
        r | {"backend": backend, "ours_ms": r["loop_ms"] / k, "speedup": k}
        for r in degrade["rows"]
        for backend, k in (("cuda", 8.0), ("triton", 4.0))
    ]
    shape = {"B": 1024, "C": 200000, "D": 512, "margin": "arcface", "dtype": "float32"}
    gpu["benchmarks"]["margin_softmax"] = {
        "area": "kernels",
        "status": "ok",
        "command": "python benchmarks/bench_margin_softmax.py --device cuda --out margin_softmax.json",
        "rows": [
            shape | {"path": "fused", "ms": 20.0, "work_MiB": 350.0, "achieved": 0.5, "bound": "compute"},
            shape | {"path": "reference", "ms": 40.0, "work_MiB": 7000.0, "achieved": 0.25, "bound": "compute"},
            shape | {"path": "compiled", "ms": 25.0, "work_MiB": 3000.0, "achieved": 0.4, "bound": "compute"},
        ],
    }
    return gpu


NOTES = """Editors' text: not rendered.
## intro
INTRO-TEXT
## degrade
DEGRADE-NOTE
## degrade [until cuda]
HAND-DEGRADE
## gumbel_fps [until cuda]
HAND-GUMBEL
## nosuch
ORPHAN
"""


def test_report_holds_cpu_and_gpu_runs_with_headlines_notes_and_plots(quick_run, tmp_path):
    _, path, _ = quick_run
    cpu_report = json.loads(path.read_text())
    cpu = _write(tmp_path / "cpu.json", cpu_report)
    gpu = _write(tmp_path / "gpu.json", _gpu_looking(cpu_report))
    (tmp_path / "notes.md").write_text(NOTES)
    doc_path = tmp_path / "doc" / "B.md"
    code, stdout, err = _bench(
        "report",
        str(cpu),
        str(gpu),
        "--out",
        str(doc_path),
        "--notes",
        str(tmp_path / "notes.md"),
        "--plots-dir",
        str(tmp_path / "doc" / "plots"),
    )
    assert code == 0, err
    doc = doc_path.read_text()
    cores = cpu_report["machine"]["cores"]
    heads = [line for line in doc.splitlines() if line.startswith("| `degrade_resolution` area")]
    assert len(heads) == 4  # down+up and down, on each machine
    assert (
        sum("NVIDIA H100 80GB HBM3" in line and "**8.00×** faster" in line and "cuda)" in line for line in heads) == 2
    )  # the best GPU backend
    assert sum(f"{cores}-core " in line and "(quick run: not for publishing)" in line for line in heads) == 2
    margin = next(line for line in doc.splitlines() if line.startswith("| fused margin softmax"))
    assert "1024×200000×512, arcface, float32 | NVIDIA H100 80GB HBM3 |" in margin
    assert "time **2.00× faster** than the reference (20 vs 40 ms)" in margin
    assert "working memory **5.0 %** of the reference's (350 vs 7000 MiB)" in margin
    assert "fused at 50.0 % of its roofline (compute bound)" in margin and "compiled 25 ms" in margin
    # Runs: machine, versions, command and date of both.
    assert "| cuda-20991231T235959Z | cuda |" in doc and "2099-12-31 23:59 UTC" in doc
    assert "`mrface bench kernels --device cuda`" in doc and "| 580.1 |" in doc
    assert "`mrface bench kernels --device cpu --quick --only degrade heads`" in doc
    # Every benchmark section holds each machine's table with machine, date and command above it.
    degrade = doc[doc.index("### degrade") : doc.index("### heads")]
    assert degrade.count("| filter | up | batch | backend |") == 2
    assert "**NVIDIA H100 80GB HBM3** (cuda; torch" in degrade and f"**{cores}-core " in degrade
    assert "`python benchmarks/bench_degrade.py --device cuda --batches 2 8" in degrade
    # Notes: intro on top, plain notes above the tables, hand-recorded GPU numbers gone once a CUDA run has them.
    assert doc.index("INTRO-TEXT") < doc.index("## Headline ratios")
    assert degrade.index("DEGRADE-NOTE") < degrade.index("| filter |")
    assert "HAND-DEGRADE" not in doc and "Editors' text" not in doc
    gumbel = doc[doc.index("### gumbel_fps") :]
    assert "No result file documented here provides this benchmark yet" in gumbel and "HAND-GUMBEL" in gumbel
    assert doc.index("## Other notes") < doc.index("### nosuch") < doc.index("ORPHAN")
    assert "'## degrade [until cuda]' dropped" in err and "nosuch match no section" in err
    plots = sorted(p.name for p in (tmp_path / "doc" / "plots").glob("*.png"))
    assert plots == sorted([f"cpu-{cpu_report['date']}-degrade.png", "cuda-20991231T235959Z-degrade.png"])
    assert "](plots/cuda-20991231T235959Z-degrade.png)" in doc
    # Reproducible from the data: rendering again gives the same document.
    assert (
        _bench(
            "report",
            str(cpu),
            str(gpu),
            "--out",
            str(doc_path),
            "--notes",
            str(tmp_path / "notes.md"),
            "--plots-dir",
            str(tmp_path / "doc" / "plots"),
        )[0]
        == 0
    )
    assert doc_path.read_text() == doc


def test_report_takes_a_script_json_and_folders(quick_run, tmp_path):
    _, path, _ = quick_run
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "degrade.json").write_text((path.with_suffix("") / "degrade.json").read_text())
    code, _, err = _bench("report", str(folder), "--out", str(tmp_path / "doc.md"), "--notes", str(tmp_path / "n.md"))
    assert code == 2 and "--notes" in err  # a notes file that does not exist is an error, not silence
    (tmp_path / "n.md").write_text("")
    code, _, err = _bench("report", str(folder), "--out", str(tmp_path / "doc.md"), "--notes", str(tmp_path / "n.md"))
    assert code == 0, err
    doc = (tmp_path / "doc.md").read_text()
    assert "## kernels" in doc and "### degrade" in doc and "| `degrade_resolution` area" in doc
    assert "[degrade.json](results/degrade.json)" in doc
    assert (folder / "plots").is_dir()  # plots go beside the data by default


def test_report_errors_are_clear(tmp_path):
    bad = _write(tmp_path / "bad.json", {"foo": 1})
    cases = [
        (("report", "--out", str(tmp_path / "d.md")), "usage: mrface bench report"),
        (("report", str(tmp_path / "missing.json"), "--out", str(tmp_path / "d.md")), "no such file"),
        (("report", str(bad), "--out", str(tmp_path / "d.md")), "neither a `mrface bench` report"),
        (("report", str(bad)), "usage: mrface bench report"),
        (("report", str(bad), "--out", str(tmp_path / "d.md"), "--quick"), "--quick does not apply"),
        (("kernels", str(bad)), "result files go with `mrface bench report`"),
    ]
    for argv, message in cases:
        code, _, err = _bench(*argv)
        assert code == 2 and message in err, (argv, err)
    assert not (tmp_path / "d.md").exists()


def _run_json(date: str, names: tuple[str, ...], quick: bool = False, gpu: str | None = None) -> dict:
    machine = {"cpu": "test cpu", "cores": 2} | ({"gpu": gpu} if gpu else {})
    rows = [{"batch": 1, "ms": 1.0}]
    return {
        "date": date,
        "device": "cuda" if gpu else "cpu",
        "quick": quick,
        "area": "kernels",
        "command": "c",
        "machine": machine,
        "benchmarks": {n: {"status": "ok", "rows": rows} for n in names},
    }


def test_select_takes_the_newest_full_run_per_machine_and_benchmark(tmp_path):
    runs = [
        parse_run(_run_json(*args), tmp_path / f"{i}.json")
        for i, args in enumerate(
            [
                ("20260101T000000Z", ("degrade", "heads")),
                ("20260102T000000Z", ("degrade",)),
                ("20260103T000000Z", ("degrade", "heads"), True),  # newer but quick: a full run wins
                ("20250101T000000Z", ("degrade",), False, "H100"),  # another machine: kept beside the CPU runs
            ]
        )
    ]
    chosen = {name: sorted(run.source.name for run, _ in pairs) for name, pairs in select(runs).items()}
    assert chosen == {"degrade": ["1.json", "3.json"], "heads": ["0.json"]}
    assert sum(len(pairs) for pairs in select(runs, all_runs=True).values()) == 6


def test_store_keeps_runs_until_every_benchmark_is_superseded(tmp_path):
    store = tmp_path / "results"
    first, _ = store_run(_write(tmp_path / "a.json", _run_json("20260101T000000Z", ("degrade", "heads"))), store)
    assert first.name == "cpu-kernels-20260101T000000Z.json"
    second, removed = store_run(_write(tmp_path / "b.json", _run_json("20260102T000000Z", ("degrade",))), store)
    assert removed == [] and first.is_file()  # heads still comes from the first run
    _, removed = store_run(_write(tmp_path / "c.json", _run_json("20260103T000000Z", ("degrade", "heads"))), store)
    assert sorted(removed) == sorted([first, second]) and len(load_runs([store])) == 1
    gpu, removed = store_run(
        _write(tmp_path / "d.json", _run_json("20250101T000000Z", ("degrade",), gpu="H100")), store
    )
    assert removed == [] and gpu.name == "cuda-kernels-20250101T000000Z.json"


def test_notes_blocks_and_bad_heading():
    blocks = parse_notes("ignored\n## intro\nA\n\n### sub\nB\n## degrade [until cuda]\nC\n")
    assert [(b.key, b.until, b.body) for b in blocks] == [("intro", None, "A\n\n### sub\nB"), ("degrade", "cuda", "C")]
    with pytest.raises(BenchError, match="is not '## key'"):
        parse_notes("## two words\n")


def test_headlines_for_train_scaling_and_gumbel(tmp_path):
    train = [
        {"model": "iresnet_tiny", "variant": "base", "batch": 32, "images_per_s": 64.0},
        {"model": "iresnet_tiny", "variant": "amp", "amp": "bf16", "images_per_s": 80.0, "vs_base": 1.25},
        {"model": "iresnet_tiny", "variant": "channels_last", "note": "skipped: too narrow"},
        {
            "model": "iresnet_tiny",
            "variant": "recordio",
            "images_per_s": 60.0,
            "vs_base": 0.94,
            "loader_images_per_s": 1500.0,
            "loader_keeps_up": True,
        },
    ]
    scaling = [
        {
            "model": "iresnet_tiny",
            "backend": "gloo",
            "processes": 1,
            "threads_per_process": 1,
            "images_per_s": 40.0,
            "efficiency": 1.0,
        },
        {
            "model": "iresnet_tiny",
            "backend": "gloo",
            "processes": 2,
            "threads_per_process": 1,
            "images_per_s": 72.0,
            "efficiency": 0.9,
        },
        {
            "model": "iresnet_tiny",
            "backend": "gloo",
            "processes": 1,
            "threads_per_process": 2,
            "images_per_s": 60.0,
            "efficiency": None,
        },
    ]
    gumbel = [
        {
            "B": 64,
            "N": 200,
            "K": 8,
            "D": 512,
            "impl": "op[cpp]",
            "forward_ms": 2.0,
            "forward_backward_ms": 8.0,
            "achieved": 0.01,
        },
        {
            "B": 64,
            "N": 200,
            "K": 8,
            "D": 512,
            "impl": "torch batched loop",
            "forward_ms": 10.0,
            "forward_backward_ms": 4.0,
        },
    ]
    report = {
        "date": "20260101T000000Z",
        "device": "cpu",
        "machine": {"cpu": "X", "cores": 2},
        "benchmarks": {"train": {"rows": train}, "scaling": {"rows": scaling}, "gumbel_fps": {"rows": gumbel}},
    }
    rows = {r["what"]: r["result"] for r in headline_rows(select([parse_run(report, tmp_path / "r.json")]))}
    assert rows["training step, iresnet_tiny, batch 32"] == (
        "**64 img/s** (fused head, float32, in-memory batch); vs base: AMP bf16 1.25×, channels_last: skipped, "
        "RecordIO loader 0.94× (loader alone 1500 img/s: keeps up)"
    )
    assert rows["training on 2 processes, iresnet_tiny, gloo, 1 thread(s) each"] == (
        "**72 img/s**, efficiency **90 %** (1 process: 40 img/s); 1 process with 2 threads: 60 img/s"
    )
    assert rows["`gumbel_fps`, B=64, N=200, K=8, D=512"] == (
        "forward **5.00×** the speed of the batched PyTorch loop (2 vs 10 ms, op[cpp]); forward+backward 0.50× "
        "(8 vs 4 ms); forward at 1 % of the copy-bandwidth floor"
    )


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
    code, stdout, _ = _bench("train", "--quick", "--device", "cpu", "--out", str(tmp_path))
    assert code == 0, stdout
    report = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert {n: e["status"] for n, e in report["benchmarks"].items()} == {"train": "ok", "scaling": "ok"}
    variants = [r["variant"] for r in report["benchmarks"]["train"]["rows"]]
    assert variants == ["base", "reference_head", "amp", "channels_last", "recordio"]  # no compile under --quick
    assert [Path(p).name for p in report["plots"]] == [next(tmp_path.glob("*.json")).stem + "-scaling.png"]


# ----------------------------------------------------------------------------- mrface bench gpu


@pytest.fixture(scope="module")
def gpu_dry_run(tmp_path_factory) -> tuple[int, Path, str]:
    """``mrface bench gpu --dry-run``: every section of the GPU suite at tiny sizes on the CPU, stored and rendered."""
    out = tmp_path_factory.mktemp("gpu")
    code, stdout, err = _bench(
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
    from mrface.bench.gpu import SECTION_NAMES

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
    from mrface.bench.gpu import parse_pytest_log

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
    from mrface.bench.gpu import goals_entry

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


def test_run_logged_stops_the_whole_process_group_at_its_timeout(tmp_path):
    import os
    import time

    from mrface.bench.suite import run_logged

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


def test_gpu_suite_budget_spent_skips_sections_and_fails(tmp_path):
    code, out, err = _bench("gpu", "--dry-run", "--budget-s", "0.001", "--out", str(tmp_path))
    report = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert {e["status"] for n, e in report["benchmarks"].items() if n != "goals"} == {"skipped"}
    assert all("budget was spent" in e["note"] for n, e in report["benchmarks"].items() if n != "goals")
    assert code == 1 and "no section ran" in err


def test_gpu_suite_argument_errors(tmp_path):
    code, _, err = _bench("gpu", "--dry-run", "--quick", "--out", str(tmp_path))
    assert code == 2 and "--quick does not apply" in err
    code, _, err = _bench("kernels", "--dry-run", "--out", str(tmp_path))
    assert code == 2 and "belong to `mrface bench gpu`" in err
    if not torch.cuda.is_available():
        code, _, err = _bench("gpu", "--out", str(tmp_path))
        assert code == 2 and "--dry-run" in err
