"""Protocols end to end on tiny fake trees in the real file formats, images rendered with SynthFace.

Each protocol's numbers are checked against an independent computation in the test: images read with
OpenCV, embedded by calling the model directly (flip fusion written out), scored by brute force.
A Fisherfaces model fitted on disjoint SynthFace identities shows the numbers are meaningful.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from mrface.data.protocols.common import MissingFilesError
from mrface.data.protocols.ijb import load_ijb
from mrface.eval.crops import CropRouting
from mrface.eval.metrics import open_set_identification, tar_at_far
from mrface.eval.protocols.ijb import IjbFlags, evaluate_ijb, ijb_features
from mrface.eval.protocols.scface import evaluate_scface
from mrface.eval.protocols.survface import evaluate_survface
from mrface.eval.protocols.tinyface import evaluate_tinyface
from mrface.eval.verification import ExtractOptions

OPTS = ExtractOptions(batch_size=64)


@torch.no_grad()
def _direct(model, paths):
    """Independent embedding: read with OpenCV, model.preprocess to 112, forward image and mirror, e + e'."""
    images = [cv2.imread(str(p))[..., ::-1].copy() for p in paths]
    feats = np.zeros((len(images), model.embedding_size))
    for shape in {im.shape for im in images}:  # one batch per crop size
        idx = [i for i, im in enumerate(images) if im.shape == shape]
        x = model.preprocess([images[i] for i in idx], color_order="RGB", size=112)
        feats[idx] = (model(x) + model(x.flip(3))).double().numpy()
    return feats / np.linalg.norm(feats, axis=1, keepdims=True)


def _rank_of_first_mate(probe, plabels, gallery, glabels):
    ranks = []
    for i in range(len(probe)):
        order = np.argsort(-(gallery @ probe[i]), kind="stable")
        ranks.append(1 + int(np.flatnonzero(glabels[order] == plabels[i])[0]))
    return np.array(ranks)


# --------------------------------------------------------------------------------------- TinyFace
def test_tinyface_matches_independent_cmc(tinyface_root, fisher):
    res = evaluate_tinyface(fisher, tinyface_root, options=OPTS, ranks=(1, 5, 20))
    t = tinyface_root / "Testing_Set"
    probe_paths = sorted((t / "Probe").iterdir())
    match_paths = sorted((t / "Gallery_Match").iterdir())
    dis_paths = sorted((t / "Gallery_Distractor").iterdir())
    label = lambda p: int(p.name.split("_")[0])  # noqa: E731
    gallery = np.concatenate([_direct(fisher, match_paths), _direct(fisher, dis_paths)])
    glabels = np.array([label(p) for p in match_paths] + [-1] * len(dis_paths))
    ranks = _rank_of_first_mate(
        _direct(fisher, probe_paths), np.array([label(p) for p in probe_paths]), gallery, glabels
    )
    assert res.cmc == pytest.approx({r: float(np.mean(ranks <= r)) for r in (1, 5, 20)})
    assert (res.num_probes, res.num_gallery_match, res.num_distractors) == (10, 14, 30)
    # 1-2 mates among 44 entries: chance rank-1 is about 3 %; the fitted model is far above it
    assert res.cmc[1] >= 0.2 and res.cmc[1] <= res.cmc[5] <= res.cmc[20]
    assert res.settings["level"] == "entry" and res.settings["routing"]["strategy"] == "ceil"


def test_tinyface_missing_and_unreadable(tmp_path, tinyface_root, fisher):
    with pytest.raises(MissingFilesError, match="Gallery_Distractor") as e:
        (tmp_path / "Testing_Set" / "Probe").mkdir(parents=True)
        evaluate_tinyface(fisher, tmp_path)
    assert len(e.value.missing) == 2
    bad = tmp_path / "bad"
    for sub in ("Probe", "Gallery_Match", "Gallery_Distractor"):
        (bad / "Testing_Set" / sub).mkdir(parents=True)
        (bad / "Testing_Set" / sub / "1_0.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"Probe/1_0\.png: cannot read the image"):
        evaluate_tinyface(fisher, bad)


# --------------------------------------------------------------------------------------- SurvFace
@pytest.mark.parametrize("variant", ["nist", "btnet_survface"])
def test_survface_matches_independent_open_set(survface_root, fisher, variant):
    root, sets = survface_root
    res = evaluate_survface(fisher, root, options=OPTS, variant=variant, rank=5, fpirs=(0.5, 0.2))
    t = root / "Face_Identification_Test_Set"
    feats = {n: _direct(fisher, [t / n / f"{n}_{k}.jpg" for k in range(len(sets[n][0]))]) for n in sets}
    probes = np.concatenate([feats["mated_probe"], feats["unmated_probe"]])
    labels = np.concatenate([sets["mated_probe"][0], np.full(6, -7)])
    want = open_set_identification(
        probes @ feats["gallery"].T, labels, sets["gallery"][0], fpirs=(0.5, 0.2), rank=5, variant=variant
    )
    assert res.open_set.variant == variant
    assert res.open_set.tpir == pytest.approx(want.tpir)
    assert res.open_set.auc == pytest.approx(want.auc)
    assert (res.num_gallery, res.num_mated, res.num_unmated) == (16, 8, 6)
    assert res.summary()["variant"] == variant


def test_survface_missing_listed(tmp_path):
    (tmp_path / "Face_Identification_Test_Set" / "gallery").mkdir(parents=True)
    with pytest.raises(MissingFilesError) as e:
        evaluate_survface(torch.nn.Identity(), tmp_path)
    assert len(e.value.missing) == 5 and "unmated_probe_img_ID_pairs.mat" in str(e.value)


# ----------------------------------------------------------------------------------------- SCface
@pytest.mark.parametrize(
    "protocol,subjects,test_ids", [("finetune50", 53, [51, 52, 53]), ("all130", 5, [1, 2, 3, 4, 5])]
)
def test_scface_matches_independent_rank1(scface_root, fisher, protocol, subjects, test_ids):
    res = evaluate_scface(
        fisher, scface_root, protocol=protocol, cams=(1,), options=OPTS, ranks=(1, 3), subjects=subjects
    )
    ids = np.array(test_ids)
    gallery = _direct(fisher, [scface_root / "mugshot_frontal_cropped_all" / f"{s:03d}_frontal.jpg" for s in ids])
    for d in (1, 2, 3):
        probe = _direct(
            fisher, [scface_root / f"surveillance_cameras_distance_{d}" / "cam1" / f"{s:03d}_cam1_{d}.jpg" for s in ids]
        )
        ranks = _rank_of_first_mate(probe, ids, gallery, ids)
        assert res.per_distance[d] == pytest.approx({1: np.mean(ranks <= 1), 3: np.mean(ranks <= 3)})
    assert res.num_gallery == len(ids) and res.num_probes == {1: len(ids), 2: len(ids), 3: len(ids)}
    assert res.settings["finetune_subjects"] == (50 if protocol == "finetune50" else 0)


# -------------------------------------------------------------------------------------------- IJB
def _slow_ijb_templates(ijb, model, flags):
    """Independent pipeline: model on the aligned crops (and mirrors), InsightFace's template loop."""
    with torch.no_grad():
        x = model.preprocess([ijb.aligned(i) for i in range(len(ijb.names))], color_order="RGB")
        f, ff = model(x).double().numpy(), model(x.flip(3)).double().numpy()
    x = f + ff if flags.flip else f
    if not flags.norm_weighting:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    if flags.detector_score:
        x = x * ijb.faceness[:, None]
    out = {}
    for t in np.unique(ijb.templates):
        media = [x[(ijb.templates == t) & (ijb.medias == m)].mean(0) for m in np.unique(ijb.medias[ijb.templates == t])]
        v = np.sum(media, 0)
        out[int(t)] = v / np.linalg.norm(v)
    return out


@pytest.mark.parametrize("flags", [IjbFlags(True, False, True), IjbFlags(False, True, False)])
def test_ijb_end_to_end_matches_independent(ijb_root, fisher, flags):
    root, pairs = ijb_root
    res = evaluate_ijb(fisher, root, flags, options=OPTS, fars=(0.01, 0.1), fpirs=(0.5,), chunk=20)
    ijb = load_ijb(root)
    tmpl = _slow_ijb_templates(ijb, fisher, flags)
    scores = np.array([tmpl[a] @ tmpl[b] for a, b, _ in pairs])
    want = tar_at_far(scores, pairs[:, 2], (0.01, 0.1))
    assert res.roc.tar_at_far == pytest.approx(want.tar_at_far) and res.roc.auc == pytest.approx(want.auc)
    assert res.roc.auc > 0.75  # chance is 0.5: the fitted model separates the subjects after alignment
    # 1:N, NIST: G1 (subjects 0-2) and G2 (3-5) searched separately by all six probe templates
    assert sorted(res.one_to_n) == ["G1", "G2"]
    probes = np.array([tmpl[2 * s + 1] for s in range(6)])
    for name, subj in (("G1", range(3)), ("G2", range(3, 6))):
        gal = np.array([tmpl[2 * s] for s in subj])
        w = open_set_identification(probes @ gal.T, np.arange(6), np.array(list(subj)), fpirs=(0.5,), rank=1)
        assert res.one_to_n[name].tpir == pytest.approx(w.tpir)
    assert res.settings["flags"] == flags.as_dict() and res.num_templates == 12 and res.num_pairs == 66


def test_ijb_features_split_flip_and_insightface_1n(ijb_root, pooled_linear):
    root, _ = ijb_root
    ijb = load_ijb(root)
    f, ff = ijb_features(pooled_linear, ijb, IjbFlags(True, False, False), options=OPTS, chunk=7)
    with torch.no_grad():
        x = pooled_linear.preprocess([ijb.aligned(i) for i in range(len(ijb.names))], color_order="RGB")
        np.testing.assert_allclose(f, pooled_linear(x).numpy(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(ff, pooled_linear(x.flip(3)).numpy(), rtol=1e-4, atol=1e-4)
    res = evaluate_ijb(
        pooled_linear, root, IjbFlags(False, False, False), options=OPTS, variant="insightface_1n", fpirs=(0.5,)
    )
    assert list(res.one_to_n) == ["G1+G2"] and res.one_to_n["G1+G2"].variant == "insightface_1n"


def test_ijb_missing_1n_files_listed_before_extraction(ijb_root, tmp_path):
    root, _ = ijb_root
    import shutil

    shutil.copytree(root, tmp_path / "ijb")
    for f in ("ijbc_1N_gallery_G2.csv", "ijbc_1N_probe_mixed.csv"):
        (tmp_path / "ijb" / "meta" / f).unlink()
    model = torch.nn.Identity()  # would fail at extraction: the error must come first
    with pytest.raises(MissingFilesError) as e:
        evaluate_ijb(model, tmp_path / "ijb", IjbFlags(False, False, False))
    assert sorted(p.name for p in e.value.missing) == ["ijbc_1N_gallery_G2.csv", "ijbc_1N_probe_mixed.csv"]
    with pytest.raises(TypeError, match="explicit IjbFlags"):
        evaluate_ijb(model, root, None)


def test_crop_routing_rejects_unknown_strategy():
    with pytest.raises(ValueError, match="strategy='round'"):
        CropRouting(strategy="round")
