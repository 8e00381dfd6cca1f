"""Training data: datasets from the recipe and a resumable global-batch sampler.

:class:`GlobalBatchSampler` makes the data order a pure function of (seed, micro-batch index):
epoch e shuffles the dataset with a generator seeded by (seed, e); global micro-batch m of the
epoch is the contiguous slice [m*G, (m+1)*G) of that permutation (G = batch_size * world_size),
and rank r takes its part [r*B, (r+1)*B). So 1 process with batch G sees exactly the images of
W processes with batch B, and a resumed run continues from any micro-batch index.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset

from mrface.data.datasets import ImageFolderDataset, RecordDataset
from mrface.data.synthface import SynthFace
from mrface.training.config import DataConfig

# Errors a broken sample raises while it is read or decoded (RecordIOError is a ValueError; int(inf) an
# OverflowError); anything else is a bug and propagates.
SAMPLE_ERRORS = (ValueError, OSError, OverflowError, EOFError)
SUBSTITUTE_TRIES = 64
UNREPLACEABLE = "no readable sample among the next 64 to replace it: "


class GlobalBatchSampler(Sampler[list[int]]):
    """Yields this rank's index lists for micro-batches ``start, start+1, ..., total-1`` (see module doc)."""

    def __init__(
        self, num_samples: int, batch_size: int, rank: int, world_size: int, seed: int, total: int, start: int = 0
    ) -> None:
        self.global_batch = batch_size * world_size
        if num_samples < self.global_batch:
            raise ValueError(
                f"dataset has {num_samples} images, fewer than one global batch "
                f"({batch_size} per rank x {world_size} ranks)"
            )
        self.num_samples, self.batch_size, self.rank = num_samples, batch_size, rank
        self.seed, self.total, self.start = seed, total, start
        self.per_epoch = num_samples // self.global_batch

    def __len__(self) -> int:
        return max(0, self.total - self.start)

    def permutation(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_samples, generator=g)

    def __iter__(self) -> Iterator[list[int]]:
        epoch, perm = -1, None
        for m in range(self.start, self.total):
            e, k = divmod(m, self.per_epoch)
            if e != epoch:
                epoch, perm = e, self.permutation(e)
            lo = k * self.global_batch + self.rank * self.batch_size
            yield perm[lo : lo + self.batch_size].tolist()


def synth_tensors(identities: int, images: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """SynthFace identities 0..identities-1 x images: uint8 (N, 3, 112, 112) RGB and labels (N,) int64."""
    ids = np.repeat(np.arange(identities), images)
    idx = np.tile(np.arange(images), identities)
    sf = SynthFace(seed)
    chunks = [sf.render(ids[i : i + 512], idx[i : i + 512]) for i in range(0, ids.size, 512)]
    x = torch.from_numpy(np.concatenate(chunks)).permute(0, 3, 1, 2).contiguous()
    return x, torch.from_numpy(ids.astype(np.int64))


class _Normalised(Dataset):
    """uint8 images -> (x/255 - 0.5)/0.5 float, in the requested colour order."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, color: str) -> None:
        self.images, self.labels, self.bgr = images, labels, color == "BGR"

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = self.images[i].float().div_(127.5).sub_(1.0)
        return (x.flip(0) if self.bgr else x), int(self.labels[i])


def describe_sample(dataset: Dataset, index: int) -> str:
    """Where sample ``index`` lives (file, record index, byte offset) when the dataset can say, else its index."""
    describe = getattr(dataset, "describe", None)
    return describe(index) if describe is not None else f"sample {index}"


class CheckedSamples(Dataset):
    """``dataset[i] -> (image, label, "")``, or ``(image, label, reason)`` for a corrupt sample.

    A sample is corrupt when reading or decoding it fails or its label is outside ``[0, num_classes)``.
    Checking happens here (also inside DataLoader workers) and the reason travels with the batch, so
    the trainer decides: stop with the reason (no ``skip``: the image is zeros) or count it (with
    ``skip`` the sample is replaced by the next readable one, ``i+1, i+2, ...``, so batches keep their
    size and a resumed run sees the same data). ``reason`` names the file, record index and offset.
    """

    def __init__(self, dataset: Dataset, num_classes: int | None, skip: bool) -> None:
        self.dataset, self.num_classes, self.skip = dataset, num_classes, skip

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> object:  # num_classes, labels, ... of the wrapped dataset
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def _read(self, index: int) -> tuple[torch.Tensor | None, int, str]:
        try:
            image, label = self.dataset[index]
            label = int(label)
        except SAMPLE_ERRORS as err:
            text = str(err)
            where = describe_sample(self.dataset, index)
            return None, -1, text if text.startswith(where.split(":")[0]) else f"{where}: {text}"
        if self.num_classes is not None and not 0 <= label < self.num_classes:
            return (
                None,
                -1,
                (
                    f"{describe_sample(self.dataset, index)}: label {label} outside [0, {self.num_classes}) "
                    "(the number of classes)"
                ),
            )
        return image, label, ""

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        image, label, reason = self._read(index)
        if not reason:
            return image, label, ""
        n = len(self.dataset)
        for k in range(1, min(SUBSTITUTE_TRIES, n)) if self.skip else ():
            substitute, sub_label, sub_reason = self._read((index + k) % n)
            if not sub_reason:
                return substitute, sub_label, reason
        like = [im for im in (self._read((index + k) % n)[0] for k in range(1, min(4, n))) if im is not None]
        if self.skip:  # nothing readable nearby: the batch cannot be filled, the trainer stops
            reason = f"{UNREPLACEABLE}{reason}"
        return (torch.zeros_like(like[0]) if like else torch.zeros(3, 112, 112)), 0, reason


def build_dataset(cfg: DataConfig, color: str) -> tuple[Dataset, int]:
    """(dataset of (image (3, 112, 112) float, label), number of classes) from the recipe's ``data``."""
    if cfg.kind == "synth":
        images, labels = synth_tensors(cfg.synth_identities, cfg.synth_images, cfg.synth_seed)
        return _Normalised(images, labels, color), cfg.synth_identities
    if cfg.kind == "rec":
        ds = RecordDataset(cfg.path, color=color)
        return ds, ds.num_classes
    ds = ImageFolderDataset(cfg.path, color=color)
    return ds, len(ds.classes or [])


def dataset_classes(dataset: Dataset) -> int:
    """Number of classes of a user-supplied dataset (``num_classes`` attribute or max label + 1)."""
    if hasattr(dataset, "num_classes"):
        return int(dataset.num_classes)
    if isinstance(dataset, TensorDataset):
        return int(dataset.tensors[1].max()) + 1
    raise ValueError("dataset: give it a num_classes attribute (the number of identities)")


def make_loader(dataset: Dataset, sampler: GlobalBatchSampler, workers: int) -> DataLoader:
    """A DataLoader over ``sampler``'s batches (no randomness in workers: the order is the sampler's)."""
    kwargs = {"persistent_workers": False, "prefetch_factor": 2} if workers > 0 else {}
    return DataLoader(
        dataset, batch_sampler=sampler, num_workers=workers, pin_memory=torch.cuda.is_available(), **kwargs
    )
