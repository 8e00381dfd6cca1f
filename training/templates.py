"""Face templates for set training (FaceCoresetNet, REFERENCE.md §6): who is in the data, a resumable
template sampler and the dataset that stacks a template's images.

:class:`TemplateBatchSampler` makes the templates a pure function of (seed, micro-batch index), as
:class:`~mrface.training.data.GlobalBatchSampler` does for images. An epoch is one template per
identity: epoch e permutes the identities with a generator seeded by (seed, e), and global
micro-batch k of the epoch takes identities [k*G, (k+1)*G) of that permutation (G = batch_size *
world_size). What each template holds comes from a generator seeded by (seed, m), m the global
micro-batch index: a size L in 1..max_size (one size for the whole micro-batch with
``size_mode="batch"``, as FaceCoresetNet's public code draws it; one per template with
``"template"``), then the first L images of a random permutation of the identity's images, cycled
when the identity has fewer than L images (the template keeps its size and repeats faces, as the
public code's "clips" do; per-slot flips still differ). Rank r takes templates [r*B, (r+1)*B). So
one process with batch G sees exactly the templates of W processes with batch B, and a resumed run
continues from any micro-batch.

:class:`TemplateDataset` turns a template key into ``(images (W, 3, H, W_px), labels (W,))``: the
template's images followed by zero images up to the width W of its global micro-batch (the largest
size drawn there), labels the identity at real slots and -1 at padding. The trainer's default
collate stacks them into ``images (B, W, 3, H, W_px)`` and ``labels (B, W)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, TensorDataset

from mrface.data.datasets import ImageFolderDataset, RecordDataset

PAD_LABEL = -1


def seeded_generator(*keys: int) -> torch.Generator:
    """A CPU generator seeded by a well-mixed hash of the integer ``keys`` (one stream per key tuple)."""
    state = np.random.SeedSequence([int(k) % 2**63 for k in keys]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


def dataset_labels(dataset: Dataset) -> np.ndarray:
    """The label of every item (N,) int64, without decoding images where the dataset allows it."""
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[1].numpy().astype(np.int64)
    if isinstance(getattr(dataset, "labels", None), torch.Tensor):
        return dataset.labels.numpy().astype(np.int64)
    if isinstance(dataset, ImageFolderDataset):
        return np.asarray([label for _, label in dataset.samples], dtype=np.int64)
    if isinstance(dataset, RecordDataset):
        record = dataset.record
        if record.identity_ranges:  # InsightFace layout: identity records give the image key ranges
            keys = np.asarray(record.image_keys, dtype=np.int64)
            ids = np.asarray(sorted(record.identity_ranges, key=lambda i: record.identity_ranges[i][0]))
            starts, ends = (np.asarray([record.identity_ranges[i][j] for i in ids], dtype=np.int64) for j in (0, 1))
            at = np.searchsorted(starts, keys, side="right") - 1
            inside = (at >= 0) & (keys < ends[at.clip(0)])
            if inside.all():
                return ids[at].astype(np.int64)
        return np.asarray([record.label(k) for k in record.image_keys], dtype=np.int64)
    return np.asarray([int(dataset[i][1]) for i in range(len(dataset))], dtype=np.int64)


class IdentityIndex(NamedTuple):
    """Images grouped by identity: identity j (label ``labels[j]``) owns ``order[starts[j]:starts[j+1]]``.

    Only identities with at least one image are listed; ``labels`` (I,), ``starts`` (I + 1,), ``order`` (N,).
    """

    labels: np.ndarray
    starts: np.ndarray
    order: np.ndarray

    @classmethod
    def from_labels(cls, labels: np.ndarray) -> IdentityIndex:
        if labels.size and labels.min() < 0:
            raise ValueError(f"dataset labels must be >= 0, found {int(labels.min())}")
        order = np.argsort(labels, kind="stable")
        ids, counts = np.unique(labels[order], return_counts=True)
        return cls(ids.astype(np.int64), np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), order)

    def __len__(self) -> int:
        return len(self.labels)

    def images_of(self, j: int) -> np.ndarray:
        return self.order[self.starts[j] : self.starts[j + 1]]


class TemplateKey(NamedTuple):
    """One template: identity ``label``, dataset indices of its images (1..max_size), padded ``width``."""

    label: int
    images: tuple[int, ...]
    width: int


class TemplateBatchSampler(Sampler[list[TemplateKey]]):
    """This rank's template keys for micro-batches ``start .. total-1`` (see module doc).

    Args:
        index: the dataset's identities. max_size: largest template (N). size_mode: ``batch`` | ``template``.
        num_samples: must equal ``len(index)`` (the trainer passes ``len(dataset)``, one template per
            identity and epoch). batch_size: templates per rank and micro-batch. The rest as
            :class:`~mrface.training.data.GlobalBatchSampler`.
    """

    def __init__(
        self,
        index: IdentityIndex,
        max_size: int,
        size_mode: str,
        num_samples: int,
        batch_size: int,
        rank: int,
        world_size: int,
        seed: int,
        total: int,
        start: int = 0,
    ) -> None:
        if num_samples != len(index):
            raise ValueError(f"num_samples={num_samples}, but the identity index lists {len(index)} identities")
        if max_size < 1 or size_mode not in ("batch", "template"):
            raise ValueError(f"max_size={max_size} must be >= 1 and size_mode={size_mode!r} batch or template")
        self.global_batch = batch_size * world_size
        if len(index) < self.global_batch:
            raise ValueError(
                f"data has {len(index)} identities, fewer than one global batch of templates "
                f"({batch_size} per rank x {world_size} ranks)"
            )
        self.index, self.max_size, self.size_mode = index, max_size, size_mode
        self.batch_size, self.rank, self.seed, self.total, self.start = batch_size, rank, seed, total, start
        self.per_epoch = len(index) // self.global_batch

    def __len__(self) -> int:
        return max(0, self.total - self.start)

    def identity_order(self, epoch: int) -> torch.Tensor:
        """(I,) the identities (positions in ``index``) in the order of epoch ``epoch``."""
        return torch.randperm(len(self.index), generator=seeded_generator(self.seed, 1, epoch))

    def global_templates(self, micro: int, identities: torch.Tensor) -> list[TemplateKey]:
        """The G templates of global micro-batch ``micro`` for the identity positions ``identities`` (G,)."""
        g = seeded_generator(self.seed, 2, micro)
        count = identities.numel()
        if self.size_mode == "batch":
            sizes = torch.randint(1, self.max_size + 1, (1,), generator=g).expand(count)
        else:
            sizes = torch.randint(1, self.max_size + 1, (count,), generator=g)
        width = int(sizes.max())
        keys = []
        for j, size in zip(identities.tolist(), sizes.tolist(), strict=True):
            images = self.index.images_of(j)
            pick = torch.randperm(len(images), generator=g)[torch.arange(size) % len(images)]
            keys.append(TemplateKey(int(self.index.labels[j]), tuple(images[pick.numpy()].tolist()), width))
        return keys

    def __iter__(self) -> Iterator[list[TemplateKey]]:
        epoch, order = -1, None
        for m in range(self.start, self.total):
            e, k = divmod(m, self.per_epoch)
            if e != epoch:
                epoch, order = e, self.identity_order(e)
            keys = self.global_templates(m, order[k * self.global_batch : (k + 1) * self.global_batch])
            yield keys[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]


class TemplateDataset(Dataset):
    """``dataset[key]`` for a :class:`TemplateKey` -> (images (width, 3, H, W) float, labels (width,) int64).

    ``len()`` is the number of identities (one template per identity and epoch); ``index`` groups the
    base dataset's images by identity; ``num_classes`` is the base dataset's class count.
    """

    def __init__(self, base: Dataset, num_classes: int) -> None:
        self.base, self.num_classes = base, int(num_classes)
        self.index = IdentityIndex.from_labels(dataset_labels(base))
        if len(self.index) and int(self.index.labels.max()) >= self.num_classes:
            raise ValueError(
                f"dataset labels reach {int(self.index.labels.max())}, but it has {self.num_classes} classes"
            )

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key: TemplateKey) -> tuple[torch.Tensor, torch.Tensor]:
        images = []
        for i in key.images:
            image, label = self.base[i]
            if int(label) != key.label:
                raise ValueError(f"template of identity {key.label}: dataset item {i} has label {int(label)}")
            images.append(torch.as_tensor(image))
        stacked = torch.stack(images)
        if key.width > len(images):
            stacked = torch.cat([stacked, stacked.new_zeros((key.width - len(images), *stacked.shape[1:]))])
        labels = torch.full((key.width,), PAD_LABEL, dtype=torch.int64)
        labels[: len(images)] = key.label
        return stacked, labels
