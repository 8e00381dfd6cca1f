"""Multi-process training throughput: the same training step on 1 and N processes (DDP backbone,
Partial FC head sharded by class over the ranks, as the trainer runs it) on synthetic in-memory data.

Each world size above 1 runs as its own ``torch.multiprocessing.spawn`` job with a process group
over 127.0.0.1 (a single process runs in this one, in a group of one). Backend: NCCL, one GPU per
process, when the device resolves to CUDA — which ``auto`` does only when torch sees at least two
GPUs (world sizes above the GPU count are skipped with a note); otherwise gloo on the CPU with
``--threads`` threads per process (default: cores divided by the largest world size, so every run
fits on the machine without oversubscription). On the CPU one more row gives a single process using
all the cores: the alternative to several processes there.

Per-process batch is fixed (weak scaling). Each step's time is the slowest rank's; images/s =
processes x batch / median step time; efficiency = images/s / (processes x the 1-process images/s at
the same threads per process). Examples:
    python benchmarks/bench_scaling.py                        # iresnet_tiny, 1 and 2 processes
    python benchmarks/bench_scaling.py --quick                # tiny batch, 2 timed steps: checks it runs
    python benchmarks/bench_scaling.py --device cuda --world-sizes 1 2 4 8 --model iresnet50 --batch 128
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
from bench_train import VARIANTS, build_model, make_train_step
from common import free_port, print_table, slowest_rank_times, write_json

from mrface.io import write_text


def resolve_device(requested: str) -> tuple[str, str | None]:
    """("cuda" | "cpu", a note when the request could not be honoured)."""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if requested == "auto":
        return ("cuda", None) if gpus >= 2 else ("cpu", None)
    if requested == "cuda" and gpus < 2:
        return "cpu", f"--device cuda: {gpus} GPU(s) visible, a scaling curve needs 2 or more; gloo on the CPU"
    return requested, None


def worker(rank: int, world: int, port: int, cfg: dict, result: str) -> None:
    """One rank: join the group, time ``cfg['repeats']`` training steps, rank 0 writes the step times."""
    cuda = cfg["device"] == "cuda"
    device = f"cuda:{rank}" if cuda else "cpu"
    if cuda:
        torch.cuda.set_device(rank)
    torch.set_num_threads(cfg["threads"])
    dist.init_process_group(
        "nccl" if cuda else "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        torch.manual_seed(0)
        model = build_model(cfg["model"], cfg["width"])

        def wrap(m: torch.nn.Module) -> torch.nn.Module:
            return torch.nn.parallel.DistributedDataParallel(m, device_ids=[rank] if cuda else None)

        step = make_train_step(
            model, device, cfg["batch"], cfg["classes"], VARIANTS["base"], rank=rank, world_size=world, wrap=wrap
        )
        slowest = slowest_rank_times(step, device, cfg["repeats"], cfg["warmup"])
        if rank == 0:
            write_text(result, json.dumps({"step_s": slowest}))
    finally:
        dist.destroy_process_group()


def run_world(world: int, threads: int, cfg: dict) -> float:
    """Median step time in seconds of ``world`` processes with ``threads`` threads each."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        args = (world, free_port(), cfg | {"threads": threads}, str(result))
        if world == 1:  # same code path without the start-up of a fresh interpreter
            worker(0, *args)
        else:
            mp.spawn(worker, args=args, nprocs=world, join=True)
        return statistics.median(json.loads(result.read_text())["step_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="auto: NCCL on GPUs when 2 or more are visible, else gloo on the CPU",
    )
    parser.add_argument(
        "--world-sizes",
        type=int,
        nargs="+",
        default=None,
        help="default: 1 2 on the CPU; 1 2 4 ... up to the GPU count on CUDA",
    )
    parser.add_argument("--model", default="iresnet_tiny")
    parser.add_argument("--width", type=float, default=None, help="width multiplier for tiny models")
    parser.add_argument("--batch", type=int, default=None, help="per process (default 32, 4 under --quick)")
    parser.add_argument("--classes", type=int, default=None, help="default 1000 (100 under --quick)")
    parser.add_argument("--threads", type=int, default=None, help="per process on the CPU (default: see above)")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps (default 5, 2 under --quick)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 2, 1 under --quick)")
    parser.add_argument("--no-all-cores", action="store_true", help="drop the 1-process all-cores row (CPU)")
    parser.add_argument("--quick", action="store_true", help="batch 4, 100 classes, 2 timed steps")
    parser.add_argument("--out", default=None, help="JSON path (default: bench_results/scaling-<time>.json)")
    args = parser.parse_args()
    quick = args.quick
    device, note = resolve_device(args.device)
    if note:
        print(note)
    gpus = torch.cuda.device_count() if device == "cuda" else 0
    worlds = args.world_sizes or ([1, 2] if device == "cpu" else [2**i for i in range(8) if 2**i <= gpus])
    worlds = sorted(set(worlds) | {1})
    cores = os.cpu_count() or 1
    threads = (args.threads or max(1, cores // max(worlds))) if device == "cpu" else 1
    cfg = {
        "device": device,
        "model": args.model,
        "width": args.width,
        "batch": args.batch or (4 if quick else 32),
        "classes": args.classes or (100 if quick else 1000),
        "repeats": args.repeats or (2 if quick else 5),
        "warmup": args.warmup if args.warmup is not None else (1 if quick else 2),
    }
    backend = "nccl" if device == "cuda" else "gloo"
    runs = [(w, threads) for w in worlds]
    if device == "cpu" and not args.no_all_cores and threads < cores:
        runs.append((1, cores))
    rows, single = [], None
    for world, t in runs:
        row = {
            "model": args.model,
            "backend": backend,
            "device": device,
            "processes": world,
            "threads_per_process": t if device == "cpu" else None,
            "batch_per_process": cfg["batch"],
            "global_batch": world * cfg["batch"],
            "images_per_s": None,
            "per_process_images_per_s": None,
            "efficiency": None,
            "note": "",
        }
        if device == "cuda" and world > gpus:
            row["note"] = f"skipped: {world} processes need {world} GPUs, {gpus} visible"
        elif device == "cpu" and world * t > cores:
            row["note"] = f"skipped: {world} x {t} threads oversubscribe {cores} cores"
        else:
            rate = world * cfg["batch"] / run_world(world, t, cfg)
            row |= {"images_per_s": rate, "per_process_images_per_s": rate / world}
            if world == 1 and t == threads:
                single = rate
            if single and t == threads:
                row["efficiency"] = rate / (world * single)
            if world == 1 and t != threads:
                row["note"] = "1 process using all cores: the alternative to several processes"
        rows.append(row)
        print_table(rows[-1:], list(rows[-1]))
    print()
    print_table(
        rows,
        [
            "model",
            "backend",
            "processes",
            "threads_per_process",
            "global_batch",
            "images_per_s",
            "per_process_images_per_s",
            "efficiency",
            "note",
        ],
    )
    write_json("scaling", rows, args.out, cfg | {"backend": backend, "device_note": note, "quick": quick})


if __name__ == "__main__":
    main()
