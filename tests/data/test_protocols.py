"""Protocol loaders on tiny fake trees written in the real file formats; missing files are listed."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import scipy.io

from mrface.data.protocols.align import ARCFACE_TEMPLATE, align_face, similarity_transform
from mrface.data.protocols.common import MissingFilesError
from mrface.data.protocols.ijb import load_ijb
from mrface.data.protocols.scface import load_scface
from mrface.data.protocols.survface import load_survface
from mrface.data.protocols.tinyface import load_tinyface
from mrface.data.synthface import SynthFace


def _touch_png(path, seed=0, size=8):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def test_similarity_transform_recovers_known_transform():
    angle, scale, t = 0.3, 1.7, np.array([5.0, -3.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = ARCFACE_TEMPLATE.astype(np.float64)
    m = similarity_transform(src, src @ rot.T + t)
    np.testing.assert_allclose(m, np.hstack([rot, t[:, None]]), atol=1e-9)


def test_align_face_undoes_a_similarity_warp():
    face = SynthFace(0).render([0], [0])[0]
    # place the face in a larger loose crop with a known similarity, landmarks moved with it
    a, s = 0.2, 1.6
    fwd = np.array([[s * np.cos(a), -s * np.sin(a), 60.0], [s * np.sin(a), s * np.cos(a), 20.0]])
    loose = cv2.warpAffine(face, fwd, (260, 260), flags=cv2.INTER_CUBIC)
    lmk = ARCFACE_TEMPLATE @ fwd[:, :2].T + fwd[:, 2]
    back = align_face(loose, lmk)
    inner = (slice(20, 92), slice(20, 92))
    assert np.abs(back[inner].astype(int) - face[inner]).mean() < 6


def _ijb_tree(root, missing_image=False):
    (root / "meta").mkdir(parents=True)
    names = ["1.jpg", "2.jpg", "3.jpg"]
    lmk = ARCFACE_TEMPLATE.reshape(-1)
    (root / "meta" / "ijbc_name_5pts_score.txt").write_text(
        "".join(f"{n} {' '.join(f'{v:.4f}' for v in lmk)} 0.{i + 5}\n" for i, n in enumerate(names))
    )
    (root / "meta" / "ijbc_face_tid_mid.txt").write_text("1.jpg 1 10\n2.jpg 1 11\n3.jpg 2 12\n")
    (root / "meta" / "ijbc_template_pair_label.txt").write_text("1 2 0\n1 1 1\n")
    (root / "meta" / "ijbc_1N_gallery_G1.csv").write_text("TEMPLATE_ID,SUBJECT_ID,FILENAME\n1,100,a\n2,200,b\n")
    for i, n in enumerate(names[: 2 if missing_image else 3]):
        _touch_png(root / "loose_crop" / n, i, 112)


def test_ijb_loader(tmp_path):
    _ijb_tree(tmp_path)
    ijb = load_ijb(tmp_path, "ijbc")
    assert ijb.names == ["1.jpg", "2.jpg", "3.jpg"]
    assert ijb.templates.tolist() == [1, 1, 2] and ijb.medias.tolist() == [10, 11, 12]
    np.testing.assert_allclose(ijb.faceness, [0.5, 0.6, 0.7])
    np.testing.assert_allclose(ijb.landmarks[0], ARCFACE_TEMPLATE, atol=1e-4)
    assert ijb.pairs.tolist() == [[1, 2], [1, 1]] and ijb.labels.tolist() == [0, 1]
    assert ijb.one_to_n("ijbc_1N_gallery_G1.csv") == {1: 100, 2: 200}
    img = cv2.imread(str(tmp_path / "loose_crop" / "1.jpg"))[..., ::-1]
    # landmarks already on the template: alignment is the identity warp
    assert np.abs(ijb.aligned(0).astype(int) - img).max() <= 1


def test_ijb_missing_files_listed(tmp_path):
    with pytest.raises(MissingFilesError, match="none"):
        load_ijb(tmp_path / "none")
    tmp_path.joinpath("x").mkdir()
    with pytest.raises(MissingFilesError) as e:
        load_ijb(tmp_path / "x")
    assert len(e.value.missing) == 4 and "ijbc_face_tid_mid.txt" in str(e.value)
    _ijb_tree(tmp_path / "y", missing_image=True)
    with pytest.raises(MissingFilesError, match=r"loose_crop/3\.jpg"):
        load_ijb(tmp_path / "y")


def test_ijb_bad_line(tmp_path):
    _ijb_tree(tmp_path)
    (tmp_path / "meta" / "ijbc_template_pair_label.txt").write_text("1 2\n")
    with pytest.raises(ValueError, match=r"ijbc_template_pair_label\.txt: line 1: expected 3 fields"):
        load_ijb(tmp_path)


def test_tinyface(tmp_path):
    t = tmp_path / "Testing_Set"
    _touch_png(t / "Probe" / "1_1.png")
    _touch_png(t / "Probe" / "2_1.png")
    _touch_png(t / "Gallery_Match" / "1_5.png")
    _touch_png(t / "Gallery_Match" / "2_7.png")
    _touch_png(t / "Gallery_Distractor" / "0001.png")
    tf = load_tinyface(tmp_path)
    assert [lbl for _, lbl in tf.probe] == [1, 2] and [lbl for _, lbl in tf.gallery_distractor] == [-1]
    (t / "Gallery_Match" / "2_7.png").unlink()
    with pytest.raises(ValueError, match=r"probe labels without a gallery match: \[2\]"):
        load_tinyface(tmp_path)
    (t / "Gallery_Distractor" / "0001.png").unlink()
    (t / "Gallery_Distractor").rmdir()
    with pytest.raises(MissingFilesError, match="Gallery_Distractor") as e:
        load_tinyface(tmp_path)
    assert len(e.value.missing) == 1


def _scface_tree(root, subjects, skip=None):
    for s in range(1, subjects + 1):
        _touch_png(root / "mugshot_frontal_cropped_all" / f"{s:03d}_frontal.jpg")
        for d in (1, 2, 3):
            for c in (1, 2, 3, 4, 5):
                p = root / f"surveillance_cameras_distance_{d}" / f"cam{c}" / f"{s:03d}_cam{c}_{d}.jpg"
                if p.name != skip:
                    _touch_png(p)


def test_scface_both_protocols(tmp_path):
    _scface_tree(tmp_path, 130)
    ft = load_scface(tmp_path, "finetune50")
    assert [s for _, s in ft.gallery] == list(range(51, 131))
    assert len(ft.probes[1]) == 80 * 5 and {s for _, s in ft.probes[3]} == set(range(51, 131))
    assert len(ft.train) == 50 + 50 * 15 and {s for _, s in ft.train} == set(range(1, 51))
    zs = load_scface(tmp_path, "all130")
    assert len(zs.gallery) == 130 and zs.train == [] and len(zs.probes[2]) == 650


def test_scface_missing_listed(tmp_path):
    _scface_tree(tmp_path, 130, skip="077_cam4_2.jpg")
    with pytest.raises(MissingFilesError, match=r"cam4/077_cam4_2\.jpg") as e:
        load_scface(tmp_path, "all130")
    assert len(e.value.missing) == 1


def test_survface(tmp_path):
    t = tmp_path / "Face_Identification_Test_Set"
    names = {"gallery": ["g1.jpg", "g2.jpg"], "mated_probe": ["m1.jpg"], "unmated_probe": ["u1.jpg", "u2.jpg"]}
    for s, ns in names.items():
        for i, n in enumerate(ns):
            _touch_png(t / s / n, i)
    scipy.io.savemat(
        t / "gallery_img_ID_pairs.mat",
        {"gallery_set": np.array(names["gallery"], dtype=object)[:, None], "gallery_ids": [[3], [7]]},
    )
    scipy.io.savemat(
        t / "mated_probe_img_ID_pairs.mat",
        {"mated_probe_set": np.array(names["mated_probe"], dtype=object)[:, None], "ids": [[7]]},
    )
    scipy.io.savemat(
        t / "unmated_probe_img_ID_pairs.mat",
        {"unmated_probe_set": np.array(names["unmated_probe"], dtype=object)[:, None]},
    )
    sf = load_survface(tmp_path)
    assert [(p.name, i) for p, i in sf.gallery] == [("g1.jpg", 3), ("g2.jpg", 7)]
    assert [(p.name, i) for p, i in sf.mated_probe] == [("m1.jpg", 7)]
    assert [i for _, i in sf.unmated_probe] == [-1, -1]
    (t / "unmated_probe" / "u2.jpg").unlink()
    with pytest.raises(MissingFilesError, match=r"unmated_probe/u2\.jpg"):
        load_survface(tmp_path)
