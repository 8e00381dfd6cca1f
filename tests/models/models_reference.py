"""Independent references for the model tests: state dicts written from the documented layouts
(REFERENCE.md §1, AdaFace's IR-net) and plain functional forwards over them. Nothing here imports
mrface.models, so the tests compare two separate descriptions of the same network."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _randn(*shape, g):
    """Normal draws, or (g is None) an empty meta tensor of that shape for shape-only comparisons."""
    return torch.empty(shape, device="meta") if g is None else torch.randn(shape, generator=g)


def _bn(sd, name, c, g, affine=True):
    if affine:
        sd[f"{name}.weight"] = 1.0 + 0.1 * _randn(c, g=g)
        sd[f"{name}.bias"] = 0.1 * _randn(c, g=g)
    sd[f"{name}.running_mean"] = 0.1 * _randn(c, g=g)
    sd[f"{name}.running_var"] = 0.5 + _randn(c, g=g).abs()
    sd[f"{name}.num_batches_tracked"] = torch.tensor(7)


def _conv(sd, name, cout, cin, k, g):
    sd[f"{name}.weight"] = _randn(cout, cin, k, k, g=g) * (2.0 / (cin * k * k)) ** 0.5


def _prelu(sd, name, c, g):
    sd[f"{name}.weight"] = 0.25 + 0.05 * _randn(c, g=g)


def strides_for(input_size):
    """Stage strides by BTNet's rule, written out from REFERENCE.md §2."""
    return [2 if input_size % m == 0 else 1 for m in (112, 56, 28, 14)]


def insightface_state_dict(layers, widths=(64, 128, 256, 512), emb=512, input_size=112, seed=0, num_units=None):
    """arcface_torch iresnet names and shapes; ``num_units`` truncates like a BTNet branch (no head).

    ``seed=None`` gives meta tensors (names and shapes only)."""
    g = None if seed is None else torch.Generator().manual_seed(seed)
    sd = {}
    _conv(sd, "conv1", widths[0], 3, 3, g)
    _bn(sd, "bn1", widths[0], g)
    _prelu(sd, "prelu", widths[0], g)
    inplanes, built = widths[0], 1
    total = 1 + sum(layers) if num_units is None else num_units
    for s, (n, planes, stride) in enumerate(zip(layers, widths, strides_for(input_size), strict=True)):
        for b in range(n):
            if built >= total:
                break
            p = f"layer{s + 1}.{b}"
            st = stride if b == 0 else 1
            _bn(sd, f"{p}.bn1", inplanes, g)
            _conv(sd, f"{p}.conv1", planes, inplanes, 3, g)
            _bn(sd, f"{p}.bn2", planes, g)
            _prelu(sd, f"{p}.prelu", planes, g)
            _conv(sd, f"{p}.conv2", planes, planes, 3, g)
            _bn(sd, f"{p}.bn3", planes, g)
            if st != 1 or inplanes != planes:
                _conv(sd, f"{p}.downsample.0", planes, inplanes, 1, g)
                _bn(sd, f"{p}.downsample.1", planes, g)
            inplanes = planes
            built += 1
    if num_units is None:
        _bn(sd, "bn2", widths[3], g)
        sd["fc.weight"] = _randn(emb, widths[3] * 49, g=g) * (1.0 / (widths[3] * 49)) ** 0.5
        sd["fc.bias"] = 0.01 * _randn(emb, g=g)
        _bn(sd, "features", emb, g)
        sd["features.weight"] = torch.ones(emb, device=sd["fc.bias"].device)
    return sd


def _bn_f(x, sd, name):
    return F.batch_norm(
        x,
        sd[f"{name}.running_mean"],
        sd[f"{name}.running_var"],
        sd.get(f"{name}.weight"),
        sd.get(f"{name}.bias"),
        False,
        0.0,
        1e-5,
    )


def insightface_forward(sd, x, layers, input_size=112, stop_units=None, subsample_shortcut=False):
    """Functional iResNet forward over ``sd``; returns the embedding, or the map after ``stop_units`` units."""
    x = F.prelu(_bn_f(F.conv2d(x, sd["conv1.weight"], padding=1), sd, "bn1"), sd["prelu.weight"])
    done = 1
    for s, (n, stride) in enumerate(zip(layers, strides_for(input_size), strict=True)):
        for b in range(n):
            if stop_units is not None and done >= stop_units:
                return x
            p = f"layer{s + 1}.{b}"
            st = stride if b == 0 else 1
            out = _bn_f(x, sd, f"{p}.bn1")
            out = F.conv2d(out, sd[f"{p}.conv1.weight"], padding=1)
            out = F.prelu(_bn_f(out, sd, f"{p}.bn2"), sd[f"{p}.prelu.weight"])
            out = _bn_f(F.conv2d(out, sd[f"{p}.conv2.weight"], stride=st, padding=1), sd, f"{p}.bn3")
            if f"{p}.downsample.0.weight" in sd:
                short = _bn_f(F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=st), sd, f"{p}.downsample.1")
            elif subsample_shortcut:
                short = x[:, :, ::st, ::st]
            else:
                short = x
            x = out + short
            done += 1
    if stop_units is not None and done >= stop_units:
        return x
    x = torch.flatten(_bn_f(x, sd, "bn2"), 1)
    x = F.linear(x, sd["fc.weight"], sd["fc.bias"])
    return _bn_f(x, sd, "features")


def adaface_state_dict(layers, widths=(64, 128, 256, 512), emb=512, seed=0):
    """AdaFace lightning layout: ``model.input_layer``, ``model.body.i``, ``model.output_layer``, ``head.kernel``."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    _conv(sd, "model.input_layer.0", widths[0], 3, 3, g)
    _bn(sd, "model.input_layer.1", widths[0], g)
    _prelu(sd, "model.input_layer.2", widths[0], g)
    i, inplanes = 0, widths[0]
    for n, depth in zip(layers, widths, strict=True):
        for _ in range(n):
            p = f"model.body.{i}"
            if inplanes != depth:
                _conv(sd, f"{p}.shortcut_layer.0", depth, inplanes, 1, g)
                _bn(sd, f"{p}.shortcut_layer.1", depth, g)
            _bn(sd, f"{p}.res_layer.0", inplanes, g)
            _conv(sd, f"{p}.res_layer.1", depth, inplanes, 3, g)
            _bn(sd, f"{p}.res_layer.2", depth, g)
            _prelu(sd, f"{p}.res_layer.3", depth, g)
            _conv(sd, f"{p}.res_layer.4", depth, depth, 3, g)
            _bn(sd, f"{p}.res_layer.5", depth, g)
            inplanes = depth
            i += 1
    _bn(sd, "model.output_layer.0", widths[3], g, affine=False)
    sd["model.output_layer.3.weight"] = torch.randn(emb, widths[3] * 49, generator=g) * (widths[3] * 49) ** -0.5
    sd["model.output_layer.3.bias"] = torch.zeros(emb)
    _bn(sd, "model.output_layer.4", emb, g, affine=False)
    sd["head.kernel"] = torch.randn(emb, 10, generator=g)
    return sd


def adaface_forward(sd, x, layers):
    """AdaFace Backbone.forward (un-normalised: output · norm) over an ``adaface_state_dict``."""
    x = F.prelu(
        _bn_f(F.conv2d(x, sd["model.input_layer.0.weight"], padding=1), sd, "model.input_layer.1"),
        sd["model.input_layer.2.weight"],
    )
    i = 0
    for n in layers:
        for b in range(n):
            p = f"model.body.{i}"
            stride = 2 if b == 0 else 1
            if f"{p}.shortcut_layer.0.weight" in sd:
                short = F.conv2d(x, sd[f"{p}.shortcut_layer.0.weight"], stride=stride)
                short = _bn_f(short, sd, f"{p}.shortcut_layer.1")
            else:
                short = F.max_pool2d(x, 1, stride)
            r = _bn_f(x, sd, f"{p}.res_layer.0")
            r = F.conv2d(r, sd[f"{p}.res_layer.1.weight"], padding=1)
            r = F.prelu(_bn_f(r, sd, f"{p}.res_layer.2"), sd[f"{p}.res_layer.3.weight"])
            r = _bn_f(F.conv2d(r, sd[f"{p}.res_layer.4.weight"], stride=stride, padding=1), sd, f"{p}.res_layer.5")
            x = r + short
            i += 1
    x = torch.flatten(_bn_f(x, sd, "model.output_layer.0"), 1)
    x = F.linear(x, sd["model.output_layer.3.weight"], sd["model.output_layer.3.bias"])
    return _bn_f(x, sd, "model.output_layer.4")
