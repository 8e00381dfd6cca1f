"""RecordDataset / ImageFolderDataset (with DataLoader workers) and the degradation transforms."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from mrface.data.datasets import ImageFolderDataset, RecordDataset, make_loader
from mrface.data.insightface import write_insightface
from mrface.data.transforms import FixedResolution, GaussianBlur, GaussianNoise, JpegQuality, RandomResolution


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


def test_image_folder_and_list_file(tmp_path):
    images = _images(3)
    for i, name in enumerate(["bob", "alice", "alice"]):
        (tmp_path / name).mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / name / f"{i}.png"), images[i][..., ::-1])
    ds = ImageFolderDataset(tmp_path)
    assert ds.classes == ["alice", "bob"] and [lbl for _, lbl in ds.samples] == [0, 0, 1]
    torch.testing.assert_close(ds[2][0], _expected(images[:1])[0], rtol=0, atol=0)
    (tmp_path / "list.txt").write_text("bob/0.png 5\nalice/2.png 7\n")
    lst = ImageFolderDataset.from_list(tmp_path / "list.txt")
    assert lst[1][1] == 7
    torch.testing.assert_close(lst[1][0], _expected(images[2:3])[0], rtol=0, atol=0)
    (tmp_path / "bad.txt").write_text("nolabel\n")
    with pytest.raises(ValueError, match=r"bad\.txt: line 1: expected 'path label'"):
        ImageFolderDataset.from_list(tmp_path / "bad.txt")


def test_record_dataset_undecodable_image_names_key(tmp_path):
    write_insightface(tmp_path / "t.rec", [(0, b"not an image")])
    with pytest.raises(ValueError, match=r"t\.rec: record 0 \(key 1\) at byte offset \d+: cannot decode"):
        RecordDataset(tmp_path / "t.rec")[0]


def test_fixed_resolution_is_block_mean():
    x = torch.rand(2, 3, 112, 112) * 255
    down = FixedResolution(14, "area", up=None)(x)
    expected = x.reshape(2, 3, 14, 8, 14, 8).mean((3, 5))
    torch.testing.assert_close(down, expected, rtol=1e-5, atol=1e-3)
    single = FixedResolution(14, "area", up=None)(x[0])
    torch.testing.assert_close(single, expected[0], rtol=1e-5, atol=1e-3)


def test_random_resolution_p0_identity_and_fixed_side():
    x = torch.rand(3, 3, 112, 112) * 255
    assert torch.equal(RandomResolution(7, 56, p=0.0)(x), x)
    rr = RandomResolution(14, 14, filters=("area",), up="bilinear", generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(rr(x), FixedResolution(14, "area", "bilinear")(x), rtol=1e-5, atol=1e-3)


def test_jpeg_matches_opencv_round_trip():
    img = torch.from_numpy(_images(1, 32)[0]).permute(2, 0, 1).contiguous()
    out = JpegQuality(40, 40)(img)
    arr = img.permute(1, 2, 0).numpy()
    expected = cv2.imdecode(cv2.imencode(".jpg", arr, [cv2.IMWRITE_JPEG_QUALITY, 40])[1], cv2.IMREAD_UNCHANGED)
    assert torch.equal(out.permute(1, 2, 0), torch.from_numpy(expected))


def test_blur_matches_opencv_gaussian():
    img = torch.rand(3, 20, 24) * 255
    out = GaussianBlur(1.5, 1.5)(img)
    arr = np.ascontiguousarray(img.permute(1, 2, 0).numpy())
    r = int(np.ceil(3 * 1.5))
    expected = cv2.GaussianBlur(arr, (2 * r + 1, 2 * r + 1), 1.5, borderType=cv2.BORDER_REPLICATE)
    torch.testing.assert_close(out.permute(1, 2, 0), torch.from_numpy(expected), rtol=1e-4, atol=1e-3)


def test_noise_statistics():
    x = torch.full((4, 3, 64, 64), 128.0)
    out = GaussianNoise(5.0, 5.0, generator=torch.Generator().manual_seed(0))(x)
    assert abs((out - x).std().item() - 5.0) < 0.1 and abs((out - x).mean().item()) < 0.1
    u8 = GaussianNoise(5.0, 5.0)(x.to(torch.uint8))
    assert u8.dtype == torch.uint8


def test_transform_argument_errors():
    with pytest.raises(ValueError, match="filter 'box'"):
        RandomResolution(filters=("box",))
    with pytest.raises(ValueError, match="JpegQuality"):
        JpegQuality(0, 50)
