"""Inference throughput and latency per resolution path: PyTorch eager, torch.compile, onnxruntime.

For each model path (a whole model, or one BTNet path: trunk or branch + shared tail) and batch
size, reports images/s (batch / mean call time) and per-call latency p50/p99 in milliseconds for:

* ``eager``: the PyTorch model in eval mode under ``torch.inference_mode``;
* ``compile``: ``torch.compile(path)`` (default mode; compile time excluded, reported separately);
* ``ort-cpu``: the exported float32 ONNX graph on onnxruntime's CPU provider (and ``ort-cuda``
  with the CUDA provider when a GPU and onnxruntime-gpu are present);
* ``trt-fp16`` (``--backends trt``): a TensorRT FP16 engine built from that graph (needs TensorRT
  and a GPU; never run in our CI).

``--device cuda`` runs eager/compile on the GPU.

The ONNX graph is checked against PyTorch (cosine >= 0.9999) before it is timed. Threads: torch
and onnxruntime both use ``--threads``. Example::

    python benchmarks/bench_inference.py --models iresnet_tiny mobilefacenet btnet_tiny --batches 1 8 64
    python benchmarks/bench_inference.py --models iresnet50 --batches 1 8 --repeats 5
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from common import print_table, write_json, write_partial

from mrface.export.graph import DeployGraph
from mrface.export.onnx import export_onnx
from mrface.export.paths import resolution_path
from mrface.export.session import ort_session
from mrface.export.spec import GraphSpec
from mrface.models import BTNet, get_model

DEFAULT_MODELS = ["iresnet50", "iresnet_tiny", "mobilefacenet", "btnet_r50"]


def latencies(fn: Callable[[], object], repeats: int, warmup: int, device: str) -> list[float]:
    """Wall time of each of ``repeats`` calls (seconds) after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def row(model: str, r: int, backend: str, batch: int, times: list[float], **extra) -> dict:
    ms = np.asarray(times) * 1e3
    return {
        "model": model,
        "resolution": r,
        "backend": backend,
        "batch": batch,
        "img_per_s": round(batch / (ms.mean() / 1e3), 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "calls": len(times),
    } | extra


def ort_providers() -> list[tuple[str, str]]:
    import onnxruntime

    out = [("ort-cpu", "CPUExecutionProvider")]
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        out.append(("ort-cuda", "CUDAExecutionProvider"))
    return out


def bench_path(name: str, model, r: int, args, tmp: Path) -> list[dict]:
    path = resolution_path(model, r)
    meta = model.metadata
    kind = "model" if not isinstance(model, BTNet) else ("trunk" if r == model.trunk.input_size else "branch")
    label = name if kind == "model" else f"{name}:{kind}"
    rows = []
    device = args.device
    path = path.to(device)
    backends = [b for b in args.backends if b in ("eager", "compile")]
    compiled, compile_s = None, None
    for backend in backends:
        fn_model = path
        if backend == "compile":
            compiled = torch.compile(path)
            start = time.perf_counter()
            with torch.inference_mode():
                compiled(torch.randn(args.batches[0], 3, r, r, device=device))
            compile_s = round(time.perf_counter() - start, 1)
            fn_model = compiled
        for b in args.batches:
            x = torch.randn(b, 3, r, r, device=device)
            with torch.inference_mode():
                times = latencies(lambda m=fn_model, x=x: m(x), args.repeats, args.warmup, device)
            extra = {"compile_s": compile_s} if backend == "compile" else {}
            rows.append(row(label, r, f"{backend}-{device}", b, times, **extra))
            print_table(rows[-1:], list(rows[-1]))
    path = path.to("cpu")
    if "ort" in args.backends:
        spec = GraphSpec(name=f"{name}_r{r}", resolution=r, kind=kind)
        file = export_onnx(DeployGraph(path, spec, meta), spec, meta, tmp / f"{name}_r{r}.onnx")
        x = torch.randn(2, 3, r, r)
        with torch.inference_mode():
            ref = path(x).numpy()
        for backend, provider in ort_providers():
            session = ort_session(file, threads=args.threads, providers=(provider,))
            out = session.run(["embedding"], {"input": x.numpy()})[0]
            cos = (out * ref).sum(1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1))
            if cos.min() < 0.9999:
                raise RuntimeError(f"{label} {r}px: ONNX graph disagrees with PyTorch (cosine {cos.min()})")
            for b in args.batches:
                feed = {"input": np.random.default_rng(0).standard_normal((b, 3, r, r), dtype=np.float32)}
                times = latencies(lambda s=session, f=feed: s.run(["embedding"], f), args.repeats, args.warmup, "cpu")
                rows.append(row(label, r, backend, b, times))
                print_table(rows[-1:], list(rows[-1]))
        if "trt" in args.backends:
            rows += bench_tensorrt(label, r, file, args, tmp)
    return rows


def bench_tensorrt(label: str, r: int, onnx_file: Path, args, tmp: Path) -> list[dict]:
    """TensorRT FP16 engine timing (needs TensorRT + a GPU; unverified in our CI)."""
    from mrface.export.tensorrt import TensorRTEngine, build_engine, tensorrt_unavailable_reason
    from mrface.export.tensorrt.config import BatchProfile, EngineBuildConfig

    reason = tensorrt_unavailable_reason()
    if reason:
        print(f"skipping trt-fp16: {reason}")
        return []
    profile = BatchProfile(min(args.batches), min(args.batches), max(args.batches))
    engine_path = tmp / f"{onnx_file.stem}.engine"
    build_engine(onnx_file, engine_path, EngineBuildConfig(precision="fp16", profile=profile))
    engine = TensorRTEngine(engine_path)
    rows = []
    for b in args.batches:
        x = torch.randn(b, 3, r, r, device=engine.device)
        times = latencies(lambda x=x: engine.run(x), args.repeats, args.warmup, "cuda")
        rows.append(row(label, r, "trt-fp16", b, times))
        print_table(rows[-1:], list(rows[-1]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--resolutions", type=int, nargs="+", default=None, help="paths to time (default all)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument(
        "--backends", nargs="+", default=["eager", "compile", "ort"], choices=["eager", "compile", "ort", "trt"]
    )
    parser.add_argument("--device", default="cpu", help="device for eager/compile (cpu or cuda)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            torch.manual_seed(0)
            model = get_model(name).eval()
            for r in model.resolutions:
                if args.resolutions is None or r in args.resolutions:
                    rows += bench_path(name, model, r, args, Path(tmp))
                    write_partial("inference", rows, args.out)
    print()
    print_table(rows, ["model", "resolution", "backend", "batch", "img_per_s", "p50_ms", "p99_ms"])
    write_json("inference", rows, args.out, {"threads": args.threads, "repeats": args.repeats})


if __name__ == "__main__":
    main()
