"""RecordDataset / ImageFolderDataset (with DataLoader workers)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from mrface.data.datasets import ImageFolderDataset, RecordDataset, make_loader
from mrface.data.insightface import write_insightface


def _images(n: int, size: int = 16) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _expected(images: np.ndarray) -> torch.Tensor:
    return (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5


@pytest.fixture
def rec_path(tmp_path):
    images = _images(8)
    labels = [0, 0, 1, 1, 1, 2, 3, 3]
    png = [cv2.imencode(".png", im[..., ::-1])[1].tobytes() for im in images]
    write_insightface(tmp_path / "train.rec", zip(labels, png, strict=True), image_size=(16, 16))
    return tmp_path / "train.rec", images, labels


def test_record_dataset_items_and_bgr(rec_path):
    path, images, labels = rec_path
    ds = RecordDataset(path)
    assert len(ds) == 8 and ds.num_classes == 4
    x, y = ds[2]
    torch.testing.assert_close(x, _expected(images[2:3])[0], rtol=0, atol=0)
    assert y == labels[2]
    xb, _ = RecordDataset(path, color="BGR")[2]
    torch.testing.assert_close(xb, x.flip(0), rtol=0, atol=0)


@pytest.mark.parametrize("workers", [0, 2])
def test_record_dataset_with_dataloader_workers(rec_path, workers):
    path, images, labels = rec_path
    loader = make_loader(RecordDataset(path), batch_size=4, workers=workers, shuffle=False, drop_last=False)
    xs, ys = zip(*loader, strict=True)
    torch.testing.assert_close(torch.cat(xs), _expected(images), rtol=0, atol=0)
    assert torch.cat(ys).tolist() == labels


def test_image_folder(tmp_path):
    images = _images(3)
    for i, name in enumerate(["bob", "alice", "alice"]):
        (tmp_path / name).mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / name / f"{i}.png"), images[i][..., ::-1])
    ds = ImageFolderDataset(tmp_path)
    assert ds.classes == ["alice", "bob"] and [lbl for _, lbl in ds.samples] == [0, 0, 1]
    torch.testing.assert_close(ds[2][0], _expected(images[:1])[0], rtol=0, atol=0)


def test_record_dataset_undecodable_image_names_key(tmp_path):
    write_insightface(tmp_path / "t.rec", [(0, b"not an image")])
    with pytest.raises(ValueError, match=r"t\.rec: record 0 \(key 1\) at byte offset \d+: cannot decode"):
        RecordDataset(tmp_path / "t.rec")[0]
