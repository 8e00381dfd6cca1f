"""Reference resize and degradation: every filter as a dense (out, in) float64 matrix.

A separable resize of an image X (H, W) to (h, w) is ``My @ X @ Mx.T`` with My (h, H) and Mx (w, W).
The matrices are evaluated from each filter's closed form over all input samples (no tap windows),
independently of the tap tables the kernels use.
"""

from __future__ import annotations

import functools
import math

import torch

_CUBIC_A_TORCH = -0.75  # torch / OpenCV non-antialiased bicubic
_CUBIC_A_PIL = -0.5  # PIL and torch antialiased bicubic


def _cubic(x: torch.Tensor, a: float) -> torch.Tensor:
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


@functools.lru_cache(maxsize=512)
def resize_matrix(in_size: int, out_size: int, filter: str) -> torch.Tensor:
    """Dense resize matrix (out_size, in_size), float64, for one axis.

    Filters: ``nearest`` (index floor(i·in/out)), ``bilinear`` / ``bicubic`` (align_corners=False,
    no antialias; bicubic a=-0.75), ``area`` (fractional pixel coverage, downsampling only),
    ``bilinear_aa`` / ``bicubic_aa`` (PIL: triangle / a=-0.5 cubic widened by the scale, normalised),
    ``lanczos`` (cv2 INTER_LANCZOS4: sinc(d)·sinc(d/4) over the 8 samples around the source position,
    normalised, no antialias, samples past the edge clamped to it).
    """
    if in_size <= 0 or out_size <= 0:
        raise ValueError(f"resize_matrix: sizes must be positive, got in={in_size}, out={out_size}")
    scale = in_size / out_size
    i = torch.arange(out_size, dtype=torch.float64)[:, None]
    j = torch.arange(in_size, dtype=torch.float64)[None, :]
    if filter == "nearest":
        src = torch.clamp(torch.div(torch.arange(out_size) * in_size, out_size, rounding_mode="floor"), max=in_size - 1)
        return (torch.arange(in_size)[None, :] == src[:, None]).to(torch.float64)
    if filter == "bilinear":
        src = ((i + 0.5) * scale - 0.5).clamp(0, in_size - 1)
        return torch.relu(1 - (j - src).abs())
    if filter == "bicubic":
        src = (i + 0.5) * scale - 0.5
        base = torch.floor(src)
        matrix = torch.zeros(out_size, in_size, dtype=torch.float64)
        for k in range(-1, 3):
            column = (base + k).clamp(0, in_size - 1).long()
            matrix.scatter_add_(1, column, _cubic(src - (base + k), _CUBIC_A_TORCH))
        return matrix
    if filter == "lanczos":
        src = (i + 0.5) * scale - 0.5
        base = torch.floor(src)
        offsets = torch.arange(-3, 5, dtype=torch.float64)[None, :]
        distance = src - (base + offsets)
        weights = torch.sinc(distance) * torch.sinc(distance / 4)
        weights = weights / weights.sum(dim=1, keepdim=True)
        matrix = torch.zeros(out_size, in_size, dtype=torch.float64)
        matrix.scatter_add_(1, (base + offsets).clamp(0, in_size - 1).long(), weights)
        return matrix
    if filter == "area":
        if in_size < out_size:
            raise ValueError(f"resize_matrix: 'area' only downsamples, got in={in_size} < out={out_size}")
        lo, hi = i * scale, (i + 1) * scale
        return torch.clamp(torch.minimum(hi, j + 1) - torch.maximum(lo, j), min=0) / scale
    if filter in ("bilinear_aa", "bicubic_aa"):
        stretch = max(scale, 1.0)
        x = (j + 0.5 - (i + 0.5) * scale) / stretch
        weights = torch.relu(1 - x.abs()) if filter == "bilinear_aa" else _cubic(x, _CUBIC_A_PIL)
        return weights / weights.sum(dim=1, keepdim=True)
    raise ValueError(
        f"resize_matrix: unknown filter {filter!r}; expected nearest, bilinear, bicubic, area, bilinear_aa, "
        "bicubic_aa, lanczos"
    )


def _apply(x: torch.Tensor, my: torch.Tensor, mx: torch.Tensor) -> torch.Tensor:
    """(..., H, W) float64 -> (..., h, w) with my (h, H), mx (w, W)."""
    return my @ x @ mx.T


def _to_dtype(y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if dtype == torch.uint8:
        return torch.floor(y + 0.5).clamp(0, 255).to(torch.uint8)
    return y.to(dtype)


def degrade_reference(
    x: torch.Tensor, sizes: list[tuple[int, int]], filter: str, up: str | None
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Down images for every (h, w) in ``sizes`` and, if ``up``, each resized back to x's size.

    x: (N, C, H, W). Computed in float64 from the input directly (no cascade), cast to x.dtype with
    round-half-up saturation for uint8.
    """
    n, c, height, width = x.shape
    xf = x.to(torch.float64)
    downs, ups = [], []
    for h, w in sizes:
        down = _apply(xf, resize_matrix(height, h, filter), resize_matrix(width, w, filter))
        downs.append(_to_dtype(down, x.dtype))
        if up is not None:
            back = _apply(down, resize_matrix(h, height, up), resize_matrix(w, width, up))
            ups.append(_to_dtype(back, x.dtype))
    return downs, ups


def up_filter_for(down_filter: str, up: str) -> str:
    """The filter that brings an image back up: ``same`` mirrors the down filter (area -> bilinear)."""
    if up != "same":
        return up
    return {"area": "bilinear", "bilinear_aa": "bilinear", "bicubic_aa": "bicubic"}.get(down_filter, down_filter)


def per_sample_width(height: int, width: int, side: int) -> int:
    """Output width for a per-sample target height ``side`` keeping the aspect ratio."""
    return max(1, min(width, int(math.floor(width * side / height + 0.5))))


def degrade_per_sample_reference(x: torch.Tensor, sides: torch.Tensor, filters: list[str], up: str) -> torch.Tensor:
    """Each image n down to height sides[n] with filter filters[n], then back to (H, W)."""
    _, _, height, width = x.shape
    out = torch.empty_like(x)
    for n in range(x.shape[0]):
        h = int(sides[n])
        w = per_sample_width(height, width, h)
        f = filters[n]
        down = _apply(x[n].to(torch.float64), resize_matrix(height, h, f), resize_matrix(width, w, f))
        u = up_filter_for(f, up)
        out[n] = _to_dtype(_apply(down, resize_matrix(h, height, u), resize_matrix(w, width, u)), x.dtype)
    return out
