"""Running benchmark scripts: find ``benchmarks/``, run each spec as a subprocess, collect one run report.

Each script in ``benchmarks/`` runs as its own subprocess (sequentially, so runs do not share the CPU) with
``--out`` pointing into ``<out>/<timestamp>/``, where its log is kept too. The collected rows, the machine
record and every script's exact command go to ``<out>/<timestamp>.json`` and a Markdown summary
``<timestamp>.md``; scaling plots (PNG) sit beside them.

``benchmarks/`` is not installed with the package: it is looked for above the current directory and above
the ``mrface`` package (a source checkout), or given explicitly.
"""

from __future__ import annotations

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
from datetime import datetime, timezone
from pathlib import Path

from mrface.bench.errors import BenchError
from mrface.bench.plots import write_plots
from mrface.bench.specs import SPECS, Spec
from mrface.bench.tables import print_tables, run_markdown
from mrface.io import write_text

MARKER = "bench_degrade.py"


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
    report["plots"] = write_plots(report, out_dir, base)
    path = out_dir / f"{base}.json"
    write_text(path, json.dumps(report, indent=2))
    write_text(out_dir / f"{base}.md", run_markdown(report))
    print_tables(report)
    print(f"wrote {path}, {out_dir / (base + '.md')} (per-script JSON and logs in {run_dir})")
    return path
