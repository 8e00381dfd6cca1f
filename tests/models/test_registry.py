"""Registry names, metadata attached by get_model, preprocess against a closed form."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mrface.models import ModelMetadata, get_model, list_models

EXPECTED_NAMES = {
    "iresnet18",
    "iresnet34",
    "iresnet50",
    "iresnet100",
    "iresnet200",
    "iresnet_tiny",
    "adaface_ir18",
    "adaface_ir50",
    "adaface_ir100",
    "mobilefacenet",
    "mbf",
    "btnet_r50",
    "btnet_tiny",
    "btnet_mobilefacenet",
    "dcr_iresnet50",
    "dcr_tiny",
    "facecoresetnet",
}


def test_list_models_and_patterns():
    assert EXPECTED_NAMES <= set(list_models())
    assert list_models("btnet*") == ["btnet_mobilefacenet", "btnet_r50", "btnet_tiny"]


def test_unknown_name_and_bad_arguments():
    with pytest.raises(ValueError, match="unknown model 'resnet50'.*iresnet50"):
        get_model("resnet50")
    with pytest.raises(TypeError, match="get_model\\('iresnet_tiny'\\): bad keyword arguments \\['colour'\\]"):
        get_model("iresnet_tiny", colour="RGB")
    with pytest.raises(ValueError, match="JSON values"):
        get_model("iresnet_tiny", amp=torch.float16)
    with pytest.raises(ValueError, match="preprocessing='caffe'"):
        get_model("iresnet_tiny", preprocessing="caffe")


@pytest.mark.parametrize(
    "name,kwargs,order,mean,std,emb",
    [
        ("iresnet50", {}, "RGB", 0.5, 0.5, 512),
        ("adaface_ir50", {}, "BGR", 0.5, 0.5, 512),
        ("iresnet100", {"preprocessing": "magface"}, "BGR", 0.0, 1.0, 512),
        ("mobilefacenet", {}, "RGB", 0.5, 0.5, 128),
        ("btnet_r50", {}, "RGB", 0.5, 0.5, 512),
    ],
)
def test_metadata_presets(name, kwargs, order, mean, std, emb):
    with torch.device("meta"):
        model = get_model(name, **kwargs)
    meta = model.metadata
    assert (meta.architecture, meta.color_order, meta.mean, meta.std, meta.embedding_size) == (
        name,
        order,
        (mean,) * 3,
        (std,) * 3,
        emb,
    )
    assert meta.input_size == 112 and meta.normalized_output is False
    assert ModelMetadata.from_json(meta.to_json()) == meta


def test_metadata_json_errors():
    with pytest.raises(ValueError, match="m.json: model metadata is not valid JSON"):
        ModelMetadata.from_json("{", source="m.json")
    with pytest.raises(ValueError, match=r"m.json: unknown model metadata fields \['colour'\]"):
        ModelMetadata.from_json('{"architecture": "x", "colour": "RGB"}', source="m.json")
    with pytest.raises(ValueError, match="color_order must be one of"):
        ModelMetadata("x", color_order="RBG")


def test_preprocess_closed_form_and_colour_order():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
    rgb_model = get_model("iresnet_tiny")
    x = rgb_model.preprocess(img, color_order="RGB")
    expected = (torch.from_numpy(img).permute(2, 0, 1).float() / 255.0 - 0.5) / 0.5
    torch.testing.assert_close(x, expected[None])
    # BGR model fed RGB: channels reversed; MagFace scaling x/255
    bgr = get_model("iresnet_tiny", preprocessing="magface")
    y = bgr.preprocess([img, img], color_order="RGB")
    torch.testing.assert_close(y[1], torch.from_numpy(img[:, :, ::-1].copy()).permute(2, 0, 1).float() / 255.0)
    assert y.shape == (2, 3, 112, 112)
    # another size is resized to the model's input size
    assert rgb_model.preprocess(rng.integers(0, 256, (50, 40, 3), dtype=np.uint8)).shape == (1, 3, 112, 112)
    with pytest.raises(ValueError, match=r"images\[0\]: expected an HxWx3 uint8 array"):
        rgb_model.preprocess([img.astype(np.float32)])
