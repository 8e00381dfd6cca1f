"""``qgface`` stage: QGFace quality-guided joint training (IsidoreSong/QGFace ``framework.py``
``FaceModel.training_step``; REFERENCE.md §4).

Each sample gives two views (:class:`PairedViews`, the public ``ContrastDataset`` with ``LH_align``): the
clean face H (random flip) and a degraded face L made as the public ``RandomRescale``: down to a side
``int(U(lo, hi) * H)`` with one of five filters and back up with another, drawn independently per image
(then its own random flip). The backbone embeds ``[H; L]`` in one pass; the identity head (Partial FC
with the ``qgface`` margin: AdaFace with the quality gate) trains on both views; the contrastive term
(:class:`~mrface.losses.QGFaceContrastive`) takes L as q and H as k with their normalised norms from
the head, and its queue (the stage's ``extra`` state, saved with the training state, so resumed runs
continue exactly) is filled with the global batch of both views. loss = identity + ``qgface.weight`` ×
contrastive. The recipe's ``augment.kind`` must be ``none``; ``augment.flip`` switches both flips.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from mrface.losses import QGFace, QGFaceContrastive
from mrface.models import get_model
from mrface.ops import degrade_per_sample
from mrface.training.augment import step_batch_slice, step_generator
from mrface.training.config import TrainConfig
from mrface.training.data import build_dataset, dataset_classes
from mrface.training.distributed import DistEnv
from mrface.training.stages import Stage, _freeze_bn, _make_head

# The public RandomRescale draws from [BICUBIC, BILINEAR, NEAREST, BOX, LANCZOS] (PIL, antialiased when
# shrinking) for the way down and again for the way up; our filters of the same names. PIL's BOX upscale
# is nearest-neighbour up to ties.
DOWN_FILTERS = ("bicubic_aa", "bilinear_aa", "nearest", "area", "lanczos")
UP_FILTERS = ("bicubic", "bilinear", "nearest", "nearest", "lanczos")
_VIEW_STREAM = 2


class PairedViews:
    """Callable ``(images (B, 3, H, W), step, micro) -> (clean, degraded)``, both (B, 3, H, W).

    Draws (flips, sides, down and up filters) are made for the whole step batch from the step's generator
    (stream 2) and sliced per rank and micro-batch as :class:`~mrface.training.augment.ResolutionAugment`
    does, so they do not depend on the number of ranks and a resumed run draws the same. The degraded view
    comes from one :func:`~mrface.ops.degrade_per_sample` call per up filter drawn in the batch.
    """

    def __init__(self, scale: tuple[float, float], flip: bool, seed: int, rank: int, world_size: int,
                 accumulate: int) -> None:  # fmt: skip
        self.lo, self.hi = float(scale[0]), float(scale[1])
        self.flip, self.seed, self.rank, self.world_size, self.accumulate = flip, seed, rank, world_size, accumulate

    def draws(self, b: int, height: int, step: int, micro: int) -> dict[str, Tensor]:
        """This micro-batch's draws: flip_clean, flip_low (B,) bool, sides, down, up (B,) int64."""
        total, own = step_batch_slice(b, self.rank, self.world_size, self.accumulate, micro)
        g = step_generator(self.seed, step, _VIEW_STREAM)
        flip_clean = torch.rand(total, generator=g) < 0.5
        flip_low = torch.rand(total, generator=g) < 0.5
        scale = torch.rand(total, generator=g) * (self.hi - self.lo) + self.lo
        sides = (scale * height).long().clamp(1, height)  # int(target_scale * original_size)
        down = torch.randint(0, len(DOWN_FILTERS), (total,), generator=g)
        up = torch.randint(0, len(UP_FILTERS), (total,), generator=g)
        return {"flip_clean": flip_clean[own], "flip_low": flip_low[own], "sides": sides[own], "down": down[own],
                "up": up[own]}  # fmt: skip

    def __call__(self, images: Tensor, step: int, micro: int) -> tuple[Tensor, Tensor]:
        b, _, height, _ = images.shape
        d = self.draws(b, height, step, micro)
        low = torch.empty_like(images)
        up_names = torch.tensor([sorted(set(UP_FILTERS)).index(n) for n in UP_FILTERS])[d["up"]]
        for k, name in enumerate(sorted(set(UP_FILTERS))):
            idx = (up_names == k).nonzero()[:, 0]
            if idx.numel():
                dev_idx = idx.to(images.device)
                low[dev_idx] = degrade_per_sample(images[dev_idx], d["sides"][idx], d["down"][idx], DOWN_FILTERS, name)
        clean = images
        if self.flip:
            fc, fl = d["flip_clean"].to(images.device), d["flip_low"].to(images.device)
            clean = torch.where(fc[:, None, None, None], images.flip(-1), images)
            low = torch.where(fl[:, None, None, None], low.flip(-1), low)
        return clean, low


def qgface_stage(cfg: TrainConfig, env: DistEnv, dataset: Dataset | None) -> tuple[Stage, Dataset]:
    """The QGFace stage and its dataset (the recipe's, in the model's colour order, unless given)."""
    model = get_model(cfg.model.name, **dict(cfg.model.args))
    if dataset is None:
        dataset, num_classes = build_dataset(cfg.data, cfg.data.color or model.metadata.color_order)
    else:
        num_classes = dataset_classes(dataset)
    head = _make_head(cfg, model.embedding_size, num_classes)
    if not isinstance(head.margin, QGFace):
        raise ValueError(f"stage=qgface: head.name={cfg.head.name!r} must be qgface (the quality-gated AdaFace "
                         "margin whose normalised norms gate the contrastive pairs)")  # fmt: skip
    args = {"s": head.margin.s, "threshold": head.margin.gate_threshold, **dict(cfg.qgface.args)}
    try:
        criterion = QGFaceContrastive(model.embedding_size, cfg.qgface.queue_size, **args)
    except TypeError as err:
        raise ValueError(f"qgface.args={dict(cfg.qgface.args)} do not fit QGFaceContrastive: {err}") from None
    views = PairedViews(tuple(cfg.qgface.scale), cfg.augment.flip, cfg.seed, env.rank, env.world_size,
                        cfg.optim.accumulate)  # fmt: skip
    weight = float(cfg.qgface.weight)

    def loss_fn(net: nn.Module, images: Tensor, labels: Tensor, step: int, micro: int) -> tuple[Tensor, dict]:
        clean, low = views(images, step, micro)
        b = images.shape[0]
        embeddings = net(torch.cat([clean, low]))  # the public order: clean views first
        identity, logs = head(embeddings, torch.cat([labels, labels]))
        z = head.margin.quality(embeddings.detach().float().norm(dim=1))  # the EMAs as the head just left them
        k, q = embeddings.split(b)
        z_k, z_q = z.split(b)
        contrastive, clogs = criterion(q, k, z_q, z_k, labels, head.centres_for)
        logs.update(clogs)
        logs["loss/identity"] = identity.detach()
        return identity + weight * contrastive, logs

    def train_mode() -> None:
        model.train()
        head.train()
        criterion.train()
        if cfg.model.freeze_bn:
            _freeze_bn(model)

    return Stage(model, model, head, loss_fn, train_mode, extra=criterion), dataset
