"""Cases shared by the single-process and the 2-process gloo Partial FC tests.

Run as ``python losses_dist_worker.py RANK WORLD PORT OUTDIR``: joins a gloo group, runs every
case on its slice of the global batch and saves the results to OUTDIR/rank{RANK}.pt.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from mrface.losses import get_head

D, C, N = 16, 23, 10  # embedding size, classes (odd: shards 12/11 at W=2), global batch

# (case name, head name, kwargs, margin buffers to set before the step)
CASES = [
    ("arcface", "arcface", {}, {}),
    ("arcface_st", "arcface", {"gradient": "straight_through"}, {}),
    ("cosface", "cosface", {}, {}),
    ("curricularface", "curricularface", {}, {"t": 0.2}),
    ("adaface", "adaface", {}, {"batch_mean": 25.0, "batch_std": 10.0}),
    ("magface", "magface", {}, {}),
    ("qgface", "qgface", {}, {"batch_mean": 30.0, "batch_std": 8.0}),
]


def global_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Full centres (C, D), embeddings (N, D) with norms in [5, 60], labels (N,) with one ignored."""
    g = torch.Generator().manual_seed(1234)
    weight = torch.randn(C, D, generator=g)
    labels = torch.tensor([3, 15, 22, 3, -1, 0, 11, 12, 7, 19])
    emb = torch.randn(N, D, generator=g)
    emb[:, :] += 0.8 * weight[labels.clamp_min(0)]  # some targets with large cosines
    emb = torch.nn.functional.normalize(emb, dim=1) * torch.linspace(5, 60, N)[:, None]
    return weight, emb, labels


def sampling_labels() -> torch.Tensor:
    """Global labels: 2 distinct classes in shard [0, 12), 5 in shard [12, 23)."""
    return torch.tensor([1, 5, 1, 12, 14, 16, 18, 20, 20, -1])


def build(head_name: str, kwargs: dict, buffers: dict, weight: torch.Tensor, **head_kw):
    head = get_head(head_name, D, C, **kwargs, **head_kw)
    with torch.no_grad():
        head.weight.copy_(weight[head.class_start : head.class_start + head.num_local])
        for k, v in buffers.items():
            getattr(head.margin, k).fill_(v)
    return head


def run_step(head, emb: torch.Tensor, labels: torch.Tensor) -> dict:
    x = emb.clone().requires_grad_(True)
    loss, logs = head(x, labels)
    loss.backward()
    return {
        "loss": loss.detach(),
        "emb_grad": x.grad,
        "weight_grad": head.weight.grad.clone(),
        "buffers": {k: v.clone() for k, v in head.margin.named_buffers()},
        "start": head.class_start,
        "num_local": head.num_local,
        "logs": {k: v.clone() for k, v in logs.items()},
    }


def _error_of(fn) -> str:
    try:
        fn()
    except ValueError as e:
        return str(e)
    return ""


def main(rank: int, world: int, port: int, outdir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    weight, emb, labels = global_inputs()
    b = N // world
    sl = slice(rank * b, (rank + 1) * b)
    out: dict = {"cases": {}}
    out["cases_unfused"] = {}
    for case, name, kw, buffers in CASES:
        torch.manual_seed(0)
        out["cases"][case] = run_step(build(name, kw, buffers, weight), emb[sl], labels[sl])
        out["cases_unfused"][case] = run_step(build(name, kw, buffers, weight, fused=False), emb[sl], labels[sl])

    for key, fused in (("sampling", True), ("sampling_unfused", False)):
        torch.manual_seed(rank)
        head = build("arcface", {}, {}, weight, sample_rate=0.3, fused=fused)
        res = run_step(head, emb[sl], sampling_labels()[sl])
        res["index"] = head.last_sampled_index.clone()
        out[key] = res

    out["centres_for"] = head.centres_for(torch.tensor([0, 22, -1, 11, 12]))

    head = build("arcface", {}, {}, weight)
    out["err_batch"] = _error_of(lambda: head(emb[: (5 if rank == 0 else 4)], labels[: (5 if rank == 0 else 4)]))
    bad = labels[sl].clone()
    if rank == 1:
        bad[0] = C
    out["err_label"] = _error_of(lambda: head(emb[sl], bad))
    out["err_dim"] = _error_of(lambda: head(emb[sl, : (D if rank == 0 else D - 1)], labels[sl]))
    torch.save(out, f"{outdir}/rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
