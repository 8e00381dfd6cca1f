"""Load rows: the CPU kernels with 2 gloo ranks x 2 threads on one machine (4 threads on the cores a
data-parallel CPU run would share), against their plain PyTorch counterparts measured in the same ranks.

Each rank joins a gloo process group over 127.0.0.1 and times, after one warm-up and with a barrier
before every step, side by side:

- ``margin_softmax``: one forward + backward of the Partial FC head with its classes sharded over the
  ranks (as the trainer runs it), ``fused`` (the default: mrface.ops.margin_softmax, the chunked
  torch path on the CPU) against ``reference`` (``fused=False``, materialised (B, C/ranks) logits);
- ``degrade``: ``degrade_resolution`` area 112 -> {56, 28, 14, 7} and back up to 112 (bilinear)
  against the ``avg_pool2d`` + ``interpolate`` loop, on each rank's own batch.

A step's time is the slowest rank's; the table gives medians over ``--repeats`` steps and the
speed-up of the kernel path over its counterpart (> 1: the kernel is faster). Compare ratios only
within one run. Examples:
    python benchmarks/bench_load.py                         # 2 ranks x 2 threads, default shapes
    python benchmarks/bench_load.py --quick                 # tiny shapes, 2 timed steps: checks it runs
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from common import free_port, machine, print_table, slowest_rank_times, write_json

SIZES = (56, 28, 14, 7)


def head_steps(cfg: dict) -> dict:
    """{path: closure running one forward + backward of the sharded head} for fused and reference."""
    from mrface.losses import get_head

    b, c, d = cfg["head_shape"]
    rank = dist.get_rank()
    g = torch.Generator().manual_seed(rank)
    emb = torch.randn(b, d, generator=g) * 20
    labels = torch.randint(0, c, (b,), generator=g)
    steps = {}
    for path in ("fused", "reference"):
        torch.manual_seed(0)
        head = get_head("arcface", d, c, fused=path == "fused")

        def step(head=head) -> None:
            x = emb.detach().requires_grad_(True)
            loss, _ = head(x, labels)
            loss.backward()
            head.weight.grad = None

        steps[path] = step
    return steps


def degrade_steps(cfg: dict) -> dict:
    """{path: closure} for the fused degradation op and the interpolate loop on this rank's batch."""
    from mrface.ops import degrade_resolution

    x = torch.rand(cfg["degrade_batch"], 3, 112, 112, generator=torch.Generator().manual_seed(dist.get_rank()))

    def loop() -> None:
        for s in SIZES:
            down = F.avg_pool2d(x, 112 // s)
            F.interpolate(down, size=(112, 112), mode="bilinear", align_corners=False)

    return {"fused": lambda: degrade_resolution(x, SIZES, "area", "bilinear"), "reference": loop}


def worker(rank: int, world: int, port: int, cfg: dict, result: str) -> None:
    """One rank: join the group, time every op's two paths in turn; rank 0 writes the medians."""
    torch.set_num_threads(cfg["threads"])
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        medians = {}
        for op, make in (("margin_softmax", head_steps), ("degrade", degrade_steps)):
            for path, step in make(cfg).items():
                medians[op, path] = statistics.median(slowest_rank_times(step, "cpu", cfg["repeats"], cfg["warmup"]))
        if rank == 0:
            Path(result).write_text(json.dumps([[op, path, s] for (op, path), s in medians.items()]))
    finally:
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch threads per rank")
    parser.add_argument("--head-shape", default="512,100000,512", help="B,C,D of the head (C over all ranks)")
    parser.add_argument("--degrade-batch", type=int, default=256, help="images per rank")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="tiny shapes and 2 timed steps (a smoke run)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    head_shape = tuple(int(v) for v in args.head_shape.split(","))
    if len(head_shape) != 3 or min(head_shape) <= 0:
        parser.error(f"--head-shape must be three positive integers B,C,D, got {args.head_shape!r}")
    cfg = {
        "threads": args.threads,
        "head_shape": (64, 2000, 64) if args.quick else head_shape,
        "degrade_batch": 8 if args.quick else args.degrade_batch,
        "repeats": 2 if args.quick else args.repeats,
        "warmup": 1,
    }
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        mp.spawn(worker, args=(args.ranks, free_port(), cfg, str(result)), nprocs=args.ranks, join=True)
        medians = {(op, path): s for op, path, s in json.loads(result.read_text())}
    rows = []
    for op in ("margin_softmax", "degrade"):
        shape = "x".join(map(str, cfg["head_shape"])) if op == "margin_softmax" else f"{cfg['degrade_batch']}x3x112x112"
        rows.append(
            {
                "op": op,
                "shape": shape,
                "ranks": args.ranks,
                "threads": args.threads,
                "fused_ms": medians[op, "fused"] * 1e3,
                "reference_ms": medians[op, "reference"] * 1e3,
                "speedup": medians[op, "reference"] / medians[op, "fused"],
            }
        )
    print(f"machine: {machine()}  gloo ranks={args.ranks} x threads={args.threads}")
    print_table(rows, ["op", "shape", "ranks", "threads", "fused_ms", "reference_ms", "speedup"])
    write_json("load", rows, args.out, {"ranks": args.ranks, "threads": args.threads, "device": "cpu"})


if __name__ == "__main__":
    main()
