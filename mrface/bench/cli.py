"""``mrface bench``: run the benchmark scripts of a source checkout, collect one JSON + Markdown report.

    mrface bench [kernels|train|inference|data|all] [--device cpu|cuda] [--quick] [--out DIR]
                 [--only NAME ...] [--bench-dir PATH] [--compare OLD.json] [--threshold 0.15]
                 [--store benchmarks/results] [--markdown BENCHMARKS.md]
    mrface bench gpu [--dry-run]                      # the GPU evidence suite (mrface.bench.gpu)
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
it from saved files without running anything: see :mod:`mrface.bench.report`.

``benchmarks/`` is not installed with the package: it is looked for above the current directory and
above the ``mrface`` package (a source checkout), or given with ``--bench-dir``.

Exit codes: 0 every benchmark that was attempted ran; 1 a benchmark failed (or, with
``--fail-on-regression``, a regression was flagged); 2 bad arguments or no benchmarks folder.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from mrface.bench.compare import compare_files
from mrface.bench.errors import BenchError
from mrface.bench.gpu import DRY_RUN_SLACK, TOTAL_BUDGET_S, run_gpu_suite
from mrface.bench.report import store_run, write_report
from mrface.bench.specs import AREAS, SECTIONS
from mrface.bench.suite import find_bench_dir, run_suite


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
        help="what to run (default all); gpu: the GPU evidence suite (see mrface.bench.gpu); "
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
    register_gpu_arguments(p)
    p.set_defaults(func=run)


def register_gpu_arguments(p: argparse.ArgumentParser) -> None:
    """The ``gpu``-only flags of ``mrface bench``."""
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="gpu: the same suite on the CPU at tiny sizes (CI); stores nothing unless --store",
    )
    p.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help=f"gpu: start no section after this many seconds (default {TOTAL_BUDGET_S}; "
        f"{DRY_RUN_SLACK}x that with --dry-run)",
    )
    p.add_argument(
        "--skip",
        nargs="+",
        default=None,
        choices=[s.name for s in SECTIONS],
        metavar="SECTION",
        help=f"gpu: sections to leave out ({', '.join(s.name for s in SECTIONS)})",
    )


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


def _given_flags(args: argparse.Namespace, *names: str) -> list[str]:
    """The ``--name`` flags among ``names`` that were given a value (to refuse those a command ignores)."""
    return [f"--{name.replace('_', '-')}" for name in names if getattr(args, name)]


def _report(args: argparse.Namespace) -> int:
    """``mrface bench report RESULTS... --out DOC.md``: render the document, run nothing."""
    if args.out and args.markdown and args.out != args.markdown:
        raise BenchError("report: give the Markdown file once (--out or --markdown)")
    out = args.out or args.markdown
    if not args.inputs or not out:
        raise BenchError("usage: mrface bench report RESULTS.json|FOLDER [...] --out BENCHMARKS.md")
    given = _given_flags(args, "quick", "only", "compare", "store", "device")
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
        return _run_gpu(args)
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


def _run_gpu(args: argparse.Namespace) -> int:
    """``mrface bench gpu``: run the suite, store the JSON and re-render the document (defaults on a GPU)."""
    import torch

    given = _given_flags(args, "quick", "only", "compare", "device")
    if given:
        raise BenchError(f"gpu: {', '.join(given)} does not apply (the suite fixes its sizes; --dry-run for CPU)")
    if args.budget_s is not None and args.budget_s <= 0:
        raise BenchError(f"--budget-s must be > 0, got {args.budget_s}")
    if not args.dry_run and not torch.cuda.is_available():
        raise BenchError(
            "gpu: torch sees no CUDA device (torch.cuda.is_available() is False); "
            "`mrface bench gpu --dry-run` runs the same suite on the CPU at tiny sizes"
        )
    bench_dir = find_bench_dir(args.bench_dir)
    if not args.dry_run:  # the evidence goes where the repository keeps it unless told otherwise
        args.store = args.store or str(bench_dir / "results")
        args.markdown = args.markdown or str(bench_dir.parent / "BENCHMARKS.md")
    command = shlex.join(
        ["mrface", "bench", "gpu"]
        + (["--dry-run"] if args.dry_run else [])
        + ([f"--budget-s={args.budget_s:g}"] if args.budget_s is not None else [])
        + (["--skip", *args.skip] if args.skip else [])
    )
    out = Path(args.out or "bench_results")
    path = run_gpu_suite(out, bench_dir, args.dry_run, args.budget_s, args.skip, command)
    if args.store or args.markdown:
        _store_and_render(args, path)
    entries = json.loads(path.read_text())["benchmarks"]
    if not any(e.get("status") == "ok" for k, e in entries.items() if k != "goals"):
        print("mrface bench gpu: no section ran (see the notes above)", file=sys.stderr)
        return 1
    bad = [f"{k} ({e['status']})" for k, e in entries.items() if e.get("status") in ("failed", "timeout")]
    if bad:
        print(f"mrface bench gpu: not clean: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


def _store_and_render(args: argparse.Namespace, path: Path) -> None:
    """--store: keep the run's JSON in the results folder; --markdown: render the document."""
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
