"""Batched embedding extraction with flip fusion, resolution routing and a resumable on-disk cache.

Images enter as uint8 HxWx3 arrays (``color_order`` says RGB or BGR); ``model.preprocess`` turns
them into the model's own colour order and normalisation (its metadata decides, nothing guesses).

Routing (which path of the model sees a face):

* ``resolution=r`` given (all faces r x r): a multi-resolution model (``model.resolutions``, e.g.
  BTNet) with a branch for r runs that branch; otherwise — or with ``upsample=True`` — the face is
  resized to the model's input size and runs the trunk (the "upsampled" baseline).
* ``resolution=None`` with a multi-resolution model: each face picks a branch from its own (w, h)
  (``indicator``/``strategy``, :mod:`mrface.models.branch_select`) and is resized to it.
* a single-resolution model: every face is resized to its input size.

Grouping, resizing and scattering back are :func:`mrface.models.branch_select.run_by_branch`, the routing
every entry point shares, with its ``resizer`` (default ``"bilinear"``; a protocol that reproduces a
public script names that script's resizer, e.g. ``"pil_bicubic"`` for BTNet's SurvFace script).

Flip fusion (``flip=``), with e the raw embedding of the image and e' of its mirror image:

* ``none``: e.
* ``pre_norm_vector_add``: e + e' (InsightFace ``verification.py``'s ``emb + emb_flip``; AdaFace's
  ``pre_norm_vector_add``): the larger-norm view weighs more.
* ``sum``: e/|e| + e'/|e'|: both views weigh the same.
* ``concat``: [e, e'] (2E-d; InsightFace IJB test mode F1).

``norms`` (quality, e.g. MagFace/AdaFace) is |e| for ``none`` and the mean of |e| and |e'| otherwise.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from mrface.io import write_text
from mrface.models.branch_select import DEFAULT_RESIZER, RESIZERS, choose_branches, run_by_branch

FLIP_MODES = ("none", "sum", "pre_norm_vector_add", "concat")
AMP_MODES = (None, "fp16", "bf16")
CACHE_VERSION = 1


@dataclass
class Embeddings:
    """features (N, D) float32 fused raw embeddings (not normalised); norms (N,); paths (N,) resolution used."""

    features: np.ndarray
    norms: np.ndarray
    paths: np.ndarray


def fuse_flip(embedding: torch.Tensor, flipped: torch.Tensor | None, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, E) raw embeddings of the images and (N, E) of their mirrors -> (fused (N, E or 2E), norms (N,))."""
    if mode not in FLIP_MODES:
        raise ValueError(f"flip={mode!r}: expected one of {FLIP_MODES}")
    embedding = embedding.float()
    n1 = embedding.norm(dim=1)
    if mode == "none":
        return embedding, n1
    if flipped is None:
        raise ValueError(f"flip={mode!r} needs the flipped-image embeddings")
    flipped = flipped.float()
    n2 = flipped.norm(dim=1)
    norms = (n1 + n2) / 2
    if mode == "pre_norm_vector_add":
        return embedding + flipped, norms
    if mode == "sum":
        return embedding / n1.clamp_min(1e-12)[:, None] + flipped / n2.clamp_min(1e-12)[:, None], norms
    return torch.cat([embedding, flipped], dim=1), norms


def route(
    model: nn.Module,
    sizes: Sequence[tuple[int, int]],
    resolution: int | None = None,
    upsample: bool = False,
    indicator: str = "max",
    strategy: str = "ceil",
) -> np.ndarray:
    """Path (input resolution) each face of (w, h) ``sizes`` takes through ``model``; see module docstring."""
    input_size = int(getattr(model, "input_size", 112))
    resolutions = tuple(model.resolutions)
    if resolution is not None:
        r = int(resolution)
        path = r if (r in resolutions and not upsample) else input_size
        return np.full(len(sizes), path, dtype=np.int64)
    if len(resolutions) == 1 or upsample:
        return np.full(len(sizes), input_size, dtype=np.int64)
    return np.asarray(choose_branches(list(sizes), resolutions, indicator, strategy), dtype=np.int64)


def _model_device(model: nn.Module) -> torch.device:
    for tensor in [*model.parameters(), *model.buffers()]:
        return tensor.device
    return torch.device("cpu")


def _forward(model: nn.Module, x: torch.Tensor, path: int) -> torch.Tensor:
    if len(model.resolutions) > 1:
        return model(x, resolution=path)
    return model(x)


def _autocast(device: torch.device, amp: str | None) -> contextlib.AbstractContextManager:
    if amp not in AMP_MODES:
        raise ValueError(f"amp={amp!r}: expected one of {AMP_MODES}")
    if amp is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.float16 if amp == "fp16" else torch.bfloat16)


def _sizes(images: Any) -> list[tuple[int, int]]:
    if isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
            raise ValueError(f"images: expected an (N, H, W, 3) uint8 array, got {images.dtype} {images.shape}")
        return [(images.shape[2], images.shape[1])] * images.shape[0]
    if isinstance(images, Sequence):
        out = []
        for i, im in enumerate(images):
            im = np.asarray(im)
            if im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
                raise ValueError(f"images[{i}]: expected an (H, W, 3) uint8 array, got {im.dtype} {im.shape}")
            out.append((im.shape[1], im.shape[0]))
        return out
    raise TypeError(f"images: expected an (N, H, W, 3) uint8 array or a list of (H, W, 3) arrays, got {type(images)}")


# ------------------------------------------------------------------------------------------ cache
class _Cache:
    """features.npy / norms.npy / paths.npy (memory-mapped) + meta.json with the settings and progress."""

    def __init__(self, folder: Path, settings: dict[str, Any], n: int, dim: int) -> None:
        self.folder = folder
        self.meta_path = folder / "meta.json"
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"version": CACHE_VERSION, "settings": settings, "count": n, "dim": dim, "done": 0}
        if self.meta_path.exists():
            try:
                old = json.loads(self.meta_path.read_text())
            except json.JSONDecodeError as exc:
                raise ValueError(f"{self.meta_path}: extraction cache metadata is not valid JSON ({exc})") from None
            keep = {k: old.get(k) for k in ("version", "settings", "count", "dim")}
            if keep != {k: meta[k] for k in keep}:
                raise ValueError(
                    f"{self.meta_path}: the cache was written with other settings or data "
                    f"({keep}); expected { ({k: meta[k] for k in keep}) }. Use another cache "
                    "folder or delete this one."
                )
            meta["done"] = int(old.get("done", 0))
        mode = "r+" if meta["done"] > 0 else "w+"
        self.features = np.lib.format.open_memmap(
            folder / "features.npy", mode=mode, dtype=np.float32, shape=(n, dim) if mode == "w+" else None
        )
        self.norms = np.lib.format.open_memmap(
            folder / "norms.npy", mode=mode, dtype=np.float32, shape=(n,) if mode == "w+" else None
        )
        self.paths = np.lib.format.open_memmap(
            folder / "paths.npy", mode=mode, dtype=np.int64, shape=(n,) if mode == "w+" else None
        )
        self.meta = meta
        if mode == "w+":
            self._write_meta()

    @property
    def done(self) -> int:
        return int(self.meta["done"])

    def commit(self, stop: int) -> None:
        """Flush rows up to ``stop`` and record them as done (meta.json replaced atomically)."""
        for arr in (self.features, self.norms, self.paths):
            arr.flush()
        self.meta["done"] = int(stop)
        self._write_meta()

    def _write_meta(self) -> None:
        write_text(self.meta_path, json.dumps(self.meta, indent=2, sort_keys=True))


def data_fingerprint(images: Any) -> str:
    """Short content hash of the images (sizes + a strided sample of pixels), to tie a cache to its data."""
    h = hashlib.sha256()
    items = [images] if isinstance(images, np.ndarray) else list(images)
    for im in items:
        arr = np.ascontiguousarray(im)
        h.update(str(arr.shape).encode())
        h.update(arr.reshape(-1)[:: max(1, arr.size // 4096)].tobytes())
    return h.hexdigest()[:16]


# -------------------------------------------------------------------------------------- extract
@torch.no_grad()
def extract_embeddings(
    model: nn.Module,
    images: np.ndarray | Sequence[np.ndarray],
    *,
    color_order: str = "RGB",
    flip: str = "pre_norm_vector_add",
    resolution: int | None = None,
    upsample: bool = False,
    indicator: str = "max",
    strategy: str = "ceil",
    resizer: str = DEFAULT_RESIZER,
    batch_size: int = 128,
    amp: str | None = None,
    device: str | torch.device | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
    description: str = "extract",
) -> Embeddings:
    """Embeddings of ``images`` through ``model`` (eval mode; see module docstring for the options).

    Args:
        images: (N, H, W, 3) uint8 array, or a list of (H, W, 3) uint8 arrays (sizes may differ).
        color_order: channel order of ``images``.
        flip: one of :data:`FLIP_MODES`.
        resolution, upsample, indicator, strategy: routing (see :func:`route`).
        resizer: one of :data:`mrface.models.branch_select.RESIZERS` (see that module).
        batch_size: faces per forward pass (mirror images go in the same pass).
        amp: None, ``"fp16"`` or ``"bf16"`` autocast.
        device: default: the model's device.
        cache_dir: folder for a resumable cache (features.npy, norms.npy, paths.npy, meta.json):
            finished batches are kept, a rerun continues after the last one.
        progress: show a tqdm bar.
    Returns:
        :class:`Embeddings` (features float32 (N, D), D = 2E for ``concat``).
    """
    if flip not in FLIP_MODES:
        raise ValueError(f"flip={flip!r}: expected one of {FLIP_MODES}")
    if resizer not in RESIZERS:
        raise ValueError(f"resizer={resizer!r}: expected one of {RESIZERS}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    sizes = _sizes(images)
    n = len(sizes)
    paths = route(model, sizes, resolution, upsample, indicator, strategy)
    device = torch.device(device) if device is not None else _model_device(model)
    was_training = model.training
    model.eval()
    meta = getattr(model, "metadata", None)
    emb_dim = int(getattr(meta, "embedding_size", 0) or getattr(model, "embedding_size", 0))
    dim = emb_dim * (2 if flip == "concat" else 1)
    cache = None
    if cache_dir is not None:
        settings = {
            "model": json.loads(meta.to_json()) if meta is not None else type(model).__name__,
            "color_order": color_order,
            "flip": flip,
            "resolution": resolution,
            "upsample": upsample,
            "indicator": indicator,
            "strategy": strategy,
            "resizer": resizer,
            "amp": amp,
            "data": data_fingerprint(images),
        }
        cache = _Cache(Path(cache_dir), settings, n, dim)
    features = cache.features if cache else np.zeros((n, dim), np.float32)
    norms = cache.norms if cache else np.zeros(n, np.float32)
    start = cache.done if cache else 0
    model_meta = meta if meta is not None else model.default_metadata()

    def runner(path: int):
        def run(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """(n, 3, r, r) faces -> (fused features (n, dim), norms (n,)) on the CPU."""
            x = x.to(device)
            if flip != "none":
                x = torch.cat([x, x.flip(3)])
            with _autocast(device, amp):
                out = _forward(model, x, path).float()
            e, e_flip = (out, None) if flip == "none" else out.chunk(2)
            fused, nrm = fuse_flip(e, e_flip, flip)
            if fused.shape[1] != dim:
                raise ValueError(f"model returned {fused.shape[1]}-d features, metadata says {dim}")
            return fused.cpu(), nrm.cpu()

        return run

    bar = tqdm(total=n, initial=start, desc=description, disable=not progress, unit="img")
    try:
        for lo in range(start, n, batch_size):
            hi = min(lo + batch_size, n)
            fused, nrm = run_by_branch(
                [np.asarray(images[i]) for i in range(lo, hi)],
                paths[lo:hi].tolist(),
                {int(path): runner(int(path)) for path in np.unique(paths[lo:hi])},
                resizer=resizer,
                metadata=model_meta,
                color_order=color_order,
            )
            features[lo:hi] = fused.numpy()
            norms[lo:hi] = nrm.numpy()
            if cache:
                cache.paths[lo:hi] = paths[lo:hi]
                cache.commit(hi)
            bar.update(hi - lo)
    finally:
        bar.close()
        model.train(was_training)
    return Embeddings(np.array(features), np.array(norms), paths.copy())
