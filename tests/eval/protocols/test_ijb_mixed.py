"""Mixed-resolution IJB (BTNet's IJB-C tables) end to end on the fake IJB tree, against an independent
re-implementation of the public scripts (cv2 read/align/resize, InsightFace's template loop, sklearn ROC,
the public 1:N ``evaluation`` with its top-k and ``required_topk`` threshold)."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_curve

from mrface.cli import main
from mrface.data.protocols.align import ARCFACE_TEMPLATE
from mrface.eval.protocols.ijb import IjbFlags
from mrface.eval.protocols.ijb_mixed import BTNET_PAIRS, MixedSetting, evaluate_ijb_mixed
from mrface.models import FaceModel, ModelMetadata

MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


class ToyBranches(FaceModel):
    """A 'BTNet' with a trunk (112) and branches 28/14/7: a different pooled linear map per input size."""

    embedding_size = 8

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(3)
        self.maps = torch.nn.ParameterDict(
            {str(r): torch.nn.Parameter(torch.randn(48, 8, generator=gen)) for r in (112, 28, 14, 7)}
        )
        self.metadata = ModelMetadata(architecture="toy", color_order="RGB", mean=MEAN, std=STD, embedding_size=8)

    @property
    def resolutions(self) -> tuple[int, ...]:
        return (112, 28, 14, 7)

    def forward(self, x: torch.Tensor, resolution: int | None = None) -> torch.Tensor:
        r = x.shape[-1] if resolution is None else resolution
        assert x.shape[-1] == r, "each view must reach the path of its own size"
        return F.adaptive_avg_pool2d(x, 4).flatten(1) @ self.maps[str(r)]


def _public_views(root, model, r1, r2, up1, up2, script):
    """The public Embedding.get + forward_db for every image, F2 added: (N, E) and faceness (N,)."""
    lines = (root / "meta" / "ijbc_name_5pts_score.txt").read_text().split("\n")
    feats, face = [], []
    for line in filter(None, lines):
        parts = line.split(" ")
        img = cv2.imread(str(root / "loose_crop" / parts[0]))
        lmk = np.array([float(v) for v in parts[1:-1]], np.float32).reshape(5, 2)
        m, _ = cv2.estimateAffinePartial2D(lmk, ARCFACE_TEMPLATE.astype(np.float32), method=cv2.LMEDS)
        aligned = cv2.warpAffine(img, m, (112, 112), borderValue=0.0)
        a = aligned
        if r1 != 112:
            a = cv2.resize(a, (r1, r1))
            if up1:
                a = cv2.resize(a, (112, 112))
        b = aligned if script == "11" or r2 == 112 else a
        if r2 != 112:
            b = cv2.resize(b, (r2, r2))
            if up2:
                b = cv2.resize(b, (112, 112))
        a = cv2.cvtColor(a, cv2.COLOR_BGR2RGB)
        b = np.fliplr(cv2.cvtColor(b, cv2.COLOR_BGR2RGB))
        with torch.no_grad():
            ta = (torch.tensor(a.transpose(2, 0, 1)[None].copy()).float() / 255 - 0.5) / 0.5
            tb = (torch.tensor(b.transpose(2, 0, 1)[None].copy()).float() / 255 - 0.5) / 0.5
            feats.append((model(ta) + model(tb))[0].double().numpy())
        face.append(float(parts[-1]))
    return np.array(feats), np.array(face)


def _public_templates(feats, face, templates, medias, choose=None):
    x = feats / np.sqrt(np.sum(feats**2, -1, keepdims=True)) * face[:, None]
    uniq = np.unique(templates if choose is None else choose)
    out = np.zeros((len(uniq), x.shape[1]))
    for c, t in enumerate(uniq):
        (ind_t,) = np.where(templates == t)
        fm, mm = x[ind_t], medias[ind_t]
        out[c] = np.sum([np.mean(fm[mm == u], 0) for u in np.unique(mm)], 0)
    return out / np.sqrt(np.sum(out**2, -1, keepdims=True)), uniq


def _public_11(root, feats, face):
    tm = np.loadtxt(root / "meta" / "ijbc_face_tid_mid.txt", dtype=str)
    templates, medias = tm[:, 1].astype(int), tm[:, 2].astype(int)
    pairs = np.loadtxt(root / "meta" / "ijbc_template_pair_label.txt", dtype=int)
    t, uniq = _public_templates(feats, face, templates, medias)
    row = {u: i for i, u in enumerate(uniq)}
    score = np.array([t[row[a]] @ t[row[b]] for a, b in pairs[:, :2]])
    fpr, tpr, _ = roc_curve(pairs[:, 2], score)
    fpr, tpr = np.flipud(fpr), np.flipud(tpr)
    table = {}
    for far in (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1):
        _, i = min(zip(abs(fpr - far), range(len(fpr)), strict=True))
        table[far] = tpr[i]
    return table, templates, medias


def _public_1n(root, feats, face, templates, medias):
    def read(name):
        m = np.loadtxt(root / "meta" / name, dtype=str, skiprows=1, delimiter=",")
        return m[:, 0].astype(int), m[:, 1].astype(int)

    g1, s1 = read("ijbc_1N_gallery_G1.csv")
    g2, s2 = read("ijbc_1N_gallery_G2.csv")
    gt, gs = np.concatenate([g1, g2]), np.concatenate([s1, s2])
    gfeat, gu = _public_templates(feats, face, templates, medias, gt)
    gids = gs[np.unique(gt, return_index=True)[1]]
    pt, ps = read("ijbc_1N_probe_mixed.csv")
    pfeat, pu = _public_templates(feats, face, templates, medias, pt)
    pids = ps[np.unique(pt, return_index=True)[1]]
    mask = [list(gids).index(p) for p in pids]
    sim = pfeat @ gfeat.T
    top = np.argsort(-sim)
    ranks = {k: np.mean([mask[i] in top[i, :k] for i in range(len(pids))]) for k in (1, 5, 10)}
    pos = sim[np.arange(len(pids)), mask].copy()
    sim[np.arange(len(pids)), mask] = -2.0
    neg = np.sort(sim[sim > -2.0])[::-1]
    tpir = {f: np.sum(pos > neg[math.ceil(len(pids) * f) - 1]) / len(pids) for f in (0.01, 0.1)}
    return tpir, ranks


FLAGS = IjbFlags(flip=True, norm_weighting=False, detector_score=True)  # the public scripts' test mode


@pytest.mark.parametrize(
    "r1,r2,up1,up2", [(112, 7, False, False), (14, 14, False, False), (112, 28, True, True), (28, 14, True, False)]
)
def test_aggregate_matches_public_scripts(ijb_root, r1, r2, up1, up2):
    root, _ = ijb_root
    model = ToyBranches().eval()
    res = evaluate_ijb_mixed(model, root, FLAGS, [MixedSetting(r1, r2, up1, up2)])[f"{r1}&{r2}"]
    feats, face = _public_views(root, model, r1, r2, up1, up2, "11")
    table, templates, medias = _public_11(root, feats, face)
    for far, tar in table.items():
        assert res.roc.tar_at_far[far] == pytest.approx(tar, abs=1e-9), far
    feats_1n, _ = _public_views(root, model, r1, r2, up1, up2, "1n")
    tpir, ranks = _public_1n(root, feats_1n, face, templates, medias)
    (o,) = res.one_to_n.values()
    assert o.tpir == pytest.approx(tpir, abs=1e-9)
    assert o.rank_rates == pytest.approx(ranks, abs=1e-9)
    views = res.settings["views"]
    want = "trunk" if (r1 == 112 or up1) else f"branch {r1}"
    assert views["a"]["route"] == want


def test_cross_mode_pools_each_side_from_its_view(ijb_root):
    """cross: side 1 from the 112 view, side 2 from the 7 px view (no flip): cosines from independent templates."""
    root, _ = ijb_root
    model = ToyBranches().eval()
    flags = IjbFlags(flip=False, norm_weighting=False, detector_score=False)
    res = evaluate_ijb_mixed(model, root, flags, [MixedSetting(112, 7, mode="cross")], one_to_n=False)["112&7"]
    tm = np.loadtxt(root / "meta" / "ijbc_face_tid_mid.txt", dtype=str)
    templates, medias = tm[:, 1].astype(int), tm[:, 2].astype(int)
    pairs = np.loadtxt(root / "meta" / "ijbc_template_pair_label.txt", dtype=int)
    lines = [ln for ln in (root / "meta" / "ijbc_name_5pts_score.txt").read_text().split("\n") if ln]
    v1, v2 = [], []
    for line in lines:
        parts = line.split(" ")
        img = cv2.imread(str(root / "loose_crop" / parts[0]))
        lmk = np.array([float(v) for v in parts[1:-1]], np.float32).reshape(5, 2)
        m, _ = cv2.estimateAffinePartial2D(lmk, ARCFACE_TEMPLATE.astype(np.float32), method=cv2.LMEDS)
        rgb = cv2.cvtColor(cv2.warpAffine(img, m, (112, 112), borderValue=0.0), cv2.COLOR_BGR2RGB)
        for arr, im in ((v1, rgb), (v2, cv2.resize(rgb, (7, 7)))):
            t = (torch.tensor(im.transpose(2, 0, 1)[None].copy()).float() / 255 - 0.5) / 0.5
            with torch.no_grad():
                arr.append(model(t)[0].double().numpy())
    ones = np.ones(len(lines))
    t1, uniq = _public_templates(np.array(v1), ones, templates, medias)
    t2, _ = _public_templates(np.array(v2), ones, templates, medias)
    row = {u: i for i, u in enumerate(uniq)}
    score = np.array([t1[row[a]] @ t2[row[b]] for a, b in pairs[:, :2]])
    fpr, tpr, _ = roc_curve(pairs[:, 2], score)
    _, i = min(zip(abs(np.flipud(fpr) - 1e-1), range(len(fpr)), strict=True))
    assert res.roc.tar_at_far[1e-1] == pytest.approx(np.flipud(tpr)[i], abs=1e-9)


@pytest.mark.filterwarnings("ignore:--model btnet_tiny")
def test_cli_matrix_writes_json_markdown_and_plot(ijb_root, tmp_path, capsys):
    root, _ = ijb_root
    out = tmp_path / "run"
    code = main(
        [
            "eval",
            "ijb",
            "--model",
            "btnet_tiny",
            "--root",
            str(root),
            "--out",
            str(out),
            "--test-flip",
            "yes",
            "--norm-weighting",
            "no",
            "--detector-score",
            "yes",
            "--matrix",
            "--quiet",
        ]
    )
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "results.json").read_text())
    assert list(report["results"]) == [f"{a}&{b}" for a, b in BTNET_PAIRS]
    assert (out / "matrix.png").stat().st_size > 0 and (out / "report.md").is_file()
    assert "112&7" in capsys.readouterr().out
