"""Small torch.distributed helpers shared by the heads (world size 1 when no group is set up)."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

ProcessGroup = dist.ProcessGroup | None


def active(group: ProcessGroup = None) -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size(group: ProcessGroup = None) -> int:
    return dist.get_world_size(group) if active(group) else 1


def rank(group: ProcessGroup = None) -> int:
    return dist.get_rank(group) if active(group) else 0


def all_gather_cat(x: Tensor, group: ProcessGroup = None) -> Tensor:
    """Concatenate equally shaped tensors of every rank along dim 0 (no gradient)."""
    w = world_size(group)
    if w == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(w)]
    dist.all_gather(parts, x.contiguous(), group=group)
    return torch.cat(parts, 0)


def all_reduce(x: Tensor, op: str = "sum", group: ProcessGroup = None) -> Tensor:
    """In-place all-reduce of ``x`` (no gradient); returns ``x``."""
    if world_size(group) > 1:
        dist.all_reduce(x, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM, group=group)
    return x


class _AllGatherGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums every rank's gradient of a slice onto the slice's
    owner and multiplies by the world size W (REFERENCE.md §5), so that after DDP divides the
    backbone gradients by W they equal the gradient of the global-batch loss."""

    @staticmethod
    def forward(ctx, x: Tensor, group: ProcessGroup) -> Tensor:
        ctx.group = group
        return all_gather_cat(x, group)

    @staticmethod
    def backward(ctx, grad: Tensor):
        group = ctx.group
        w, r = world_size(group), rank(group)
        slices = list(grad.contiguous().clone().chunk(w, dim=0))
        works = [
            dist.reduce(
                s,
                dst=dist.get_global_rank(group or dist.group.WORLD, i),
                op=dist.ReduceOp.SUM,
                group=group,
                async_op=True,
            )
            for i, s in enumerate(slices)
        ]
        for work in works:
            work.wait()
        return slices[r] * w, None


def all_gather_with_grad(x: Tensor, group: ProcessGroup = None) -> Tensor:
    """(B, ...) per rank -> (W*B, ...) with the Partial FC backward (identity when W == 1)."""
    if world_size(group) == 1:
        return x
    return _AllGatherGrad.apply(x, group)
