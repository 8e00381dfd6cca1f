"""Tiny models, SynthFace data and fake protocol trees (real file formats) for the evaluation tests."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import scipy.io
import torch
import torch.nn.functional as F

from mrface.data.protocols.align import ARCFACE_TEMPLATE
from mrface.data.synthface import SynthFace
from mrface.eval.synthface_bench import Fisherfaces
from mrface.models import FaceModel, ModelMetadata


class PooledLinear(FaceModel):
    """(N, 3, S, S) -> 4x4 average pool -> linear -> (N, 8): cheap, deterministic, flip-sensitive."""

    embedding_size = 8

    def __init__(self, color_order: str = "BGR", seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.fc = torch.nn.Linear(48, 8)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(8, 48, generator=gen))
            self.fc.bias.copy_(torch.randn(8, generator=gen))
        self.metadata = ModelMetadata(
            architecture="pooled_linear",
            color_order=color_order,
            mean=(0.1, 0.2, 0.3),
            std=(0.5, 0.6, 0.7),
            embedding_size=8,
        )
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.fc(F.adaptive_avg_pool2d(x, 4).flatten(1))


@pytest.fixture
def pooled_linear() -> PooledLinear:
    return PooledLinear()


@pytest.fixture(scope="session")
def synth_images() -> tuple[np.ndarray, np.ndarray]:
    """(images (60, 112, 112, 3) uint8 RGB, identities (60,)): 20 identities x 3 images."""
    from mrface.data.synthface import SynthFace

    ids = np.repeat(np.arange(20), 3)
    return SynthFace(seed=7).render(ids, np.tile(np.arange(3), 20)), ids


def _write(path, rgb, size=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = rgb if size is None else cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    assert cv2.imwrite(str(path), np.ascontiguousarray(img[..., ::-1]))


@pytest.fixture(scope="session")
def fisher():
    ids = np.repeat(np.arange(5000, 5060), 4)
    return Fisherfaces(components=24).fit(SynthFace(seed=11).render(ids, np.tile(np.arange(4), 60)), ids)


@pytest.fixture(scope="session")
def tinyface_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tinyface") / "Testing_Set"
    synth = SynthFace(seed=21)
    ids = np.arange(10)
    probes = synth.render(ids, np.zeros(10, int))
    match = synth.render(np.concatenate([ids, ids[:4]]), np.concatenate([np.ones(10, int), np.full(4, 2)]))
    distract = synth.render(np.arange(100, 130), np.zeros(30, int))
    for i, im in zip(ids, probes, strict=True):
        _write(root / "Probe" / f"{i}_0.png", im, (20, 24))
    for k, (i, im) in enumerate(zip(np.concatenate([ids, ids[:4]]), match, strict=True)):
        _write(root / "Gallery_Match" / f"{i}_{k + 1}.png", im, (20, 24))
    for k, im in enumerate(distract):
        _write(root / "Gallery_Distractor" / f"{k:04d}.png", im, (20, 24))
    return root.parent


@pytest.fixture(scope="session")
def survface_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("survface")
    t = root / "Face_Identification_Test_Set"
    synth = SynthFace(seed=31)
    sets = {
        "gallery": (np.repeat(np.arange(1, 9), 2), np.tile([0, 1], 8)),
        "mated_probe": (np.arange(1, 9), np.full(8, 2)),
        "unmated_probe": (np.arange(9, 15), np.zeros(6, int)),
    }
    for name, (ids, imgs) in sets.items():
        names = [f"{name}_{k}.jpg" for k in range(len(ids))]
        for n, im in zip(names, synth.render(ids + 400, imgs), strict=True):
            _write(t / name / n, im, (16, 20))
        mat = {f"{name}_set": np.array(names, dtype=object)[:, None]}
        if name != "unmated_probe":
            mat[f"{name}_ids"] = ids[:, None].astype(np.float64)
        scipy.io.savemat(t / f"{name}_img_ID_pairs.mat", mat)
    return root, sets


@pytest.fixture(scope="session")
def scface_root(tmp_path_factory):
    """Subjects 1-5 and 51-53 rendered; 6-50 (only the fine-tuning list of ``finetune50``) share one image."""
    root = tmp_path_factory.mktemp("scface")
    synth = SynthFace(seed=41)
    rendered = np.array([1, 2, 3, 4, 5, 51, 52, 53])
    filler = synth.render([999], [0])[0]
    sizes = {0: None, 1: (14, 16), 2: (22, 26), 3: (40, 46)}
    for d, size in sizes.items():
        faces = dict(zip(rendered.tolist(), synth.render(rendered + 700, np.full(8, d)), strict=True))
        for s in range(1, 54):
            path = (
                root / "mugshot_frontal_cropped_all" / f"{s:03d}_frontal.jpg"
                if d == 0
                else root / f"surveillance_cameras_distance_{d}" / "cam1" / f"{s:03d}_cam1_{d}.jpg"
            )
            _write(path, faces.get(s, filler), size)
    return root


@pytest.fixture(scope="session")
def ijb_root(tmp_path_factory):
    """6 subjects x 2 templates x 2 media x 2 images; loose crops warped by a random similarity."""
    root = tmp_path_factory.mktemp("ijb")
    rng = np.random.default_rng(5)
    synth = SynthFace(seed=51)
    lines, tid_lines = [], []
    k = 0
    for s in range(6):
        for t in (2 * s, 2 * s + 1):
            for m in range(2):
                for _ in range(2):
                    face = synth.render([900 + s], [k])[0]
                    a, sc = rng.uniform(-0.3, 0.3), rng.uniform(1.1, 1.5)
                    fwd = np.array(
                        [
                            [sc * np.cos(a), -sc * np.sin(a), rng.uniform(10, 30)],
                            [sc * np.sin(a), sc * np.cos(a), rng.uniform(10, 30)],
                        ]
                    )
                    loose = cv2.warpAffine(face, fwd, (200, 200), flags=cv2.INTER_LINEAR)
                    lmk = ARCFACE_TEMPLATE @ fwd[:, :2].T + fwd[:, 2]
                    name = f"{k}.jpg"
                    _write(root / "loose_crop" / name, loose)
                    lines.append(f"{name} {' '.join(f'{v:.3f}' for v in lmk.reshape(-1))} {rng.uniform(0.3, 1):.3f}")
                    tid_lines.append(f"{name} {t} {10 * t + m}")
                    k += 1
    meta = root / "meta"
    meta.mkdir()
    (meta / "ijbc_name_5pts_score.txt").write_text("\n".join(lines) + "\n")
    (meta / "ijbc_face_tid_mid.txt").write_text("\n".join(tid_lines) + "\n")
    pairs = [(a, b, int(a // 2 == b // 2)) for a in range(12) for b in range(a + 1, 12)]
    (meta / "ijbc_template_pair_label.txt").write_text("".join(f"{a} {b} {y}\n" for a, b, y in pairs))
    csv = lambda rows: "TEMPLATE_ID,SUBJECT_ID,FILENAME\n" + "".join(f"{t},{s},x.jpg\n" for t, s in rows)  # noqa: E731
    (meta / "ijbc_1N_gallery_G1.csv").write_text(csv([(2 * s, s) for s in range(3)] * 2))
    (meta / "ijbc_1N_gallery_G2.csv").write_text(csv([(2 * s, s) for s in range(3, 6)]))
    (meta / "ijbc_1N_probe_mixed.csv").write_text(csv([(2 * s + 1, s) for s in range(6)] * 2))
    return root, np.array(pairs)
