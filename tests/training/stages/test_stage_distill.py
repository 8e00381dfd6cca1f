"""Distillation stage: each branch's gradient norm is clipped on its own, CurricularFace's t keeps updating."""

from __future__ import annotations

import torch
from helpers import TINY
from stage_helpers import tiny_trunk_run

from mrface.training.config import load_recipe
from mrface.training.distributed import init_distributed
from mrface.training.stages import distill_stage


def test_distill_stage_clips_each_branch_on_its_own_and_updates_t(tmp_path):
    teacher = tiny_trunk_run(tmp_path / "trunk")
    cfg = load_recipe(
        "synthface_tiny_distill",
        [
            *[o for o in TINY if not o.startswith("model.name")],
            f"distill.teacher={teacher}",
            f"output={tmp_path / 'd'}",
        ],
    )
    stage, _ = distill_stage(cfg, init_distributed())
    # BTNet train_multi_reso_distill.py: clip_grad_norm_(backbone.parameters(), 5) in each one-branch run
    groups = stage.clip_groups
    assert len(groups) == 3
    model = stage.model
    for r, group in zip(cfg.distill.resolutions, groups, strict=True):
        assert {id(p) for p in group} == {id(p) for p in model.branch(r).parameters() if p.requires_grad}
    ids = [id(p) for g in groups for p in g]
    assert len(ids) == len(set(ids)) == len([p for p in stage.net.parameters() if p.requires_grad])
    # the frozen classifier's margin runs in train mode: t moves with a loss evaluation
    stage.train_mode()
    t0 = stage.head.margin.t.clone()
    images = torch.rand(8, 3, 112, 112) * 2 - 1
    loss, _ = stage.loss_fn(stage.net, images, torch.arange(8) % 4, 0, 0)
    assert torch.isfinite(loss) and not torch.equal(stage.head.margin.t, t0)
    assert not stage.head.weight.requires_grad
