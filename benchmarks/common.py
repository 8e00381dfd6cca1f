"""Helpers shared by the benchmark scripts: timing, machine description, table and JSON output."""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.distributed as dist

from mrface.io import write_text


def machine() -> dict:
    """CPU model, cores, GPU, driver and versions, recorded with every result."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info |= {"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1), "cuda": torch.version.cuda}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        pass
    return info


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def median_time(fn: Callable[[], object], device: str, repeats: int, warmup: int = 2) -> float:
    """Median wall time of fn() in seconds over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def median_times_alternating(
    fns: list[Callable[[], object]], device: str, repeats: int, warmup: int = 2
) -> list[float]:
    """Median wall time in seconds of each fn, the fns run in turn ``repeats`` times after ``warmup``
    rounds: a drift of the machine during the run (a busy neighbour, memory the host reclaims) hits them
    alike, so their ratio holds where back-to-back medians would not."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    sync(device)
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, seconds in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            sync(device)
            seconds.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 at the time of asking (for a torch.distributed rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slowest_rank_times(step: Callable[[], object], device: str, repeats: int, warmup: int) -> list[float]:
    """Seconds per step over ``repeats`` steps after ``warmup``, each the slowest rank's (a collective:
    every rank of the initialised process group calls it; ranks start each step together)."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        dist.barrier()
        start = time.perf_counter()
        step()
        sync(torch.device(device).type)
        times.append(time.perf_counter() - start)
    slowest = torch.tensor(times, dtype=torch.float64, device=device)
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
    return slowest.cpu().tolist()


def peak_memory(fn: Callable[[], object], device: str) -> float | None:
    """Peak CUDA memory allocated during fn() above what was allocated before, in MiB (None on CPU)."""
    if device != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def touch_host_memory(nbytes: int = 3 << 30) -> None:
    """Write ``nbytes`` of fresh host memory once, then free it. On a virtual machine the first write to
    guest memory the host has not backed yet costs several ordinary page faults; kernels that write
    fresh outputs would otherwise pay it in whichever rows run first (measured on the 2-core VM: area
    down N=1024 took 65-90 ms for its first ~10 calls, 16-20 ms after)."""
    torch.ones(nbytes // 4).sum()


def copy_bandwidth(device: str, nbytes: int = 1 << 30) -> float:
    """Measured device-to-device copy bandwidth in bytes/s (read + write counted)."""
    n = nbytes // 4 if device == "cuda" else nbytes // 16
    src = torch.empty(n, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    seconds = median_time(lambda: dst.copy_(src), device, repeats=10)
    return 2 * src.numel() * 4 / seconds


def matmul_peak(device: str, dtype: torch.dtype = torch.float32, n: int | None = None) -> float:
    """Measured dense matmul throughput in FLOP/s (an n x n by n x n product, 2 n^3 FLOPs): the compute roof.

    Default n: 8192 on CUDA, 2048 on CPU (large enough to reach the BLAS plateau, a second or two on 2 cores).
    """
    n = n or (8192 if device == "cuda" else 2048)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    seconds = median_time(lambda: torch.mm(a, b), device, repeats=10 if device == "cuda" else 3, warmup=1)
    return 2 * n**3 / seconds


def roofline(
    seconds: float | None,
    flops: float = 0.0,
    nbytes: float = 0.0,
    peak_flops: float | None = None,
    bandwidth: float | None = None,
) -> dict:
    """Roofline columns of one measurement.

    The floor is the larger of ``flops / peak_flops`` (compute) and ``nbytes / bandwidth`` (memory traffic),
    each counted only when its roof is known. Returns ``floor_ms``, ``of_floor`` (time / floor, >= 1 unless
    the roof was measured low), ``achieved`` (floor / time: the fraction of the roofline reached) and
    ``bound`` (which roof sets the floor); the values are None when nothing is known.
    """
    compute = flops / peak_flops if flops and peak_flops else 0.0
    memory = nbytes / bandwidth if nbytes and bandwidth else 0.0
    floor = max(compute, memory)
    if not floor:
        return {"floor_ms": None, "of_floor": None, "achieved": None, "bound": None}
    return {
        "floor_ms": floor * 1e3,
        "of_floor": seconds / floor if seconds else None,
        "achieved": floor / seconds if seconds else None,
        "bound": "compute" if compute >= memory else "memory",
    }


def roofs_line(bandwidth: float | None, peak_flops: float | None, dtype: str = "") -> str:
    """One printable line naming the measured roofs the floors are computed from."""
    parts = []
    if bandwidth:
        parts.append(f"copy bandwidth {bandwidth / 1e9:.1f} GB/s (read + write)")
    if peak_flops:
        parts.append(f"matmul peak {peak_flops / 1e9:.0f} GFLOP/s" + (f" ({dtype})" if dtype else ""))
    return "measured roofs: " + ", ".join(parts) + "; floor = max(FLOPs / peak, bytes / bandwidth)"


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).ljust(w) for c, w in zip(columns, widths, strict=True)))


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def write_json(name: str, rows: list[dict], out: str | None, extra: dict | None = None) -> Path:
    """Write {machine, date, rows} to ``out`` or bench_results/<name>-<timestamp>.json."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = Path(out) if out else Path("bench_results") / f"{name}-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "date": stamp, "machine": machine(), "rows": rows} | (extra or {})
    write_text(path, json.dumps(payload, indent=2))
    print(f"wrote {path}")
    return path


def write_partial(name: str, rows: list[dict], out: str | None) -> None:
    """Rows so far to ``out`` (when given), atomically: a run stopped by its time budget keeps them."""
    if not out:
        return
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps({"benchmark": name, "partial": True, "rows": rows}, indent=2))
