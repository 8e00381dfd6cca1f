"""BENCHMARKS.md from stored results (mrface.bench.report): selection, storing, notes and headlines."""

from __future__ import annotations

import json

import pytest
from bench_helpers import PNG_MAGIC, run_bench, write_json

from mrface.bench.errors import BenchError
from mrface.bench.report import headline_rows, load_runs, parse_notes, parse_run, select, store_run


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
    cpu = write_json(tmp_path / "cpu.json", cpu_report)
    gpu = write_json(tmp_path / "gpu.json", _gpu_looking(cpu_report))
    (tmp_path / "notes.md").write_text(NOTES)
    doc_path = tmp_path / "doc" / "B.md"
    code, stdout, err = run_bench(
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
        run_bench(
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
    code, _, err = run_bench(
        "report", str(folder), "--out", str(tmp_path / "doc.md"), "--notes", str(tmp_path / "n.md")
    )
    assert code == 2 and "--notes" in err  # a notes file that does not exist is an error, not silence
    (tmp_path / "n.md").write_text("")
    code, _, err = run_bench(
        "report", str(folder), "--out", str(tmp_path / "doc.md"), "--notes", str(tmp_path / "n.md")
    )
    assert code == 0, err
    doc = (tmp_path / "doc.md").read_text()
    assert "## kernels" in doc and "### degrade" in doc and "| `degrade_resolution` area" in doc
    assert "[degrade.json](results/degrade.json)" in doc
    assert (folder / "plots").is_dir()  # plots go beside the data by default


def test_report_errors_are_clear(tmp_path):
    bad = write_json(tmp_path / "bad.json", {"foo": 1})
    cases = [
        (("report", "--out", str(tmp_path / "d.md")), "usage: mrface bench report"),
        (("report", str(tmp_path / "missing.json"), "--out", str(tmp_path / "d.md")), "no such file"),
        (("report", str(bad), "--out", str(tmp_path / "d.md")), "neither a `mrface bench` report"),
        (("report", str(bad)), "usage: mrface bench report"),
        (("report", str(bad), "--out", str(tmp_path / "d.md"), "--quick"), "--quick does not apply"),
        (("kernels", str(bad)), "result files go with `mrface bench report`"),
    ]
    for argv, message in cases:
        code, _, err = run_bench(*argv)
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
    first, _ = store_run(write_json(tmp_path / "a.json", _run_json("20260101T000000Z", ("degrade", "heads"))), store)
    assert first.name == "cpu-kernels-20260101T000000Z.json"
    second, removed = store_run(write_json(tmp_path / "b.json", _run_json("20260102T000000Z", ("degrade",))), store)
    assert removed == [] and first.is_file()  # heads still comes from the first run
    _, removed = store_run(write_json(tmp_path / "c.json", _run_json("20260103T000000Z", ("degrade", "heads"))), store)
    assert sorted(removed) == sorted([first, second]) and len(load_runs([store])) == 1
    gpu, removed = store_run(
        write_json(tmp_path / "d.json", _run_json("20250101T000000Z", ("degrade",), gpu="H100")), store
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


def test_headline_of_a_benchmark_and_its_sweep_comes_from_one_of_them_per_run(tmp_path):
    """margin_softmax and margin_softmax_classes declare one headline: a run's lines come from the first that
    has rows; a run holding only the sweep still gets them."""
    shape = {"B": 8, "C": 100, "D": 4, "margin": "arcface", "dtype": "float32"}

    def rows(c: int) -> list[dict]:
        return [
            shape | {"C": c, "path": "fused", "ms": 10.0, "work_MiB": 5.0},
            shape | {"C": c, "path": "reference", "ms": 20.0, "work_MiB": 50.0},
        ]

    both = _run_json("20260101T000000Z", ())
    both["benchmarks"] = {"margin_softmax": {"status": "ok", "rows": rows(100)}}
    both["benchmarks"]["margin_softmax_classes"] = {"status": "ok", "rows": rows(900)}
    sweep_only = _run_json("20260102T000000Z", (), gpu="H100")
    sweep_only["benchmarks"] = {"margin_softmax_classes": {"status": "ok", "rows": rows(900)}}
    selected = select([parse_run(both, tmp_path / "a.json"), parse_run(sweep_only, tmp_path / "b.json")])
    heads = headline_rows(selected)
    result = (
        "time **2.00× faster** than the reference (10 vs 20 ms); "
        "working memory **10.0 %** of the reference's (5 vs 50 MiB)"
    )
    assert [(h["what"], h["machine"], h["result"]) for h in heads] == [
        ("fused margin softmax fwd+bwd, 8×100×4, arcface, float32", "2-core test cpu", result),
        ("fused margin softmax fwd+bwd, 8×900×4, arcface, float32", "H100", result),
    ]
