"""Model registry, timm-style: ``get_model(name, **kwargs)`` and ``list_models(pattern)``.

Every model returned carries :class:`~mrface.models.metadata.ModelMetadata` with
``architecture=name`` and ``arguments=kwargs`` (JSON values only), so
``get_model(meta.architecture, **meta.arguments)`` rebuilds it (that is how
:func:`mrface.models.load_model` works). ``preprocessing="insightface"|"adaface"|"magface"``
selects colour order and normalisation (default: the architecture's own, see the table in
``mrface.models.metadata``). Composite models registered with ``derived_metadata=True``
(``facecoresetnet``) take their preprocessing from their parts: their factory attaches the
metadata and ``get_model`` only fills in ``architecture`` and ``arguments``.

Registered names:

=======================  ====================================================================
iresnet18 … iresnet200   InsightFace iResNet (512-d, RGB, (x/255-0.5)/0.5)
iresnet_tiny             1 block per stage, widths 16/32/64/128, 128-d (trains on a CPU)
adaface_ir18/50/100      AdaFace's IR-net (subsampling shortcut, non-affine head BN, BGR)
mobilefacenet            MobileFaceNet, 0.99 M params, 128-d (``embedding_size=512`` allowed)
mbf                      InsightFace's MobileFaceNet (scale 2, 512-d)
btnet_r50                BTNet: iResNet-50 trunk + branches 28/14/7 (``branch_bn`` flag)
btnet_tiny               BTNet over iresnet_tiny
btnet_mobilefacenet      BTNet over MobileFaceNet (multi-resolution edge model)
dcr_iresnet50, dcr_tiny  DCR trunk + coupled branches 8/12/16/20 (``num_classes`` required)
facecoresetnet           frozen ``backbone`` (+ ``backbone_args``) + FaceCoresetNet set aggregator
                         (``k``, ``heads``, ``gamma``, ``tau``, ``dropout``); preprocessing of the backbone
=======================  ====================================================================

Common keyword arguments: ``amp`` (None/"fp16"/"bf16"), ``grad_checkpointing`` (iResNet),
``embedding_size``, ``dropout``, ``input_size``; tiny variants also take ``layers``/``width``.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from mrface.models.base import FaceModel
from mrface.models.btnet import BTNet
from mrface.models.coreset import FaceCoresetNet
from mrface.models.coreset_model import ARCHITECTURE as CORESET_ARCHITECTURE
from mrface.models.coreset_model import CoresetModel, coreset_metadata
from mrface.models.dcr import DCR
from mrface.models.iresnet import iresnet
from mrface.models.metadata import ModelMetadata, preprocessing_preset
from mrface.models.mobilefacenet import MobileFaceNet


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
        resolutions=tuple(getattr(model, "resolutions", (model.input_size,))),
    )
    return model


# ------------------------------------------------------------------------------ registrations
TINY = dict(layers=(1, 1, 1, 1), width=0.25, embedding_size=128)


def _register_iresnet(depth: int) -> None:
    @register_model(f"iresnet{depth}", description=f"InsightFace iResNet-{depth}, 512-d")
    def factory(**kwargs: Any) -> FaceModel:
        return iresnet(depth, **kwargs)


for _depth in (18, 34, 50, 100, 200):
    _register_iresnet(_depth)


@register_model("iresnet_tiny", description="iResNet with 1 block/stage, width 1/4, 128-d: trains on a CPU")
def _iresnet_tiny(**kwargs: Any) -> FaceModel:
    return iresnet(**{**TINY, **kwargs})


def _register_adaface(depth: int) -> None:
    @register_model(f"adaface_ir{depth}", preprocessing="adaface", description=f"AdaFace IR-{depth} layout")
    def factory(**kwargs: Any) -> FaceModel:
        return iresnet(depth, **{"shortcut": "subsample", "head_affine": False, "dropout": 0.4, **kwargs})


for _depth in (18, 50, 100):
    _register_adaface(_depth)


@register_model("mobilefacenet", description="MobileFaceNet (0.99 M params), 128-d")
def _mobilefacenet(**kwargs: Any) -> FaceModel:
    return MobileFaceNet(**kwargs)


@register_model("mbf", description="InsightFace MobileFaceNet (scale 2), 512-d")
def _mbf(**kwargs: Any) -> FaceModel:
    return MobileFaceNet(**{"scale": 2, "embedding_size": 512, **kwargs})


def _btnet(trunk: FaceModel, resolutions: Any = (28, 14, 7), branch_bn: bool = True) -> BTNet:
    return BTNet(trunk, tuple(resolutions), branch_bn=branch_bn)


@register_model("btnet_r50", description="BTNet: iResNet-50 trunk + branches 28/14/7")
def _btnet_r50(resolutions: Any = (28, 14, 7), branch_bn: bool = True, **kwargs: Any) -> FaceModel:
    return _btnet(iresnet(50, **kwargs), resolutions, branch_bn)


@register_model("btnet_tiny", description="BTNet over iresnet_tiny")
def _btnet_tiny(resolutions: Any = (28, 14, 7), branch_bn: bool = True, **kwargs: Any) -> FaceModel:
    return _btnet(iresnet(**{**TINY, **kwargs}), resolutions, branch_bn)


@register_model("btnet_mobilefacenet", description="BTNet over MobileFaceNet (multi-resolution edge model)")
def _btnet_mobilefacenet(resolutions: Any = (28, 14, 7), branch_bn: bool = True, **kwargs: Any) -> FaceModel:
    return _btnet(MobileFaceNet(**kwargs), resolutions, branch_bn)


@register_model("dcr_iresnet50", description="DCR: iResNet-50 trunk + coupled branches 8/12/16/20")
def _dcr_iresnet50(
    num_classes: int,
    resolutions: Any = (8, 12, 16, 20),
    identity_init: bool = True,
    normalized_embeddings: bool = False,
    hr_branch: bool = True,
    **kwargs: Any,
) -> FaceModel:
    return DCR(
        iresnet(50, **kwargs),
        num_classes,
        tuple(resolutions),
        identity_init=identity_init,
        normalized_embeddings=normalized_embeddings,
        hr_branch=hr_branch,
    )


@register_model("dcr_tiny", description="DCR over iresnet_tiny")
def _dcr_tiny(
    num_classes: int,
    resolutions: Any = (8, 12, 16, 20),
    identity_init: bool = True,
    normalized_embeddings: bool = False,
    hr_branch: bool = True,
    **kwargs: Any,
) -> FaceModel:
    return DCR(
        iresnet(**{**TINY, **kwargs}),
        num_classes,
        tuple(resolutions),
        identity_init=identity_init,
        normalized_embeddings=normalized_embeddings,
        hr_branch=hr_branch,
    )


@register_model(
    CORESET_ARCHITECTURE,
    derived_metadata=True,
    description="frozen backbone + FaceCoresetNet set aggregator (template -> one embedding)",
)
def _facecoresetnet(backbone: str, backbone_args: dict[str, Any] | None = None, **aggregator: Any) -> FaceModel:
    """``get_model(backbone, **backbone_args)`` + ``FaceCoresetNet(D, **aggregator)`` (k/heads/gamma/tau/dropout/
    sampling).

    Input (B, N, 3, S, S) padded templates + lengths (B,), or (B, 3, S, S) faces -> (B, D) embeddings.
    """
    if backbone == CORESET_ARCHITECTURE:
        raise ValueError(f"get_model({CORESET_ARCHITECTURE!r}): the backbone must be a single-image face model")
    trunk = get_model(backbone, **(backbone_args or {}))
    model = CoresetModel(trunk, FaceCoresetNet(trunk.embedding_size, **aggregator))
    model.metadata = coreset_metadata(model)
    return model
