"""mrface's own weight format: ``<name>.safetensors`` + ``<name>.json`` (ModelMetadata).

* :func:`save_model` writes both files atomically (temporary file in the same folder, then
  ``os.replace``); the metadata JSON is also stored in the safetensors header
  (``"mrface_metadata"``), so a lone ``.safetensors`` file still loads.
* :func:`load_model` rebuilds the architecture from the metadata with
  :func:`mrface.models.get_model` and loads the weights strictly.
* :func:`load_weights` loads a file into an existing model, refusing a file written for another
  architecture.
* :func:`load_state_dict_checked` is the strict load every importer uses: a mismatch raises
  :class:`CheckpointError` naming the source, the missing and unexpected keys and the shapes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from mrface.io import atomic_path, write_text
from mrface.models.base import FaceModel
from mrface.models.metadata import ModelMetadata

METADATA_KEY = "mrface_metadata"
_MAX_LISTED = 8


class CheckpointError(ValueError):
    """A weight file is missing, unreadable, or does not match the model."""


def _listed(keys: list[str]) -> str:
    more = f" ... (+{len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else ""
    return ", ".join(keys[:_MAX_LISTED]) + more


def load_state_dict_checked(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """``model.load_state_dict(state, strict=True)`` with an error listing every kind of mismatch."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = [f"{source}: weights do not match {type(model).__name__}"]
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_listed(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_listed(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches ({len(shapes)}): {_listed(shapes)}")
        raise CheckpointError("; ".join(parts))
    model.load_state_dict(dict(state), strict=True)


def metadata_path(path: str | os.PathLike) -> Path:
    """``x.safetensors`` -> ``x.json``."""
    return Path(path).with_suffix(".json")


def save_model(model: FaceModel, path: str | os.PathLike) -> Path:
    """Write ``path`` (must end in .safetensors) and its ``.json`` metadata; returns ``path``."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"save_model: path {str(path)!r} must end in .safetensors")
    meta = getattr(model, "metadata", None)
    if not isinstance(meta, ModelMetadata):
        raise ValueError("save_model: model has no ModelMetadata; build it with mrface.models.get_model")
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    text = meta.to_json()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={METADATA_KEY: text})
    write_text(metadata_path(path), text + "\n")
    return path


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], ModelMetadata | None]:
    """Tensors and (if present) the embedded metadata of an mrface safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weight file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            header = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupt?): {exc}") from None
    meta = ModelMetadata.from_json(header[METADATA_KEY], source=str(path)) if METADATA_KEY in header else None
    return state, meta


def read_metadata(path: str | os.PathLike) -> ModelMetadata:
    """Metadata for weight file ``path``: the ``.json`` beside it, else the safetensors header."""
    side = metadata_path(path)
    if side.is_file():
        return ModelMetadata.from_json(side.read_text(), source=str(side))
    _, meta = read_safetensors(path)
    if meta is None:
        raise CheckpointError(f"{path}: no metadata (neither {side.name} nor an '{METADATA_KEY}' header entry)")
    return meta


def load_weights(model: FaceModel, path: str | os.PathLike) -> FaceModel:
    """Load an mrface weight file into ``model`` (strict); refuses files for another architecture."""
    state, header_meta = read_safetensors(path)
    side = metadata_path(path)
    meta = ModelMetadata.from_json(side.read_text(), source=str(side)) if side.is_file() else header_meta
    own = getattr(model, "metadata", None)
    if meta is not None and isinstance(own, ModelMetadata):
        if (meta.architecture, meta.arguments) != (own.architecture, own.arguments):
            raise CheckpointError(
                f"{path}: holds weights for {meta.architecture!r} {meta.arguments} "
                f"but the model is {own.architecture!r} {own.arguments}"
            )
    load_state_dict_checked(model, state, str(path))
    return model


def load_model(path: str | os.PathLike) -> FaceModel:
    """Rebuild the model described by ``path``'s metadata and load its weights (CPU, eval mode)."""
    from mrface.models.registry import get_model

    meta = read_metadata(path)
    model = get_model(meta.architecture, **meta.arguments)
    load_weights(model, path)
    model.metadata = meta
    return model.eval()
