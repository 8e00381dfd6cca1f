"""Recipes: every YAML loads and validates; typos are reported with the closest valid key."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from mrface.losses import get_margin
from mrface.models import get_model
from mrface.training.config import RecipeError, TrainConfig, list_recipes, load_recipe, to_yaml


@pytest.mark.parametrize("name", list_recipes())
def test_every_recipe_loads_and_validates(name):
    cfg = load_recipe(name)
    assert isinstance(cfg, TrainConfig)
    assert cfg.stage in ("trunk", "distill", "dcr", "coreset", "qgface")
    assert "${" not in to_yaml(cfg)  # interpolations resolved in the run directory's copy
    with torch.device("meta"):  # the model and margin arguments fit their constructors
        get_model(cfg.model.name, **cfg.model.args)
    get_margin(cfg.head.name, **cfg.head.args)


def test_there_are_cpu_recipes_for_the_demo():
    assert {"synthface_tiny_trunk", "synthface_tiny_distill"} <= set(list_recipes())


def test_overrides_are_typed_and_applied():
    cfg = load_recipe("synthface_tiny_trunk", ["optim.lr=0.05", "train.max_steps=7", "model.args.width=0.125"])
    assert cfg.optim.lr == 0.05 and cfg.train.max_steps == 7
    assert cfg.model.args == {"width": 0.125}


def test_typo_in_override_suggests_closest_key():
    with pytest.raises(RecipeError, match=r"unknown key 'optim\.lrr'; did you mean 'optim\.lr'"):
        load_recipe("synthface_tiny_trunk", ["optim.lrr=0.1"])
    with pytest.raises(RecipeError, match=r"did you mean 'checkpoint'"):
        load_recipe("synthface_tiny_trunk", ["chekpoint.every=3"])


def test_typo_in_yaml_names_file_and_suggests(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("base: synthface_tiny_trunk\ndata:\n  batch_sise: 8\n")
    expected = r"mine\.yaml: unknown key 'data\.batch_sise'; did you mean 'data\.batch_size'"
    with pytest.raises(RecipeError, match=expected):
        load_recipe(path)


def test_base_recipe_is_merged(tmp_path):
    path = tmp_path / "child.yaml"
    path.write_text("base: synthface_tiny_trunk\noptim:\n  lr: 0.3\n")
    cfg = load_recipe(path)
    assert cfg.optim.lr == 0.3 and cfg.augment.kind == "btnet"


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lr=fast", r"optim\.lr"),
        ("optim.amp=fp8", r"optim\.amp='fp8', expected one of"),
        ("data.batch_size=0", r"data\.batch_size=0, expected an integer >= 1"),
        ("head.sample_rate=1.5", r"head\.sample_rate"),
        ("optim.lr", r"expected key=value"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe("synthface_tiny_trunk", [override])


def test_unknown_recipe_suggests_name():
    with pytest.raises(RecipeError, match="did you mean 'synthface_tiny_trunk'"):
        load_recipe("synthface_tiny_trnk")


def test_cli_reports_typo_and_exits_2():
    proc = subprocess.run(
        [sys.executable, "-m", "mrface.training", "synthface_tiny_trunk", "optim.weight_decy=0"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "did you mean 'optim.weight_decay'" in proc.stderr


# Values below are read off the public configs (repository and commit in FIDELITY.md), not from mrface.
@pytest.mark.parametrize("name", ["arcface_ms1mv3_r50", "arcface_ms1mv3_r100", "cosface_ms1mv3_r50"])
def test_arcface_torch_recipes_follow_train_v2_and_configs(name):
    """arcface_torch train_v2.py: clip_grad_norm_(backbone, 5), PolynomialLRWarmup power 1;
    configs/ms1mv3_r*.py: lr 0.1, wd 5e-4, 20 epochs, warmup_epoch 0, fp16; CosFace configs m3 = 0.4."""
    cfg = load_recipe(name)
    assert (cfg.optim.clip_grad, cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.amp) == (5.0, 0.1, 5e-4, "fp16")
    assert (cfg.schedule.kind, cfg.schedule.power, cfg.schedule.warmup_epochs, cfg.train.epochs) == ("poly", 1.0, 0, 20)
    margin = get_margin(cfg.head.name, **cfg.head.args)
    expected = (1.0, 0.0, 0.4) if name.startswith("cosface") else (1.0, 0.5, 0.0)
    assert (margin.m1, margin.m2, margin.m3, margin.gradient, margin.fallback) == (
        *expected,
        "straight_through",
        "none",
    )


def test_magface_recipe_is_float32_with_easy_margin():
    """MagFace run/run_dist.sh: --fp16 0, lr drop at 10/18/22 of 25 epochs; MagLinear easy_margin=True."""
    cfg = load_recipe("magface_ms1mv2_r100")
    assert cfg.optim.amp == "none"
    assert (cfg.schedule.milestones, cfg.train.epochs) == ([10, 18, 22], 25)
    assert get_margin(cfg.head.name, **cfg.head.args).fallback == "easy"


def test_btnet_recipes_follow_the_public_configs():
    """BTNet configs/ms1mv3_r50_reso{112,28}.py and surv_r50_reso{112,28,14,7}.py (fp16 True everywhere)."""
    tnet = load_recipe("btnet_ms1mv3_r50_reso112")
    assert (tnet.optim.lr, tnet.train.epochs, tnet.schedule.warmup_epochs, tnet.optim.amp) == (0.2, 25, 2, "fp16")
    distill = load_recipe("btnet_ms1mv3_r50_distill")
    assert distill.distill.filters == ["bilinear"]  # transforms.Resize on tensors: no antialias
    assert (distill.optim.lr, distill.train.epochs, distill.optim.clip_grad, distill.optim.amp) == (
        0.02,
        10,
        5.0,
        "fp16",
    )
    surv = load_recipe("btnet_surv_finetune")
    assert (surv.optim.lr, surv.train.epochs, surv.schedule.warmup_epochs, surv.augment.kind, surv.optim.amp) == (
        0.02,
        10,
        0,
        "none",
        "fp16",
    )
    for r, epochs in ((28, 10), (14, 10), (7, 25)):
        b = load_recipe(f"btnet_surv_r50_reso{r}")
        assert (b.stage, b.distill.resolutions, b.distill.teacher, b.train.epochs, b.optim.lr) == (
            "distill",
            [r],
            "runs/btnet_surv_finetune",
            epochs,
            0.02,
        )


def test_adaface_recipe_follows_run_scripts():
    """AdaFace scripts/run_ir101_*.sh: low-res, crop and photometric augmentation 0.2 each, 26 epochs, milestones
    12/20/24, lr 0.1, fp16; train_val.py: BatchNorm parameters without weight decay."""
    cfg = load_recipe("adaface_webface4m_r100")
    a = cfg.augment
    assert (a.kind, a.prob, a.crop_prob, a.photometric_prob, a.min_size) == ("adaface", 0.2, 0.2, 0.2, 22)
    assert (cfg.optim.no_decay_bn, cfg.optim.lr, cfg.optim.amp) == (True, 0.1, "fp16")
    assert (cfg.schedule.milestones, cfg.train.epochs) == ([12, 20, 24], 26)
