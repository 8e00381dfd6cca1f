"""BTNet: spatial sizes per path, owned layers, implant levels, branch + shared tail == full
network with the same weights (and the public full-branch checkpoint import), per-branch BN."""

from __future__ import annotations

import pytest
import torch
from models_reference import insightface_forward, insightface_state_dict

from mrface.models import BTNet, CheckpointError, get_model, import_btnet_branch
from mrface.models.importers import split_btnet_branch
from mrface.models.iresnet import IBasicBlock, IResNet

LAYERS = (2, 2, 2, 2)
WIDTHS = (8, 16, 32, 64)
EMB = 32

# input -> layer1 -> layer2 -> layer3 -> layer4 (REFERENCE.md §2)
PATH_SIZES = {112: (56, 28, 14, 7), 28: (28, 28, 14, 7), 14: (14, 14, 14, 7), 7: (7, 7, 7, 7)}
# modules a branch owns (REFERENCE.md §2): stem + every earlier stage + the first block of one stage
OWNED = {
    28: {"conv1", "bn1", "prelu", "layer1.0", "layer1.1", "layer2.0"},
    14: {"conv1", "bn1", "prelu", "layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0"},
    7: {"conv1", "bn1", "prelu", "layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0", "layer3.1", "layer4.0"},
}
IMPLANT = {28: ("layer2.0", WIDTHS[1], 28), 14: ("layer3.0", WIDTHS[2], 14), 7: ("layer4.0", WIDTHS[3], 7)}


def _btnet(branch_bn: bool = True) -> BTNet:
    return BTNet(IResNet(LAYERS, WIDTHS, embedding_size=EMB), (28, 14, 7), branch_bn=branch_bn)


@pytest.mark.parametrize("r", sorted(PATH_SIZES))
def test_stage_output_sizes_on_every_path(r, generator):
    model = _btnet().eval()
    last = {}
    for name, m in model.named_modules():
        if isinstance(m, IBasicBlock):
            stage = int(name.split("layer")[1][0])
            m.register_forward_hook(lambda mod, i, o, s=stage: last.__setitem__(s, o.shape[-1]))
    with torch.no_grad():
        out = model(torch.randn(2, 3, r, r, generator=generator))
    assert out.shape == (2, EMB)
    assert tuple(last[s] for s in (1, 2, 3, 4)) == PATH_SIZES[r]


@pytest.mark.parametrize("r", [28, 14, 7])
def test_branch_owns_exactly_the_documented_layers_and_implant_level(r, generator):
    model = _btnet()
    owned = {
        k.split(".weight")[0].split(".bias")[0].split(".running")[0].split(".num_batches")[0]
        for k in model.branch(r).net.state_dict()
    }
    top = {".".join(k.split(".")[:2]) if k.startswith("layer") else k.split(".")[0] for k in owned}
    assert top == OWNED[r]
    name, channels, side = IMPLANT[r]
    assert model.implant_level(r) == name
    feature = model.forward_branch(torch.randn(2, 3, r, r, generator=generator), r).feature
    assert feature.shape == (2, channels, side, side)


def _full_branch_state(model: BTNet, r: int, seed: int, same_tail_bn: bool) -> dict[str, torch.Tensor]:
    """A public-style full branch network: own layers random, shared conv/PReLU/fc = the trunk's."""
    full = insightface_state_dict(LAYERS, WIDTHS, EMB, input_size=r, seed=seed)
    trunk = model.trunk.state_dict()
    owned_prefixes = tuple(sorted(OWNED[r]))
    for k in full:
        if k.startswith(owned_prefixes):
            continue
        is_bn = any(p in k for p in ("bn", "downsample.1", "features")) and not k.startswith("fc")
        if not is_bn or same_tail_bn:
            full[k] = trunk[k].clone()
    return full


@pytest.mark.parametrize("r", [28, 14, 7])
@pytest.mark.parametrize("branch_bn", [True, False])
def test_branch_plus_shared_tail_equals_full_network_with_same_weights(r, branch_bn, generator):
    model = _btnet(branch_bn).eval()
    model.trunk.load_state_dict(insightface_state_dict(LAYERS, WIDTHS, EMB, seed=1))
    full_state = _full_branch_state(model, r, seed=2, same_tail_bn=not branch_bn)
    result = split_btnet_branch(model, r, full_state)
    assert result.dropped_norms == []
    model.load_state_dict(result.branch_state, strict=False)

    full = IResNet(LAYERS, WIDTHS, embedding_size=EMB, input_size=r).eval()
    full.load_state_dict(full_state, strict=True)
    x = torch.randn(3, 3, r, r, generator=generator)
    with torch.no_grad():
        out = model(x)
        torch.testing.assert_close(out, full(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out, insightface_forward(full_state, x, LAYERS, input_size=r), rtol=1e-4, atol=1e-4)


def test_import_full_branch_checkpoint_file_and_shared_weight_check(tmp_path, generator):
    model = _btnet(True).eval()
    model.trunk.load_state_dict(insightface_state_dict(LAYERS, WIDTHS, EMB, seed=1))
    full_state = _full_branch_state(model, 14, seed=3, same_tail_bn=False)
    path = tmp_path / "bnet14.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in full_state.items()}}, path)
    import_btnet_branch(model, 14, path)
    full = IResNet(LAYERS, WIDTHS, embedding_size=EMB, input_size=14).eval()
    full.load_state_dict(full_state)
    x = torch.randn(2, 3, 14, 14, generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(model(x), full(x), rtol=1e-5, atol=1e-5)

    full_state["layer4.1.conv1.weight"] = full_state["layer4.1.conv1.weight"] + 1.0
    torch.save(full_state, path)
    with pytest.raises(CheckpointError, match=r"bnet14\.pth.*layer4\.1\.conv1\.weight"):
        import_btnet_branch(model, 14, path)
    del full_state["layer3.0.conv1.weight"]
    torch.save(full_state, path)
    with pytest.raises(CheckpointError, match=r"missing.*branches\.14\.net\.layer3\.0\.conv1\.weight"):
        import_btnet_branch(model, 14, path, check_shared=False)


def test_without_branch_bn_tail_bn_statistics_are_dropped_on_import():
    model = _btnet(False)
    full_state = _full_branch_state(model, 28, seed=4, same_tail_bn=False)
    result = split_btnet_branch(model, 28, full_state)
    assert "layer3.0.bn1.running_mean" in result.dropped_norms
    assert not any(".norms." in k for k in result.branch_state)


@pytest.mark.parametrize("branch_bn", [True, False])
def test_training_updates_branch_bn_copies_not_trunk_statistics(branch_bn, generator):
    model = _btnet(branch_bn).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model(torch.randn(4, 3, 28, 28, generator=generator))
    after = model.state_dict()
    changed = {k for k in before if "running_mean" in k and not torch.equal(before[k], after[k])}
    assert "branches.28.net.layer1.0.bn1.running_mean" in changed
    assert ("trunk.layer3.0.bn1.running_mean" in changed) is (not branch_bn)
    assert ("branches.28.norms.layer3_0_bn1.running_mean" in changed) is branch_bn
    assert not any(k.startswith(("trunk.layer1", "trunk.bn1", "branches.14", "branches.7")) for k in changed)


def test_distill_returns_both_paths_at_the_implant_level(generator):
    model = _btnet().eval()
    x_hr = torch.randn(2, 3, 112, 112, generator=generator)
    x_lr = torch.randn(2, 3, 14, 14, generator=generator)
    out = model.distill(x_hr, x_lr, 14)
    assert out.student_feature.shape == out.teacher_feature.shape == (2, WIDTHS[2], 14, 14)
    assert not out.teacher_embedding.requires_grad and out.student_embedding.requires_grad
    with torch.no_grad():
        torch.testing.assert_close(out.teacher_embedding, model.trunk(x_hr))
        torch.testing.assert_close(out.student_embedding, model(x_lr))
        sd = model.trunk.state_dict()
        torch.testing.assert_close(
            out.teacher_feature, insightface_forward(sd, x_hr, LAYERS, stop_units=6), rtol=1e-4, atol=1e-4
        )
    loss = (out.student_feature - out.teacher_feature).square().mean() + (
        out.student_embedding - out.teacher_embedding
    ).square().mean()
    loss.backward()
    assert all(p.grad is not None for p in model.branch_parameters(14))
    assert all(p.grad is None for p in model.branch(28).parameters())


def test_registry_btnet_r50_paths_and_unknown_resolution():
    with torch.device("meta"):
        model = get_model("btnet_r50")
    assert model.resolutions == (112, 28, 14, 7)
    assert model.metadata.resolutions == (112, 28, 14, 7)
    assert [model.implant_level(r) for r in (28, 14, 7)] == ["layer2.0", "layer3.0", "layer4.0"]
    with pytest.raises(ValueError, match="resolution=56"):
        model.branch(56)
    with pytest.raises(ValueError, match="resolution 20"):
        BTNet(IResNet(LAYERS, WIDTHS), (20,))


def test_branch_training_against_frozen_teacher(generator):
    model = _btnet(True)
    model.train()
    model.trunk.eval()  # the recipe: frozen teacher, branch (and its BN copies) in training mode
    trunk_before = {k: v.clone() for k, v in model.trunk.state_dict().items()}
    norms_before = model.branch(28).norms["layer3_0_bn1"].running_mean.clone()
    x_hr = torch.randn(4, 3, 112, 112, generator=generator)
    out = model.distill(x_hr, torch.randn(4, 3, 28, 28, generator=generator), 28)
    assert all(torch.equal(v, model.trunk.state_dict()[k]) for k, v in trunk_before.items())
    assert not torch.equal(norms_before, model.branch(28).norms["layer3_0_bn1"].running_mean)
    assert all(m.training is False for m in model.trunk.modules())  # modes restored after the branch path
    with torch.no_grad():
        torch.testing.assert_close(out.teacher_embedding, model.trunk(x_hr))


@pytest.mark.parametrize("r", [28, 14, 7])
def test_branch_trainable_set_is_the_public_one(r):
    """BTNet train_multi_reso_distill.py on a full network: a parameter is frozen when its name contains
    a fix_params entry and not "bn", then the implant block <stage>.0 is re-enabled. fix_params per
    configs/ms1mv3_r50_reso{28,14,7}.py."""
    fix_params = {
        28: ["layer2", "layer3", "layer4", "fc", "features"],
        14: ["layer3", "layer4", "fc", "features"],
        7: ["layer4", "fc", "features"],
    }[r]
    implant = IMPLANT[r][0] + "."
    model = _btnet()
    full_names = [n for n, p in model.trunk.named_parameters()]
    trainable_features = {
        n for n in full_names if not (any(f in n for f in fix_params) and "bn" not in n) or n.startswith(implant)
    }
    trainable_features.discard("features.weight")  # iResNet's features.weight is fixed at 1 in every code
    branch = model.branch(r)
    ours = {n for n, p in branch.net.named_parameters() if p.requires_grad}
    universe = {n for n, p in branch.net.named_parameters()}  # a branch rebuilt for r x r may lack a shortcut
    for key, bn in branch.norms.items():
        trunk_name = next(n for n in model.tail_norm_names(r) if n.replace(".", "_") == key)
        ours |= {f"{trunk_name}.{n}" for n, p in bn.named_parameters() if p.requires_grad}
        universe |= {f"{trunk_name}.{n}" for n, p in bn.named_parameters()}
    assert ours == trainable_features & universe
    if r != 7:  # for 7 the block layer4.0 is owned (the implant block)
        assert f"{'layer3' if r == 28 else 'layer4'}.0.downsample.1.weight" not in ours
    assert "features.bias" not in ours and "bn2.weight" in ours
