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


@pytest.mark.parametrize("override, message", [
    ("optim.lr=fast", r"optim\.lr"),
    ("optim.amp=fp8", r"optim\.amp='fp8', expected one of"),
    ("data.batch_size=0", r"data\.batch_size=0, expected an integer >= 1"),
    ("head.sample_rate=1.5", r"head\.sample_rate"),
    ("optim.lr", r"expected key=value"),
])  # fmt: skip
def test_bad_values_name_the_key(override, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe("synthface_tiny_trunk", [override])


def test_unknown_recipe_suggests_name():
    with pytest.raises(RecipeError, match="did you mean 'synthface_tiny_trunk'"):
        load_recipe("synthface_tiny_trnk")


def test_cli_reports_typo_and_exits_2():
    proc = subprocess.run([sys.executable, "-m", "mrface.training", "synthface_tiny_trunk", "optim.weight_decy=0"],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 2
    assert "did you mean 'optim.weight_decay'" in proc.stderr
