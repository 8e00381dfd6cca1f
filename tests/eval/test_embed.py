"""``mrface embed`` / ``mrface search`` and the Python API on SynthFace crops of mixed sizes, against
embeddings computed by hand (cv2 decode/resize, the model's forward per branch, flip add, L2) and a
brute-force numpy ranking."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mrface
from mrface.cli import main
from mrface.data.synthface import SynthFace
from mrface.eval.embed import EmbeddingSet
from mrface.models import save_model
from mrface.models.registry import get_model

# crop side -> branch the documented ceil rule picks with branches {112, 28, 14, 7}
SIDES = {112: 112, 60: 112, 20: 28, 10: 14, 6: 7}


@pytest.fixture(scope="module")
def crops(tmp_path_factory):
    """Gallery: 4 identities at each size; probes: other images of the same identities; odd inputs."""
    root = tmp_path_factory.mktemp("crops")
    torch.manual_seed(0)
    model = get_model("btnet_tiny").eval()
    ckpt = save_model(model, root / "btnet.safetensors")
    synth = SynthFace(seed=3)
    faces = synth.render(np.repeat(np.arange(4), 2), np.tile([0, 1], 4))
    for k, im in enumerate(faces):
        side = list(SIDES)[k % len(SIDES)]
        small = cv2.resize(im, (side, side), interpolation=cv2.INTER_AREA)
        folder = root / ("gallery" if k % 2 == 0 else "probe")
        folder.mkdir(exist_ok=True)
        assert cv2.imwrite(str(folder / f"id{k // 2}_{side}.png"), small[..., ::-1])
    (root / "gallery" / "broken.jpg").write_bytes(b"not an image at all")
    assert cv2.imwrite(str(root / "gallery" / "strip.png"), np.zeros((8, 40, 3), np.uint8))
    (root / "probes.txt").write_text(
        "# probes\n" + "".join(f"probe/{p.name}\n" for p in sorted((root / "probe").iterdir())) + "probe/gone.png\n"
    )
    return root, ckpt, model


def _by_hand(model, path):
    bgr = cv2.imread(str(path))
    side = bgr.shape[0]
    r = SIDES[side]
    x = torch.tensor(bgr[..., ::-1].transpose(2, 0, 1).copy()).float()[None] / 255
    x = (x - 0.5) / 0.5
    # the routing's default resizer: bilinear, half-pixel centres, no antialias, after normalisation
    x = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False, antialias=False)
    with torch.no_grad():
        e = model(x, resolution=r) + model(x.flip(3), resolution=r)
    e = e[0].numpy()
    return e / np.linalg.norm(e), r


def test_embed_routes_by_size_and_reports_odd_inputs(crops):
    root, ckpt, model = crops
    res = mrface.embed(ckpt, [root / "gallery"])
    assert len(res) == 4
    for path, emb, branch, (w, h) in zip(res.paths, res.embeddings, res.branches, res.sizes, strict=True):
        want, r = _by_hand(model, path)
        assert branch == r and w == h == int(path.rsplit("_", 1)[1].split(".")[0])
        np.testing.assert_allclose(emb, want, atol=1e-5)
    reasons = {s["path"].rsplit("/", 1)[1]: s["reason"] for s in res.skipped}
    assert set(reasons) == {"broken.jpg", "strip.png"}
    assert "unreadable" in reasons["broken.jpg"] and "aspect" in reasons["strip.png"]


def test_resolution_override_sends_every_crop_to_one_branch(crops):
    root, ckpt, _ = crops
    res = mrface.FaceEmbedder(ckpt, resolution=14).embed(root / "probes.txt")
    assert set(res.branches.tolist()) == {14}
    assert [s["path"].rsplit("/", 1)[1] for s in res.skipped] == ["gone.png"]


@pytest.mark.parametrize("suffix", [".npy", ".safetensors"])
def test_cli_embed_then_search_matches_brute_force(crops, tmp_path, suffix, capsys):
    root, ckpt, _ = crops
    g, p = tmp_path / f"g{suffix}", tmp_path / f"p{suffix}"
    assert main(["embed", str(ckpt), str(root / "gallery"), "--out", str(g), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "skipped 2" in out and "broken.jpg" in out
    assert main(["embed", str(ckpt), str(root / "probes.txt"), "--out", str(p), "--quiet"]) == 0
    hits = tmp_path / "hits.json"
    for backend in ("numpy", "faiss"):
        assert (
            main(
                [
                    "search",
                    "--gallery",
                    str(g),
                    "--probe",
                    str(p),
                    "--top",
                    "3",
                    "--backend",
                    backend,
                    "--out",
                    str(hits),
                ]
            )
            == 0
        )
        got = json.loads(hits.read_text())["results"]
        gs, ps = EmbeddingSet.load(g), EmbeddingSet.load(p)
        sim = ps.embeddings.astype(np.float64) @ gs.embeddings.T.astype(np.float64)
        for row, s in zip(got, sim, strict=True):
            order = np.argsort(-s)[:3]
            assert [m["gallery"] for m in row["matches"]] == [gs.paths[j] for j in order]
            np.testing.assert_allclose([m["score"] for m in row["matches"]], s[order], atol=1e-5)
    meta = EmbeddingSet.load(g).meta()
    assert meta["model"]["architecture"] == "btnet_tiny" and {"path", "width", "height", "branch", "norm"} <= set(
        meta["items"][0]
    )


def test_search_refuses_embeddings_of_different_models(crops, tmp_path, capsys):
    root, ckpt, _ = crops
    a = mrface.embed(ckpt, root / "gallery")
    b = mrface.embed(ckpt, root / "gallery")
    b.model = {**b.model, "embedding_size": 1}
    a.save(tmp_path / "a.npy")
    b.save(tmp_path / "b.npy")
    assert main(["search", "--gallery", str(tmp_path / "a.npy"), "--probe", str(tmp_path / "b.npy")]) == 2
    assert "different models" in capsys.readouterr().err
