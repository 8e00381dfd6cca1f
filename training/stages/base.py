"""What every training stage provides (:class:`Stage`) and the pieces the stages share: the Partial FC head
with its seed-determined initial centres, and BatchNorm freezing.

A :class:`Stage` holds the saved model, the module run under DDP (``net``), the head, the loss
function and how to put everything in training mode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.data import Sampler

from mrface.losses import PartialFC, get_head
from mrface.models import FaceModel
from mrface.models.metadata import ModelMetadata
from mrface.training.augment import ResolutionAugment
from mrface.training.config import TrainConfig
from mrface.training.distributed import DistEnv

LossFn = Callable[[nn.Module, Tensor, Tensor, int, int], tuple[Tensor, dict[str, Tensor]]]
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm)


@dataclass
class Stage:
    model: FaceModel  # saved as model.safetensors
    net: nn.Module  # forward module wrapped in DDP (holds every trainable backbone parameter)
    head: PartialFC | None  # sharded classifier (frozen in distill; None in dcr, whose branches classify)
    loss_fn: LossFn  # (net, images (B, 3, H, W), labels (B,), step, micro-batch of the step) -> (loss, logs)
    train_mode: Callable[[], None]
    extra: nn.Module | None = None  # loss-side state (DCR's centres): trains with the head, saved per rank
    sampler: Callable[..., Sampler] | None = None  # GlobalBatchSampler's signature; None = GlobalBatchSampler
    # optim.clip_grad applies to each group's norm on its own (None: one group, every backbone parameter)
    clip_groups: list[list[nn.Parameter]] | None = None


def freeze_bn(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, _BN):
            m.eval()


_INIT_BLOCK = 65536  # classes per independently seeded block of initial centres


@torch.no_grad()
def init_centres(head: PartialFC, seed: int, std: float = 0.01) -> None:
    """N(0, std) centres that depend on (seed, class) only, not on how the classes are sharded.

    Class block b (``_INIT_BLOCK`` classes) is drawn from a generator seeded by (seed, b); each rank
    draws only the blocks overlapping its shard.
    """
    start, stop = head.class_start, head.class_start + head.num_local
    for block in range(start // _INIT_BLOCK, (stop - 1) // _INIT_BLOCK + 1):
        lo = block * _INIT_BLOCK
        n = min(_INIT_BLOCK, head.num_classes - lo)
        g = torch.Generator().manual_seed(seed * 1_000_003 + block)
        rows = torch.normal(0.0, std, (n, head.embedding_size), generator=g)
        a, b = max(start, lo), min(stop, lo + n)
        head.weight[a - start : b - start] = rows[a - lo : b - lo].to(head.weight)


def make_head(cfg: TrainConfig, embedding_size: int, num_classes: int) -> PartialFC:
    try:
        head = get_head(
            cfg.head.name,
            embedding_size,
            num_classes,
            sample_rate=cfg.head.sample_rate,
            fused=cfg.head.fused,
            **dict(cfg.head.args),
        )
    except TypeError as err:
        raise ValueError(f"head.args={dict(cfg.head.args)} do not fit head.name={cfg.head.name!r}: {err}") from None
    init_centres(head, cfg.seed)
    return head


def make_augment(cfg: TrainConfig, env: DistEnv, meta: ModelMetadata) -> ResolutionAugment:
    """The on-device augmentation of ``cfg.augment`` for this rank, normalising with the model's mean/std
    and colour order (``cfg.data.color`` overrides the order)."""
    return ResolutionAugment(
        cfg.augment,
        cfg.seed,
        env.rank,
        env.world_size,
        cfg.optim.accumulate,
        meta.mean,
        meta.std,
        cfg.data.color or meta.color_order,
    )
