"""The dcr stage (DCR coupled branches on a frozen trunk): the loss drops on a fixed batch, only the branches
change (the trunk stays bit-identical), the logged loss equals the DCR formula recomputed by hand from a
checkpoint, the saved model loads back, and an interrupted run (centres included) resumes exactly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import losses, weights
from stage_helpers import TINY_DATA, faces, sigterm_after_step, tiny_trunk_file, tiny_trunk_run
from torch.utils.data import TensorDataset

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


def _one_batch() -> TensorDataset:
    """8 faces of 8 identities: a dataset of exactly one batch, so every step sees the same images."""
    data = faces()
    pick = torch.arange(0, 32, 4)
    ds = TensorDataset(data.tensors[0][pick], data.tensors[1][pick])
    ds.num_classes = 8
    return ds


def _dcr_loss_by_hand(model: DCR, centres: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    """REFERENCE.md §3 with plain torch: LR views by antialiased bilinear down, bilinear up."""
    with torch.no_grad():
        e_hr = model.trunk(x)
        ce, centre, coupling = [], [], 0.0
        for k in RESOLUTIONS:
            low = F.interpolate(x, size=(k, k), mode="bilinear", antialias=True, align_corners=False)
            up = F.interpolate(low, size=x.shape[-2:], mode="bilinear", align_corners=False)
            branch = model.branch(k)
            e_k = branch.prelu(branch.mapping(model.trunk(up)))
            ce.append(F.cross_entropy(branch.classifier(e_k), y))
            centre.append((e_k - centres[y]).pow(2).sum(1).mean())
            coupling = coupling + (e_hr - e_k).pow(2).sum(1).mean()
        return float(sum(c + 0.008 * m for c, m in zip(ce, centre, strict=True)) / len(RESOLUTIONS) + 0.008 * coupling)


def test_branches_learn_on_a_fixed_batch_and_the_trunk_stays_frozen(tmp_path):
    trunk_file = tiny_trunk_file(tmp_path / "trunk.safetensors")
    out = tmp_path / "run"
    data = _one_batch()
    cfg = _cfg(f"dcr.trunk={trunk_file}", "augment.flip=false", "dcr.filter=bilinear_aa", "dcr.up=bilinear",
               "schedule.kind=constant", "optim.lr=0.03", "train.max_steps=6", "checkpoint.every=1",
               "checkpoint.keep=10",
               f"output={out}")  # fmt: skip
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
    centres = torch.load(step5 / "state_rank0.pt", weights_only=True)["extra"]["centre.centres"]
    assert centres.shape == (8, 32) and centres.abs().sum() > 0  # moved from their zero start
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


def test_interrupted_run_resumes_exactly_with_its_centres(tmp_path, monkeypatch):
    trunk_file = tiny_trunk_file(tmp_path / "trunk.safetensors")
    data = faces()  # 32 images, batch 8: 4 steps per epoch, the resumed part crosses an epoch
    common = [f"dcr.trunk={trunk_file}", "train.max_steps=5", "schedule.warmup_epochs=0.5"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(_cfg(*common, f"output={straight}"), dataset=data)
    with monkeypatch.context() as m:
        sigterm_after_step(m, 2)
        first = train(_cfg(*common, f"output={resumed}"), dataset=data)
    assert first.interrupted and first.steps == 2
    train(_cfg(*common, f"output={resumed}", "resume=auto"), dataset=data)

    assert losses(resumed) == losses(straight)
    a, b = weights(resumed / "model.safetensors"), weights(straight / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    states = [torch.load(r / "checkpoints" / "step_00000005" / "state_rank0.pt", weights_only=True)
              for r in (resumed, straight)]  # fmt: skip
    assert torch.equal(states[0]["extra"]["centre.centres"], states[1]["extra"]["centre.centres"])


def test_configuration_errors_name_the_problem(tmp_path):
    trunk_file = tiny_trunk_file(tmp_path / "trunk.safetensors")
    with pytest.raises(RecipeError, match="stage=dcr needs dcr.trunk"):
        load_recipe("synthface_tiny_dcr", ["dcr.trunk=''"])
    with pytest.raises(ValueError, match="model.args.num_classes=5, but the data has 8 classes"):
        train(_cfg(f"dcr.trunk={trunk_file}", "model.args.num_classes=5", f"output={tmp_path / 'a'}"))
    with pytest.raises(ValueError, match="'btnet_tiny' is not a DCR model"):
        train(_cfg(f"dcr.trunk={trunk_file}", "model.name=btnet_tiny", f"output={tmp_path / 'b'}"))
