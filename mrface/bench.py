"""``mrface bench``: run the benchmark scripts of a source checkout, collect one JSON + Markdown report.

    mrface bench [kernels|train|inference|data|all] [--device cpu|cuda] [--quick] [--out DIR]
                 [--only NAME ...] [--bench-dir PATH] [--compare OLD.json] [--threshold 0.15]
                 [--store benchmarks/results] [--markdown BENCHMARKS.md]
    mrface bench gpu [--dry-run]                      # the GPU evidence suite (mrface.bench_gpu)
    mrface bench --compare OLD.json NEW.json          # compare two saved runs, run nothing
    mrface bench report RESULTS.json|FOLDER [...] --out BENCHMARKS.md [--notes benchmarks/notes.md]

Each script in ``benchmarks/`` runs as its own subprocess (sequentially, so runs do not share the
CPU) with ``--out`` pointing into ``<out>/<timestamp>/``, where its log is kept too. The collected
rows, the machine record and every script's exact command go to ``<out>/<timestamp>.json`` and a
Markdown summary ``<timestamp>.md``; scaling plots (PNG) sit beside them. ``--compare`` matches rows
of two runs by their non-measurement columns and prints new/old per measurement, flagging
regressions beyond ``--threshold``.

``--store DIR`` copies the run's report JSON into DIR (the tracked ``benchmarks/results/``), deleting
stored runs the new one supersedes; ``--markdown PATH`` then renders the whole benchmark document
from every run in DIR (or from this run alone without ``--store``). ``mrface bench report`` renders
it from saved files without running anything: see :mod:`mrface.bench_report`.

``benchmarks/`` is not installed with the package: it is looked for above the current directory and
above the ``mrface`` package (a source checkout), or given with ``--bench-dir``.

Exit codes: 0 every benchmark that was attempted ran; 1 a benchmark failed (or, with
``--fail-on-regression``, a regression was flagged); 2 bad arguments or no benchmarks folder.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

MARKER = "bench_degrade.py"
AREAS = ("kernels", "train", "inference", "data")


class BenchError(Exception):
    """A user-facing error (bad argument, missing folder or file); exit code 2."""


@dataclass(frozen=True)
class Spec:
    """One benchmark: a script in benchmarks/ and its arguments for full and quick runs per device."""

    name: str
    area: str
    script: str
    full: tuple[str, ...] = ()
    quick: tuple[str, ...] = ()
    full_cuda: tuple[str, ...] | None = None  # replaces ``full`` on CUDA when given
    full_only: bool = False  # a scaling sweep skipped under --quick

    def args(self, device: str, quick: bool) -> tuple[str, ...]:
        if quick:
            return self.quick
        return self.full_cuda if device == "cuda" and self.full_cuda is not None else self.full


# Quick sizes are tiny on purpose: they check the pipeline runs (CI), they are not published numbers.
SPECS: tuple[Spec, ...] = (
    Spec("degrade", "kernels", "bench_degrade.py", full=("--random",), quick=("--batches", "2", "8", "--repeats", "2")),
    Spec(
        "degrade_uint8",
        "kernels",
        "bench_degrade.py",
        full_only=True,
        full=("--dtype", "uint8", "--batches", "1024", "--repeats", "5"),
    ),
    Spec(
        "degrade_busy",
        "kernels",
        "bench_degrade.py",
        full_only=True,
        full=("--batches", "256", "--filters", "area", "--random", "--busy", "2", "--repeats", "5"),
    ),
    # Load rows (issue 22): 2 gloo ranks x 2 threads, fused head and degrade against their torch paths.
    Spec("load", "kernels", "bench_load.py", full_only=True, full=("--ranks", "2", "--threads", "2")),
    Spec(
        "gumbel_fps", "kernels", "bench_gumbel_fps.py", quick=("--quick", "--dim", "32", "--max-gib", "0.0001")
    ),  # --max-gib keeps only the B=1 sets
    Spec("gumbel_fps_sweep", "kernels", "bench_gumbel_fps.py", full=("--sweep",), full_only=True),
    Spec(
        "heads",
        "kernels",
        "bench_heads.py",
        full=("--classes", "1000", "10000", "100000"),
        full_cuda=("--classes", "10000", "100000", "1000000"),
        quick=("--heads", "arcface", "--classes", "500", "2000", "--batch", "16", "--dim", "64", "--repeats", "2"),
    ),
    Spec(
        "margin_softmax",
        "kernels",
        "bench_margin_softmax.py",
        quick=("--shapes", "16,2000,64", "--margins", "arcface", "--repeats", "2"),
    ),  # a process per path on CPU
    Spec(
        "margin_softmax_classes",
        "kernels",
        "bench_margin_softmax.py",
        full_only=True,
        full=("--margins", "arcface", "--shapes", "512,10000,512", "512,30000,512", "512,100000,512"),
        full_cuda=(
            "--margins",
            "arcface",
            "--shapes",
            "512,10000,512",
            "512,100000,512",
            "512,300000,512",
            "512,1000000,512",
        ),
    ),
    Spec("train", "train", "bench_train.py", quick=("--quick",), full_cuda=("--models", "iresnet50", "--batch", "128")),
    Spec("scaling", "train", "bench_scaling.py", quick=("--quick",)),
    # Full CPU runs keep the inference sizes a 2-core machine finishes in minutes (iresnet200 at batch 64 would
    # take hours there); full GPU runs use the scripts' defaults.
    Spec(
        "models",
        "inference",
        "bench_models.py",
        full=("--throughput", "--batch", "8", "--repeats", "3"),
        full_cuda=("--throughput",),
        quick=("--throughput", "--models", "iresnet_tiny", "--batch", "4", "--repeats", "2"),
    ),
    Spec(
        "inference",
        "inference",
        "bench_inference.py",
        full=(
            "--models",
            "iresnet_tiny",
            "btnet_tiny",
            "mobilefacenet",
            "iresnet50",
            "--batches",
            "1",
            "8",
            "32",
            "--repeats",
            "5",
            "--warmup",
            "2",
        ),
        full_cuda=(),
        quick=(
            "--models",
            "iresnet_tiny",
            "--batches",
            "1",
            "4",
            "--backends",
            "eager",
            "ort",
            "--repeats",
            "3",
            "--warmup",
            "1",
        ),
    ),
    Spec("data", "data", "bench_data.py", quick=("--images", "200", "--batch", "32")),
)


def new_run_dir(out_dir: Path) -> tuple[str, Path]:
    """(UTC timestamp, a fresh ``<out_dir>/<timestamp>[-n]`` folder) whose name no run file or folder uses yet."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    base, n = stamp, 0
    while (out_dir / f"{base}.json").exists() or (out_dir / base).exists():
        n += 1
        base = f"{stamp}-{n}"
    run_dir = out_dir / base
    run_dir.mkdir()
    return stamp, run_dir


def find_bench_dir(explicit: str | None = None, starts: list[Path] | None = None) -> Path:
    """The benchmarks/ folder: ``explicit`` (the folder or a checkout holding it), else searched upwards."""
    if explicit is not None:
        path = Path(explicit).expanduser().resolve()
        for candidate in (path, path / "benchmarks"):
            if (candidate / MARKER).is_file():
                return candidate
        raise BenchError(f"--bench-dir {explicit}: neither {path / MARKER} nor {path / 'benchmarks' / MARKER} exists")
    if starts is None:
        starts = [Path.cwd(), Path(__file__).resolve().parent]
    looked: list[str] = []
    for start in starts:
        for folder in (start.resolve(), *start.resolve().parents):
            if (folder / "benchmarks" / MARKER).is_file():
                return folder / "benchmarks"
            looked.append(str(folder / "benchmarks"))
    raise BenchError(
        "cannot find the benchmarks/ folder (it is not installed with the package). Looked for "
        f"benchmarks/{MARKER} in: {', '.join(dict.fromkeys(looked))}. "
        "Run from a source checkout of mrface or pass --bench-dir PATH."
    )


def declared_flags(script: Path) -> set[str]:
    """The ``--flags`` a script's source passes to add_argument (cheap: no import of the script)."""
    return set(re.findall(r"""["'](--[A-Za-z0-9][\w-]*)["']""", script.read_text()))


def machine_info(bench_dir: Path) -> dict:
    """benchmarks/common.machine() plus GPU driver, mrface build and the checkout's git commit."""
    info: dict = {}
    spec = importlib.util.spec_from_file_location("_mrface_bench_common", bench_dir / "common.py")
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        info = module.machine()
    smi = _output(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    if smi:
        info["gpu_driver"] = smi.splitlines()[0]
    import mrface
    from mrface.ops import build_info

    info["mrface"] = mrface.__version__
    info["mrface_C"] = build_info() or "not built"
    commit = _output(["git", "-C", str(bench_dir), "rev-parse", "--short", "HEAD"])
    if commit:
        dirty = _output(["git", "-C", str(bench_dir), "status", "--porcelain", "--untracked-files=no"])
        info["git_commit"] = commit + ("+dirty" if dirty else "")
    return info


def _output(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def run_spec(
    spec: Spec,
    bench_dir: Path,
    run_dir: Path,
    device: str,
    quick: bool,
    timeout: float | None = None,
    env_extra: dict[str, str] | None = None,
) -> dict:
    """Run one script as a subprocess; return its entry for the report (status, command, rows, extra).

    ``timeout`` (seconds) stops the script and its children (status ``timeout``, the log kept);
    ``env_extra`` is added to its environment and recorded in the entry."""
    script = bench_dir / spec.script
    entry: dict = {"area": spec.area, "script": f"benchmarks/{spec.script}", "status": "skipped"}
    if quick and spec.full_only:
        entry["note"] = "scaling sweep: full runs only (not under --quick)"
        return entry
    if not script.is_file():
        entry["note"] = f"{script} not found"
        return entry
    flags = declared_flags(script)
    args = list(spec.args(device, quick))
    if "--device" in flags:
        args = ["--device", device, *args]
    elif device != "cpu":
        entry["note"] = f"{spec.script} has no --device flag: it runs on the CPU (onnxruntime may use CUDA)"
    missing = [a for a in args if a.startswith("--") and a not in flags]
    if missing:
        entry["note"] = f"{spec.script} does not declare {', '.join(missing)}; not run"
        return entry
    out_json = run_dir / f"{spec.name}.json"
    cmd = [sys.executable, str(script), *args, "--out", str(out_json)]
    entry["command"] = shlex.join(["python", f"benchmarks/{spec.script}", *args, "--out", f"{spec.name}.json"])
    # Interpreted Triton (a test-suite setting) would make every Triton timing meaningless.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"} | (env_extra or {})
    if env_extra:
        entry["env"] = dict(env_extra)
    print(f"[{spec.area}] {spec.name}: {entry['command']}", flush=True)
    start = time.perf_counter()
    returncode = run_logged(cmd, run_dir, env, run_dir / f"{spec.name}.log", timeout)
    entry["seconds"] = round(time.perf_counter() - start, 1)
    if returncode is None:
        rows = json.loads(out_json.read_text()).get("rows", []) if out_json.is_file() else []
        kept = f"; the {len(rows)} rows finished before are kept" if rows else ""
        entry |= {
            "status": "timeout",
            "rows": rows,
            "note": f"stopped after its {timeout:.0f} s budget{kept}; log {run_dir / (spec.name + '.log')}",
        }
        print(f"    timeout after {entry['seconds']} s ({len(rows)} rows kept)", flush=True)
        return entry
    if returncode != 0 or not out_json.is_file():
        tail = (run_dir / f"{spec.name}.log").read_text().strip().splitlines()[-15:]
        entry |= {"status": "failed", "note": f"exit code {returncode}; log {run_dir / (spec.name + '.log')}"}
        print("\n".join(["    " + line for line in tail]), flush=True)
        if out_json.is_file():  # a check that wrote its rows and then failed: keep the evidence
            entry["rows"] = json.loads(out_json.read_text()).get("rows", [])
        return entry
    payload = json.loads(out_json.read_text())
    entry["status"] = "ok"
    entry["rows"] = payload.get("rows", payload.get("results", []))
    entry["extra"] = {k: v for k, v in payload.items() if k not in ("rows", "results", "machine", "benchmark")}
    print(f"    ok: {len(entry['rows'])} rows in {entry['seconds']} s", flush=True)
    return entry


def run_logged(cmd: list[str], cwd: Path, env: dict[str, str], log_path: Path, timeout: float | None) -> int | None:
    """Run ``cmd`` with stdout and stderr into ``log_path``; its exit code, or None when it ran past ``timeout``
    seconds (then the whole process group is killed: DataLoader workers and compile workers included)."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return None
        except BaseException:  # Ctrl-C: do not leave the benchmark running
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            raise


def run_suite(
    area: str, device: str, quick: bool, out_dir: Path, bench_dir: Path, only: list[str] | None = None
) -> Path:
    """Run the area's benchmarks; write <out>/<stamp>.json, .md and plots; return the JSON path."""
    specs = [s for s in SPECS if area in ("all", s.area) and (not only or s.name in only)]
    if not specs:
        raise BenchError(
            f"--only {' '.join(only or [])}: no benchmark of area {area!r} has that name "
            f"(names: {', '.join(s.name for s in SPECS)})"
        )
    stamp, run_dir = new_run_dir(out_dir)  # the scripts run inside the run folder
    out_dir, base = run_dir.parent, run_dir.name
    command = ["mrface", "bench", area, "--device", device] + (["--quick"] if quick else [])
    report = {
        "suite": "mrface bench",
        "date": stamp,
        "command": shlex.join(command + (["--only", *only] if only else [])),
        "area": area,
        "device": device,
        "quick": quick,
        "machine": machine_info(bench_dir),
        "benchmarks": {s.name: run_spec(s, bench_dir, run_dir, device, quick) for s in specs},
    }
    from mrface.bench_plots import write_plots

    report["plots"] = write_plots(report, out_dir, base)
    path = out_dir / f"{base}.json"
    path.write_text(json.dumps(report, indent=2))
    (out_dir / f"{base}.md").write_text(markdown(report))
    print_tables(report)
    print(f"wrote {path}, {out_dir / (base + '.md')} (per-script JSON and logs in {run_dir})")
    return path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bench`` subcommand to the ``mrface`` CLI."""
    p = subparsers.add_parser(
        "bench",
        help="run the benchmark suite; write JSON + Markdown; compare runs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "area",
        nargs="?",
        choices=(*AREAS, "all", "gpu", "report"),
        default=None,
        help="what to run (default all); gpu: the GPU evidence suite (see mrface.bench_gpu); "
        "report: render the document from result files",
    )
    p.add_argument(
        "inputs",
        nargs="*",
        default=[],
        metavar="RESULTS",
        help="report only: result JSON files or folders of them (e.g. benchmarks/results)",
    )
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when visible, else cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the suite runs; not for publishing")
    p.add_argument(
        "--out", default=None, help="results folder (default ./bench_results); report: the Markdown file to write"
    )
    p.add_argument("--only", nargs="+", default=None, metavar="NAME", help="run only these benchmarks")
    p.add_argument("--bench-dir", default=None, help="the benchmarks/ folder (or a checkout holding it)")
    p.add_argument(
        "--compare",
        nargs="+",
        default=None,
        metavar="JSON",
        help="OLD.json: compare the new run with it; OLD.json NEW.json: compare two runs, run nothing",
    )
    p.add_argument("--threshold", type=float, default=0.15, help="flag a regression beyond this (0.15 = 15%%)")
    p.add_argument("--fail-on-regression", action="store_true", help="exit code 1 when a regression is flagged")
    p.add_argument(
        "--store",
        default=None,
        metavar="DIR",
        help="copy the run's report JSON into DIR (e.g. benchmarks/results); delete runs it supersedes",
    )
    p.add_argument(
        "--markdown",
        default=None,
        metavar="PATH",
        help="render the benchmark document to PATH: from every run in --store DIR, else this run",
    )
    p.add_argument(
        "--notes",
        default=None,
        metavar="PATH",
        help="hand-written notes included in the document (default: benchmarks/notes.md when found)",
    )
    p.add_argument(
        "--plots-dir",
        default=None,
        metavar="DIR",
        help="the document's PNG plots (default: <store or first input folder>/plots)",
    )
    p.add_argument(
        "--all-runs", action="store_true", help="document every run, not only the newest per machine and benchmark"
    )
    from mrface.bench_gpu import register_arguments

    register_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``mrface bench``."""
    try:
        return _run(args)
    except BenchError as err:
        print(f"mrface bench: error: {err}", file=sys.stderr)
        return 2


def _notes_path(args: argparse.Namespace) -> Path | None:
    """--notes, else notes.md of the benchmarks folder when there is one."""
    if args.notes:
        return Path(args.notes)
    try:
        found = find_bench_dir(args.bench_dir) / "notes.md"
    except BenchError:
        return None
    return found if found.is_file() else None


def _report(args: argparse.Namespace) -> int:
    """``mrface bench report RESULTS... --out DOC.md``: render the document, run nothing."""
    from mrface.bench_report import write_report

    if args.out and args.markdown and args.out != args.markdown:
        raise BenchError("report: give the Markdown file once (--out or --markdown)")
    out = args.out or args.markdown
    if not args.inputs or not out:
        raise BenchError("usage: mrface bench report RESULTS.json|FOLDER [...] --out BENCHMARKS.md")
    given = [
        flag
        for flag, value in (
            ("--quick", args.quick),
            ("--only", args.only),
            ("--compare", args.compare),
            ("--store", args.store),
            ("--device", args.device),
        )
        if value
    ]
    if given:
        raise BenchError(f"report renders saved results; {', '.join(given)} does not apply")
    command = shlex.join(["mrface", "bench", "report", *args.inputs, "--out", out, *_document_flags(args)])
    write_report(
        args.inputs,
        Path(out),
        _notes_path(args),
        Path(args.plots_dir) if args.plots_dir else None,
        args.all_runs,
        command,
    )
    return 0


def _document_flags(args: argparse.Namespace) -> list[str]:
    """The document options given, as they would be typed (for the command the document names)."""
    flags = [f"{flag}={value}" for flag, value in (("--notes", args.notes), ("--plots-dir", args.plots_dir)) if value]
    return flags + (["--all-runs"] if args.all_runs else [])


def _run(args: argparse.Namespace) -> int:
    if args.area == "report":
        return _report(args)
    if args.area == "gpu":
        from mrface.bench_gpu import run_gpu

        return run_gpu(args)
    if getattr(args, "dry_run", False) or getattr(args, "skip", None):
        raise BenchError("--dry-run and --skip belong to `mrface bench gpu`")
    if args.inputs:
        raise BenchError(f"unexpected arguments {' '.join(args.inputs)} (result files go with `mrface bench report`)")
    compare = args.compare or []
    if len(compare) > 2:
        raise BenchError(f"--compare takes OLD.json [NEW.json], got {len(compare)} files")
    if args.threshold < 0:
        raise BenchError(f"--threshold must be >= 0, got {args.threshold}")
    if len(compare) == 2:
        if args.area or args.quick or args.only:
            raise BenchError("--compare OLD.json NEW.json compares saved runs; drop the area/--quick/--only")
        regressions = compare_files(Path(compare[0]), Path(compare[1]), args.threshold)
        return 1 if regressions and args.fail_on_regression else 0
    if compare and not Path(compare[0]).is_file():
        raise BenchError(f"--compare {compare[0]}: no such file")
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda: torch sees no CUDA device (torch.cuda.is_available() is False)")
    bench_dir = find_bench_dir(args.bench_dir)
    path = run_suite(args.area or "all", device, args.quick, Path(args.out or "bench_results"), bench_dir, args.only)
    entries = json.loads(path.read_text())["benchmarks"].values()
    if args.store or args.markdown:
        _store_and_render(args, path)
    if not any(e["status"] == "ok" for e in entries):
        print("mrface bench: no benchmark ran (see the notes above)", file=sys.stderr)
        return 1
    status = 1 if any(e["status"] == "failed" for e in entries) else 0
    if compare:
        regressions = compare_files(Path(compare[0]), path, args.threshold)
        if regressions and args.fail_on_regression:
            status = 1
    return status


def _store_and_render(args: argparse.Namespace, path: Path) -> None:
    """--store: keep the run's JSON in the results folder; --markdown: render the document."""
    from mrface.bench_report import store_run, write_report

    inputs: list[str | Path] = [path]
    if args.store:
        stored, removed = store_run(path, Path(args.store))
        print(f"stored {stored}" + (f"; removed superseded {', '.join(map(str, removed))}" if removed else ""))
        if args.quick:
            print("note: a --quick run was stored; the document labels it 'not for publishing'")
        inputs = [args.store]
    if args.markdown:
        command = shlex.join(
            ["mrface", "bench", "report", *map(str, inputs), "--out", args.markdown, *_document_flags(args)]
        )
        write_report(
            inputs,
            Path(args.markdown),
            _notes_path(args),
            Path(args.plots_dir) if args.plots_dir else None,
            args.all_runs,
            command,
        )


# ----------------------------------------------------------------------------- tables and Markdown


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def table_columns(rows: list[dict]) -> list[str]:
    """Every key in first-seen order, without columns that are empty (None or '') in every row."""
    columns = list(dict.fromkeys(k for r in rows for k in r))
    return [c for c in columns if any(r.get(c) not in (None, "") for r in rows)]


def format_table(rows: list[dict], markdown: bool = False) -> str:
    """Rows as an aligned text table, or a Markdown pipe table."""
    columns = table_columns(rows)
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)), "  ".join("-" * w for w in widths)]
    return "\n".join(lines + ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells])


def _by_area(report: dict) -> dict[str, list[tuple[str, dict]]]:
    areas: dict[str, list[tuple[str, dict]]] = {}
    for name, entry in report["benchmarks"].items():
        areas.setdefault(entry["area"], []).append((name, entry))
    return areas


def print_tables(report: dict) -> None:
    """One section per area, one table per benchmark, with the command that reproduces it."""
    for area, entries in _by_area(report).items():
        print(f"\n===== {area} =====")
        for name, entry in entries:
            print(f"\n--- {name} [{entry['status']}] {entry.get('command', entry['script'])}")
            if entry.get("note"):
                print(f"    note: {entry['note']}")
            if entry.get("rows"):
                print(format_table(entry["rows"]))


def markdown(report: dict) -> str:
    """The Markdown summary: machine, then per area and benchmark the command and its table."""
    lines = [
        f"# mrface bench: {report['area']} on {report['device']}" + (" (quick)" if report["quick"] else ""),
        "",
        f"Date (UTC): {report['date']}. Suite command: `{report['command']}` "
        "(from a source checkout); the command above each table reproduces it from the repository root.",
        "",
        "## Machine",
        "",
        "| key | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in report["machine"].items()]
    for area, entries in _by_area(report).items():
        lines += ["", f"## {area}"]
        for name, entry in entries:
            lines += ["", f"### {name} ({entry['status']})", ""]
            if entry.get("command"):
                lines += [f"`{entry['command']}`" + (f" ({entry['seconds']} s)" if "seconds" in entry else ""), ""]
            if entry.get("note"):
                lines += [f"Note: {entry['note']}", ""]
            if entry.get("rows"):
                lines += [format_table(entry["rows"], markdown=True)]
    if report.get("plots"):
        lines += ["", "## Scaling plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in report["plots"]]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- comparing two runs

DERIVED = {"floor_ms", "logits_MiB"}  # computed from sizes or another measurement, not measured here
OUTCOMES = {"note", "bound", "loader_keeps_up"}  # results that are not floats: never used to match rows


def direction(column: str) -> int:
    """+1 when a larger value is better (throughput), -1 when smaller is (time, memory), 0 when not compared."""
    if column in DERIVED:
        return 0
    if column.endswith("per_s"):
        return 1
    if column.endswith(("ms", "MiB", "_s")):
        return -1
    return 0


def load_run(path: Path) -> dict:
    """A suite report, or one script's JSON wrapped as a one-benchmark report."""
    try:
        payload = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise BenchError(f"--compare {path}: cannot read JSON ({err})") from err
    if "benchmarks" in payload:
        return payload
    if "rows" in payload or "results" in payload:
        rows = payload.get("rows", payload.get("results"))
        return {"machine": payload.get("machine", {}), "benchmarks": {payload.get("benchmark", "?"): {"rows": rows}}}
    raise BenchError(f"--compare {path}: neither a `mrface bench` report nor a benchmark script's JSON")


def _keyed(rows: list[dict], keys: list[str]) -> dict[tuple, dict]:
    out: dict[tuple, dict] = {}
    for row in rows:
        key = tuple((k, _fmt(row.get(k))) for k in keys)
        n = 0
        while key + (("#", n),) in out:
            n += 1
        out[key + (("#", n),)] = row
    return out


def compare_runs(old: dict, new: dict, threshold: float) -> tuple[list[dict], list[str]]:
    """Per matched row and measurement: old, new, new/old and a flag; plus notes on what did not match.

    Rows match on their non-measurement columns (every column never holding a float, except :data:`OUTCOMES`).
    A measurement regresses when it got worse by more than ``threshold`` (time 1.2x with 0.15).
    """
    results, notes = [], []
    for name, new_entry in new["benchmarks"].items():
        old_entry = old["benchmarks"].get(name)
        new_rows, old_rows = new_entry.get("rows") or [], (old_entry or {}).get("rows") or []
        if not new_rows or not old_rows:
            notes.append(f"{name}: rows in {'neither run' if not new_rows and not old_rows else 'one run only'}")
            continue
        both = old_rows + new_rows
        columns = list(dict.fromkeys(k for r in both for k in r))
        floats = {c for c in columns if any(isinstance(r.get(c), float) for r in both)}
        keys = [c for c in columns if c not in floats and c not in OUTCOMES]
        old_keyed, new_keyed = _keyed(old_rows, keys), _keyed(new_rows, keys)
        unmatched = len(set(new_keyed) ^ set(old_keyed))
        if unmatched:
            notes.append(f"{name}: {unmatched} rows without a partner in the other run (different sizes?)")
        for key, row in new_keyed.items():
            if key not in old_keyed:
                continue
            label = ", ".join(f"{k}={v}" for k, v in key[:-1] if v != "-") + (f" #{key[-1][1]}" if key[-1][1] else "")
            for column in (c for c in columns if direction(c)):
                a, b = old_keyed[key].get(column), row.get(column)
                if not isinstance(a, int | float) or not isinstance(b, int | float) or a <= 0 or b <= 0:
                    continue
                worse = (b / a) ** -direction(column)  # > 1: got worse
                flag = "REGRESSION" if worse > 1 + threshold else ("better" if worse < 1 / (1 + threshold) else "")
                results.append(
                    {
                        "benchmark": name,
                        "row": label,
                        "metric": column,
                        "old": a,
                        "new": b,
                        "new/old": b / a,
                        "flag": flag,
                    }
                )
    notes += [f"{name}: only in the old run" for name in old["benchmarks"] if name not in new["benchmarks"]]
    return results, notes


def compare_files(old_path: Path, new_path: Path, threshold: float) -> list[dict]:
    """Print the comparison of two runs; return the flagged regressions."""
    old, new = load_run(old_path), load_run(new_path)
    print(f"\n===== compare: new {new_path} vs old {old_path} (regression: worse by > {threshold:.0%}) =====")
    for k in ("cpu", "cores", "gpu", "torch", "mrface_C"):
        if old["machine"].get(k) != new["machine"].get(k):
            print(f"warning: machines differ in {k}: {_fmt(old['machine'].get(k))} -> {_fmt(new['machine'].get(k))}")
    if old.get("quick") != new.get("quick"):
        print(f"warning: quick differs: {old.get('quick')} -> {new.get('quick')}")
    results, notes = compare_runs(old, new, threshold)
    if results:
        print(format_table(results))
    for note in notes:
        print(f"note: {note}")
    regressions = [r for r in results if r["flag"] == "REGRESSION"]
    print(f"{len(results)} measurements compared, {len(regressions)} regressions beyond {threshold:.0%}")
    return regressions
