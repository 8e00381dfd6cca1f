"""``mrface bench gpu``: the GPU evidence suite in one command, within a time budget.

    mrface bench gpu [--dry-run] [--budget-s 460] [--out DIR] [--store DIR] [--markdown PATH] [--skip SECTION ...]

On one CUDA device, in this order, each section a subprocess with its own time budget (seconds):

* ``gpu_tests``: ``pytest -m gpu -x`` over ``tests/`` with ``MRFACE_MARGIN_TRITON_HALF=1`` (the compiled
  Triton margin softmax in float32, float16 and bfloat16, every margin; the CUDA degradation and
  Gumbel-FPS kernels). ``-x`` stops at the first failure; the tests that ran are still recorded, one
  row per test file, failures named;
* ``margin_half_check``: benchmarks/check_margin_half.py, the accuracy of the half-precision Triton kernels
  at the shape where float16 failed, with the backward's inner loop pipelined (as before) and not (the fix);
* ``margin_softmax``: fused margin softmax forward + backward in float32/bfloat16/float16 at 512x100k x512
  and at a Partial FC shard 1024x250k x512 against the materialised reference (time and
  ``torch.cuda.max_memory_allocated``) and Liger-Kernel's fused linear cross-entropy when importable;
* ``degrade`` and ``gumbel_fps``: the CUDA kernels against the ``interpolate`` loop and the copy floor,
  and against the batched PyTorch loop (forward and forward + backward);
* ``train``: iresnet50, 112 px, batch 256, bf16 AMP + channels_last, 100k classes: fused vs reference
  head, the RecordIO loader with workers, and one BTNet distillation step (three branches);
  ``train_compile``: the same base row and torch.compile (its own section: compile time is unpredictable);
* ``inference``: iresnet50 and MobileFaceNet, eager vs torch.compile vs ONNX Runtime (every execution
  provider present) at batch 1 and 64, TensorRT FP16 when importable;
* ``goals``: the issue's targets checked against the rows just measured (no timing of its own).

Each benchmark section reuses a script of ``benchmarks/`` through :func:`mrface.bench.suite.run_spec` (the sections are
declared in :mod:`mrface.bench.specs`). The
report (machine, versions, git commit, the command, each section's command, seconds, status) is one JSON;
by default it is stored in ``benchmarks/results/`` and BENCHMARKS.md is re-rendered from every stored run.
A section that runs past its budget is stopped (its log and the rows its script finished are kept) and
the suite moves on; the whole run stops starting sections once ``--budget-s`` is spent.

``--dry-run`` runs exactly this on the CPU at tiny sizes (the CI check that the suite works): nothing is
stored unless ``--store`` is given. Exit code 0 when every section ran and every GPU test passed, 1 otherwise,
2 on bad arguments.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import time
from pathlib import Path

from mrface.bench.specs import SECTIONS, Section
from mrface.bench.suite import machine_info, new_run_dir, run_logged, run_spec
from mrface.bench.tables import print_tables
from mrface.io import write_text
from mrface.versions import versions

TOTAL_BUDGET_S = 460  # under 8 minutes on one H100 with start-up and rendering (a 15-minute GPU slot


# includes the machine start)
DRY_RUN_SLACK = 5  # the dry run's budgets are this many times the GPU ones: a loaded CI machine starts processes slowly


# ----------------------------------------------------------------------------- the GPU tests

TEST_LINE = re.compile(r"^(?P<file>[^\s:]+\.py)::(?P<test>\S+) (?P<outcome>PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)")


def parse_pytest_log(text: str) -> tuple[list[dict], list[str]]:
    """Per test file: passed/failed/skipped/error counts, from ``pytest -v`` lines (so a killed run still
    counts what ran); plus the node ids of the failures and errors."""
    per_file: dict[str, dict] = {}
    failures = []
    for line in text.splitlines():
        m = TEST_LINE.match(line.strip())
        if not m:
            continue
        row = per_file.setdefault(m["file"], {"file": m["file"], "passed": 0, "failed": 0, "skipped": 0, "error": 0})
        key = {"PASSED": "passed", "XPASS": "passed", "FAILED": "failed", "ERROR": "error"}.get(m["outcome"], "skipped")
        row[key] += 1
        if key in ("failed", "error"):
            failures.append(f"{m['file']}::{m['test']}")
    return list(per_file.values()), failures


def run_gpu_tests(section: Section, repo: Path, run_dir: Path, dry_run: bool, timeout: float) -> dict:
    """``pytest -m gpu -x -v`` over tests/ (the dry run: one kernel test file, whose gpu tests skip on the CPU)."""
    targets = ["tests/ops/test_degrade.py"] if dry_run else ["tests"]
    args = ["-m", "gpu", "-x", "-v", "-p", "no:cacheprovider", "-o", "addopts=", *targets]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"} | section.env
    entry: dict = {
        "area": "tests",
        "script": "pytest",
        "env": dict(section.env),
        "command": " ".join(f"{k}={v}" for k, v in section.env.items())
        + " "
        + shlex.join(["python", "-m", "pytest", *args]),
    }
    if not (repo / "tests").is_dir():
        return entry | {"status": "skipped", "note": f"no tests/ folder in {repo}"}
    print(f"[tests] gpu_tests: {entry['command']}", flush=True)
    start = time.perf_counter()
    # -P (Python 3.11+): the checkout's source folder must not shadow the installed mrface (a non-editable
    # install keeps mrface._C and mrface.kernels only in site-packages).
    safe = ["-P"] if sys.version_info >= (3, 11) else []
    code = run_logged([sys.executable, *safe, "-m", "pytest", *args], repo, env, run_dir / "gpu_tests.log", timeout)
    entry["seconds"] = round(time.perf_counter() - start, 1)
    rows, failures = parse_pytest_log((run_dir / "gpu_tests.log").read_text(errors="replace"))
    entry["rows"] = rows
    totals = {k: sum(r[k] for r in rows) for k in ("passed", "failed", "skipped", "error")}
    entry["extra"] = {"totals": totals, "failures": failures}
    if code is None:
        entry |= {
            "status": "timeout",
            "note": f"stopped after its {timeout:.0f} s budget; counts are the tests "
            f"that finished; log {run_dir / 'gpu_tests.log'}",
        }
    elif code in (0, 5) and not failures:  # 5: nothing collected (a filtered run)
        entry["status"] = "ok"
    else:
        first = f"; first failure {failures[0]}" if failures else ""
        entry |= {
            "status": "failed",
            "note": f"pytest exit code {code} (-x stops at the first failure){first}; log {run_dir / 'gpu_tests.log'}",
        }
    print(f"    {entry['status']}: {totals} in {entry['seconds']} s", flush=True)
    return entry


# ----------------------------------------------------------------------------- goals


def _rows(report: dict, name: str) -> list[dict]:
    entry = report["benchmarks"].get(name) or {}
    return entry.get("rows") or []


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _goal_margin(report: dict) -> tuple[object, bool | None, str]:
    rows = [r for r in _rows(report, "margin_softmax") if r.get("dtype") == "bfloat16" and r.get("path") == "fused"]
    rows = [r for r in rows if (r.get("B"), r.get("D")) == (512, 512) and r.get("C") == 100_000] or rows[:1]
    if not rows or _num(rows[0].get("speedup_vs_ref")) is None or _num(rows[0].get("mem_ratio_vs_ref")) is None:
        return None, None, "no bf16 fused row with a reference"
    r = rows[0]
    met = r["speedup_vs_ref"] >= 1.3 and r["mem_ratio_vs_ref"] <= 0.1
    return (
        f"{r['speedup_vs_ref']:.2f}x, {r['mem_ratio_vs_ref']:.3f}x memory",
        met,
        f"{r['B']}x{r['C']}x{r['D']} {r.get('backend', '')}",
    )


def _goal_degrade(report: dict) -> tuple[object, bool | None, str]:
    rows = [
        r
        for r in _rows(report, "degrade")
        if r.get("filter") == "area"
        and r.get("up") is True
        and _num(r.get("of_floor"))
        and "cuda" in str(r.get("backend", "cuda"))
    ]
    if not rows:
        return None, None, "no area down+up row with of_floor"
    r = max(rows, key=lambda r: r.get("batch", 0))
    return f"{r['of_floor']:.2f}x the floor", r["of_floor"] <= 1.5, f"batch {r.get('batch')} {r.get('backend', '')}"


def _goal_gumbel(report: dict) -> tuple[object, bool | None, str]:
    rows = _rows(report, "gumbel_fps")
    loops = {(r.get("B"), r.get("N"), r.get("K")): r for r in rows if "loop" in str(r.get("impl", ""))}
    best = None
    for r in rows:
        loop = loops.get((r.get("B"), r.get("N"), r.get("K")))
        if r is loop or loop is None or not _num(r.get("forward_backward_ms")):
            continue
        if not _num(loop.get("forward_backward_ms")):
            continue
        ratio = loop["forward_backward_ms"] / r["forward_backward_ms"]
        key = (r.get("B"), r.get("N"), r.get("K")) == (64, 200, 8)
        if best is None or key:
            best = (ratio, r)
            if key:
                break
    if best is None:
        return None, None, "no op/loop forward+backward pair"
    ratio, r = best
    return f"{ratio:.2f}x the loop", ratio >= 5, f"B={r.get('B')} N={r.get('N')} K={r.get('K')} {r.get('impl')}"


def _goal_train(report: dict) -> tuple[object, bool | None, str]:
    rows = _rows(report, "train")
    base = next((r for r in rows if r.get("variant") == "base" and _num(r.get("images_per_s"))), None)
    if base is None:
        return None, None, "no base row"
    rec = next((r for r in rows if r.get("variant") == "recordio"), {})
    keeps = rec.get("loader_keeps_up")
    met = base["images_per_s"] >= 3000 and keeps is True
    loader = f", loader {rec['loader_images_per_s']:.0f} img/s" if _num(rec.get("loader_images_per_s")) else ""
    where = f"{base.get('model')} batch {base.get('batch')} amp {base.get('amp')} cl {base.get('channels_last')}"
    return f"{base['images_per_s']:.0f} img/s{loader}", met, where


GOALS = (
    (
        "fused margin softmax fwd+bwd, bf16, 512x100k x512",
        ">= 1.3x faster, <= 0.1x working memory of the reference",
        _goal_margin,
    ),
    ("degradation, area down+up", "within 1.5x of the copy-bandwidth floor", _goal_degrade),
    ("Gumbel-FPS forward+backward", ">= 5x the batched PyTorch loop", _goal_gumbel),
    ("iresnet50 training, bf16", ">= 3000 images/s with the RecordIO loader keeping up", _goal_train),
)


def goals_entry(report: dict) -> dict:
    """The issue's goals against this run's rows: measured value, met (True/False, or None when not measured)."""
    rows = []
    for goal, target, fn in GOALS:
        try:
            measured, met, where = fn(report)
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as err:
            measured, met, where = None, None, f"cannot evaluate: {type(err).__name__}: {err}"
        rows.append({"goal": goal, "target": target, "measured": measured, "met": met, "where": where})
    note = "quick dry run on the CPU: tiny sizes, the goals do not apply" if report["quick"] else ""
    return {"area": "tests", "script": "goals", "status": "ok", "rows": rows} | ({"note": note} if note else {})


# ----------------------------------------------------------------------------- the suite


#: Packages the suite's sections use; their versions go into the result's machine entry (None when absent).
SUITE_PACKAGES = (
    "torch",
    "triton",
    "numpy",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "tensorrt",
    "liger-kernel",
    "pytest",
)


def run_gpu_suite(
    out_dir: Path,
    bench_dir: Path,
    dry_run: bool,
    budget_s: float | None = None,
    skip: list[str] | None = None,
    command: str = "mrface bench gpu",
) -> Path:
    """Run every section (cuda, or the CPU at tiny sizes with ``dry_run``); write <out>/<stamp>.json; return it.

    ``budget_s``: no section starts after it (default 460 s; the dry run multiplies it and every section's
    budget by :data:`DRY_RUN_SLACK`)."""
    device = "cpu" if dry_run else "cuda"
    slack = DRY_RUN_SLACK if dry_run else 1
    budget_s = budget_s if budget_s is not None else TOTAL_BUDGET_S * slack
    started = time.perf_counter()
    stamp, run_dir = new_run_dir(out_dir)
    out_dir, base = run_dir.parent, run_dir.name
    machine = machine_info(bench_dir) | {"versions": versions(SUITE_PACKAGES, missing=None, python=False)}
    built = machine.get("mrface_C")
    if not dry_run and not (isinstance(built, dict) and built.get("cuda")):
        print(
            f"warning: mrface._C has no CUDA kernels ({built}); the CUDA degrade and Gumbel-FPS rows and tests "
            "will be missing. Rebuild on this machine: pip install --no-build-isolation --no-deps .",
            flush=True,
        )
    report: dict = {
        "suite": "mrface bench gpu",
        "date": stamp,
        "command": command,
        "area": "gpu",
        "device": device,
        "quick": dry_run,
        "machine": machine,
        "budget_s": budget_s,
        "benchmarks": {},
    }
    path = out_dir / f"{base}.json"
    for section in SECTIONS:
        left = budget_s - (time.perf_counter() - started)
        script = f"benchmarks/{section.spec.script}" if section.spec else "pytest"
        if section.name in (skip or []):
            entry = {"area": section.area, "script": script, "status": "skipped", "note": "--skip"}
        elif left < 5:
            entry = {
                "area": section.area,
                "script": script,
                "status": "skipped",
                "note": f"the suite's {budget_s:g} s budget was spent",
            }
        elif section.spec is None:
            entry = run_gpu_tests(section, bench_dir.parent, run_dir, dry_run, min(section.budget_s * slack, left))
        else:
            entry = run_spec(
                section.spec,
                bench_dir,
                run_dir,
                device,
                dry_run,
                timeout=min(section.budget_s * slack, left),
                env_extra=section.env or None,
            )
        report["benchmarks"][section.name] = entry | {"budget_s": section.budget_s * slack}
        write_text(path, json.dumps(report, indent=2))  # what ran so far survives an interrupted suite
    report["benchmarks"]["goals"] = goals_entry(report)
    report["seconds"] = round(time.perf_counter() - started, 1)
    write_text(path, json.dumps(report, indent=2))
    print_tables(report)
    spent = ", ".join(
        f"{k} {e.get('seconds', 0)}/{e.get('budget_s', '-')}" for k, e in report["benchmarks"].items() if k != "goals"
    )
    print(f"\nsuite: {report['seconds']} s of {budget_s:.0f} s (seconds/budget: {spent})")
    print(f"wrote {path} (per-section JSON and logs in {run_dir})")
    return path
