"""The dcr stage (DCR coupled branches on a frozen trunk): the loss drops on a fixed batch, only the branches
change (the trunk stays bit-identical), the logged loss equals the DCR formula recomputed by hand from a
checkpoint, the saved model loads back, and an interrupted run (centres included) resumes exactly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_same_weights, losses, weights
from stage_helpers import (
    TINY_DATA,
    extra_state,
    faces,
    one_batch,
    straight_and_resumed,
    tiny_trunk_file,
    tiny_trunk_run,
)

from mrface.models import DCR, load_model
from mrface.training.config import RecipeError, load_recipe
from mrface.training.distributed import DistEnv
from mrface.training.trainer import train

CPU = DistEnv(0, 1, 0, torch.device("cpu"))
RESOLUTIONS = (8, 12, 16, 20)
DCR_RUN = [*TINY_DATA, "augment.kind=none"]


@pytest.fixture(scope="module")
def trunk_run(tmp_path_factory):
    return tiny_trunk_run(tmp_path_factory.mktemp("trunk") / "run")


def _cfg(*overrides):
    return load_recipe("synthface_tiny_dcr", [*DCR_RUN, *overrides])


def _dcr_loss_by_hand(model: DCR, centres: dict[int, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> float:
    """The public CMLoss with plain torch: LR views by antialiased bilinear down, bilinear up; HR branch first;
    per scale the centres move first (c_j += 0.6 mean_i (e_i - c_j)), then CE + 0.008 mse(e, c[y]) (element means),
    plus 0.008 sum_s mse(e_HR, e_s)."""
    with torch.no_grad():
        views = {112: x}
        for k in RESOLUTIONS:
            low = F.interpolate(x, size=(k, k), mode="bilinear", antialias=True, align_corners=False)
            views[k] = F.interpolate(low, size=x.shape[-2:], mode="bilinear", align_corners=False)
        ce = centre = coupling = 0.0
        e_hr = None
        for k, view in views.items():
            branch = model.branch(k)
            e = branch.mapping(model.trunk(view))
            e_hr = e if e_hr is None else e_hr
            moved = centres[k].clone()
            for j in y.unique():
                moved[j] += 0.6 * (e[y == j] - moved[j]).mean(0)
            ce += F.cross_entropy(branch.classifier(torch.where(e >= 0, e, branch.prelu.weight * e)), y)
            centre += (e - moved[y]).pow(2).mean()
            coupling += (e_hr - e).pow(2).mean()
        return float(ce / 5 + 0.008 * centre / 5 + 0.008 * coupling)


def test_branches_learn_on_a_fixed_batch_and_the_trunk_stays_frozen(tmp_path):
    trunk_file = tiny_trunk_file(tmp_path / "trunk.safetensors")
    out = tmp_path / "run"
    data = one_batch()
    cfg = _cfg(
        f"dcr.trunk={trunk_file}",
        "augment.flip=false",
        "dcr.filter=bilinear_aa",
        "dcr.up=bilinear",
        "dcr.classifier_init=random",
        "model.args.normalized_embeddings=false",
        "schedule.kind=constant",
        "optim.lr=0.03",
        "train.max_steps=6",
        "checkpoint.every=1",
        "checkpoint.keep=10",
        f"output={out}",
    )
    result = train(cfg, dataset=data)
    assert result.steps == 6
    assert result.losses[-1] < result.losses[0] - 0.3, result.losses

    trunk = weights(trunk_file)
    first = weights(out / "checkpoints" / "step_00000001" / "model.safetensors")
    last = weights(out / "model.safetensors")
    assert {k for k in last if not k.startswith("trunk.")} == {k for k in last if k.startswith("branches.")}
    for k, v in trunk.items():  # bit-identical, BN running statistics included
        assert torch.equal(first["trunk." + k], v) and torch.equal(last["trunk." + k], v), k
    unchanged = [k for k in last if k.startswith("branches.") and torch.equal(first[k], last[k])]
    assert not unchanged, f"branch tensors not trained: {unchanged}"

    # Step 6's logged loss, recomputed from the weights and centres saved after step 5.
    step5 = out / "checkpoints" / "step_00000005"
    model = load_model(step5 / "model.safetensors")
    extra = extra_state(out, 5)
    centres = {k: extra[f"centres_{k}"] for k in (112, *RESOLUTIONS)}
    assert all(c.shape == (8, 32) for c in centres.values())
    x, y = data.tensors
    assert result.losses[5] == pytest.approx(_dcr_loss_by_hand(model, centres, x, y), rel=1e-4)


def test_dcr_from_a_trunk_run_saves_a_loadable_model(tmp_path, trunk_run):
    out = tmp_path / "run"
    result = train(_cfg(f"dcr.trunk={trunk_run}", "train.max_steps=2", f"output={out}"))
    assert result.steps == 2 and len(losses(out)) == 2
    model = load_model(out / "model.safetensors")
    assert isinstance(model, DCR) and model.resolutions == RESOLUTIONS and model.num_classes == 8
    assert model.metadata.color_order == load_model(trunk_run / "model.safetensors").metadata.color_order
    trunk = weights(trunk_run / "model.safetensors")
    assert all(torch.equal(model.trunk.state_dict()[k], v) for k, v in trunk.items())
    manifest = (out / "checkpoints" / "step_00000002" / "manifest.json").read_text()
    assert '"num_classes": null' in manifest  # no Partial FC head in this stage


def test_si_initialisation_copies_the_trunk_classifier(tmp_path, trunk_run):
    from safetensors.torch import load_file

    from mrface.training.stages.dcr import dcr_stage

    stage, _ = dcr_stage(_cfg(f"dcr.trunk={trunk_run}"), CPU, faces())
    ckpt = sorted((trunk_run / "checkpoints").iterdir())[-1]
    w = load_file(str(ckpt / "head_rank0.safetensors"))["weight"]
    expected = 64.0 * w / w.norm(dim=1, keepdim=True)
    for branch in stage.model.branches.values():
        torch.testing.assert_close(branch.classifier.weight, expected)
        assert not branch.classifier.bias.any() and torch.equal(branch.mapping.weight, torch.eye(32))
    with pytest.raises(ValueError, match="dcr.classifier_init=trunk.*set dcr.classifier_init=random"):
        dcr_stage(_cfg(f"dcr.trunk={tiny_trunk_file(tmp_path / 't.safetensors')}"), CPU, faces())


def test_interrupted_run_resumes_exactly_with_its_centres(tmp_path, monkeypatch):
    trunk_file = tiny_trunk_file(tmp_path / "trunk.safetensors")
    common = [
        f"dcr.trunk={trunk_file}",
        "train.max_steps=5",
        "schedule.warmup_epochs=0.5",
        "dcr.classifier_init=random",
    ]
    # 32 images, batch 8: 4 steps per epoch, the resumed part crosses an epoch
    straight, resumed = straight_and_resumed(_cfg, common, faces(), tmp_path, monkeypatch)
    assert losses(resumed) == losses(straight)
    assert_same_weights(resumed / "model.safetensors", straight / "model.safetensors")
    states = [extra_state(r, 5) for r in (resumed, straight)]
    assert states[0].keys() == states[1].keys() and len(states[0]) == 5
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_configuration_errors_name_the_problem(tmp_path):
    trunk_file = tiny_trunk_file(tmp_path / "trunk.safetensors")
    with pytest.raises(RecipeError, match="stage=dcr needs dcr.trunk"):
        load_recipe("synthface_tiny_dcr", ["dcr.trunk=''"])
    with pytest.raises(ValueError, match="model.args.num_classes=5, but the data has 8 classes"):
        train(
            _cfg(
                f"dcr.trunk={trunk_file}",
                "model.args.num_classes=5",
                "dcr.classifier_init=random",
                f"output={tmp_path / 'a'}",
            )
        )
    with pytest.raises(ValueError, match="'btnet_tiny' is not a DCR model"):
        train(
            _cfg(
                f"dcr.trunk={trunk_file}",
                "model.name=btnet_tiny",
                "dcr.classifier_init=random",
                f"output={tmp_path / 'b'}",
            )
        )
