"""Data throughput: SynthFace rendering (img/s, one process) and RecordIO loading with 0/2 workers.

Prints a table and writes JSON (default bench_results/bench_data.json, or --out PATH).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mrface.io import write_text


def bench_synthface(n: int, seed: int = 0) -> float:
    from mrface.data.synthface import SynthFace

    sf = SynthFace(seed)
    ids = np.repeat(np.arange(n // 10), 10)
    imgs = np.tile(np.arange(10), n // 10)
    sf.render(ids[:64], imgs[:64])  # warm up
    start = time.perf_counter()
    sf.render(ids, imgs)
    return len(ids) / (time.perf_counter() - start)


def bench_loader(rec: Path, workers: int, batch: int) -> float:
    from mrface.data.datasets import RecordDataset, make_loader

    loader = make_loader(RecordDataset(rec), batch_size=batch, workers=workers, shuffle=True, drop_last=False)
    it = iter(loader)
    next(it)  # worker start-up not counted
    count, start = 0, time.perf_counter()
    for x, _ in it:
        count += x.shape[0]
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="images rendered / packed")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--out", type=Path, default=Path("bench_results/bench_data.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    from mrface.data.synth_writer import write_synth

    rows = [("SynthFace render (1 process)", bench_synthface(args.images))]
    with tempfile.TemporaryDirectory() as tmp:
        write_synth(tmp, identities=args.images // 10, images=10, pairs=10, resolutions=(112,))
        rec = Path(tmp) / "train.rec"
        for workers in (0, 2):
            rows.append((f"RecordDataset + DataLoader, {workers} workers", bench_loader(rec, workers, args.batch)))
    print(f"{'benchmark':<40} {'img/s':>10}")
    for name, value in rows:
        print(f"{name:<40} {value:>10.0f}")
    result = {
        "benchmark": "data",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__},
        "images": args.images,
        "batch": args.batch,
        "results": [{"name": n, "images_per_s": v} for n, v in rows],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
