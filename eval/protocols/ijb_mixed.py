"""IJB-B/C at mixed resolutions: BTNet's IJB-C 1:1 / 1:N tables (``112&7`` … ``112&112``).

What BTNet's public scripts do (``eval_ijbc_11_multi_reso.py``, ``eval_ijbc_1n_multi_reso.py``,
StevenSmith2000/BTNet): every IJB image is aligned to 112x112 and turned into TWO views, view 1 at
``reso1`` and view 2 at ``reso2`` (cv2 ``INTER_LINEAR`` down, and with ``--upsample1/2 1`` back up
to 112 with ``INTER_LINEAR``). Model 1 embeds view 1, model 2 embeds view 2 *mirrored*, and the two
raw embeddings are added in the slot of the F2 flip test (``feat1 + feat2``); then the usual test
modes (N0: L2-normalise, D1: times the faceness score), media mean, template sum, L2. So "112&7" is
*feature aggregation* — every image of every template, gallery and probe alike, contributes its
112 px view plus its 7 px view — not a comparison of a sharp template with a degraded one; the
README calls it "multi-resolution feature aggregation (template <img1, img2>)". Templates never
mix sources: all images get the same treatment. This is ``mode="aggregate"`` (the default).

``mode="cross"`` (an mrface option, not in the public scripts) is the other reading: side 1 of
every 1:1 pair and the 1:N gallery are pooled from view-1 features only, side 2 and the probes from
view-2 features only (with the test flip, each view adds its own mirror).

Routing: a view at r < 112 without upsampling goes through the model's branch for r (BTNet's
BNet_r, ``--upsample 0`` as in the README's commands); an upsampled view (``upsample1/2``) or a
112 view goes through the trunk (TNet). A model without a branch for r gets the view resized to its
input size (:func:`mrface.eval.extract.route`); the path taken is recorded per view.

Public quirks kept: the 1:N script derives view 2 from the already processed view 1 (``resize(img,
reso2)`` after ``img`` was resized), the 1:1 script from the aligned face; the two agree except when
both resolutions are below 112 and view 1 was upsampled or ``reso1 != reso2`` — then the 1:N
features are extracted separately. Without the flip test (``IjbFlags.flip=False``) the public
scripts use view 1 alone, so ``reso2`` has no effect (a warning says so). The scripts' default
``--upsample1/2`` is 1 but the README's commands for the published table pass 0, which is our
default. ``--downsample1/2`` resize a view to the model's input size, a no-op for these settings.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np
from torch import nn
from tqdm import tqdm

from mrface.data.protocols.ijb import IJB, load_ijb
from mrface.eval.extract import extract_embeddings
from mrface.eval.metrics import ROC_FARS, OpenSetResult, tar_at_far
from mrface.eval.protocols.ijb import (
    IjbFlags,
    IjbResult,
    _rows_of,
    identify_1toN,
    ijb_one_to_n,
    one_to_n_lists,
    template_features,
    verify_1to1,
)
from mrface.eval.verification import ExtractOptions
from mrface.io import save_figure

ALIGNED = 112
MODES = ("aggregate", "cross")
#: BTNet's IJB-C table rows, in its order.
BTNET_PAIRS = ((112, 7), (112, 14), (112, 28), (7, 7), (14, 14), (28, 28), (112, 112))

# A view: the chain of sizes the aligned 112 face is resized through (cv2 INTER_LINEAR each step), mirrored or not.
View = tuple[tuple[int, ...], bool]


@dataclass(frozen=True)
class MixedSetting:
    """One table row: view resolutions, up-sampling flags (``--upsample1/2``) and the comparison mode."""

    reso1: int
    reso2: int
    upsample1: bool = False
    upsample2: bool = False
    mode: str = "aggregate"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode={self.mode!r}: expected one of {MODES}")
        for name in ("reso1", "reso2"):
            r = getattr(self, name)
            if not 1 <= r <= ALIGNED:
                raise ValueError(f"{name}={r}: expected a resolution in 1..{ALIGNED} (faces are aligned at 112)")

    @property
    def label(self) -> str:
        return f"{self.reso1}&{self.reso2}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _steps(r: int, upsample: bool) -> tuple[int, ...]:
    if r == ALIGNED:
        return ()
    return (r, ALIGNED) if upsample else (r,)


def _chain(*parts: tuple[int, ...]) -> tuple[int, ...]:
    sizes = [ALIGNED]
    for s in (s for p in parts for s in p):
        if s != sizes[-1]:
            sizes.append(s)
    return tuple(sizes)


def view1(setting: MixedSetting) -> tuple[int, ...]:
    return _chain(_steps(setting.reso1, setting.upsample1))


def view2(setting: MixedSetting, script: str = "11") -> tuple[int, ...]:
    """View 2's size chain: from the aligned face (1:1 script) or from view 1 (1:N script, when reso2 < 112)."""
    if script == "1n" and setting.reso2 != ALIGNED:
        return _chain(_steps(setting.reso1, setting.upsample1), _steps(setting.reso2, setting.upsample2))
    return _chain(_steps(setting.reso2, setting.upsample2))


def needed_views(setting: MixedSetting, flags: IjbFlags, one_to_n: bool) -> dict[str, View]:
    """Named views one setting pools from: ``a`` (side 1), ``b`` (side 2, 1:1), ``b1n`` (side 2, 1:N), mirrors."""
    if setting.mode == "aggregate":
        views = {"a": (view1(setting), False)}
        if flags.flip:
            views["b"] = (view2(setting, "11"), True)
            if one_to_n:
                views["b1n"] = (view2(setting, "1n"), True)
        return views
    views = {"a": (view1(setting), False), "b": (view2(setting, "11"), False)}
    if flags.flip:
        views["a_flip"] = (view1(setting), True)
        views["b_flip"] = (view2(setting, "11"), True)
    return views


def render_view(aligned: np.ndarray, view: View) -> np.ndarray:
    """(N, 112, 112, 3) uint8 aligned faces -> the view's (N, s, s, 3) uint8 images (s = last size)."""
    sizes, mirrored = view
    out = []
    for im in aligned:
        for s in sizes[1:]:
            im = cv2.resize(im, (s, s), interpolation=cv2.INTER_LINEAR)
        out.append(im[:, ::-1] if mirrored else im)
    return np.ascontiguousarray(np.stack(out))


def view_features(
    model: nn.Module, ijb: IJB, views: Sequence[View], options: ExtractOptions, chunk: int = 2048
) -> tuple[dict[View, np.ndarray], dict[View, int]]:
    """Raw per-image features (N, E) of each view, and the model path (input resolution) each view took."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    views = list(dict.fromkeys(views))
    n = len(ijb.names)
    parts: dict[View, list[np.ndarray]] = {v: [] for v in views}
    paths: dict[View, int] = {}
    with tqdm(
        total=n, desc=f"{ijb.root.name} align+extract x{len(views)} views", unit="img", disable=not options.progress
    ) as bar:
        for lo in range(0, n, chunk):
            aligned = np.stack([ijb.aligned(i, ALIGNED, "RGB") for i in range(lo, min(lo + chunk, n))])
            for v in views:
                size = v[0][-1]
                emb = extract_embeddings(
                    model,
                    render_view(aligned, v),
                    color_order="RGB",
                    flip="none",
                    resolution=size,
                    batch_size=options.batch_size,
                    amp=options.amp,
                    device=options.device,
                )
                parts[v].append(emb.features)
                paths[v] = int(emb.paths[0])
            bar.update(len(aligned))
    return {v: np.concatenate(p) for v, p in parts.items()}, paths


def _cross_one_to_n(
    side1: np.ndarray,
    side2: np.ndarray,
    tids: np.ndarray,
    lists: dict[str, dict[int, int]],
    variant: str,
    fpirs: Sequence[float],
    rank: int,
) -> dict[str, OpenSetResult]:
    """1:N with gallery templates from ``side1`` and probe templates from ``side2`` (both (T, D), ids ``tids``)."""
    probe = lists["probe"]
    p_t, p_s = np.array(list(probe), np.int64), np.array(list(probe.values()), np.int64)
    galleries = [k for k in lists if k != "probe"]
    searches = (
        {"+".join(galleries): {t: s for k in galleries for t, s in lists[k].items()}}
        if variant == "insightface_1n"
        else {k: lists[k] for k in galleries}
    )
    # both sides share template ids: stack them and offset side 2's ids past side 1's
    offset = int(tids.max()) + 1
    stacked, stacked_ids = np.concatenate([side1, side2]), np.concatenate([tids, tids + offset])
    out = {}
    for key, gal in searches.items():
        g_t, g_s = np.array(list(gal), np.int64), np.array(list(gal.values()), np.int64)
        out[key] = identify_1toN(
            stacked, stacked_ids, g_t, g_s, p_t + offset, p_s, fpirs=fpirs, rank=rank, variant=variant
        )
    return out


def score_setting(
    ijb: IJB,
    feats: dict[View, np.ndarray],
    setting: MixedSetting,
    flags: IjbFlags,
    lists: dict[str, dict[int, int]],
    *,
    fars: Sequence[float] = ROC_FARS,
    variant: str = "insightface_1n",
    fpirs: Sequence[float] = (0.01, 0.1),
    rank: int = 1,
) -> tuple[np.ndarray, Any, dict[str, OpenSetResult]]:
    """(1:1 scores (P,), ROC, 1:N results) of one setting from the view features (see module docstring)."""
    v = needed_views(setting, flags, bool(lists))
    f = {k: feats[view] for k, view in v.items()}

    def pool(x: np.ndarray, mirror: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        return template_features(x, ijb.templates, ijb.medias, flags, mirror, ijb.faceness)

    if setting.mode == "aggregate":
        templates, tids = pool(f["a"], f.get("b"))
        scores, roc = verify_1to1(templates, tids, ijb.pairs, ijb.labels, fars)
        one_to_n: dict[str, OpenSetResult] = {}
        if lists:
            t1n = templates if v.get("b1n") == v.get("b") else pool(f["a"], f.get("b1n"))[0]
            one_to_n = ijb_one_to_n(t1n, tids, lists, variant=variant, fpirs=fpirs, rank=rank)
        return scores, roc, one_to_n
    side1, tids = pool(f["a"], f.get("a_flip"))
    side2, _ = pool(f["b"], f.get("b_flip"))
    scores = np.sum(
        side1[_rows_of(tids, ijb.pairs[:, 0], "pairs[:, 0]")] * side2[_rows_of(tids, ijb.pairs[:, 1], "pairs[:, 1]")],
        axis=1,
    )
    roc = tar_at_far(scores, ijb.labels, fars)
    one_to_n = _cross_one_to_n(side1, side2, tids, lists, variant, fpirs, rank) if lists else {}
    return scores, roc, one_to_n


def evaluate_ijb_mixed(
    model: nn.Module,
    root: str | os.PathLike,
    flags: IjbFlags,
    settings: Sequence[MixedSetting],
    *,
    name: str = "ijbc",
    options: ExtractOptions | None = None,
    fars: Sequence[float] = ROC_FARS,
    one_to_n: bool = True,
    variant: str = "insightface_1n",
    fpirs: Sequence[float] = (0.01, 0.1),
    rank: int = 1,
    chunk: int = 2048,
) -> dict[str, IjbResult]:
    """IJB 1:1 (and 1:N) for each setting, every needed view extracted once; {setting label: result}."""
    IjbFlags.require(flags)
    if not settings:
        raise ValueError("settings: expected at least one MixedSetting")
    options = options or ExtractOptions()
    if not flags.flip and any(s.mode == "aggregate" and s.reso2 != s.reso1 for s in settings):
        warnings.warn(
            "IjbFlags.flip=False: the public scripts then use view 1 only, so reso2 has no effect "
            "(pass the flip test to aggregate both views)",
            stacklevel=2,
        )
    ijb = load_ijb(root, name)
    lists = one_to_n_lists(ijb, name) if one_to_n else {}
    views = [v for s in settings for v in needed_views(s, flags, one_to_n).values()]
    feats, paths = view_features(model, ijb, views, options, chunk)
    out = {}
    trunk = int(getattr(model, "input_size", ALIGNED))
    for s in settings:
        _, roc, res_1n = score_setting(ijb, feats, s, flags, lists, fars=fars, variant=variant, fpirs=fpirs, rank=rank)
        used = {
            k: {
                "sizes": list(v[0]),
                "mirrored": v[1],
                "model_input": paths[v],
                "route": "trunk" if paths[v] == trunk else f"branch {paths[v]}",
            }
            for k, v in needed_views(s, flags, one_to_n).items()
        }
        info = {
            "root": str(root),
            "name": name,
            "flags": flags.as_dict(),
            **s.as_dict(),
            "views": used,
            "fars": list(fars),
            "one_to_n": one_to_n,
            "variant": variant,
            "fpirs": list(fpirs),
            "rank": rank,
            "extraction": options.as_dict(),
        }
        out[s.label] = IjbResult(name, roc, res_1n, len(ijb.names), len(np.unique(ijb.templates)), len(ijb.pairs), info)
    return out


def plot_matrix_png(rows: list[dict[str, Any]], path: str | os.PathLike, title: str) -> None:
    """Grouped bars per setting: TAR@FAR (1:1) and TPIR@FPIR (1:N), values in %; ``rows`` as the CLI builds them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r["pair"] for r in rows]
    metrics = [k for k in rows[0] if k != "pair"] if rows else []
    x = np.arange(len(labels))
    width = 0.8 / max(1, len(metrics))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(labels) + 2), 4.5), dpi=100)
    try:
        for i, m in enumerate(metrics):
            vals = [r[m] for r in rows]
            bars = ax.bar(x + (i - (len(metrics) - 1) / 2) * width, vals, width, label=m)
            ax.bar_label(bars, fmt="%.1f", fontsize=7)
        ax.set_xticks(x, labels)
        ax.set_xlabel("resolution setting (view 1 & view 2, px)")
        ax.set_ylabel("%")
        ax.set_ylim(0, 118)
        ax.set_title(title)
        ax.grid(True, axis="y", alpha=0.3)
        if metrics:
            ax.legend(fontsize=8, loc="upper center", ncol=2)
        fig.tight_layout()
        save_figure(fig, path)
    finally:
        plt.close(fig)
