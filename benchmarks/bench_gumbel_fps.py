"""Benchmark ``mrface.ops.gumbel_fps`` against the PyTorch loops it replaces.

Rows: the fused op on each usable backend (``cpp`` on CPU, ``cuda`` on GPU), the batched PyTorch
loop (K steps of tensor ops over all sets, as the public FaceCoresetNet code does) and the per-set
reference loop (small sets only). Times are medians in ms of forward and forward+backward
(backward of sum(coreset * probe)). ``--sweep`` times B=64, K=8 over N = 16..4096 to show the
linear growth in N. Prints a table and writes JSON.

    python benchmarks/bench_gumbel_fps.py --device cpu --quick --out gumbel_fps_cpu.json
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json

import torch
from common import median_time

from mrface.ops import gumbel_fps, use_backend
from mrface.ops.backend import backend_runs_on
from mrface.ops.gumbel_fps import batched_gumbel_fps_torch
from mrface.ops.reference.gumbel_fps import gumbel_fps_noise, gumbel_fps_reference


def _inputs(sets: int, n: int, dim: int, device: str):
    g = torch.Generator().manual_seed(0)
    features = torch.nn.functional.normalize(torch.randn(sets, n, dim, generator=g), dim=-1).to(device)
    norms = (torch.rand(sets, n, generator=g) * 30 + 5).to(device)
    lengths = torch.full((sets,), n, device=device)
    return features, norms, lengths


def _runners(features, norms, lengths, k: int, device: str, with_reference: bool):
    """name -> (forward fn, forward+backward fn)."""
    probe = torch.randn(features.shape[0], k, features.shape[2], device=device)
    gamma = torch.tensor(0.01, device=device)
    valid = torch.ones(features.shape[:2], dtype=torch.bool, device=device)
    runners = {}

    def op(backend):
        def run(backward: bool):
            f = features.detach().requires_grad_(backward)
            with use_backend(backend):
                out = gumbel_fps(f, norms, lengths, k, gamma, 1.0, True, torch.Generator().manual_seed(0))
            if backward:
                (out.coreset * probe).sum().backward()

        return run

    for backend in ("cuda", "cpp"):
        if backend_runs_on(backend, device):
            runners[f"op[{backend}]"] = op(backend)

    def torch_loop(backward: bool):
        f = features.detach().requires_grad_(backward)
        noise = gumbel_fps_noise(1, features.shape[0], k, features.shape[1], device)
        _, _, coreset, _ = batched_gumbel_fps_torch(f, norms, valid, k, gamma, 1.0, noise)
        if backward:
            (coreset * probe).sum().backward()

    runners["torch batched loop"] = torch_loop
    if with_reference:

        def reference(backward: bool):
            f = features.detach().requires_grad_(backward)
            _, _, coreset = gumbel_fps_reference(f, norms, lengths, k, gamma, 1.0, True, 1)
            if backward:
                (coreset * probe).sum().backward()

        runners["per-set reference"] = reference
    return runners


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="B in {1, 64}, N in {20, 200}, fewer repeats")
    parser.add_argument("--sweep", action="store_true", help="B=64, K=8, N = 16..4096 (linear growth)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--max-gib", type=float, default=2.0, help="skip configs whose features exceed this")
    parser.add_argument("--out", default="bench_gumbel_fps.json")
    args = parser.parse_args()
    repeats = 3 if args.quick else 10
    if args.sweep:
        grid = [(64, n, 8) for n in (16, 64, 256, 1024, 4096)]
    elif args.quick:
        grid = list(itertools.product((1, 64), (20, 200), (3, 8)))
    else:
        grid = list(itertools.product((1, 64, 1024), (20, 200, 2000), (3, 8)))
    rows = []
    print(f"device={args.device} D={args.dim} threads={torch.get_num_threads()}")
    print(f"{'B':>5} {'N':>5} {'K':>2}  {'impl':<20} {'fwd ms':>10} {'fwd+bwd ms':>11}  {'fwd speed-up':>12}")
    for sets, n, k in grid:
        if sets * n * args.dim * 4 / 2**30 > args.max_gib:
            print(f"{sets:>5} {n:>5} {k:>2}  skipped: features larger than {args.max_gib} GiB")
            continue
        features, norms, lengths = _inputs(sets, n, args.dim, args.device)
        with_reference = sets * n <= 64 * 200
        results = {}
        for name, run in _runners(features, norms, lengths, k, args.device, with_reference).items():
            fwd = median_time(lambda run=run: run(False), args.device, repeats) * 1e3
            both = median_time(lambda run=run: run(True), args.device, repeats) * 1e3
            results[name] = (fwd, both)
        loop_fwd = results["torch batched loop"][0]
        for name, (fwd, both) in results.items():
            print(f"{sets:>5} {n:>5} {k:>2}  {name:<20} {fwd:>10.3f} {both:>11.3f}  {loop_fwd / fwd:>11.1f}x")
            rows.append({"B": sets, "N": n, "K": k, "D": args.dim, "impl": name, "forward_ms": fwd,
                         "forward_backward_ms": both})  # fmt: skip
    pytorch3d = importlib.util.find_spec("pytorch3d") is not None
    print(f"pytorch3d sample_farthest_points: {'installed (not compared yet)' if pytorch3d else 'not installed'}")
    info = {"device": args.device, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "pytorch3d_installed": pytorch3d, "rows": rows}  # fmt: skip
    if args.device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    with open(args.out, "w") as fh:
        json.dump(info, fh, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
