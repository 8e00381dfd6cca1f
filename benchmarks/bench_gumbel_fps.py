"""Benchmark ``mrface.ops.gumbel_fps`` against plain PyTorch loops.

Rows: the fused op on each usable backend (``cpp`` on CPU, ``cuda`` on GPU; forward and backward
kernels), the batched PyTorch loop (K steps of tensor ops over all sets, as the public
FaceCoresetNet code does) and the per-set reference loop (small sets only). Times are medians in
ms of forward and forward+backward (backward of sum(coreset * probe)). ``--sweep`` times B=64,
K=8 over N = 16..4096 to show the linear growth in N. Prints a table and writes JSON.

Roofline of the forward: ``floor_ms`` is the compulsory traffic (read the features and norms once,
write the coreset and its indices once) over the copy bandwidth measured in the same run
(benchmarks/common.py); ``achieved`` = floor / forward time. The K selection steps are sequential,
so the op cannot reach this floor at small B; the column shows how far it is.

    python benchmarks/bench_gumbel_fps.py --device cpu --quick --out gumbel_fps_cpu.json
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools

import torch
from common import copy_bandwidth, machine, median_time, roofline, roofs_line, write_json

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
    parser.add_argument("--out", default=None, help="JSON path (default: bench_results/gumbel_fps-<time>.json)")
    args = parser.parse_args()
    repeats = 3 if args.quick else 10
    if args.sweep:
        grid = [(64, n, 8) for n in (16, 64, 256, 1024, 4096)]
    elif args.quick:
        grid = list(itertools.product((1, 64), (20, 200), (3, 8)))
    else:
        grid = list(itertools.product((1, 64, 1024), (20, 200, 2000), (3, 8)))
    rows = []
    bandwidth = copy_bandwidth(args.device)
    print(f"device={args.device} D={args.dim} threads={torch.get_num_threads()}")
    print(roofs_line(bandwidth, None) + " (forward: read features and norms, write the coreset once)")
    print(
        f"{'B':>5} {'N':>5} {'K':>2}  {'impl':<20} {'fwd ms':>10} {'fwd+bwd ms':>11}  {'fwd speed-up':>12}"
        f"  {'f+b speed-up':>12}  {'floor ms':>9} {'achieved':>8}"
    )
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
        loop_fwd, loop_both = results["torch batched loop"]
        for name, (fwd, both) in results.items():
            roof = roofline(fwd / 1e3, nbytes=forward_bytes(sets, n, k, args.dim), bandwidth=bandwidth)
            print(
                f"{sets:>5} {n:>5} {k:>2}  {name:<20} {fwd:>10.3f} {both:>11.3f}  {loop_fwd / fwd:>11.1f}x"
                f"  {loop_both / both:>11.1f}x  {roof['floor_ms']:>9.4f} {roof['achieved']:>8.3f}"
            )
            rows.append(
                {
                    "B": sets,
                    "N": n,
                    "K": k,
                    "D": args.dim,
                    "impl": name,
                    "forward_ms": fwd,
                    "forward_backward_ms": both,
                    "fwd_speedup_vs_loop": loop_fwd / fwd,
                    "fwd_bwd_speedup_vs_loop": loop_both / both,
                    "floor_ms": roof["floor_ms"],
                    "of_floor": roof["of_floor"],
                    "achieved": roof["achieved"],
                }
            )
    pytorch3d = importlib.util.find_spec("pytorch3d") is not None
    print(f"pytorch3d sample_farthest_points: {'installed (not compared yet)' if pytorch3d else 'not installed'}")
    print(f"machine: {machine()}")
    write_json(
        "gumbel_fps",
        rows,
        args.out,
        {
            "device": args.device,
            "threads": torch.get_num_threads(),
            "pytorch3d_installed": pytorch3d,
            "copy_bandwidth": bandwidth,
        },
    )


def forward_bytes(sets: int, n: int, k: int, dim: int) -> int:
    """Compulsory forward traffic in bytes: features (B, N, D) and norms (B, N) in, coreset (B, K, D) and
    int64 indices (B, K) out, float32."""
    return 4 * (sets * n * dim + sets * n + sets * k * dim) + 8 * sets * k


if __name__ == "__main__":
    main()
