"""torch Datasets over RecordIO and image folders, plus a DataLoader factory.

Every dataset yields ``(image, label)``: image (3, H, W) float32 in the requested colour order,
``(x / 255 - mean) / std``; label an int.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from mrface.data.images import decode_image
from mrface.data.insightface import InsightFaceRecord
from mrface.data.recordio import RecordIOError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class _ImageDataset(Dataset):
    def __init__(self, color: str, mean: float, std: float) -> None:
        if color not in ("RGB", "BGR"):
            raise ValueError(f"color must be 'RGB' or 'BGR', got {color!r}")
        self.color, self.mean, self.std = color, mean, std

    def _finish(self, image: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        return (x.float() / 255 - self.mean) / self.std


class RecordDataset(_ImageDataset):
    """Images of an InsightFace or header-less ``.rec``; the file is memory-mapped lazily per worker.

    Args:
        path: the ``.rec`` (with ``.idx`` beside it).
        color: ``RGB`` or ``BGR`` (from the model metadata).
        skip_corrupt: drop corrupt records at open (see :class:`InsightFaceRecord`); ``skipped`` lists them.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        color: str = "RGB",
        mean: float = 0.5,
        std: float = 0.5,
        skip_corrupt: bool = False,
    ) -> None:
        super().__init__(color, mean, std)
        self.record = InsightFaceRecord(path, skip_corrupt=skip_corrupt)
        self.skipped = self.record.skipped

    def __len__(self) -> int:
        return len(self.record)

    @property
    def num_classes(self) -> int:
        return self.record.num_classes

    def describe(self, index: int) -> str:
        """``FILE: record INDEX (key K) at byte offset O``: where image ``index`` is stored."""
        key = self.record.image_keys[index]
        return f"{self.record.path}: record {index} (key {key}) at byte offset {self.record.reader.offset(key)}"

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """Raises ValueError naming the file, record index and offset for a corrupt record or image."""
        try:
            header, data = self.record.read(index)
            label = header.class_label
            image = decode_image(data, self.color)
        except RecordIOError as err:
            raise ValueError(f"{self.describe(index)}: {err.reason}") from None
        except (ValueError, OverflowError) as err:  # undecodable image; NaN/inf label
            raise ValueError(f"{self.describe(index)}: {err}") from None
        return self._finish(image), label


def scan_image_folder(root: str | os.PathLike) -> tuple[list[tuple[Path, int]], list[str]]:
    """``root/<identity>/*.jpg`` -> ([(path, label)], class names); labels follow sorted folder names."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise ValueError(f"{root}: no identity sub-folders (expected root/<identity>/*.jpg)")
    samples = []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        samples += [(p, label) for p in files]
    return samples, classes


class ImageFolderDataset(_ImageDataset):
    """``root/<identity>/*.jpg`` decoded with OpenCV."""

    def __init__(self, root: str | os.PathLike, color: str = "RGB", mean: float = 0.5, std: float = 0.5) -> None:
        super().__init__(color, mean, std)
        self.samples, self.classes = scan_image_folder(root)

    def __len__(self) -> int:
        return len(self.samples)

    def describe(self, index: int) -> str:
        return f"{self.samples[index][0]} (sample {index})"

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        try:
            image = decode_image(Path(path).read_bytes(), self.color)
        except (OSError, ValueError) as err:
            raise ValueError(f"{self.describe(index)}: {err}") from None
        return self._finish(image), label


def make_loader(
    dataset: Dataset,
    batch_size: int,
    workers: int = 0,
    shuffle: bool = True,
    drop_last: bool = True,
    seed: int = 0,
    pin_memory: bool | None = None,
    prefetch_factor: int = 2,
) -> DataLoader:
    """A DataLoader with a DistributedSampler when torch.distributed is initialised, persistent workers
    and pinned memory when CUDA is available. Shuffling is seeded by ``seed`` (and the epoch via
    ``loader.sampler.set_epoch`` in distributed runs)."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last) if distributed else None
    generator = torch.Generator().manual_seed(seed)
    kwargs = {"persistent_workers": True, "prefetch_factor": prefetch_factor} if workers > 0 else {}
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=workers,
        drop_last=drop_last,
        generator=generator,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        **kwargs,
    )
