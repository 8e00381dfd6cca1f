"""The training loop on CPU: a step changes the weights and lowers the loss on a fixed batch;
accumulation equals a larger batch; non-finite losses stop or skip the step."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import TINY, losses, weights
from torch.utils.data import TensorDataset

from mrface.models import get_model, save_model
from mrface.training.config import load_recipe
from mrface.training.data import synth_tensors
from mrface.training.trainer import NonFiniteLossError, train


@pytest.fixture(scope="module")
def faces() -> TensorDataset:
    images, labels = synth_tensors(8, 4, seed=0)
    x = images.float().div(127.5).sub(1.0)
    return TensorDataset(x, labels)


def _cfg(tmp_path, *overrides):
    return load_recipe("synthface_tiny_trunk", [*TINY, f"output={tmp_path}", *overrides])


def test_a_step_changes_weights_and_loss_drops_on_a_fixed_batch(tmp_path, faces):
    torch.manual_seed(1)
    init = get_model("iresnet_tiny", width=0.125, embedding_size=32)
    save_model(init, tmp_path / "init.safetensors")
    fixed = TensorDataset(*(t[:8] for t in faces.tensors))  # one batch: every step sees the same images
    fixed.num_classes = 8
    cfg = _cfg(
        tmp_path / "run",
        f"model.init={tmp_path / 'init.safetensors'}",
        "augment.kind=none",
        "augment.flip=false",
        "train.max_steps=6",
        "schedule.kind=constant",
        "optim.lr=0.05",
        "schedule.warmup_epochs=0",  # a warm-up starts at lr 0 (the public schedulers' k / w)
        "checkpoint.every=1",
        "checkpoint.keep=10",
    )
    result = train(cfg, dataset=fixed)
    assert result.steps == 6 and len(result.losses) == 6
    before = init.state_dict()
    after_one = weights(tmp_path / "run" / "checkpoints" / "step_00000001" / "model.safetensors")
    changed = [k for k, v in before.items() if v.is_floating_point() and not torch.equal(v, after_one[k])]
    trainable = [k for k, p in init.named_parameters() if p.requires_grad]
    assert set(trainable) <= set(changed), f"parameters unchanged by a step: {set(trainable) - set(changed)}"
    assert result.losses[-1] < result.losses[0] - 0.1, result.losses
    assert losses(tmp_path / "run") == pytest.approx(result.losses)


def test_accumulation_equals_the_larger_batch(tmp_path, faces):
    faces.num_classes = 8
    common = ["augment.kind=btnet", "train.max_steps=3", "model.freeze_bn=true", "optim.clip_grad=1.0"]
    big_cfg = _cfg(tmp_path / "big", *common, "data.batch_size=16")
    acc_cfg = _cfg(tmp_path / "acc", *common, "data.batch_size=8", "optim.accumulate=2")
    for cfg in (big_cfg, acc_cfg):  # CurricularFace's EMA would see micro-batches: ArcFace has none
        cfg.head.name, cfg.head.args = "arcface", {"s": 16.0}
    big = train(big_cfg, dataset=faces)
    acc = train(acc_cfg, dataset=faces)
    assert acc.losses == pytest.approx(big.losses, rel=1e-4, abs=1e-5)
    wa, wb = weights(tmp_path / "acc" / "model.safetensors"), weights(tmp_path / "big" / "model.safetensors")
    for k in wb:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5, msg=k)


def _with_nan(faces: TensorDataset, index: int) -> TensorDataset:
    x = faces.tensors[0].clone()
    x[index, 0, 10, 10] = float("nan")
    ds = TensorDataset(x, faces.tensors[1])
    ds.num_classes = 8
    return ds


def test_nonfinite_loss_stops_with_step_and_batch_statistics(tmp_path, faces):
    with pytest.raises(
        NonFiniteLossError,
        match=r"step \d: non-finite loss; images \(8, 3, 112, 112\) non-finite "
        r"values 1",
    ):
        train(_cfg(tmp_path, "train.max_steps=4", "augment.kind=none"), dataset=_with_nan(faces, 5))


def test_nonfinite_loss_skips_the_step_when_asked(tmp_path, faces):
    # 32 images, batch 8: one epoch = 4 steps, exactly one of them holds the poisoned image.
    result = train(
        _cfg(tmp_path, "train.max_steps=4", "augment.kind=none", "train.skip_nonfinite=true"),
        dataset=_with_nan(faces, 5),
    )
    assert result.skipped_nonfinite == 1 and len(result.losses) == 3
    assert all(math.isfinite(v) for v in result.losses)
    final = weights(tmp_path / "model.safetensors")
    assert all(bool(torch.isfinite(v.float()).all()) for v in final.values()), "BN statistics must stay finite"
