"""Benchmark the fused margin softmax against the materialising reference path (forward + backward).

Paths: ``fused`` (PartialFC default: mrface.losses.margin_softmax over the op mrface.ops.margin_softmax:
Triton on GPU, chunked torch on CPU),
``reference`` (PartialFC(fused=False): InsightFace-style (B, C) logits), on GPU also
``compiled`` (torch.compile of the reference) and ``liger`` (liger-kernel's fused linear
cross-entropy on s * emb_hat and the normalised centres: plain CE, margin 0; skipped with a note
when liger-kernel is not installed).

Working memory = peak during forward + backward minus what was live before the step, minus the
embedding and centre gradients (every path needs them). GPU: ``torch.cuda.max_memory_allocated``.
CPU: peak resident set size of a fresh child process per measurement (Linux VmHWM, reset through
/proc/self/clear_refs), with ``MALLOC_MMAP_THRESHOLD_=65536`` so freed tensors leave the RSS.
Time: median of ``--repeats`` steps after one warm-up (benchmarks/common.py); on CPU in another
child with the default allocator. CPU timings need an otherwise idle machine (the tiled path runs
many short multi-threaded ops, which suffer most from oversubscribed cores).

Roofline: the floor of one forward + backward is max(FLOPs / matmul peak, bytes / copy bandwidth) with
FLOPs = 3 x 2·B·C·D (the forward GEMM and the two backward GEMMs; a path that recomputes the logits in
the backward does a fourth, which the floor does not grant) and bytes = the centres and embeddings read
once and their gradients written once; both roofs are measured in the same run (benchmarks/common.py,
matmul in the benchmark's dtype). ``achieved`` = floor / time.

    python benchmarks/bench_margin_softmax.py                      # default shapes, this device
    python benchmarks/bench_margin_softmax.py --device cpu --shapes 512,100000,512
    python benchmarks/bench_margin_softmax.py --device cpu --shapes 512,20000,512 --margins arcface --busy 2

``--busy N`` times every path while N other processes spin on the CPU (bench_degrade.py's helper): the
fused chunked head against the materialised one under oversubscription; compare within one run only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from bench_degrade import busy_processes
from common import (
    copy_bandwidth,
    machine,
    matmul_peak,
    median_time,
    print_table,
    roofline,
    roofs_line,
    sync,
    write_json,
    write_partial,
)

from mrface.losses import get_head

DEFAULT_SHAPES = [(512, 100_000, 512), (1024, 200_000, 512), (4096, 51_500, 512)]
CPU_CLASS_CAP = 100_000  # B x C above 512 x 100k is shrunk on CPU (classes scaled down), reported
PATHS_GPU = ["fused", "reference", "compiled", "liger"]
PATHS_CPU = ["fused", "reference"]


def _rss(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _liger_step():
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
    except ImportError:
        return None
    return LigerFusedLinearCrossEntropyLoss()


def make_step(path: str, margin: str, b: int, c: int, d: int, device: str, dtype: torch.dtype):
    """A closure running one forward + backward, and the bytes of the gradients it produces."""
    torch.manual_seed(0)
    head = get_head(margin, d, c, fused=path != "reference").to(device)
    head.weight.data = head.weight.data.to(dtype)
    emb = (torch.randn(b, d, device=device) * 20).to(dtype)
    labels = torch.randint(0, c, (b,), device=device)
    grad_bytes = head.weight.numel() * head.weight.element_size() + emb.numel() * emb.element_size()
    if path == "liger":
        liger = _liger_step()
        if liger is None or device != "cuda":
            return None, grad_bytes

        def step():
            x = emb.detach().requires_grad_(True)
            e_hat = torch.nn.functional.normalize(x.float(), dim=1).to(dtype) * head.margin.s
            w_hat = torch.nn.functional.normalize(head.weight.float(), dim=1).to(dtype)
            liger(w_hat, e_hat, labels).backward()
            head.weight.grad = None

        return step, grad_bytes

    forward = head
    if path == "compiled":
        head.fused = False
        forward = torch.compile(head)

    def step():
        x = emb.detach().requires_grad_(True)
        loss, _ = forward(x, labels)
        loss.backward()
        head.weight.grad = None

    return step, grad_bytes


def measure(path: str, margin: str, b: int, c: int, d: int, device: str, dtype: torch.dtype, repeats: int) -> dict:
    step, grad_bytes = make_step(path, margin, b, c, d, device, dtype)
    if step is None:
        return {"note": "liger-kernel not installed" if _liger_step() is None else "liger: GPU only"}
    step()  # warm-up: lazy allocations, autotuning, compilation
    sync(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        Path("/proc/self/clear_refs").write_text("5")
        base = _rss("VmRSS")
        step()
        peak = _rss("VmHWM") - base
    seconds = median_time(step, device, repeats, warmup=0)
    return {"ms": seconds * 1e3, "work_MiB": max(peak - grad_bytes, 0) / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shapes", nargs="+", default=None, help="B,C,D triples")
    parser.add_argument("--margins", nargs="+", default=["arcface", "adaface"])
    parser.add_argument("--paths", nargs="+", default=None)
    parser.add_argument(
        "--dtype",
        default=None,
        choices=["float32", "float16", "bfloat16"],
        help="default: float32 on CPU, bfloat16 on GPU",
    )
    parser.add_argument(
        "--dtypes",
        nargs="+",
        default=None,
        choices=["float32", "float16", "bfloat16"],
        help="several weight dtypes in one run (rows carry the dtype); replaces --dtype",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="CPU: measure in this process (no child per path; work_MiB from this process's RSS, "
        "so only indicative): the suite's quick checks",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--busy", type=int, default=0, help="CPU: other processes spinning during the timed paths (load rows)"
    )
    parser.add_argument("--out", default=None)
    parser.add_argument("--child", nargs=7, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        path, margin, b, c, d, device, dtype = args.child
        print(json.dumps(measure(path, margin, int(b), int(c), int(d), device, getattr(torch, dtype), args.repeats)))
        return

    device = args.device
    dtypes = args.dtypes or [args.dtype or ("float32" if device == "cpu" else "bfloat16")]
    shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes] if args.shapes else DEFAULT_SHAPES
    paths = args.paths or (PATHS_GPU if device == "cuda" else PATHS_CPU)
    # --in-process (quick checks) measures the roofs on small operands: seconds, not minutes, for CPU float16.
    small = args.in_process and device == "cpu"
    bandwidth = copy_bandwidth(device, 1 << 24 if small else 1 << 30)
    peaks = {dtype: matmul_peak(device, getattr(torch, dtype), 256 if small else None) for dtype in dtypes}
    rows = []
    for dtype in dtypes:
        for b, c, d in shapes:
            note = ""
            if device == "cpu" and b * c > 512 * CPU_CLASS_CAP:
                c, note = 512 * CPU_CLASS_CAP // b, f"C shrunk on CPU from {c}"
            for margin in args.margins:
                results = {}
                for path in paths:
                    with busy_processes(args.busy):  # the roofs above are measured without the load
                        res = _run(path, margin, b, c, d, device, dtype, args.repeats, args.in_process)
                    results[path] = res
                    rows.append(
                        {
                            "B": b,
                            "C": c,
                            "D": d,
                            "margin": margin,
                            "path": path,
                            "dtype": dtype,
                            "backend": _backend(path, device, dtype),
                            "ms": res.get("ms"),
                            "work_MiB": res.get("work_MiB"),
                            "logits_MiB": b * c * 4 / 2**20,
                            "speedup_vs_ref": None,
                            "mem_ratio_vs_ref": None,
                            "busy": args.busy,
                        }
                    )
                ref = results.get("reference", {})
                for row in rows[-len(paths) :]:
                    if row["ms"] and ref.get("ms"):
                        row["speedup_vs_ref"] = ref["ms"] / row["ms"]
                        row["mem_ratio_vs_ref"] = row["work_MiB"] / ref["work_MiB"] if ref["work_MiB"] else None
                    row |= roofline(
                        row["ms"] / 1e3 if row["ms"] else None,
                        flops=step_flops(b, c, d),
                        nbytes=step_bytes(b, c, d, dtype),
                        peak_flops=peaks[dtype],
                        bandwidth=bandwidth,
                    )
                    row["note"] = results[row["path"]].get("note") or note
                write_partial("margin_softmax", rows, args.out)
    print(f"machine: {machine()}  device={device}  dtypes={dtypes}  busy_processes={args.busy}")
    for dtype in dtypes:
        print(roofs_line(bandwidth, peaks[dtype], dtype))
    print_table(
        rows,
        [
            "B",
            "C",
            "D",
            "margin",
            "path",
            "dtype",
            "backend",
            "ms",
            "work_MiB",
            "logits_MiB",
            "speedup_vs_ref",
            "mem_ratio_vs_ref",
            "floor_ms",
            "achieved",
            "bound",
            "note",
        ],
    )
    write_json(
        "margin_softmax",
        rows,
        args.out,
        {
            "device": device,
            "dtype": dtypes[0] if len(dtypes) == 1 else dtypes,
            "memory_method": __doc__.split("\n\n")[2],
            "copy_bandwidth": bandwidth,
            "matmul_peak_flops": peaks[dtypes[0]] if len(dtypes) == 1 else peaks,
            "margin_triton_half": os.environ.get("MRFACE_MARGIN_TRITON_HALF"),
            "busy_processes": args.busy,
        },
    )


def _backend(path: str, device: str, dtype: str) -> str:
    """The backend a path's margin softmax runs on (the fused op's choice; see mrface.ops.margin_softmax)."""
    if path != "fused":
        return {"reference": "materialised", "compiled": "torch.compile", "liger": "liger"}.get(path, path)
    from mrface.ops.margin_softmax import _pick_backend

    try:
        return _pick_backend(torch.device(device), getattr(torch, dtype))
    except RuntimeError as err:  # a forced backend that cannot run here
        return f"error: {err}"[:60]


def step_flops(b: int, c: int, d: int) -> float:
    """FLOPs of the three GEMMs of one forward + backward: logits, d embeddings, d centres (2·B·C·D each)."""
    return 3 * 2 * b * c * d


def step_bytes(b: int, c: int, d: int, dtype: str) -> float:
    """Compulsory traffic: read centres (C, D) and embeddings (B, D) once, write both gradients once."""
    return 2 * (c * d + b * d) * getattr(torch, dtype).itemsize


def _run(
    path: str, margin: str, b: int, c: int, d: int, device: str, dtype: str, repeats: int, in_process: bool = False
) -> dict:
    if device == "cuda" or in_process:
        return measure(path, margin, b, c, d, device, getattr(torch, dtype), repeats)
    # Memory in a child whose large allocations are mmapped (RSS follows live tensors), time in a
    # child with the default allocator (mmap/munmap of every tile would slow the tiled path down).
    results = []
    for env in (dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536"), dict(os.environ)):
        cmd = [
            sys.executable,
            __file__,
            "--repeats",
            str(repeats),
            "--child",
            path,
            margin,
            str(b),
            str(c),
            str(d),
            device,
            dtype,
        ]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if out.returncode != 0:
            return {"note": "failed: " + (out.stderr.strip().splitlines() or ["?"])[-1][:120]}
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {"work_MiB": results[0].get("work_MiB"), "ms": results[1].get("ms"), "note": results[1].get("note", "")}


if __name__ == "__main__":
    main()
