"""BTNet's SurvFace 1:N set-up (eval_survface_1n_multi_reso.py): raw-feature prototypes, PIL bicubic resize."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from mrface.eval.crops import CropRouting, embed_crops
from mrface.eval.protocols.survface import score_survface
from mrface.eval.verification import ExtractOptions
from mrface.models import FaceModel


def test_raw_prototypes_average_raw_features_then_normalise():
    """Subject 1 has a long and a short gallery feature: the raw mean leans to the long one, the mean of unit
    features does not. Hand values: raw mean of (10, 0) and (0, 1) = (5, 0.5) -> unit (0.995, 0.0995);
    unit mean of (1, 0), (0, 1) -> (0.707, 0.707). A probe at (0.6, 0.8) then scores 0.677 against subject 1
    with raw prototypes (so subject 2 at (0, 1)... wins with 0.8), 0.990 with unit prototypes (subject 1 wins)."""
    gallery = np.array([[10.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    gl = np.array([1, 1, 2])
    mated = np.array([[0.6, 0.8]])
    unmated = np.array([[-1.0, 0.0], [-0.6, -0.8]])
    raw = score_survface(gallery, gl, mated, np.array([1]), unmated, rank=1, gallery_mode="raw_prototypes")
    unit = score_survface(gallery, gl, mated, np.array([1]), unmated, rank=1, gallery_mode="prototypes")
    assert raw.rank_rates[1] == 0.0  # subject 2 (score 0.8) beats subject 1 (0.6 * 0.995 + 0.8 * 0.0995 = 0.677)
    assert unit.rank_rates[1] == 1.0  # subject 1 (0.990) beats subject 2 (0.8)


class RecordingBranches(FaceModel):
    """A stand-in multi-resolution model that records each input batch and its branch."""

    embedding_size = 4

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, torch.Tensor]] = []

    @property
    def resolutions(self) -> tuple[int, ...]:
        return (112, 28, 14, 7)

    def forward(self, x: torch.Tensor, resolution: int) -> torch.Tensor:
        self.seen.extend((resolution, face) for face in x)
        return torch.ones(len(x), 4)


def test_pil_bicubic_resize_to_the_branch_side():
    """routing resizer="pil_bicubic" (the btnet set-up) feeds each branch PIL's bicubic resize of the uint8 crop."""
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((30, 20), (12, 10), (6, 9), (29, 28))]
    model = RecordingBranches()
    routing = CropRouting(indicator="avg", strategy="ceil", resizer="pil_bicubic")
    embed_crops(model, crops, ExtractOptions(flip="none", batch_size=8), routing)
    # avg (w + h) // 2: 25 -> 28, 11 -> 14, 7 -> 7, 28 -> 28 (ceil: smallest branch >= size); groups ascending
    order = [2, 1, 0, 3]
    assert [r for r, _ in model.seen] == [7, 14, 28, 28]
    for i, (r, x) in zip(order, model.seen, strict=True):
        pil = np.asarray(Image.fromarray(crops[i]).resize((r, r), Image.BICUBIC))
        expected = (torch.from_numpy(pil).permute(2, 0, 1).float() / 255 - 0.5) / 0.5
        torch.testing.assert_close(x, expected, rtol=0, atol=1e-6)
