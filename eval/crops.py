"""Face crops from files -> embeddings, for the protocols whose images are native (unaligned) crops.

TinyFace, SCface and QMUL-SurvFace ship face crops of varying size without landmarks. Each crop is
decoded to RGB uint8 (H, W, 3) and goes to :func:`mrface.eval.extract.extract_embeddings` with
``resolution=None``: a multi-resolution model picks a branch per crop from its own (w, h)
(``indicator``/``strategy``), a single-resolution model — or ``upsample=True`` — resizes every crop to
its input size; every resize uses the routing's ``resizer`` (:mod:`mrface.models.branch_select`; default
``"bilinear"``, ``"pil_bicubic"`` for BTNet's SurvFace set-up).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn
from tqdm import tqdm

from mrface.data.images import decode_image
from mrface.eval.extract import Embeddings, extract_embeddings
from mrface.eval.verification import ExtractOptions
from mrface.models.branch_select import DEFAULT_RESIZER, INDICATORS, RESIZERS, STRATEGIES


@dataclass(frozen=True)
class CropRouting:
    """Which path of the model a native crop takes (see module docstring); recorded in reports."""

    indicator: str = "max"
    strategy: str = "ceil"
    upsample: bool = False
    resizer: str = DEFAULT_RESIZER

    def __post_init__(self) -> None:
        if self.indicator not in INDICATORS:
            raise ValueError(f"indicator={self.indicator!r}: expected one of {INDICATORS}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy={self.strategy!r}: expected one of {STRATEGIES}")
        if self.resizer not in RESIZERS:
            raise ValueError(f"resizer={self.resizer!r}: expected one of {RESIZERS}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_images(paths: Sequence[str | os.PathLike], progress: bool = False, description: str = "read") -> list:
    """Decode image files to a list of (H, W, 3) uint8 RGB arrays; an unreadable file is named in the error."""
    out = []
    for p in tqdm(paths, desc=description, disable=not progress, unit="img"):
        path = Path(p)
        try:
            out.append(decode_image(path.read_bytes(), "RGB"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: cannot read the image ({exc})") from None
    return out


def embed_crops(
    model: nn.Module,
    images: Sequence[np.ndarray],
    options: ExtractOptions,
    routing: CropRouting,
    description: str = "extract",
) -> Embeddings:
    """(H, W, 3) uint8 RGB crops (sizes may differ) -> :class:`Embeddings` (features (N, D), norms (N,))."""
    return extract_embeddings(
        model,
        list(images),
        color_order="RGB",
        flip=options.flip,
        resolution=None,
        upsample=routing.upsample,
        indicator=routing.indicator,
        strategy=routing.strategy,
        resizer=routing.resizer,
        batch_size=options.batch_size,
        amp=options.amp,
        device=options.device,
        progress=options.progress,
        description=description,
    )


def embed_files(
    model: nn.Module,
    paths: Sequence[str | os.PathLike],
    options: ExtractOptions,
    routing: CropRouting,
    description: str = "extract",
) -> Embeddings:
    """Read ``paths`` (:func:`read_images`) and embed them (:func:`embed_crops`)."""
    images = read_images(paths, options.progress, f"read {description}")
    return embed_crops(model, images, options, routing, description)
