"""IJB-B/C: template pooling, 1:1 TAR@FAR and 1:N search on image features, and the protocol end to end
from the files (loader -> 5-point aligned 112x112 crops -> features -> 1:1 and 1:N).

Test-mode flags are explicit (InsightFace's names in brackets), never defaults hidden in code:

* ``flip`` (F2): add the mirrored image's feature to each image feature before anything else.
* ``norm_weighting`` (N1): keep each image feature's norm as its weight instead of L2-normalising.
* ``detector_score`` (D1): multiply each image feature by its faceness score.

Presets (:data:`IJB_PRESETS`, ``IjbFlags.preset(name)``) name the two public set-ups:
``arcface_torch`` (insightface ``recognition/arcface_torch/eval_ijbc.py``: flip, norm score N1 and
detector score D1 all on) and ``btnet`` (BTNet ``eval_ijbc_11_multi_reso.py`` /
``eval_ijbc_1n_multi_reso.py``: flip and detector score on, norm score off).

Pooling (REFERENCE.md §9, :func:`mrface.models.template_pooling.pool_templates`): media mean,
template sum, L2. 1:1 scores are cosines between the two templates of each pair; TAR at the ROC
point nearest each FAR 1e-6 … 1e-1 (:func:`mrface.eval.metrics.tar_at_far`). 1:N: the gallery
templates (G1 ∪ G2 for IJB-C) are searched by every probe template
(:func:`mrface.eval.metrics.open_set_identification`, ``variant`` selects NIST or the
InsightFace/BTNet script), plus CMC rank-1/5/10 over the mated probes.

End to end (:func:`evaluate_ijb`, REFERENCE.md §9):

1. :func:`mrface.data.protocols.ijb.load_ijb` parses ``meta/`` (every missing file is listed).
2. Each ``loose_crop`` image is aligned to the ArcFace template (RGB uint8 112x112), in chunks of
   ``chunk`` images so memory stays bounded (IJB-C has ~470k images).
3. Optionally degraded to ``resolution`` (``options.filter``) and routed to that branch, or resized
   back to 112 for the trunk with ``upsample`` (:func:`mrface.eval.verification.embed_at`).
4. With ``flags.flip`` each image's mirror is embedded too (the image and its mirror in one pass);
   the raw (un-normalised) features go to :func:`template_features` with the explicit
   :class:`IjbFlags` (``flip`` F2, ``norm_weighting`` N1, ``detector_score`` D1).
5. 1:1: cosine of the two templates of every pair, TAR at the ROC point nearest each FAR.
6. 1:N (optional): gallery/probe templates from the 1:N csv files. ``nist`` and ``btnet_survface``
   search each gallery (G1, G2 for IJB-C; S1, S2 for IJB-B) separately — probes of the other
   gallery's subjects are the unmated ones — and report each; ``insightface_1n`` searches G1 ∪ G2
   with every probe mated (the InsightFace / BTNet script).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from mrface.data.protocols.common import MissingFilesError
from mrface.data.protocols.ijb import IJB, ONE_TO_N, load_ijb
from mrface.eval.metrics import ROC_FARS, OpenSetResult, RocResult, open_set_identification, tar_at_far
from mrface.eval.verification import ExtractOptions, embed_at
from mrface.models.template_pooling import pool_templates


@dataclass(frozen=True)
class IjbFlags:
    """Test-mode flags; InsightFace's usual IJB run is flip=True, norm_weighting=False, detector_score=True."""

    flip: bool
    norm_weighting: bool
    detector_score: bool

    def as_dict(self) -> dict[str, bool]:
        return asdict(self)

    @staticmethod
    def require(flags: object) -> IjbFlags:
        """``flags`` itself, or a TypeError: the evaluations take no implicit defaults."""
        if not isinstance(flags, IjbFlags):
            raise TypeError("flags: pass an explicit IjbFlags(flip=..., norm_weighting=..., detector_score=...)")
        return flags

    @classmethod
    def preset(cls, name: str) -> IjbFlags:
        """Flags of a public set-up by name (see :data:`IJB_PRESETS`)."""
        if name not in IJB_PRESETS:
            raise ValueError(f"IJB preset {name!r}: expected one of {sorted(IJB_PRESETS)}")
        return cls(**IJB_PRESETS[name])


#: The public IJB set-ups: arcface_torch's eval_ijbc.py and BTNet's eval_ijbc_{11,1n}_multi_reso.py.
IJB_PRESETS: dict[str, dict[str, bool]] = {
    "arcface_torch": {"flip": True, "norm_weighting": True, "detector_score": True},
    "btnet": {"flip": True, "norm_weighting": False, "detector_score": True},
}


def template_features(
    features: np.ndarray,
    template_ids: np.ndarray,
    media_ids: np.ndarray,
    flags: IjbFlags,
    flip_features: np.ndarray | None = None,
    faceness: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-image (N, D) features -> (unit template features (T, D), sorted template ids (T,))."""
    if flags.flip and flip_features is None:
        raise ValueError("IjbFlags.flip=True needs flip_features (the mirrored images' features)")
    if flags.detector_score and faceness is None:
        raise ValueError("IjbFlags.detector_score=True needs faceness scores (meta/*_name_5pts_score.txt)")
    pooled = pool_templates(
        torch.as_tensor(np.asarray(features, np.float64)),
        torch.as_tensor(np.asarray(template_ids, np.int64)),
        torch.as_tensor(np.asarray(media_ids, np.int64)),
        flip_features=torch.as_tensor(np.asarray(flip_features, np.float64)) if flags.flip else None,
        faceness=torch.as_tensor(np.asarray(faceness, np.float64)) if faceness is not None else None,
        norm_weighting=flags.norm_weighting,
        faceness_weighting=flags.detector_score,
    )
    return pooled.templates.numpy(), pooled.template_ids.numpy()


def _rows_of(ids: np.ndarray, wanted: np.ndarray, what: str) -> np.ndarray:
    pos = np.searchsorted(ids, wanted)
    pos = np.clip(pos, 0, ids.size - 1)
    bad = ids[pos] != wanted
    if bad.any():
        raise ValueError(f"{what}: {int(bad.sum())} template ids have no images (e.g. {wanted[bad][:5].tolist()})")
    return pos


def verify_1to1(
    templates: np.ndarray,
    template_ids: np.ndarray,
    pairs: np.ndarray,
    labels: np.ndarray,
    fars: Sequence[float] = ROC_FARS,
) -> tuple[np.ndarray, RocResult]:
    """(T, D) unit templates, (M, 2) template-id pairs, (M,) 0/1 labels -> (cosine scores (M,), ROC)."""
    pairs = np.asarray(pairs, np.int64)
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise ValueError(f"pairs: expected (M, 2) template ids, got shape {pairs.shape}")
    a = templates[_rows_of(template_ids, pairs[:, 0], "pairs[:, 0]")]
    b = templates[_rows_of(template_ids, pairs[:, 1], "pairs[:, 1]")]
    scores = np.sum(a * b, axis=1)
    return scores, tar_at_far(scores, labels, fars)


def identify_1toN(
    templates: np.ndarray,
    template_ids: np.ndarray,
    gallery_templates: np.ndarray,
    gallery_subjects: np.ndarray,
    probe_templates: np.ndarray,
    probe_subjects: np.ndarray,
    fpirs: Sequence[float] = (0.01, 0.1),
    rank: int = 1,
    variant: str = "nist",
) -> OpenSetResult:
    """1:N over pooled templates: gallery/probe template ids with their subject ids."""
    g = templates[_rows_of(template_ids, np.asarray(gallery_templates, np.int64), "gallery templates")]
    p = templates[_rows_of(template_ids, np.asarray(probe_templates, np.int64), "probe templates")]
    return open_set_identification(
        p @ g.T, np.asarray(probe_subjects), np.asarray(gallery_subjects), fpirs=fpirs, rank=rank, variant=variant
    )


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
    IjbFlags.require(flags)
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
