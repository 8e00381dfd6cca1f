"""Kernel-only timing of degrade_resolution on CUDA (torch.profiler device time), to separate the
kernel from Python/dispatch overhead. Prints one line per configuration.

    python benchmarks/profile_degrade.py --batch 1024
"""

from __future__ import annotations

import argparse
import functools

import torch
from torch.profiler import ProfilerActivity, profile

from mrface.ops import degrade_resolution, use_backend


def kernel_ms(fn, repeats: int = 20) -> float:
    """Mean CUDA time per call (ms) of every kernel fn launches, from the profiler."""
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(repeats):
            fn()
        torch.cuda.synchronize()
    total_us = sum(e.self_device_time_total for e in prof.key_averages() if e.device_type.name == "CUDA")
    return total_us / repeats / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1024)
    args = parser.parse_args()
    x = torch.rand(args.batch, 3, 112, 112, device="cuda")
    for filter in ("area", "bilinear_aa"):
        for up in (None, "bilinear"):
            for backend in ("cuda", "triton"):
                with use_backend(backend):
                    ms = kernel_ms(functools.partial(degrade_resolution, x, [56, 28, 14, 7], filter, up))
                print(f"{filter:12s} up={up!s:9s} {backend:7s} kernel {ms:.3f} ms")


if __name__ == "__main__":
    main()
