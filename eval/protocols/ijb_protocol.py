"""IJB-B/C end to end from the files: loader -> 5-point aligned 112x112 crops -> features -> 1:1 and 1:N.

Steps (REFERENCE.md §9; the feature-level parts are :mod:`mrface.eval.protocols.ijb`):

1. :func:`mrface.data.protocols.ijb.load_ijb` parses ``meta/`` (every missing file is listed).
2. Each ``loose_crop`` image is aligned to the ArcFace template (RGB uint8 112x112), in chunks of
   ``chunk`` images so memory stays bounded (IJB-C has ~470k images).
3. Optionally degraded to ``resolution`` (``options.filter``) and routed to that branch, or resized
   back to 112 for the trunk with ``upsample`` (:func:`mrface.eval.verification.embed_at`).
4. With ``flags.flip`` each image's mirror is embedded too (the image and its mirror in one pass);
   the raw (un-normalised) features go to :func:`mrface.eval.protocols.ijb.template_features` with the explicit
   :class:`~mrface.eval.protocols.ijb.IjbFlags` (``flip`` F2, ``norm_weighting`` N1, ``detector_score`` D1).
5. 1:1: cosine of the two templates of every pair, TAR at the ROC point nearest each FAR.
6. 1:N (optional): gallery/probe templates from the 1:N csv files. ``nist`` and ``btnet_survface``
   search each gallery (G1, G2 for IJB-C; S1, S2 for IJB-B) separately — probes of the other
   gallery's subjects are the unmated ones — and report each; ``insightface_1n`` searches G1 ∪ G2
   with every probe mated (the InsightFace / BTNet script).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from torch import nn
from tqdm import tqdm

from mrface.data.protocols.common import MissingFilesError
from mrface.data.protocols.ijb import IJB, ONE_TO_N, load_ijb
from mrface.eval.metrics import ROC_FARS, OpenSetResult, RocResult
from mrface.eval.protocols.ijb import IjbFlags, identify_1toN, template_features, verify_1to1
from mrface.eval.verification import ExtractOptions, embed_at


@dataclass
class IjbResult:
    """1:1 ROC (+ the TAR table) and 1:N results keyed by gallery name; settings used."""

    name: str
    roc: RocResult
    one_to_n: dict[str, OpenSetResult]
    num_images: int
    num_templates: int
    num_pairs: int
    settings: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "tar_at_far": {str(k): v for k, v in self.roc.tar_at_far.items()},
            "auc": self.roc.auc,
            "one_to_n": {k: v.summary() for k, v in self.one_to_n.items()},
            "num_images": self.num_images,
            "num_templates": self.num_templates,
            "num_pairs": self.num_pairs,
        }


def ijb_features(
    model: nn.Module,
    ijb: IJB,
    flags: IjbFlags,
    *,
    resolution: int = 112,
    upsample: bool = False,
    options: ExtractOptions | None = None,
    chunk: int = 2048,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Raw per-image features (N, E) and, with ``flags.flip``, the mirrored images' features (N, E)."""
    options = options or ExtractOptions()
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    inner = replace(options, flip="concat" if flags.flip else "none", progress=False)
    n = len(ijb.names)
    parts = []
    with tqdm(
        total=n, desc=f"{ijb.root.name} align+extract@{resolution}", disable=not options.progress, unit="img"
    ) as bar:
        for lo in range(0, n, chunk):
            images = np.stack([ijb.aligned(i, 112, "RGB") for i in range(lo, min(lo + chunk, n))])
            parts.append(embed_at(model, images, resolution, upsample, inner, "RGB").features)
            bar.update(len(images))
    feats = np.concatenate(parts)
    if not flags.flip:
        return feats, None
    half = feats.shape[1] // 2
    return feats[:, :half], feats[:, half:]


def one_to_n_lists(ijb: IJB, name: str) -> dict[str, dict[int, int]]:
    """{"G1"/"S1": {template: subject}, "G2"/"S2": ..., "probe": ...}; all missing csv files listed at once."""
    files = ONE_TO_N[name]
    missing = [ijb.root / "meta" / f for f in files if not (ijb.root / "meta" / f).is_file()]
    if missing:
        raise MissingFilesError(f"{name.upper()} 1:N", ijb.root, missing)
    keys = [f.rsplit("_", 1)[1].split(".")[0] for f in files[:2]] + ["probe"]
    return {k: ijb.one_to_n(f) for k, f in zip(keys, files, strict=True)}


def ijb_one_to_n(
    templates: np.ndarray,
    template_ids: np.ndarray,
    lists: dict[str, dict[int, int]],
    *,
    variant: str = "nist",
    fpirs: Sequence[float] = (0.01, 0.1),
    rank: int = 1,
) -> dict[str, OpenSetResult]:
    """1:N on pooled unit templates (T, D) with sorted ids (T,); galleries as in the module docstring."""
    probe = lists["probe"]
    p_t, p_s = np.array(list(probe), np.int64), np.array(list(probe.values()), np.int64)
    gallery_names = [k for k in lists if k != "probe"]
    if variant == "insightface_1n":
        merged = {t: s for k in gallery_names for t, s in lists[k].items()}
        searches = {"+".join(gallery_names): merged}
    else:
        searches = {k: lists[k] for k in gallery_names}
    out = {}
    for key, gal in searches.items():
        g_t, g_s = np.array(list(gal), np.int64), np.array(list(gal.values()), np.int64)
        out[key] = identify_1toN(templates, template_ids, g_t, g_s, p_t, p_s, fpirs=fpirs, rank=rank, variant=variant)
    return out


def evaluate_ijb(
    model: nn.Module,
    root: str | os.PathLike,
    flags: IjbFlags,
    *,
    name: str = "ijbc",
    resolution: int = 112,
    upsample: bool = False,
    options: ExtractOptions | None = None,
    fars: Sequence[float] = ROC_FARS,
    one_to_n: bool = True,
    variant: str = "nist",
    fpirs: Sequence[float] = (0.01, 0.1),
    rank: int = 1,
    chunk: int = 2048,
) -> IjbResult:
    """IJB-B/C 1:1 (and 1:N when ``one_to_n``) from the files under ``root``; see module docstring."""
    if not isinstance(flags, IjbFlags):
        raise TypeError("flags: pass an explicit IjbFlags(flip=..., norm_weighting=..., detector_score=...)")
    options = options or ExtractOptions()
    ijb = load_ijb(root, name)
    lists = one_to_n_lists(ijb, name) if one_to_n else {}  # fail on missing csv files before extracting
    feats, flip_feats = ijb_features(
        model, ijb, flags, resolution=resolution, upsample=upsample, options=options, chunk=chunk
    )
    templates, tids = template_features(feats, ijb.templates, ijb.medias, flags, flip_feats, ijb.faceness)
    _, roc = verify_1to1(templates, tids, ijb.pairs, ijb.labels, fars)
    results = ijb_one_to_n(templates, tids, lists, variant=variant, fpirs=fpirs, rank=rank) if one_to_n else {}
    settings = {
        "root": str(root),
        "name": name,
        "flags": flags.as_dict(),
        "resolution": resolution,
        "upsample": upsample,
        "fars": list(fars),
        "one_to_n": one_to_n,
        "variant": variant,
        "fpirs": list(fpirs),
        "rank": rank,
        "extraction": options.as_dict(),
    }
    return IjbResult(name, roc, results, len(ijb.names), len(tids), len(ijb.pairs), settings)
