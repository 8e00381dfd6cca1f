"""Write SynthFace data sets in the real formats: an InsightFace RecordIO training set and ``.bin`` pairs.

Layout written under ``out``::

    train.rec, train.idx, property     identities 0..N-1, M images each (JPEG), InsightFace layout
    val_<s>.bin                        P verification pairs from identities N..N+V-1 (held out),
                                       images stored at s x s (area down-sampling from 112)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrface.data.bins import write_bin
from mrface.data.images import encode_image, resize_image
from mrface.data.insightface import write_insightface
from mrface.data.synthface import SynthFace, verification_pairs


@dataclass
class SynthSummary:
    train_images: int
    num_classes: int
    bins: dict[int, Path]
    rec: Path


def _train_samples(
    sf: SynthFace, identities: int, images: int, quality: int, chunk: int = 256
) -> Iterator[tuple[int, bytes]]:
    ids = np.repeat(np.arange(identities), images)
    imgs = np.tile(np.arange(images), identities)
    for start in range(0, ids.size, chunk):
        batch = sf.render(ids[start : start + chunk], imgs[start : start + chunk])
        for label, im in zip(ids[start : start + chunk], batch, strict=True):
            yield int(label), encode_image(im, ".jpg", quality)


def write_synth(
    out: str | os.PathLike,
    identities: int = 1000,
    images: int = 20,
    seed: int = 0,
    pairs: int = 1000,
    resolutions: tuple[int, ...] = (112, 28, 14, 7),
    val_identities: int = 500,
    quality: int = 95,
) -> SynthSummary:
    """Render and write a SynthFace training set and verification ``.bin`` files (see module doc).

    Args:
        identities, images: training identities and images per identity.
        pairs: verification pairs per ``.bin`` (half same, half different, alternating).
        resolutions: side lengths of the stored ``.bin`` images.
        val_identities: held-out identities the pairs are drawn from (ids after the training ones).
    """
    if identities < 1 or images < 1:
        raise ValueError(f"write_synth: identities and images must be >= 1, got {identities}, {images}")
    if val_identities < 2 or pairs < 1:
        raise ValueError(f"write_synth: need val_identities >= 2 and pairs >= 1, got {val_identities}, {pairs}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sf = SynthFace(seed)
    rec = out / "train.rec"
    count = write_insightface(rec, _train_samples(sf, identities, images, quality), identities)
    ids, imgs, issame = verification_pairs(val_identities, pairs, identities, 1000, seed)
    pair_images = sf.render(ids.reshape(-1), imgs.reshape(-1))
    bins = {}
    for s in resolutions:
        small = pair_images if s == 112 else np.stack([resize_image(im, s, "area") for im in pair_images])
        bins[s] = out / f"val_{s}.bin"
        write_bin(bins[s], small, issame, ext=".png" if s < 112 else ".jpg", quality=quality)
    return SynthSummary(count, identities, bins, rec)
