"""Own format round trip and errors; InsightFace / AdaFace / MagFace imports from files built in
the test from the documented layouts; weights-only loading refuses arbitrary objects."""

from __future__ import annotations

import collections
import json

import pytest
import torch
from models_reference import adaface_forward, adaface_state_dict, insightface_forward, insightface_state_dict

from mrface.models import (
    CheckpointError,
    get_model,
    import_adaface,
    import_insightface,
    import_magface,
    load_model,
    load_weights,
    save_model,
)
from mrface.models.iresnet import IResNet

LAYERS = (1, 2, 1, 1)
WIDTHS = (8, 16, 32, 64)


def test_round_trip_save_load(tmp_path, generator):
    model = get_model("btnet_tiny", branch_bn=True, preprocessing="adaface").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=generator))
    path = save_model(model, tmp_path / "sub" / "m.safetensors")
    meta = json.loads((tmp_path / "sub" / "m.json").read_text())
    assert meta["architecture"] == "btnet_tiny" and meta["color_order"] == "BGR"
    assert meta["arguments"] == {"branch_bn": True, "preprocessing": "adaface"}
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["m.json", "m.safetensors"]  # no temp files

    loaded = load_model(path)
    assert loaded.metadata == model.metadata
    x = torch.randn(2, 3, 14, 14, generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    # the safetensors header alone is enough
    (tmp_path / "sub" / "m.json").unlink()
    assert load_model(path).metadata == model.metadata


def test_corrupt_and_wrong_architecture_files_give_clear_errors(tmp_path):
    model = get_model("iresnet_tiny")
    path = save_model(model, tmp_path / "tiny.safetensors")
    data = path.read_bytes()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"bad\.safetensors.*not a readable safetensors"):
        load_weights(get_model("iresnet_tiny"), bad)
    with pytest.raises(CheckpointError, match=r"missing\.safetensors: no such weight file"):
        load_model(tmp_path / "missing.safetensors")

    with pytest.raises(CheckpointError, match=r"tiny\.safetensors.*'iresnet_tiny'.*'iresnet_tiny' \{'width': 0\.5\}"):
        load_weights(get_model("iresnet_tiny", width=0.5), path)
    # without metadata to compare, the strict load names keys and shapes
    other = get_model("iresnet_tiny", width=0.5)
    other.metadata = None
    expected = r"shape mismatches \(\d+\): conv1\.weight: file \(16, 3, 3, 3\) vs model"
    with pytest.raises(CheckpointError, match=expected):
        load_weights(other, path)


def test_save_needs_metadata_and_safetensors_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"must end in \.safetensors"):
        save_model(get_model("iresnet_tiny"), tmp_path / "x.pt")
    with pytest.raises(ValueError, match="no ModelMetadata"):
        save_model(IResNet(LAYERS, WIDTHS), tmp_path / "x.safetensors")


def test_insightface_pth_import_strict_and_errors(tmp_path, generator):
    sd = insightface_state_dict(LAYERS, WIDTHS, 32)
    path = tmp_path / "backbone.pth"
    torch.save(collections.OrderedDict((f"module.{k}", v) for k, v in sd.items()), path)
    model = IResNet(LAYERS, WIDTHS, embedding_size=32).eval()
    import_insightface(model, path)
    x = torch.randn(2, 3, 112, 112, generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(model(x), insightface_forward(sd, x, LAYERS), rtol=1e-4, atol=1e-4)

    del sd["layer2.1.conv1.weight"]
    sd["extra.weight"] = torch.zeros(1)
    sd["fc.bias"] = torch.zeros(7)
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as info:
        import_insightface(IResNet(LAYERS, WIDTHS, embedding_size=32), path)
    msg = str(info.value)
    assert "backbone.pth" in msg and "missing keys (1): layer2.1.conv1.weight" in msg
    assert "unexpected keys (1): extra.weight" in msg and "fc.bias: file (7,) vs model (32,)" in msg

    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 200])
    with pytest.raises(CheckpointError, match=r"backbone\.pth: not a readable PyTorch checkpoint"):
        import_insightface(IResNet(LAYERS, WIDTHS, embedding_size=32), path)


class _Payload:
    pass


def test_weights_only_refuses_arbitrary_objects(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "obj": _Payload()}, path)
    with pytest.raises(CheckpointError, match=r"evil\.pth: refused: it references [\w.]*_Payload") as info:
        import_insightface(IResNet(LAYERS, WIDTHS), path)
    assert "weights_only=False" not in str(info.value)  # never advise turning the protection off


def test_adaface_ckpt_import_matches_adaface_forward(tmp_path, generator):
    import argparse

    sd = adaface_state_dict(LAYERS, WIDTHS, 32)
    ckpt = {"epoch": 3, "state_dict": sd, "hyper_parameters": argparse.Namespace(arch="ir_tiny", m=0.4)}
    path = tmp_path / "adaface.ckpt"
    torch.save(ckpt, path)
    model = IResNet(LAYERS, WIDTHS, embedding_size=32, shortcut="subsample", head_affine=False).eval()
    import_adaface(model, path)
    x = torch.randn(2, 3, 112, 112, generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(model(x), adaface_forward(sd, x, LAYERS), rtol=1e-4, atol=1e-4)
    # into the InsightFace layout it cannot go: the error names what differs
    with pytest.raises(CheckpointError, match=r"missing keys.*layer1\.0\.downsample\.0\.weight"):
        import_adaface(IResNet(LAYERS, WIDTHS, embedding_size=32), path)


def test_adaface_registry_layout_matches_adaface_names():
    from mrface.models.importers import adaface_to_insightface

    ada = adaface_state_dict((2, 2, 2, 2))
    mapped = adaface_to_insightface({k[6:]: v for k, v in ada.items() if k.startswith("model.")}, (2, 2, 2, 2))
    ours = get_model("adaface_ir18").state_dict()
    assert set(mapped) == set(ours)
    assert all(tuple(mapped[k].shape) == tuple(v.shape) for k, v in ours.items())
    assert get_model("adaface_ir18").metadata.color_order == "BGR"


def test_magface_prefixes_and_classifier_dropped(tmp_path, generator):
    sd = insightface_state_dict(LAYERS, WIDTHS, 32)
    state = {f"features.module.{k}": v for k, v in sd.items()}
    state["fc.weight"] = torch.randn(32, 100)  # MagFace's classifier, same name as our fc once stripped
    path = tmp_path / "magface.pth"
    torch.save({"epoch": 1, "arch": "iresnet", "state_dict": state}, path)
    model = IResNet(LAYERS, WIDTHS, embedding_size=32).eval()
    import_magface(model, path)
    x = torch.randn(1, 3, 112, 112, generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(model(x), insightface_forward(sd, x, LAYERS), rtol=1e-4, atol=1e-4)
