"""Measure every path of a model at fp32 / fp16 / int8: cosine to PyTorch fp32, 10-fold accuracy on
held-out SynthFace pairs, onnxruntime CPU latency at batch 1 and 64, size on disk; prints a Markdown table.

    python deploy/measure_precision.py --model RUN_DIR --out /tmp/prec [--threads 2] [--pairs 400]

Latency is the median of ``--repeats`` timed runs after one warm-up, with ``--threads`` intra-op threads;
on a shared machine it is indicative only. Writes the three export folders under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from mrface.export.exporter import ExportOptions, export_model
from mrface.export.loading import load_for_export
from mrface.export.session import ort_session


def latency_ms(path: Path, shape: tuple[int, ...], dtype: str, threads: int, repeats: int) -> float:
    session = ort_session(path, threads=threads)
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    session.run(["embedding"], {"input": x})
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        session.run(["embedding"], {"input": x})
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--pairs", type=int, default=400)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--precisions", nargs="+", default=["fp32", "fp16", "int8"])
    args = p.parse_args()
    model = load_for_export(args.model)
    rows = []
    for precision in args.precisions:
        t = time.time()
        result = export_model(
            model,
            Path(args.out) / precision,
            ExportOptions(precision=precision, threads=args.threads, accuracy_pairs=args.pairs),
        )
        print(f"[{precision}] exported in {time.time() - t:.0f} s", flush=True)
        for g in result.graphs:
            s = g.spec
            rows.append(
                {
                    "path": s.resolution,
                    "precision": precision,
                    "min_cos": g.parity.min_cosine,
                    "mean_cos": g.parity.mean_cosine,
                    "acc": g.accuracy["accuracy"],
                    "acc_fp32": g.accuracy["accuracy_fp32"],
                    "drop": g.accuracy["drop"],
                    "b1_ms": latency_ms(g.path, s.input_shape(1), s.input_dtype, args.threads, args.repeats),
                    "b64_ms": latency_ms(g.path, s.input_shape(64), s.input_dtype, args.threads, args.repeats),
                    "kib": g.path.stat().st_size / 1024,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    print(
        "\n| path | precision | cosine vs fp32 (mean / min) | 10-fold acc (PyTorch fp32) | drop "
        "| ORT CPU b=1 (ms) | b=64 (ms) | size (KiB) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (-r["path"], ["fp32", "fp16", "int8"].index(r["precision"]))):
        print(
            f"| {r['path']} | {r['precision']} | {r['mean_cos']:.5f} / {r['min_cos']:.5f} | "
            f"{100 * r['acc']:.2f}% ({100 * r['acc_fp32']:.2f}%) | {100 * r['drop']:+.2f} | "
            f"{r['b1_ms']:.2f} | {r['b64_ms']:.1f} | {r['kib']:.0f} |"
        )


if __name__ == "__main__":
    main()
