"""Benchmark mrface.ops.degrade_resolution against the naive PyTorch loop (one interpolate per size).

Prints one table (median ms, peak MiB on GPU, speed-up over the loop, and the roofline: the floor is
the compulsory traffic over the copy bandwidth measured in the same run, ``of_floor`` = time / floor,
``achieved`` = floor / time) and writes JSON. ``--random`` adds the per-image random degradation
rows (``degrade_resolution_random``, AdaFace's augmentation: side in [22, 112], filter in nearest /
bilinear / area / bicubic, back up to 112) against the per-image ``cv2.resize`` down+up loop on HWC
uint8 faces (one OpenCV thread, as in a data-loader worker), with a fresh output and with ``out=``
(a reused buffer). ``--busy N`` runs every row while N other processes spin on the CPU (under-load
rows; ratios measured in the same run). Examples:
    python benchmarks/bench_degrade.py --device cpu --batches 64 256 1024
    python benchmarks/bench_degrade.py --device cpu --batches 256 --random --filters area
    python benchmarks/bench_degrade.py --device cpu --dtype bfloat16  # antialiased loop on a float32 copy
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import multiprocessing
import time
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from common import (
    copy_bandwidth,
    machine,
    median_time,
    median_times_alternating,
    peak_memory,
    print_table,
    roofline,
    roofs_line,
    touch_host_memory,
    write_json,
)

from mrface.ops import degrade_resolution, use_backend
from mrface.ops.backend import KERNEL_BACKENDS, backend_runs_on
from mrface.ops.degrade import DegradedBatch

SIZES = (56, 28, 14, 7)
_TORCH_MODE = {"area": ("area", False), "bilinear_aa": ("bilinear", True), "bilinear": ("bilinear", False)}


def naive_loop(x: torch.Tensor, filter: str, up: bool) -> list[torch.Tensor]:
    """What users write today: one interpolate per target size (and one more per size to go back up)."""
    mode, antialias = _TORCH_MODE[filter]
    outs = []
    for s in SIZES:
        down = (
            F.interpolate(x, size=(s, s), mode=mode, antialias=antialias)
            if mode != "area"
            else F.avg_pool2d(x, x.shape[-1] // s)
        )
        outs.append(down)
        if up:
            outs.append(F.interpolate(down, size=x.shape[-2:], mode="bilinear", align_corners=False))
    return outs


def _spin() -> None:
    while True:
        pass


@contextlib.contextmanager
def busy_processes(count: int) -> Iterator[None]:
    """``count`` processes spinning on the CPU for the duration (competing load for under-load rows)."""
    procs = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(count)]
    for p in procs:
        p.start()
    time.sleep(0.5 if procs else 0.0)
    try:
        yield
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.join()


_CV2_DOWN = {
    "nearest": "INTER_NEAREST",
    "bilinear": "INTER_LINEAR",
    "area": "INTER_AREA",
    "bicubic": "INTER_CUBIC",
    "lanczos": "INTER_LANCZOS4",
}
_CV2_UP = {
    "nearest": "INTER_NEAREST",
    "bilinear": "INTER_LINEAR",
    "area": "INTER_LINEAR",
    "bicubic": "INTER_CUBIC",
    "lanczos": "INTER_LANCZOS4",
}


def random_rows(n: int, repeats: int, bandwidth: float) -> list[dict]:
    """Per-image random degradation (mrface, fresh output and out=) vs the per-image cv2.resize loop."""
    import cv2

    from mrface.ops import degrade_resolution_random
    from mrface.ops.degrade import ADAFACE_FILTERS

    cv2.setNumThreads(1)
    x8 = (torch.rand(n, 3, 112, 112, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    hwc = [np.ascontiguousarray(im.permute(1, 2, 0).numpy()) for im in x8]
    g = torch.Generator().manual_seed(1)  # the op's draws: sides, then filter ids
    sides = torch.randint(22, 113, (n,), generator=g).tolist()
    fids = torch.randint(0, len(ADAFACE_FILTERS), (n,), generator=g).tolist()
    down = [getattr(cv2, _CV2_DOWN[ADAFACE_FILTERS[f]]) for f in fids]
    up = [getattr(cv2, _CV2_UP[ADAFACE_FILTERS[f]]) for f in fids]

    def cv2_loop() -> None:
        for im, s, d, u in zip(hwc, sides, down, up, strict=True):
            cv2.resize(cv2.resize(im, (s, s), interpolation=d), (112, 112), interpolation=u)

    cv2_s = median_time(cv2_loop, "cpu", repeats)
    rows = []
    for dtype in (torch.uint8, torch.float32):
        x = x8.to(dtype)
        buffer = torch.empty_like(x)
        for mode, out in (("fresh", None), ("out=", buffer)):
            run = functools.partial(degrade_resolution_random, x, generator=torch.Generator().manual_seed(1), out=out)
            ours_s = median_time(run, "cpu", repeats)
            rows.append(
                {
                    "filter": "random adaface",
                    "up": mode,
                    "batch": n,
                    "backend": f"cpp {str(dtype)[6:]}",
                    "ours_ms": ours_s * 1e3,
                    "loop_ms": cv2_s * 1e3,
                    "speedup": cv2_s / ours_s,
                    "loop": "cv2.resize loop (uint8, 1 thread)",
                }
                | roofline(ours_s, nbytes=2 * x.numel() * x.element_size(), bandwidth=bandwidth)
            )
            rows[-1].pop("bound")
    return rows


def loop_input(x: torch.Tensor, filter: str) -> torch.Tensor:
    """x, or a float32 copy where the loop cannot run in x's dtype: PyTorch's CPU antialiased interpolate
    has no float16/bfloat16 kernel. The copy is made once, outside the timing (the loop times are then
    float32 loop times)."""
    antialias = _TORCH_MODE[filter][1]
    needs_float32 = x.device.type == "cpu" and antialias and x.dtype in (torch.float16, torch.bfloat16)
    return x.float() if needs_float32 else x


def run_op(x: torch.Tensor, filter: str, up: bool, backend: str, out: DegradedBatch | None = None) -> object:
    with use_backend(backend):
        return degrade_resolution(x, SIZES, filter, "bilinear" if up else None, out=out)


def bytes_moved(x: torch.Tensor, up: bool) -> int:
    """Compulsory traffic: read the input once, write every output once."""
    n, c, h, w = x.shape
    elems = n * c * (h * w + sum(s * s for s in SIZES) + (len(SIZES) * h * w if up else 0))
    return elems * x.element_size()


def timed_with_float32(x: torch.Tensor, filter: str, up: bool, backend: str, repeats: int, out: bool) -> dict:
    """Seconds of the op on x, and for a non-float32 x also on x.float() with the two calls alternating
    (side by side in one run): ``f32_ms`` and ``per_byte_vs_f32`` = (time / bytes) over float32's, so at
    most 1 means x's dtype is not slower per byte. ``out``: both write into buffers reused across calls."""
    x32 = x.float() if x.dtype != torch.float32 else None
    calls = []
    for inp in (x, x32) if x32 is not None else (x,):
        buffers = run_op(inp, filter, up, backend) if out else None
        calls.append(functools.partial(run_op, inp, filter, up, backend, buffers))
    if x32 is None:
        return {"seconds": median_time(calls[0], x.device.type, repeats)}
    seconds, f32_seconds = median_times_alternating(calls, x.device.type, repeats)
    ratio = (seconds / f32_seconds) * (x32.element_size() / x.element_size())
    return {"seconds": seconds, "f32_ms": f32_seconds * 1e3, "per_byte_vs_f32": ratio}


def _out_buffer_row(x: torch.Tensor, filter: str, up: bool, backend: str, repeats: int, bandwidth: float) -> dict:
    """The op writing into buffers reused across calls (no loop column: the loop has no out= form)."""
    timed = timed_with_float32(x, filter, up, backend, repeats, out=True)
    seconds = timed.pop("seconds")
    row = {"filter": filter, "up": up, "batch": x.shape[0], "backend": f"{backend} out=", "ours_ms": seconds * 1e3}
    row |= timed | roofline(seconds, nbytes=bytes_moved(x, up), bandwidth=bandwidth)
    row.pop("bound")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--filters", nargs="+", default=["area", "bilinear_aa"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16", "uint8"])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default=None)
    parser.add_argument("--random", action="store_true", help="add the per-image random degradation rows vs cv2")
    parser.add_argument("--busy", type=int, default=0, help="other processes spinning during the run (load rows)")
    parser.add_argument(
        "--out-buffers", action="store_true", help="add rows writing into reused buffers (degrade_resolution out=)"
    )
    args = parser.parse_args()
    with busy_processes(args.busy):
        _measure(args)


def _measure(args: argparse.Namespace) -> None:
    device = args.device
    dtype = getattr(torch, args.dtype)
    backends = [b for b in KERNEL_BACKENDS if b != "reference" and backend_runs_on(b, device)]
    if device == "cpu":
        touch_host_memory()
    bandwidth = copy_bandwidth(device)
    rows = []
    for filter in args.filters:
        for up in (False, True):
            for n in args.batches:
                x = torch.rand(n, 3, 112, 112, device=device)
                x = (x * 255).to(torch.uint8) if dtype == torch.uint8 else x.to(dtype)
                loop_ok = dtype != torch.uint8
                loop_x = loop_input(x, filter)
                loop = functools.partial(naive_loop, loop_x, filter, up)
                loop_s = median_time(loop, device, args.repeats) if loop_ok else None
                loop_mib = peak_memory(loop, device) if loop_ok else None
                for backend in backends:
                    run = functools.partial(run_op, x, filter, up, backend)
                    timed = timed_with_float32(x, filter, up, backend, args.repeats, out=False)
                    ours_s = timed.pop("seconds")
                    row = (
                        {
                            "filter": filter,
                            "up": up,
                            "batch": n,
                            "backend": backend,
                            "ours_ms": ours_s * 1e3,
                            "loop_ms": loop_s * 1e3 if loop_s else None,
                            "speedup": loop_s / ours_s if loop_s else None,
                            "ours_MiB": peak_memory(run, device),
                            "loop_MiB": loop_mib,
                        }
                        | timed
                        | roofline(ours_s, nbytes=bytes_moved(x, up), bandwidth=bandwidth)
                    )
                    row.pop("bound")  # always memory
                    if loop_ok and loop_x.dtype != x.dtype:
                        row["loop"] = "interpolate on a float32 copy"
                    rows.append(row)
                    if args.out_buffers:
                        rows.append(_out_buffer_row(x, filter, up, backend, args.repeats, bandwidth))
    if args.random and device == "cpu":
        for n in args.batches:
            rows.extend(random_rows(n, args.repeats, bandwidth))
    print(f"machine: {machine()}  dtype={args.dtype}  device={device}  busy_processes={args.busy}")
    print(roofs_line(bandwidth, None) + " (compulsory bytes: read the input, write every output once)")
    columns = [
        "filter",
        "up",
        "batch",
        "backend",
        "ours_ms",
        "loop_ms",
        "speedup",
        "ours_MiB",
        "loop_MiB",
        "floor_ms",
        "of_floor",
        "achieved",
        "f32_ms",
        "per_byte_vs_f32",
    ]
    print_table(rows, [c for c in columns if any(r.get(c) is not None for r in rows)])
    if any(r.get("loop") == "interpolate on a float32 copy" for r in rows):
        print(
            f"note: PyTorch's CPU antialiased interpolate has no {args.dtype} kernel: those loop_ms/loop_MiB "
            "are the loop on a float32 copy of the input (copy made once, untimed)"
        )
    write_json(
        "degrade",
        rows,
        args.out,
        {"dtype": args.dtype, "device": device, "copy_bandwidth": bandwidth, "busy_processes": args.busy},
    )


if __name__ == "__main__":
    main()
