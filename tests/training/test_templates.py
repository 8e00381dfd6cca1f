"""Template sampler of the coreset stage: sizes in 1..N, pure identities, one template per identity and
epoch, a pure function of (seed, micro-batch) (resume, world-size independence); template dataset padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from mrface.data.datasets import RecordDataset
from mrface.data.images import encode_image
from mrface.data.insightface import write_insightface
from mrface.training.templates import (
    PAD_LABEL,
    IdentityIndex,
    TemplateBatchSampler,
    TemplateDataset,
    dataset_labels,
)

# 12 identities with 1..6 images each, interleaved (not grouped) in the dataset order.
COUNTS = [1, 2, 3, 4, 5, 6, 6, 5, 4, 3, 2, 1]
LABELS = np.concatenate([np.full(c, i) for i, c in enumerate(COUNTS)])
LABELS = LABELS[np.random.default_rng(0).permutation(LABELS.size)]
INDEX = IdentityIndex.from_labels(LABELS)


def _sampler(
    batch: int = 4,
    rank: int = 0,
    world: int = 1,
    seed: int = 0,
    total: int = 9,
    start: int = 0,
    max_size: int = 5,
    size_mode: str = "template",
) -> TemplateBatchSampler:
    return TemplateBatchSampler(INDEX, max_size, size_mode, len(INDEX), batch, rank, world, seed, total, start)


def test_identity_index_groups_every_image_once():
    assert sorted(INDEX.order.tolist()) == list(range(LABELS.size))
    for j, label in enumerate(INDEX.labels):
        assert set(LABELS[INDEX.images_of(j)].tolist()) == {label}
        assert len(INDEX.images_of(j)) == COUNTS[label]


@pytest.mark.parametrize("size_mode", ["template", "batch"])
def test_templates_are_pure_and_sized_1_to_n(size_mode):
    max_size = 5
    sizes = []
    for batch in _sampler(total=60, size_mode=size_mode, max_size=max_size):
        assert len(batch) == 4
        widths = {key.width for key in batch}
        assert len(widths) == 1 and widths == {max(len(k.images) for k in batch)}
        if size_mode == "batch":
            assert len({len(k.images) for k in batch}) == 1
        for key in batch:
            assert 1 <= len(key.images) <= max_size
            assert set(LABELS[list(key.images)].tolist()) == {key.label}  # one identity only
            distinct = len(set(key.images))  # repeats only once the identity's images are used up
            assert distinct == min(len(key.images), COUNTS[key.label])
            sizes.append(len(key.images))
    assert min(sizes) == 1 and max(sizes) == max_size


def test_an_epoch_is_one_template_per_identity():
    sampler = _sampler(batch=4, total=3)  # 12 identities / 4 per micro-batch = 3 micro-batches per epoch
    labels = [k.label for batch in sampler for k in batch]
    assert sorted(labels) == list(range(12))


def test_same_seed_same_templates_other_seed_other_templates():
    a, b, c = list(_sampler(seed=3)), list(_sampler(seed=3)), list(_sampler(seed=4))
    assert a == b
    assert a != c


def test_resume_continues_the_same_sequence():
    full = list(_sampler(total=11))
    assert list(_sampler(total=11, start=7)) == full[7:]


def test_ranks_split_the_global_micro_batch():
    one = list(_sampler(batch=6, world=1, total=5))
    ranks = [list(_sampler(batch=3, rank=r, world=2, total=5)) for r in range(2)]
    assert [r0 + r1 for r0, r1 in zip(*ranks, strict=True)] == one


def test_too_few_identities_for_a_global_batch():
    with pytest.raises(ValueError, match="12 identities, fewer than one global batch"):
        _sampler(batch=7, world=2)


def test_template_dataset_pads_with_zeros_and_minus_one():
    images = torch.randn(LABELS.size, 3, 8, 8)
    base = TensorDataset(images, torch.from_numpy(LABELS))
    ds = TemplateDataset(base, num_classes=12)
    assert len(ds) == 12 and dataset_labels(base).tolist() == LABELS.tolist()
    key = next(k for batch in _sampler(total=20) for k in batch if len(k.images) < k.width)
    x, y = ds[key]
    n = len(key.images)
    assert x.shape == (key.width, 3, 8, 8) and y.shape == (key.width,)
    assert torch.equal(x[:n], images[list(key.images)])
    assert not x[n:].any()
    assert y[:n].tolist() == [key.label] * n and y[n:].tolist() == [PAD_LABEL] * (key.width - n)


def test_template_dataset_rejects_labels_beyond_num_classes():
    base = TensorDataset(torch.zeros(LABELS.size, 3, 8, 8), torch.from_numpy(LABELS))
    with pytest.raises(ValueError, match="labels reach 11, but it has 5 classes"):
        TemplateDataset(base, num_classes=5)


def test_labels_of_an_insightface_record_come_from_its_identity_records(tmp_path):
    counts = [2, 1, 3]
    image = encode_image(np.zeros((8, 8, 3), np.uint8), ".png")
    write_insightface(
        tmp_path / "t.rec", [(i, image) for i, c in enumerate(counts) for _ in range(c)], image_size=(8, 8)
    )
    ds = RecordDataset(tmp_path / "t.rec")
    assert ds.record.identity_ranges  # the fast path is the one under test
    expected = [ds.record.label(k) for k in ds.record.image_keys]
    assert dataset_labels(ds).tolist() == expected == [0, 0, 1, 2, 2, 2]
