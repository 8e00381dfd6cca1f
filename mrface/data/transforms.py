"""Degradation transforms for the CPU data pipeline: resolution down/up, JPEG, blur, noise.

Every transform takes an image tensor (3, H, W) or a batch (N, 3, H, W), uint8 or float (float
values on the 0..255 scale), and returns the same shape and dtype. Randomness comes from the
``generator`` given at construction, else torch's global RNG (which DataLoader seeds per worker).
Resolution changes go through :func:`mrface.ops.degrade_resolution` / ``degrade_per_sample``.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from mrface.ops import DEGRADE_FILTERS, degrade_per_sample, degrade_resolution

__all__ = ["Compose", "FixedResolution", "GaussianBlur", "GaussianNoise", "JpegQuality", "RandomResolution"]


def _as_batch(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if x.dim() == 3:
        return x[None], True
    if x.dim() == 4:
        return x, False
    raise ValueError(f"expected an image (3, H, W) or batch (N, 3, H, W), got shape {tuple(x.shape)}")


def _rand(n: int, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, generator=generator)


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: list) -> None:
        self.transforms = list(transforms)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for t in self.transforms:
            x = t(x)
        return x


class FixedResolution:
    """Down to ``size`` x ``size`` with ``filter`` and (with ``up``) back to the input size."""

    def __init__(self, size: int, filter: str = "area", up: str | None = "bilinear") -> None:
        self.size, self.filter, self.up = size, filter, up

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        batch, single = _as_batch(x)
        out = degrade_resolution(batch, [self.size], self.filter, self.up)
        res = out.up[0] if self.up else out.down[0]
        return res[0] if single else res


class RandomResolution:
    """With probability ``p``, down to a random side in [min_size, max_size] and back up (per image).

    Args:
        filters: down filters to draw from uniformly (names in :data:`mrface.ops.DEGRADE_FILTERS`).
        up: up filter or ``same`` (see :func:`mrface.ops.degrade_per_sample`).
    """

    def __init__(
        self,
        min_size: int = 7,
        max_size: int = 112,
        filters: tuple[str, ...] = ("area", "bilinear_aa"),
        up: str = "bilinear",
        p: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        for f in filters:
            if f not in DEGRADE_FILTERS:
                raise ValueError(f"RandomResolution: filter {f!r} is not one of {DEGRADE_FILTERS}")
        if not 1 <= min_size <= max_size:
            raise ValueError(f"RandomResolution: need 1 <= min_size <= max_size, got {min_size}, {max_size}")
        self.min_size, self.max_size, self.filters, self.up = min_size, max_size, tuple(filters), up
        self.p, self.generator = p, generator

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        batch, single = _as_batch(x)
        n, h = batch.shape[0], batch.shape[-2]
        hi = min(self.max_size, h)
        sides = torch.randint(min(self.min_size, hi), hi + 1, (n,), generator=self.generator)
        fids = torch.randint(0, len(self.filters), (n,), generator=self.generator)
        apply = _rand(n, self.generator) < self.p
        sides = torch.where(apply, sides, torch.full_like(sides, h))
        out = degrade_per_sample(batch, sides, fids, self.filters, self.up)
        out = torch.where(apply[:, None, None, None], out, batch)
        return out[0] if single else out


class JpegQuality:
    """With probability ``p``, JPEG-encode and decode at a quality drawn uniformly in [low, high]."""

    def __init__(self, low: int = 30, high: int = 95, p: float = 1.0, generator: torch.Generator | None = None) -> None:
        if not 1 <= low <= high <= 100:
            raise ValueError(f"JpegQuality: need 1 <= low <= high <= 100, got {low}, {high}")
        self.low, self.high, self.p, self.generator = low, high, p, generator

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        batch, single = _as_batch(x)
        n = batch.shape[0]
        qualities = torch.randint(self.low, self.high + 1, (n,), generator=self.generator)
        apply = _rand(n, self.generator) < self.p
        arr = batch.detach().round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
        out = batch.clone()
        for k in np.flatnonzero(apply.numpy()):
            ok, buf = cv2.imencode(".jpg", arr[k], [cv2.IMWRITE_JPEG_QUALITY, int(qualities[k])])
            dec = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
            out[k] = torch.from_numpy(dec.reshape(arr[k].shape)).permute(2, 0, 1).to(batch.dtype)
        return out[0] if single else out


class GaussianBlur:
    """With probability ``p``, Gaussian blur with sigma (pixels) uniform in [low, high]."""

    def __init__(
        self, low: float = 0.5, high: float = 2.0, p: float = 1.0, generator: torch.Generator | None = None
    ) -> None:
        if not 0 < low <= high:
            raise ValueError(f"GaussianBlur: need 0 < low <= high, got {low}, {high}")
        self.low, self.high, self.p, self.generator = low, high, p, generator

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        batch, single = _as_batch(x)
        n = batch.shape[0]
        sigmas = self.low + (self.high - self.low) * _rand(n, self.generator)
        apply = _rand(n, self.generator) < self.p
        out = batch.clone()
        for k in np.flatnonzero(apply.numpy()):
            s = float(sigmas[k])
            radius = max(1, int(np.ceil(3 * s)))
            t = torch.arange(-radius, radius + 1, dtype=torch.float32)
            kern = torch.exp(-0.5 * (t / s) ** 2)
            kern /= kern.sum()
            img = batch[k : k + 1].float()
            c = img.shape[1]
            img = torch.nn.functional.pad(img, (radius, radius, radius, radius), mode="replicate")
            img = torch.nn.functional.conv2d(img, kern.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
            img = torch.nn.functional.conv2d(img, kern.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
            out[k] = img[0].round().clamp(0, 255).to(batch.dtype) if batch.dtype == torch.uint8 else img[0]
        return out[0] if single else out


class GaussianNoise:
    """With probability ``p``, add N(0, sigma^2) noise, sigma uniform in [low, high] (0..255 scale)."""

    def __init__(
        self, low: float = 2.0, high: float = 10.0, p: float = 1.0, generator: torch.Generator | None = None
    ) -> None:
        if not 0 <= low <= high:
            raise ValueError(f"GaussianNoise: need 0 <= low <= high, got {low}, {high}")
        self.low, self.high, self.p, self.generator = low, high, p, generator

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        batch, single = _as_batch(x)
        n = batch.shape[0]
        sigmas = self.low + (self.high - self.low) * _rand(n, self.generator)
        sigmas = torch.where(_rand(n, self.generator) < self.p, sigmas, torch.zeros_like(sigmas))
        noise = torch.randn(batch.shape, generator=self.generator) * sigmas[:, None, None, None]
        out = batch.float() + noise
        out = out.round().clamp(0, 255).to(torch.uint8) if batch.dtype == torch.uint8 else out.to(batch.dtype)
        return out[0] if single else out
