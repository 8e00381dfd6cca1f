"""The coreset stage (FaceCoresetNet on a frozen backbone): a few steps lower the loss on a fixed template
batch while only the aggregator and the head change; the saved model ignores padding and loads back; an
interrupted run resumes exactly."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_same_weights, losses, weights
from stage_helpers import TINY_DATA, faces, straight_and_resumed, tiny_trunk_file, tiny_trunk_run
from torch.utils.data import default_collate

from mrface.models import load_model
from mrface.training.config import RecipeError, load_recipe
from mrface.training.distributed import DistEnv
from mrface.training.stages.coreset import CoresetModel, coreset_stage
from mrface.training.templates import TemplateKey
from mrface.training.trainer import train

CPU = DistEnv(0, 1, 0, torch.device("cpu"))
# 8 identities x 4 images, 4 templates of 1..4 images per step: 2 steps per epoch.
CORESET = [
    *TINY_DATA,
    "model.args.width=0.125",
    "model.args.embedding_size=32",
    "data.batch_size=4",
    "coreset.max_size=4",
    "coreset.heads=4",
    "augment.kind=none",
]


@pytest.fixture(scope="module")
def trunk_run(tmp_path_factory):
    return tiny_trunk_run(tmp_path_factory.mktemp("trunk") / "run")


def _cfg(*overrides):
    return load_recipe("synthface_tiny_coreset", [*CORESET, *overrides])


def test_a_few_steps_lower_the_loss_on_a_fixed_template_batch(tmp_path):
    backbone_file = tiny_trunk_file(tmp_path / "backbone.safetensors")
    data = faces()
    stage, templates = coreset_stage(_cfg(f"coreset.backbone={backbone_file}", "augment.flip=false"), CPU, data)
    # Identity i's template: its first (i % 4) + 1 images; padded to 4.
    keys = [TemplateKey(i, tuple(range(4 * i, 4 * i + i % 4 + 1)), 4) for i in range(8)]
    images, labels = default_collate([templates[k] for k in keys])
    assert images.shape == (8, 4, 3, 112, 112) and (labels >= 0).sum(1).tolist() == [1, 2, 3, 4] * 2

    model = stage.model
    assert isinstance(model, CoresetModel)
    frozen = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    trainable = [p for p in [*model.parameters(), *stage.head.parameters()] if p.requires_grad]
    assert {id(p) for p in trainable} == {id(p) for p in [*model.aggregator.parameters(), *stage.head.parameters()]}
    optimizer = torch.optim.AdamW(trainable, lr=3e-3, weight_decay=0.0)
    stage.train_mode()
    values = []
    for _ in range(8):
        loss, logs = stage.loss_fn(stage.net, images, labels, 0, 0)  # same step: same Gumbel draws
        optimizer.zero_grad()
        loss.backward()
        if not values:
            silent = [n for n, p in model.aggregator.named_parameters() if p.grad is None or not p.grad.any()]
            assert not silent, f"aggregator parameters without gradient: {silent}"
            assert all(p.grad is None for p in model.backbone.parameters())
        optimizer.step()
        values.append(float(loss.detach()))
    assert float(logs["coreset/template_size"]) == pytest.approx(2.5)
    assert values[-1] < 0.7 * values[0], values
    after = model.backbone.state_dict()
    assert all(torch.equal(frozen[k], after[k]) for k in frozen), "the frozen backbone changed"


def test_trainer_trains_aggregator_and_head_on_a_trunk_run(tmp_path, trunk_run):
    out = tmp_path / "run"
    result = train(
        _cfg(
            f"coreset.backbone={trunk_run}",
            "train.max_steps=3",
            "checkpoint.every=1",
            "checkpoint.keep=5",
            f"output={out}",
        )
    )
    assert result.steps == 3 and len(losses(out)) == 3
    trunk = weights(trunk_run / "model.safetensors")
    first = weights(out / "checkpoints" / "step_00000001" / "model.safetensors")
    last = weights(out / "model.safetensors")
    assert {k[len("backbone.") :] for k in last if k.startswith("backbone.")} == set(trunk)
    for k, v in trunk.items():  # bit-identical, BN running statistics included
        assert torch.equal(first["backbone." + k], v) and torch.equal(last["backbone." + k], v), k
    unchanged = [k for k in last if k.startswith("aggregator.") and torch.equal(first[k], last[k])]
    assert not unchanged, f"aggregator tensors not trained: {unchanged}"
    head_first = weights(out / "checkpoints" / "step_00000001" / "head_rank0.safetensors")["weight"]
    head_last = weights(out / "checkpoints" / "step_00000003" / "head_rank0.safetensors")["weight"]
    assert head_last.shape == (8, 32) and not torch.equal(head_first, head_last)

    model = load_model(out / "model.safetensors")
    x = torch.randn(3, 4, 3, 112, 112)
    lengths = torch.tensor([1, 3, 4])
    with torch.no_grad():
        ref = model(x, lengths)
        garbage = x.clone()
        garbage[0, 1:], garbage[1, 3:] = 5.0, -5.0  # padded slots: their content must not matter
        assert torch.equal(model(garbage, lengths), ref)
        single = model(x[:, 0])  # (B, 3, S, S): templates of one face
        torch.testing.assert_close(single[0], ref[0])
        generic = load_model(out / "model.safetensors")  # the registry opens a coreset run too
        assert isinstance(generic, CoresetModel) and generic.metadata == model.metadata
        torch.testing.assert_close(generic(x, lengths), ref, rtol=0, atol=0)
    assert ref.shape == (3, 32)


def test_interrupted_run_resumes_exactly(tmp_path, monkeypatch):
    backbone_file = tiny_trunk_file(tmp_path / "backbone.safetensors")
    common = [
        f"coreset.backbone={backbone_file}",
        "train.max_steps=5",
        "coreset.size_mode=template",
        "augment.kind=btnet",
        "augment.prob=0.5",
    ]
    straight, resumed = straight_and_resumed(_cfg, common, faces(), tmp_path, monkeypatch)
    assert losses(resumed) == losses(straight)
    for name in ("model.safetensors", "checkpoints/step_00000005/head_rank0.safetensors"):
        assert_same_weights(resumed / name, straight / name)


def test_recipe_needs_a_backbone():
    with pytest.raises(RecipeError, match="stage=coreset needs coreset.backbone"):
        load_recipe("synthface_tiny_coreset", ["coreset.backbone=''"])
