"""Model registry mechanics, timm-style: ``register_model``, ``get_model(name, **kwargs)``, ``list_models(pattern)``.

Each architecture module registers its own names with ``@register_model`` beside the network
(importing :mod:`mrface.models` imports them all). Every model returned carries
:class:`~mrface.models.metadata.ModelMetadata` with ``architecture=name`` and ``arguments=kwargs``
(JSON values only), so ``get_model(meta.architecture, **meta.arguments)`` rebuilds it (that is how
:func:`mrface.models.load_model` works). ``preprocessing="insightface"|"adaface"|"magface"``
selects colour order and normalisation (default: the architecture's own, see the table in
``mrface.models.metadata``). Composite models registered with ``derived_metadata=True``
(``facecoresetnet``) take their preprocessing from their parts: their factory attaches the
metadata and ``get_model`` only fills in ``architecture`` and ``arguments``.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from mrface.models.base import FaceModel
from mrface.models.metadata import ModelMetadata, preprocessing_preset


@dataclass(frozen=True)
class ModelEntry:
    """A registered architecture: its factory, default preprocessing preset and one-line description.

    ``derived_metadata``: the factory attaches metadata derived from the model's parts (a composite
    model's backbone), so no ``preprocessing`` preset applies.
    """

    name: str
    factory: Callable[..., FaceModel]
    preprocessing: str
    description: str
    derived_metadata: bool = False


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str, *, preprocessing: str = "insightface", description: str = "", derived_metadata: bool = False
) -> Callable[[Callable[..., FaceModel]], Callable[..., FaceModel]]:
    """Decorator registering ``factory(**kwargs) -> FaceModel`` under ``name``.

    With ``derived_metadata=True`` the factory must attach a :class:`ModelMetadata` itself (e.g. from
    a backbone it builds); ``get_model`` then only sets its ``architecture`` and ``arguments``.
    """
    preprocessing_preset(preprocessing)

    def decorator(factory: Callable[..., FaceModel]) -> Callable[..., FaceModel]:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is already registered")
        description_ = description or (factory.__doc__ or "").strip()
        _REGISTRY[name] = ModelEntry(name, factory, preprocessing, description_, derived_metadata)
        return factory

    return decorator


def list_models(pattern: str = "*") -> list[str]:
    """Sorted registered names matching a shell-style ``pattern`` (e.g. ``"btnet*"``)."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def model_entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; registered models: {list_models()}") from None


def _jsonable(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    try:
        return json.loads(json.dumps(kwargs))
    except TypeError as exc:
        raise ValueError(f"get_model({name!r}): arguments must be JSON values (str/number/bool/list), {exc}") from None


def get_model(name: str, *, preprocessing: str | None = None, **kwargs: Any) -> FaceModel:
    """Build registered model ``name`` with ``kwargs``; attaches metadata (see module docstring)."""
    entry = model_entry(name)
    arguments = _jsonable(name, kwargs)
    if entry.derived_metadata and preprocessing is not None:
        raise ValueError(
            f"get_model({name!r}): preprocessing comes from the model's backbone; "
            f"pass it in backbone_args, not preprocessing={preprocessing!r}"
        )
    preset_name = preprocessing or entry.preprocessing
    preset = preprocessing_preset(preset_name)
    try:
        model = entry.factory(**kwargs)
    except TypeError as exc:
        raise TypeError(f"get_model({name!r}): bad keyword arguments {sorted(kwargs)}: {exc}") from None
    if entry.derived_metadata:
        if not isinstance(model.metadata, ModelMetadata):
            raise RuntimeError(f"get_model({name!r}): the factory of a derived_metadata model attached no metadata")
        model.metadata = replace(model.metadata, architecture=name, arguments=arguments)
        return model
    if preprocessing is not None:
        arguments["preprocessing"] = preprocessing
    model.metadata = ModelMetadata(
        architecture=name,
        arguments=arguments,
        input_size=model.input_size,
        color_order=preset.color_order,
        mean=preset.mean,
        std=preset.std,
        embedding_size=model.embedding_size,
        normalized_output=False,
        resolutions=model.resolutions,
    )
    return model
