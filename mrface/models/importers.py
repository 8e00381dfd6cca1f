"""Import checkpoints made by other projects (always ``torch.load(..., weights_only=True)``).

* :func:`import_insightface`: arcface_torch backbone ``.pth`` (plain state dict, optional
  ``module.`` prefix) into :class:`~mrface.models.iresnet.IResNet` / MobileFaceNet.
* :func:`import_adaface`: AdaFace lightning ``.ckpt`` (``state_dict`` with ``model.`` prefix,
  IR-net names ``input_layer``/``body.i.res_layer``/``shortcut_layer``/``output_layer``) into
  ``adaface_ir*`` models; :func:`adaface_to_insightface` is the pure key mapping.
  ``argparse.Namespace`` (AdaFace's saved hyper-parameters) is the only extra global allowed.
* :func:`import_magface`: MagFace checkpoints (``state_dict`` with ``features.module.`` /
  ``module.features.`` prefixes; the MagFace classifier is dropped).
* :func:`import_facecoresetnet`: a public FaceCoresetNet checkpoint (lightning ``state_dict`` with
  ``aggregate_model.`` / ``model.`` / ``head.`` keys, or a bare ``TemplateAggregateModel`` state dict) into a
  :class:`~mrface.models.FaceCoresetNet` or a :class:`~mrface.models.CoresetModel` (aggregator + AdaFace
  IR backbone); :func:`facecoresetnet_to_mrface` is the pure key mapping.
* :func:`import_btnet_branch`: a public BTNet branch checkpoint (a full iResNet built for the
  branch resolution) -> the branch's owned layers plus its tail BatchNorm copies; the shared conv /
  PReLU / fc weights must equal the trunk's (checked unless ``check_shared=False``).

Errors raise :class:`~mrface.models.checkpoint.CheckpointError` naming the file and the missing /
unexpected keys and shapes; unreadable or truncated files are reported as such.
"""

from __future__ import annotations

import argparse
import os
import pickle
import zipfile
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import torch

from mrface.errors import unsafe_pickle_message
from mrface.models.btnet import BTNet, norm_key
from mrface.models.checkpoint import CheckpointError, load_state_dict_checked
from mrface.models.coreset_aggregator import FaceCoresetNet
from mrface.models.coreset_template_model import CoresetModel
from mrface.models.iresnet import IResNet

_NESTED_KEYS = ("state_dict", "model", "backbone", "state_dict_backbone", "net")


def read_torch_file(path: str | os.PathLike, safe_globals: Iterable[Any] = ()) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with clear errors."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(unsafe_pickle_message(path, exc)) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {exc}") from None


def find_state_dict(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """The tensor mapping inside a loaded checkpoint (itself, or under state_dict/model/backbone/...)."""
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        for key in _NESTED_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                return find_state_dict(obj[key], source)
    raise CheckpointError(
        f"{source}: no state dict found (expected a mapping of tensors, possibly under one of {_NESTED_KEYS})"
    )


def strip_prefix(state: Mapping[str, torch.Tensor], prefixes: Iterable[str]) -> dict[str, torch.Tensor]:
    """Remove the first matching prefix from every key (keys without one are kept as they are)."""
    prefixes = tuple(prefixes)
    out = {}
    for k, v in state.items():
        for p in prefixes:
            if k.startswith(p):
                k = k[len(p) :]
                break
        out[k] = v
    return out


# ---------------------------------------------------------------------------------- InsightFace
def import_insightface(model: torch.nn.Module, path: str | os.PathLike) -> torch.nn.Module:
    """Load an arcface_torch backbone checkpoint into ``model`` (strict)."""
    state = find_state_dict(read_torch_file(path), os.fspath(path))
    load_state_dict_checked(model, strip_prefix(state, ("module.",)), os.fspath(path))
    return model


# -------------------------------------------------------------------------------------- AdaFace
_ADAFACE_RES = {"0": "bn1", "1": "conv1", "2": "bn2", "3": "prelu", "4": "conv2", "5": "bn3"}
_ADAFACE_STEM = {"0": "conv1", "1": "bn1", "2": "prelu"}
_ADAFACE_HEAD = {"0": "bn2", "3": "fc", "4": "features"}


def adaface_to_insightface(state: Mapping[str, torch.Tensor], layers: Iterable[int]) -> dict[str, torch.Tensor]:
    """AdaFace IR-net keys (``model.`` prefix stripped, head keys dropped) -> our IResNet names.

    ``layers``: blocks per stage, to map ``body.i`` to ``layer{s}.{b}``. Unknown keys are kept
    unchanged so the strict load reports them.
    """
    index = [(s + 1, b) for s, n in enumerate(layers) for b in range(n)]
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        new = key
        if parts[0] == "input_layer" and parts[1] in _ADAFACE_STEM:
            new = ".".join([_ADAFACE_STEM[parts[1]], *parts[2:]])
        elif parts[0] == "output_layer" and parts[1] in _ADAFACE_HEAD:
            new = ".".join([_ADAFACE_HEAD[parts[1]], *parts[2:]])
        elif parts[0] == "body" and parts[1].isdigit() and int(parts[1]) < len(index):
            stage, block = index[int(parts[1])]
            prefix = f"layer{stage}.{block}"
            if parts[2] == "res_layer" and parts[3] in _ADAFACE_RES:
                new = ".".join([prefix, _ADAFACE_RES[parts[3]], *parts[4:]])
            elif parts[2] == "shortcut_layer":
                new = ".".join([prefix, "downsample", *parts[3:]])
        out[new] = value
    return out


def import_adaface(model: IResNet, path: str | os.PathLike) -> IResNet:
    """Load an AdaFace ``.ckpt`` into an ``adaface_ir*`` model (strict; the margin head is dropped)."""
    source = os.fspath(path)
    state = find_state_dict(read_torch_file(path, safe_globals=[argparse.Namespace]), source)
    if any(k.startswith("model.") for k in state):
        state = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    load_state_dict_checked(model, adaface_to_insightface(state, model.layers), source)
    return model


# -------------------------------------------------------------------------------------- MagFace
_MAGFACE_PREFIXES = ("features.module.", "module.features.", "features.")


def import_magface(model: torch.nn.Module, path: str | os.PathLike) -> torch.nn.Module:
    """Load a MagFace checkpoint's backbone (keys under ``features.module.`` etc.) into ``model``."""
    source = os.fspath(path)
    state = find_state_dict(read_torch_file(path), source)
    for prefix in _MAGFACE_PREFIXES:
        picked = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if picked:
            state = picked
            break
    else:
        state = strip_prefix(state, ("module.",))
    load_state_dict_checked(model, state, source)
    return model


# ------------------------------------------------------------------------------- FaceCoresetNet
# public TemplateAggregateModel name -> FaceCoresetNet name (ligaripash/FaceCoresetNet net_template.py)
_CORESET_MODULES = {
    "pos_trans_norm": "norm_encoding",
    "decoder_layer1.self_attn1": "self_attn",
    "decoder_layer1.multihead_attn1": "cross_attn",
    "decoder_layer1.norm1": "norm_self",
    "decoder_layer1.norm2": "norm_cross",
}
# public parameters its forward never reads (kept in its checkpoints): reported, not loaded
_CORESET_UNUSED = (
    "tau",
    "feature_norm_normalizer",
    "ur_center",
    "dist_from_ur_center_norm_size_balance",
    "quality_measure.",
    "decoder_layer1.self_attn2.",
    "decoder_layer1.multihead_attn2.",
    "decoder_layer1.multihead_attn3.",
    "decoder_layer1.norm3.",
    "decoder_layer1.norm4.",
)


class CoresetImport(NamedTuple):
    """What :func:`import_facecoresetnet` loaded and what it left out (every key of the file is in one list)."""

    loaded: list[str]  # mrface names now holding the file's tensors
    unused: list[str]  # public keys the public forward never reads (aggregator leftovers, backbone alias)
    head: list[str]  # public AdaFace head keys (``head.*``): training state, not part of the model


def facecoresetnet_to_mrface(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Public ``TemplateAggregateModel`` keys -> (FaceCoresetNet keys, the public keys its forward never reads).

    Keys that are neither are kept unchanged so a strict load reports them as unexpected.
    """
    out, unused = {}, []
    for key, value in state.items():
        if key.startswith(_CORESET_UNUSED) or key in _CORESET_UNUSED:
            unused.append(key)
            continue
        module = next((m for m in _CORESET_MODULES if key.startswith(m + ".")), None)
        out[_CORESET_MODULES[module] + key[len(module) :] if module else key] = value
    return out, unused


def import_facecoresetnet(
    model: FaceCoresetNet | CoresetModel, checkpoint: str | os.PathLike | Mapping[str, torch.Tensor]
) -> CoresetImport:
    """Load a public FaceCoresetNet checkpoint (path or state dict) into ``model`` (strict).

    A :class:`FaceCoresetNet` takes the aggregator (``aggregate_model.*``, or every key of a bare
    ``TemplateAggregateModel`` state dict); a :class:`CoresetModel` also takes the AdaFace IR backbone
    (``model.*``, mapped by :func:`adaface_to_insightface`; its ``template_model.module.*`` alias must hold
    the same tensors). Missing, unknown or misshaped keys raise :class:`CheckpointError` naming them.
    """
    if isinstance(checkpoint, Mapping):
        source, state = "<state dict>", find_state_dict(checkpoint, "<state dict>")
    else:
        source = os.fspath(checkpoint)
        state = find_state_dict(read_torch_file(checkpoint, safe_globals=[argparse.Namespace]), source)
    aggregator = model.aggregator if isinstance(model, CoresetModel) else model
    if not isinstance(aggregator, FaceCoresetNet):
        raise TypeError(f"import_facecoresetnet: model must be a FaceCoresetNet or CoresetModel, got {type(model)}")
    lightning = any(k.startswith("aggregate_model.") for k in state)
    parts: dict[str, dict[str, torch.Tensor]] = {
        "aggregate_model.": {},
        "model.": {},
        "template_model.module.": {},
        "head.": {},
        "": {},
    }
    for key, value in state.items():
        prefix = next((p for p in parts if p and key.startswith(p)), "") if lightning else ""
        parts[prefix][key[len(prefix) :]] = value
    if lightning and parts[""]:
        raise CheckpointError(f"{source}: unknown keys outside aggregate_model./model./head.: {sorted(parts[''])[:8]}")
    agg_state, unused = facecoresetnet_to_mrface(parts["aggregate_model."] if lightning else parts[""])
    prefix = "aggregate_model." if lightning else ""
    unused = [prefix + k for k in unused]
    load_state_dict_checked(aggregator, agg_state, f"{source} (aggregator)")
    loaded = sorted(("aggregator." if isinstance(model, CoresetModel) else "") + k for k in agg_state)
    backbone, alias = parts["model."], parts["template_model.module."]
    if isinstance(model, CoresetModel):
        if not backbone:
            raise CheckpointError(f"{source}: no backbone keys (model.*) for the CoresetModel's backbone")
        differing = sorted(k for k, v in alias.items() if k not in backbone or not torch.equal(v, backbone[k]))
        if differing:
            raise CheckpointError(f"{source}: template_model.module.* differs from model.* at {differing[:8]}")
        layers = getattr(model.backbone, "layers", None)
        if layers is None:
            raise CheckpointError(f"{source}: the backbone must be an (AdaFace-layout) IResNet to take model.*")
        load_state_dict_checked(model.backbone, adaface_to_insightface(backbone, layers), f"{source} (backbone)")
        loaded += sorted("backbone." + k for k in model.backbone.state_dict())
        unused += sorted("template_model.module." + k for k in alias)
    else:
        unused += sorted("model." + k for k in backbone) + sorted("template_model.module." + k for k in alias)
    return CoresetImport(loaded, unused, sorted("head." + k for k in parts["head."]))


# ---------------------------------------------------------------------------------------- BTNet
class BranchImport(NamedTuple):
    """What :func:`split_btnet_branch` made of a full-branch state dict."""

    branch_state: dict[str, torch.Tensor]  # keys of BTNet.state_dict() under branches.<r>.
    dropped_norms: list[str]  # tail BN keys that differ from the trunk's and were not kept (branch_bn=False)


def split_btnet_branch(
    model: BTNet,
    resolution: int,
    state: Mapping[str, torch.Tensor],
    *,
    source: str = "<state>",
    check_shared: bool = True,
    atol: float = 0.0,
) -> BranchImport:
    """Full-branch network state (InsightFace names) -> owned part + tail BN copies of branch ``resolution``."""
    branch = model.branch(resolution)
    trunk = model.trunk
    trunk_state = trunk.state_dict()
    norms = set(model.tail_norm_names(resolution))
    prefix = f"branches.{int(resolution)}."
    out, dropped, differing = {}, [], []
    for key, value in state.items():
        module, _, pname = key.rpartition(".")
        unit = trunk.module_unit(module) if module else None
        if unit is not None and unit <= branch.implant_unit:
            out[f"{prefix}net.{key}"] = value
        elif module in norms:
            if model.branch_bn:
                out[f"{prefix}norms.{norm_key(module)}.{pname}"] = value
            elif key not in trunk_state or not torch.equal(trunk_state[key].float(), value.float()):
                dropped.append(key)  # fully shared tail: the branch's own statistics cannot be kept
        elif key in trunk_state:
            ref = trunk_state[key]
            if tuple(ref.shape) != tuple(value.shape):
                differing.append(f"{key}: file {tuple(value.shape)} vs trunk {tuple(ref.shape)}")
            elif check_shared and not torch.allclose(ref.float(), value.float(), rtol=0.0, atol=atol):
                differing.append(f"{key}: max |diff| {float((ref.float() - value.float()).abs().max()):.3g}")
        else:
            out[key] = value  # reported as unexpected below
    if differing:
        raise CheckpointError(
            f"{source}: shared weights differ from the trunk's ({len(differing)}): {', '.join(differing[:8])}; "
            "load the matching TNet first, or pass check_shared=False"
        )
    expected = {k: v for k, v in model.state_dict().items() if k.startswith(prefix)}
    missing = sorted(set(expected) - set(out))
    unexpected = sorted(set(out) - set(expected))
    shapes = [
        f"{k}: file {tuple(out[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in out and tuple(out[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"{source}: not a full BTNet branch-{resolution} network for this model; "
            f"missing: {missing[:8]}; unexpected: {unexpected[:8]}; shapes: {shapes[:8]}"
        )
    return BranchImport(out, dropped)


def import_btnet_branch(
    model: BTNet, resolution: int, path: str | os.PathLike, *, check_shared: bool = True, atol: float = 0.0
) -> BranchImport:
    """Load a public BTNet branch checkpoint (full network) into branch ``resolution`` of ``model``."""
    source = os.fspath(path)
    state = strip_prefix(find_state_dict(read_torch_file(path), source), ("module.",))
    result = split_btnet_branch(model, resolution, state, source=source, check_shared=check_shared, atol=atol)
    model.load_state_dict(result.branch_state, strict=False)
    return result
