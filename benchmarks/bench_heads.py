"""Benchmark the reference margin heads (Partial FC, one process): forward + backward time and
peak memory per head, batch and class count. The baseline the fused margin-softmax must beat.

Roofline as in bench_margin_softmax.py: floor = max(3 x 2·B·C·D FLOPs / matmul peak, centres and
embeddings read and their gradients written once / copy bandwidth), both measured in this run;
``achieved`` = floor / time. Prints one table and writes JSON. Example:
    python benchmarks/bench_heads.py --device cpu --classes 10000 --batch 128
"""

from __future__ import annotations

import argparse
import functools

import torch
from common import (
    copy_bandwidth,
    machine,
    matmul_peak,
    median_time,
    peak_memory,
    print_table,
    roofline,
    roofs_line,
    write_json,
)

from mrface.losses import get_head, list_heads


def step(head, emb: torch.Tensor, labels: torch.Tensor) -> None:
    x = emb.detach().requires_grad_(True)
    loss, _ = head(x, labels)
    loss.backward()
    head.weight.grad = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--heads", nargs="+", default=list_heads())
    parser.add_argument("--batch", type=int, nargs="+", default=[128])
    parser.add_argument("--classes", type=int, nargs="+", default=[10000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--sample-rate", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    device, dtype = args.device, getattr(torch, args.dtype)
    peak, bandwidth = matmul_peak(device, dtype), copy_bandwidth(device)
    rows = []
    for name in args.heads:
        for c in args.classes:
            head = get_head(name, args.dim, c, sample_rate=args.sample_rate).to(device).train()
            for b in args.batch:
                emb = (torch.randn(b, args.dim, device=device) * 20).to(dtype)
                labels = torch.randint(0, c, (b,), device=device)
                run = functools.partial(step, head, emb, labels)
                seconds = median_time(run, device, args.repeats)
                used = max(1, round(c * args.sample_rate))  # centres in the GEMMs after sampling
                flops, nbytes = 3 * 2 * b * used * args.dim, 2 * (used + b) * args.dim * dtype.itemsize
                rows.append(
                    {
                        "head": name,
                        "classes": c,
                        "batch": b,
                        "ms": seconds * 1e3,
                        "peak_MiB": peak_memory(run, device),
                        "logits_MiB": b * c * 4 / 2**20,
                    }
                    | roofline(seconds, flops=flops, nbytes=nbytes, peak_flops=peak, bandwidth=bandwidth)
                )
    print(f"machine: {machine()}  dtype={args.dtype}  device={device}")
    print(roofs_line(bandwidth, peak, args.dtype))
    print_table(rows, ["head", "classes", "batch", "ms", "peak_MiB", "logits_MiB", "floor_ms", "achieved", "bound"])
    write_json(
        "heads",
        rows,
        args.out,
        {
            "dtype": args.dtype,
            "device": device,
            "dim": args.dim,
            "sample_rate": args.sample_rate,
            "copy_bandwidth": bandwidth,
            "matmul_peak_flops": peak,
        },
    )


if __name__ == "__main__":
    main()
