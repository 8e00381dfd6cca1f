"""Process-group setup from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT).

Without those variables the run is a single process and no process group is created. The backend
is NCCL when CUDA is available, gloo otherwise (``MRFACE_DIST_BACKEND`` forces one).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the job; ``device`` is where its model lives."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r}: expected an integer (set by torchrun)") from None


def init_distributed() -> DistEnv:
    """Join the process group described by torchrun's environment (or none) and pick the device."""
    world_size = _env_int("WORLD_SIZE", 1)
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if not 0 <= rank < world_size:
        raise ValueError(f"RANK={rank} must lie in [0, WORLD_SIZE={world_size})")
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank % torch.cuda.device_count()) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        for var in ("MASTER_ADDR", "MASTER_PORT"):
            if var not in os.environ:
                raise ValueError(f"WORLD_SIZE={world_size} but {var} is not set: launch with torchrun")
        backend = os.environ.get("MRFACE_DIST_BACKEND", "nccl" if cuda else "gloo")
        dist.init_process_group(
            backend, rank=rank, world_size=world_size, device_id=device if backend == "nccl" else None
        )
    return DistEnv(rank, world_size, local_rank, device)


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def all_agree(env: DistEnv, flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any rank (e.g. "a stop signal arrived")."""
    if not env.distributed:
        return flag
    t = torch.tensor([int(flag)], device=env.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def shutdown_if_initialised() -> None:
    """Leave the process group (if this process joined one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
