"""CoresetModel (frozen backbone + FaceCoresetNet) in the registry: ``get_model("facecoresetnet", ...)`` derives
its metadata from the backbone, and a model written by ``save_model`` (as training writes ``model.safetensors``)
loads back through ``load_model`` with identical outputs on a padded template batch."""

from __future__ import annotations

import json

import pytest
import torch

from mrface.models import CoresetModel, ModelMetadata, get_model, list_models, load_model, save_model
from mrface.models.registry import model_entry

# The arguments a coreset run stores (training.stages.coreset.coreset_arguments): all keys explicit.
ARGUMENTS = {
    "backbone": "iresnet_tiny",
    "backbone_args": {"width": 0.125, "embedding_size": 32, "preprocessing": "adaface"},
    "k": 2,
    "heads": 4,
    "gamma": 0.5,
    "tau": 1.0,
    "dropout": 0.0,
}


def _templates(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(B=3, N=3, 3, 112, 112) padded templates and their lengths (B,)."""
    return torch.randn(3, 3, 3, 112, 112, generator=generator), torch.tensor([1, 3, 2])


def test_registered_and_listed():
    assert "facecoresetnet" in list_models()
    assert list_models("face*") == ["facecoresetnet"]
    assert model_entry("facecoresetnet").derived_metadata


def test_get_model_builds_it_with_the_backbones_metadata():
    model = get_model("facecoresetnet", **ARGUMENTS)
    assert isinstance(model, CoresetModel)
    assert model.aggregator.k == 2 and model.aggregator.dim == 32
    backbone = model.backbone.metadata
    assert backbone is not None and backbone.architecture == "iresnet_tiny" and backbone.color_order == "BGR"
    assert model.metadata == ModelMetadata(
        architecture="facecoresetnet",
        arguments=ARGUMENTS,
        input_size=112,
        color_order="BGR",
        mean=(0.5,) * 3,
        std=(0.5,) * 3,
        embedding_size=32,
        normalized_output=False,
        resolutions=(112,),
    )
    # only the given keywords are recorded, so get_model(meta.architecture, **meta.arguments) rebuilds it
    short = get_model("facecoresetnet", backbone="iresnet_tiny", heads=4)
    assert short.metadata.arguments == {"backbone": "iresnet_tiny", "heads": 4}
    assert short.metadata.color_order == "RGB" and short.embedding_size == 128 and short.aggregator.k == 3


def test_bad_arguments():
    with pytest.raises(ValueError, match="preprocessing comes from the model's backbone"):
        get_model("facecoresetnet", backbone="iresnet_tiny", heads=4, preprocessing="adaface")
    with pytest.raises(TypeError, match="get_model\\('facecoresetnet'\\): bad keyword arguments"):
        get_model("facecoresetnet", backbone="iresnet_tiny", heads=4, size=3)
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        get_model("facecoresetnet", backbone="nope")
    with pytest.raises(ValueError, match="must be a single-image face model"):
        get_model("facecoresetnet", backbone="facecoresetnet")


def test_save_model_load_model_round_trip(tmp_path, generator):
    model = get_model("facecoresetnet", **ARGUMENTS).eval()
    with torch.no_grad():  # move every tensor off its initial value, BN running statistics included
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.add_(0.05 * torch.randn(tensor.shape, generator=generator).abs())
    path = save_model(model, tmp_path / "run" / "model.safetensors")
    assert json.loads((tmp_path / "run" / "model.json").read_text())["architecture"] == "facecoresetnet"

    loaded = load_model(path)
    assert isinstance(loaded, CoresetModel) and not loaded.training
    assert loaded.metadata == model.metadata
    assert loaded.metadata.color_order == "BGR" and loaded.backbone.metadata.color_order == "BGR"
    x, lengths = _templates(generator)
    with torch.no_grad():
        ref = model(x, lengths)
        torch.testing.assert_close(loaded(x, lengths), ref, rtol=0, atol=0)
        torch.testing.assert_close(loaded(x[:, 0]), model(x[:, 0]), rtol=0, atol=0)  # single faces
    assert ref.shape == (3, 32)
    with torch.no_grad():  # a fresh build gives other outputs: the weights did come from the file
        assert not torch.allclose(get_model("facecoresetnet", **ARGUMENTS).eval()(x, lengths), ref)
    # the safetensors header alone is enough
    (tmp_path / "run" / "model.json").unlink()
    again = load_model(path)
    assert again.metadata == model.metadata
    with torch.no_grad():
        torch.testing.assert_close(again(x, lengths), ref, rtol=0, atol=0)
