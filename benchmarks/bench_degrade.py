"""Benchmark mrface.ops.degrade_resolution against the naive PyTorch loop (one interpolate per size).

Prints one table (median ms, peak MiB on GPU, speed-up over the loop, and the roofline: the floor is
the compulsory traffic over the copy bandwidth measured in the same run, ``of_floor`` = time / floor,
``achieved`` = floor / time) and writes JSON. Example:
    python benchmarks/bench_degrade.py --device cpu --batches 64 256 1024
"""

from __future__ import annotations

import argparse
import functools

import torch
import torch.nn.functional as F
from common import copy_bandwidth, machine, median_time, peak_memory, print_table, roofline, roofs_line, write_json

import mrface
from mrface.ops import degrade_resolution, use_backend
from mrface.ops.backend import backend_runs_on

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


def run_op(x: torch.Tensor, filter: str, up: bool, backend: str) -> object:
    with use_backend(backend):
        return degrade_resolution(x, SIZES, filter, "bilinear" if up else None)


def bytes_moved(x: torch.Tensor, up: bool) -> int:
    """Compulsory traffic: read the input once, write every output once."""
    n, c, h, w = x.shape
    elems = n * c * (h * w + sum(s * s for s in SIZES) + (len(SIZES) * h * w if up else 0))
    return elems * x.element_size()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--filters", nargs="+", default=["area", "bilinear_aa"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16", "uint8"])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    device = args.device
    dtype = getattr(torch, args.dtype)
    backends = [b for b in mrface.ops.BACKENDS if b != "reference" and backend_runs_on(b, device)]
    bandwidth = copy_bandwidth(device)
    rows = []
    for filter in args.filters:
        for up in (False, True):
            for n in args.batches:
                x = torch.rand(n, 3, 112, 112, device=device)
                x = (x * 255).to(torch.uint8) if dtype == torch.uint8 else x.to(dtype)
                loop_ok = dtype != torch.uint8
                loop = functools.partial(naive_loop, x, filter, up)
                loop_s = median_time(loop, device, args.repeats) if loop_ok else None
                loop_mib = peak_memory(loop, device) if loop_ok else None
                for backend in backends:
                    run = functools.partial(run_op, x, filter, up, backend)
                    ours_s = median_time(run, device, args.repeats)
                    row = {
                        "filter": filter,
                        "up": up,
                        "batch": n,
                        "backend": backend,
                        "ours_ms": ours_s * 1e3,
                        "loop_ms": loop_s * 1e3 if loop_s else None,
                        "speedup": loop_s / ours_s if loop_s else None,
                        "ours_MiB": peak_memory(run, device),
                        "loop_MiB": loop_mib,
                    } | roofline(ours_s, nbytes=bytes_moved(x, up), bandwidth=bandwidth)
                    row.pop("bound")  # always memory
                    rows.append(row)
    print(f"machine: {machine()}  dtype={args.dtype}  device={device}")
    print(roofs_line(bandwidth, None) + " (compulsory bytes: read the input, write every output once)")
    columns = ["filter", "up", "batch", "backend", "ours_ms", "loop_ms", "speedup", "ours_MiB", "loop_MiB",
               "floor_ms", "of_floor", "achieved"]
    print_table(rows, columns)
    write_json("degrade", rows, args.out, {"dtype": args.dtype, "device": device, "copy_bandwidth": bandwidth})


if __name__ == "__main__":
    main()
