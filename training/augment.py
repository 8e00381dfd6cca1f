"""On-device resolution augmentation of training batches through ``mrface.ops`` (REFERENCE.md §2, §7).

* ``btnet``: each image is resized to a random r in ``sizes`` (antialiased bilinear) and back to
  its input size (bilinear) — the multi-resolution TNet recipe.
* ``adaface``: each image gets a random side in [min_size, H] and a random filter among
  nearest/bilinear/area/bicubic, then back up (AdaFace's low-resolution augmentation).
* ``flip``: random horizontal flip.

The random draws of optimiser step s are made for the whole step batch (every rank and every
accumulated micro-batch) from a generator seeded by (seed, s); micro-batch a of rank r applies
the slice starting at (a * world_size + r) * B. So the images seen do not depend on how a step is
split over ranks and micro-batches, and a resumed run draws the same values.
"""

from __future__ import annotations

import torch

from mrface.ops import degrade_per_sample
from mrface.training.config import AugmentConfig


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """A CPU generator for optimiser step ``step`` (independent streams for independent uses)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 7 + stream)


def step_batch_slice(b: int, rank: int, world_size: int, accumulate: int, micro: int) -> tuple[int, slice]:
    """(size of the whole step batch, this micro-batch's slice of it): draws made for the whole step
    batch and sliced by this (not by rank or micro-batch alone) do not depend on how the step is split."""
    offset = (micro * world_size + rank) * b
    return b * world_size * accumulate, slice(offset, offset + b)


class ResolutionAugment:
    """Callable ``(images (B, 3, H, W) float on device, step, micro) -> images`` (see module doc)."""

    def __init__(self, cfg: AugmentConfig, seed: int, rank: int, world_size: int, accumulate: int) -> None:
        self.cfg, self.seed, self.rank, self.world_size, self.accumulate = cfg, seed, rank, world_size, accumulate

    def __call__(self, images: torch.Tensor, step: int, micro: int) -> torch.Tensor:
        cfg = self.cfg
        b, _, height, _ = images.shape
        total, own = step_batch_slice(b, self.rank, self.world_size, self.accumulate, micro)
        g = step_generator(self.seed, step)

        def mine(values: torch.Tensor) -> torch.Tensor:
            return values[own]

        if cfg.flip:
            flip = mine(torch.rand(total, generator=g) < 0.5).to(images.device)
            images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        if cfg.kind == "none":
            return images
        degrade = mine(torch.rand(total, generator=g) < cfg.prob)
        if cfg.kind == "btnet":
            choices = torch.tensor(cfg.sizes, dtype=torch.int64)
            sides = mine(choices[torch.randint(0, len(choices), (total,), generator=g)])
            filters, filter_ids, up = (cfg.filter,), torch.zeros(b, dtype=torch.int64), cfg.up
        else:
            sides = mine(torch.randint(cfg.min_size, height + 1, (total,), generator=g))
            filters = ("nearest", "bilinear", "area", "bicubic")
            filter_ids, up = mine(torch.randint(0, 4, (total,), generator=g)), "same"
        keep = ~degrade | (sides >= height)
        if bool(keep.all()):
            return images
        idx = (~keep).nonzero()[:, 0]
        low = degrade_per_sample(images[idx.to(images.device)], sides[idx], filter_ids[idx], filters, up)
        out = images.clone()
        out[idx.to(images.device)] = low
        return out


class StudentResize:
    """Callable ``(images (B, 3, H, W), step, micro) -> [(B, 3, r, r) per r]``: branch distillation inputs.

    With several ``filters`` each image draws one (from the step's generator, stream 1, sliced per
    rank and micro-batch like :class:`ResolutionAugment`), so the branches learn from antialiased and
    aliased low-resolution faces alike; every r of one image uses the same filter.
    """

    def __init__(self, resolutions: list[int], filters: list[str], seed: int, rank: int, world_size: int,
                 accumulate: int) -> None:  # fmt: skip
        if not filters:
            raise ValueError("distill.filters: give at least one down filter, e.g. [bilinear_aa]")
        self.resolutions, self.filters = [int(r) for r in resolutions], list(filters)
        self.seed, self.rank, self.world_size, self.accumulate = seed, rank, world_size, accumulate

    def __call__(self, images: torch.Tensor, step: int, micro: int) -> list[torch.Tensor]:
        from mrface.ops import degrade_resolution

        if len(self.filters) == 1:
            return degrade_resolution(images, self.resolutions, filter=self.filters[0]).down
        b = images.shape[0]
        total, own = step_batch_slice(b, self.rank, self.world_size, self.accumulate, micro)
        g = step_generator(self.seed, step, stream=1)
        ids = torch.randint(0, len(self.filters), (total,), generator=g)[own].to(images.device)
        outs = [images.new_empty(b, images.shape[1], r, r) for r in self.resolutions]
        for k, name in enumerate(self.filters):
            idx = (ids == k).nonzero()[:, 0]
            if idx.numel():
                for out, low in zip(outs, degrade_resolution(images[idx], self.resolutions, filter=name).down,
                                    strict=True):  # fmt: skip
                    out[idx] = low
        return outs
