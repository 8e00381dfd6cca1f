"""iResNet: InsightFace layout (strict load + same embeddings as an independent functional
forward), stage sizes, autocast, gradient checkpointing, channels_last, tiny variant."""

from __future__ import annotations

import pytest
import torch
from models_reference import insightface_forward, insightface_state_dict

from mrface.models import get_model, iresnet
from mrface.models.iresnet import IResNet

TINY_WIDTHS = (8, 16, 32, 64)


def _tiny(**kw) -> IResNet:
    return IResNet((1, 2, 1, 1), TINY_WIDTHS, embedding_size=32, **kw)


def test_insightface_r18_state_dict_loads_strictly_and_matches_functional_forward(generator):
    sd = insightface_state_dict((2, 2, 2, 2))
    model = get_model("iresnet18").eval()
    model.load_state_dict(sd, strict=True)  # raises on any name/shape difference
    x = torch.randn(1, 3, 112, 112, generator=generator)
    with torch.no_grad():
        out1, out2 = model(x), model(x)
        ref = insightface_forward(sd, x, (2, 2, 2, 2))
    assert out1.shape == (1, 512)
    assert torch.equal(out1, out2)  # deterministic in eval mode
    torch.testing.assert_close(out1, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "depth,layers", [(34, (3, 4, 6, 3)), (50, (3, 4, 14, 3)), (100, (3, 13, 30, 3)), (200, (6, 26, 60, 6))]
)
def test_state_dict_names_and_shapes_match_insightface_layout(depth, layers):
    expected = insightface_state_dict(layers, seed=None)  # shapes only, on the meta device
    with torch.device("meta"):
        got = iresnet(depth).state_dict()
    assert list(got) == list(expected)
    assert {k: tuple(v.shape) for k, v in got.items()} == {k: tuple(v.shape) for k, v in expected.items()}


# input -> layer1 -> layer2 -> layer3 -> layer4 (REFERENCE.md §2)
SPATIAL = {112: (56, 28, 14, 7), 56: (56, 28, 14, 7), 28: (28, 28, 14, 7), 14: (14, 14, 14, 7), 7: (7, 7, 7, 7)}


@pytest.mark.parametrize("size", sorted(SPATIAL))
def test_stage_spatial_sizes_follow_resolution_rule(size, generator):
    model = _tiny(input_size=size).eval()
    x = model.forward_units(torch.randn(1, 3, size, size, generator=generator), 0, 1)
    seen = []
    for s in range(4):
        x = getattr(model, f"layer{s + 1}")(x)
        seen.append(x.shape[-1])
        assert x.shape[1] == TINY_WIDTHS[s]
    assert tuple(seen) == SPATIAL[size]
    assert model(torch.randn(2, 3, size, size, generator=generator)).shape == (2, 32)


def test_bad_input_size_and_shape_give_clear_errors():
    with pytest.raises(ValueError, match="input_size=96"):
        _tiny(input_size=96)
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 3, 112, 112\)"):
        _tiny()(torch.zeros(1, 3, 64, 64))


def test_bf16_autocast_trunk_with_float32_head(generator):
    model = _tiny(amp="bf16").eval()
    ref = _tiny().eval()
    ref.load_state_dict(model.state_dict())
    dtypes = {}

    def record(key):
        def hook(module, inputs, output):
            dtypes[key] = output.dtype

        return hook

    model.layer4[-1].register_forward_hook(record("trunk"))
    model.fc.register_forward_hook(record("fc"))
    x = torch.randn(4, 3, 112, 112, generator=generator)
    with torch.no_grad():
        out, expected = model(x), ref(x)
    assert dtypes == {"trunk": torch.bfloat16, "fc": torch.float32}
    assert out.dtype == torch.float32
    # bf16 trunk: close to the float32 model, not equal
    assert torch.nn.functional.cosine_similarity(out, expected).min() > 0.98


def test_gradient_checkpointing_gives_same_output_and_gradients(generator):
    a = _tiny().train()
    b = _tiny(grad_checkpointing=True).train()
    b.load_state_dict(a.state_dict())
    x = torch.randn(4, 3, 112, 112, generator=generator)
    out_a, out_b = a(x), b(x)
    torch.testing.assert_close(out_a, out_b)
    out_a.square().sum().backward()
    out_b.square().sum().backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        if pa.grad is not None:
            torch.testing.assert_close(pa.grad, pb.grad, msg=name)


def test_channels_last_matches_contiguous(generator):
    model = _tiny().eval()
    x = torch.randn(2, 3, 112, 112, generator=generator)
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_iresnet_tiny_learns_a_small_task_on_cpu(generator):
    torch.manual_seed(0)
    model = get_model("iresnet_tiny", input_size=7)
    head = torch.nn.Linear(model.embedding_size, 4)
    x = torch.randn(8, 3, 7, 7, generator=generator)
    y = torch.arange(8) % 4
    opt = torch.optim.SGD(list(model.parameters()) + list(head.parameters()), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(10):
        loss = torch.nn.functional.cross_entropy(head(model(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]


def test_features_weight_is_fixed_at_one():
    model = get_model("iresnet_tiny")
    assert not model.features.weight.requires_grad
    assert torch.equal(model.features.weight, torch.ones(model.embedding_size))
