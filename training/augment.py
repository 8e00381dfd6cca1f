"""On-device resolution augmentation of training batches through ``mrface.ops`` (REFERENCE.md §2, §7).

* ``btnet``: each image is resized to a random r in ``sizes`` (antialiased bilinear) and back to
  its input size (bilinear) — the multi-resolution TNet recipe.
* ``adaface``: each image gets a random side in [min_size, H], a down filter and, drawn on its own,
  an up filter among cv2's nearest/linear/area/cubic/lanczos (AdaFace's low-resolution
  augmentation, ``dataset/augmenter.py``; cv2's INTER_AREA has no enlarging counterpart in the
  degradation op, so an "area" up draw enlarges bilinearly).
* ``flip``: random horizontal flip.
* ``crop_prob`` (any kind): AdaFace's crop augmentation: a torchvision RandomResizedCrop box (scale
  0.2-1, ratio 3/4-4/3, ten tries then the whole image) is kept in place and the rest set to black.
* ``photometric_prob`` (any kind): AdaFace's ColorJitter(brightness=0.5, contrast=0.5, saturation=0.5):
  factors uniform in [0.5, 1.5], the three adjustments in a random order, on [0, 1] pixels with
  torchvision's float formulas (no rounding to uint8 between adjustments).

Order as AdaFace's Augmenter: flip, crop, resolution, photometric.

The random draws of optimiser step s are made for the whole step batch (every rank and every
accumulated micro-batch) from a generator seeded by (seed, s); micro-batch a of rank r applies
the slice starting at (a * world_size + r) * B. So the images seen do not depend on how a step is
split over ranks and micro-batches, and a resumed run draws the same values.
"""

from __future__ import annotations

import math

import torch

from mrface.ops import degrade_per_sample
from mrface.ops.degrade import ADAFACE_FILTERS
from mrface.training.config import AugmentConfig

_UP_OF = {"nearest": "nearest", "bilinear": "bilinear", "area": "bilinear", "bicubic": "bicubic", "lanczos": "lanczos"}
_GRAY_RGB = (0.2989, 0.587, 0.114)  # torchvision rgb_to_grayscale


def crop_boxes(
    total: int,
    height: int,
    width: int,
    g: torch.Generator,
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    tries: int = 10,
) -> torch.Tensor:
    """(total, 4) int64 boxes (top, left, h, w) drawn as torchvision RandomResizedCrop.get_params."""
    area = height * width
    target = area * (scale[0] + (scale[1] - scale[0]) * torch.rand(total, tries, generator=g, dtype=torch.float64))
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(lo + (hi - lo) * torch.rand(total, tries, generator=g, dtype=torch.float64))
    w = torch.round(torch.sqrt(target * aspect)).long()
    h = torch.round(torch.sqrt(target / aspect)).long()
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((total,), -1))
    rows = torch.arange(total)
    in_ratio = width / height  # fallback: the central crop of torchvision (whole image for a square)
    if in_ratio < ratio[0]:
        fw, fh = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        fw, fh = int(round(height * ratio[1])), height
    else:
        fw, fh = width, height
    hh = torch.where(first >= 0, h[rows, first.clamp_min(0)], torch.full((total,), fh))
    ww = torch.where(first >= 0, w[rows, first.clamp_min(0)], torch.full((total,), fw))
    u = torch.rand(total, 2, generator=g, dtype=torch.float64)
    top = torch.where(first >= 0, (u[:, 0] * (height - hh + 1)).long(), (height - hh) // 2)
    left = torch.where(first >= 0, (u[:, 1] * (width - ww + 1)).long(), (width - ww) // 2)
    return torch.stack([top, left, hh, ww], 1)


def apply_crop(x01: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """x01 (B, C, H, W) in [0, 1], boxes (B, 4) (top, left, h, w): pixels outside each box become 0."""
    _, _, height, width = x01.shape
    b = boxes.to(x01.device)
    ys = torch.arange(height, device=x01.device)[None, :]
    xs = torch.arange(width, device=x01.device)[None, :]
    in_y = (ys >= b[:, :1]) & (ys < b[:, :1] + b[:, 2:3])
    in_x = (xs >= b[:, 1:2]) & (xs < b[:, 1:2] + b[:, 3:4])
    return x01 * (in_y[:, None, :, None] & in_x[:, None, None, :])


def apply_photometric(
    x01: torch.Tensor, order: torch.Tensor, factors: torch.Tensor, rgb: tuple[int, int, int]
) -> torch.Tensor:
    """torchvision adjust_brightness / adjust_contrast / adjust_saturation on [0, 1] pixels.

    Args: x01 (B, 3, H, W); order (B, 4) a permutation of 0..3 per image (0 brightness, 1 contrast,
    2 saturation, 3 hue: skipped, as hue=0); factors (B, 3); rgb: channel indices of R, G, B.
    """
    f = factors.to(x01)
    order = order.to(x01.device)

    def gray(img: torch.Tensor) -> torch.Tensor:
        return sum(w * img[:, c : c + 1] for w, c in zip(_GRAY_RGB, rgb, strict=True))

    for k in range(order.shape[1]):
        op = order[:, k][:, None, None, None]
        bright = (x01 * f[:, 0, None, None, None]).clamp(0, 1)
        mean = gray(x01).mean(dim=(1, 2, 3), keepdim=True)
        contrast = (f[:, 1, None, None, None] * x01 + (1 - f[:, 1, None, None, None]) * mean).clamp(0, 1)
        sat = (f[:, 2, None, None, None] * x01 + (1 - f[:, 2, None, None, None]) * gray(x01)).clamp(0, 1)
        x01 = torch.where(op == 0, bright, torch.where(op == 1, contrast, torch.where(op == 2, sat, x01)))
    return x01


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """A CPU generator for optimiser step ``step`` (independent streams for independent uses)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 7 + stream)


def step_batch_slice(b: int, rank: int, world_size: int, accumulate: int, micro: int) -> tuple[int, slice]:
    """(size of the whole step batch, this micro-batch's slice of it): draws made for the whole step
    batch and sliced by this (not by rank or micro-batch alone) do not depend on how the step is split."""
    offset = (micro * world_size + rank) * b
    return b * world_size * accumulate, slice(offset, offset + b)


class ResolutionAugment:
    """Callable ``(images (B, 3, H, W) float on device, step, micro) -> images`` (see module doc).

    ``mean``/``std``/``color_order``: the images' normalisation ``(x / 255 - mean) / std`` (the model's
    metadata), needed by the crop (black) and photometric options, which work on [0, 1] pixels.
    """

    def __init__(
        self,
        cfg: AugmentConfig,
        seed: int,
        rank: int,
        world_size: int,
        accumulate: int,
        mean: tuple[float, ...] = (0.5, 0.5, 0.5),
        std: tuple[float, ...] = (0.5, 0.5, 0.5),
        color_order: str = "RGB",
    ) -> None:
        self.cfg, self.seed, self.rank, self.world_size, self.accumulate = cfg, seed, rank, world_size, accumulate
        self.mean, self.std = torch.tensor(mean)[None, :, None, None], torch.tensor(std)[None, :, None, None]
        self.rgb = (0, 1, 2) if color_order.upper() == "RGB" else (2, 1, 0)

    def _pixel_ops(self, images: torch.Tensor, g: torch.Generator, total: int, own: slice, stage: str) -> torch.Tensor:
        """Crop (stage "crop") or photometric (stage "photo") on the selected images, in [0, 1] pixels."""
        cfg = self.cfg
        b, _, height, width = images.shape
        if stage == "crop":
            pick = (torch.rand(total, generator=g) < cfg.crop_prob)[own]
            boxes = crop_boxes(total, height, width, g)[own]
        else:
            pick = (torch.rand(total, generator=g) < cfg.photometric_prob)[own]
            order = torch.argsort(torch.rand(total, 4, generator=g), dim=1)[own]
            factors = (0.5 + torch.rand(total, 3, generator=g))[own]
        if not bool(pick.any()):
            return images
        idx = pick.nonzero()[:, 0].to(images.device)
        mean, std = self.mean.to(images), self.std.to(images)
        x01 = images[idx] * std + mean
        if stage == "crop":
            x01 = apply_crop(x01, boxes[pick])
        else:
            x01 = apply_photometric(x01, order[pick], factors[pick], self.rgb)
        out = images.clone()
        out[idx] = ((x01 - mean) / std).to(images.dtype)
        return out

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
        if cfg.crop_prob > 0:  # own streams: adding an option leaves the other draws unchanged
            images = self._pixel_ops(images, step_generator(self.seed, step, stream=2), total, own, "crop")
        images = self._resolution(images, g, total, own)
        if cfg.photometric_prob > 0:
            images = self._pixel_ops(images, step_generator(self.seed, step, stream=3), total, own, "photo")
        return images

    def _resolution(self, images: torch.Tensor, g: torch.Generator, total: int, own: slice) -> torch.Tensor:
        cfg = self.cfg
        b, _, height, _ = images.shape

        def mine(values: torch.Tensor) -> torch.Tensor:
            return values[own]

        if cfg.kind == "none":
            return images
        degrade = mine(torch.rand(total, generator=g) < cfg.prob)
        if cfg.kind == "btnet":
            choices = torch.tensor(cfg.sizes, dtype=torch.int64)
            sides = mine(choices[torch.randint(0, len(choices), (total,), generator=g)])
            filters, filter_ids, up = (cfg.filter,), torch.zeros(b, dtype=torch.int64), cfg.up
            up_ids = torch.zeros(b, dtype=torch.int64)
            up_names = (up,)
        else:
            sides = mine(torch.randint(cfg.min_size, height + 1, (total,), generator=g))
            filters = ADAFACE_FILTERS
            filter_ids = mine(torch.randint(0, len(filters), (total,), generator=g))
            up_ids = mine(torch.randint(0, len(filters), (total,), generator=g))
            up_names = tuple(_UP_OF[f] for f in filters)
        keep = ~degrade | (sides >= height)
        if bool(keep.all()):
            return images
        out = images.clone()
        for u in sorted(set(up_names)):
            sel = ~keep & torch.isin(up_ids, torch.tensor([k for k, n in enumerate(up_names) if n == u]))
            idx = sel.nonzero()[:, 0]
            if idx.numel():
                dev_idx = idx.to(images.device)
                out[dev_idx] = degrade_per_sample(images[dev_idx], sides[idx], filter_ids[idx], filters, u)
        return out


class StudentResize:
    """Callable ``(images (B, 3, H, W), step, micro) -> [(B, 3, r, r) per r]``: branch distillation inputs.

    With several ``filters`` each image draws one (from the step's generator, stream 1, sliced per
    rank and micro-batch like :class:`ResolutionAugment`), so the branches learn from antialiased and
    aliased low-resolution faces alike; every r of one image uses the same filter.
    """

    def __init__(
        self, resolutions: list[int], filters: list[str], seed: int, rank: int, world_size: int, accumulate: int
    ) -> None:
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
                for out, low in zip(
                    outs, degrade_resolution(images[idx], self.resolutions, filter=name).down, strict=True
                ):
                    out[idx] = low
        return outs
