"""On-device resolution augmentation of training batches through ``mrface.ops`` (REFERENCE.md §2, §7).

* ``btnet``: each image is resized to a random r in ``sizes`` (antialiased bilinear) and back to
  its input size (bilinear) — the multi-resolution TNet recipe.
* ``adaface``: each image gets a random side in [min_size, H] and a random filter among
  nearest/bilinear/area/bicubic, then back up (AdaFace's low-resolution augmentation).
* ``flip``: random horizontal flip.

The random draws of micro-batch m are made for the whole global batch from a generator seeded by
(seed, m), and each rank applies its slice, so the result does not depend on the number of ranks
and a resumed run draws the same values.
"""

from __future__ import annotations

import torch

from mrface.ops import degrade_per_sample
from mrface.training.config import AugmentConfig


def step_generator(seed: int, micro_index: int, stream: int = 0) -> torch.Generator:
    """A CPU generator for micro-batch ``micro_index`` (independent streams for independent uses)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + micro_index) * 7 + stream)


class ResolutionAugment:
    """Callable ``(images (B, 3, H, W) float on device, micro_index) -> images`` (see module doc)."""

    def __init__(self, cfg: AugmentConfig, seed: int, rank: int, world_size: int) -> None:
        self.cfg, self.seed, self.rank, self.world_size = cfg, seed, rank, world_size

    def _mine(self, values: torch.Tensor, batch: int) -> torch.Tensor:
        return values[self.rank * batch : (self.rank + 1) * batch]

    def __call__(self, images: torch.Tensor, micro_index: int) -> torch.Tensor:
        cfg = self.cfg
        b, _, height, _ = images.shape
        total = b * self.world_size
        g = step_generator(self.seed, micro_index)
        if cfg.flip:
            flip = self._mine(torch.rand(total, generator=g) < 0.5, b).to(images.device)
            images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        if cfg.kind == "none":
            return images
        degrade = self._mine(torch.rand(total, generator=g) < cfg.prob, b)
        if cfg.kind == "btnet":
            choices = torch.tensor(cfg.sizes, dtype=torch.int64)
            sides = self._mine(choices[torch.randint(0, len(choices), (total,), generator=g)], b)
            filters, filter_ids, up = (cfg.filter,), torch.zeros(b, dtype=torch.int64), cfg.up
        else:
            sides = self._mine(torch.randint(cfg.min_size, height + 1, (total,), generator=g), b)
            filters = ("nearest", "bilinear", "area", "bicubic")
            filter_ids, up = self._mine(torch.randint(0, 4, (total,), generator=g), b), "same"
        keep = ~degrade | (sides >= height)
        if bool(keep.all()):
            return images
        idx = (~keep).nonzero()[:, 0]
        low = degrade_per_sample(images[idx.to(images.device)], sides[idx], filter_ids[idx], filters, up)
        out = images.clone()
        out[idx.to(images.device)] = low
        return out


def resize_to(images: torch.Tensor, resolutions: list[int], filter: str) -> list[torch.Tensor]:
    """(B, 3, H, W) -> one (B, 3, r, r) batch per r (the student inputs of branch distillation)."""
    from mrface.ops import degrade_resolution

    return degrade_resolution(images, [int(r) for r in resolutions], filter=filter).down
