"""Model metadata (DESIGN.md §4) and the preprocessing it implies.

Every mrface model carries a :class:`ModelMetadata`: how to rebuild it (``architecture`` +
``arguments`` for :func:`mrface.models.get_model`), and what its input must look like (square
``input_size``, ``color_order``, ``mean``/``std`` applied after scaling to [0, 1]). Loaders and
exporters read it; nothing guesses. Preprocessing presets (REFERENCE.md §1):

=============  =====  ============  ===========
preset         order  mean          std
=============  =====  ============  ===========
insightface    RGB    0.5           0.5          (x/255 - 0.5)/0.5
adaface        BGR    0.5           0.5          AdaFace / QGFace / FaceCoresetNet
magface        BGR    0.0           1.0          x/255
=============  =====  ============  ===========
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np
import torch

COLOR_ORDERS = ("RGB", "BGR")


@dataclass(frozen=True)
class Preprocessing:
    """Colour order and per-channel normalisation: ``(x / 255 - mean) / std`` in ``color_order``."""

    color_order: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


PREPROCESSING_PRESETS: dict[str, Preprocessing] = {
    "insightface": Preprocessing("RGB", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "adaface": Preprocessing("BGR", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "magface": Preprocessing("BGR", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}


def preprocessing_preset(name: str) -> Preprocessing:
    """Look up a preset by name; unknown names raise ``ValueError`` listing the choices."""
    try:
        return PREPROCESSING_PRESETS[name]
    except KeyError:
        raise ValueError(
            f"preprocessing={name!r} is not a preset; expected one of {sorted(PREPROCESSING_PRESETS)}"
        ) from None


@dataclass(frozen=True)
class ModelMetadata:
    """What a model is and what its input looks like. Saved as JSON next to the weights.

    Attributes:
        architecture: registry name (``mrface.models.list_models()``).
        arguments: keyword arguments for ``get_model(architecture, **arguments)`` (JSON values).
        input_size: side of the square input in pixels (112 for the usual crops).
        color_order: ``"RGB"`` or ``"BGR"``: channel order the model expects.
        mean, std: per-channel normalisation applied to ``x / 255`` in ``color_order``.
        embedding_size: length of the output embedding.
        normalized_output: whether ``forward`` returns unit-length embeddings.
        alignment: name of the 5-point alignment template the crops follow.
        resolutions: input resolutions the model has paths for (BTNet: trunk first, then branches).
    """

    architecture: str
    arguments: dict[str, Any] = field(default_factory=dict)
    input_size: int = 112
    color_order: str = "RGB"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    embedding_size: int = 512
    normalized_output: bool = False
    alignment: str = "arcface_112"
    resolutions: tuple[int, ...] = (112,)

    def __post_init__(self) -> None:
        if self.color_order not in COLOR_ORDERS:
            raise ValueError(f"ModelMetadata.color_order must be one of {COLOR_ORDERS}, got {self.color_order!r}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if len(value) != 3:
                raise ValueError(f"ModelMetadata.{name} must have 3 entries, got {value!r}")
            object.__setattr__(self, name, tuple(float(v) for v in value))
        if any(s <= 0 for s in self.std):
            raise ValueError(f"ModelMetadata.std must be positive, got {self.std!r}")
        object.__setattr__(self, "resolutions", tuple(int(r) for r in self.resolutions))

    def to_json(self) -> str:
        """Serialise to a JSON string (round-trips through :meth:`from_json`)."""
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "<string>") -> ModelMetadata:
        """Parse :meth:`to_json` output; ``source`` names the file in error messages."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source}: model metadata is not valid JSON ({exc})") from None
        if not isinstance(data, dict) or "architecture" not in data:
            raise ValueError(f"{source}: model metadata must be a JSON object with an 'architecture' key")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source}: unknown model metadata fields {unknown}; expected a subset of {sorted(known)}")
        for key in ("mean", "std", "resolutions"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


def _to_hwc_list(images: Any) -> list[np.ndarray]:
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    if isinstance(images, np.ndarray):
        if images.ndim == 3:
            return [images]
        if images.ndim == 4:
            return list(images)
        raise ValueError(f"images: expected an HxWx3 or NxHxWx3 uint8 array, got shape {images.shape}")
    if isinstance(images, Sequence):
        return [np.asarray(im) for im in images]
    raise TypeError(f"images: expected a uint8 array, tensor or list of arrays, got {type(images).__name__}")


def preprocess(
    images: Any,
    metadata: ModelMetadata,
    *,
    color_order: str = "RGB",
    size: int | None = None,
) -> torch.Tensor:
    """uint8 HWC images -> float tensor (N, 3, size, size) in the model's colour order and normalisation.

    Args:
        images: one HxWx3 uint8 array, an NxHxWx3 array/tensor, or a list of HxWx3 arrays (sizes
            may differ).
        metadata: the model's metadata (colour order, mean, std, input size).
        color_order: channel order of ``images`` (``"RGB"`` for PIL, ``"BGR"`` for cv2.imread).
        size: output side; default ``metadata.input_size``. Images of another size are resized
            with cv2 INTER_AREA when shrinking and INTER_LINEAR when enlarging.
    """
    if color_order not in COLOR_ORDERS:
        raise ValueError(f"color_order must be one of {COLOR_ORDERS}, got {color_order!r}")
    size = metadata.input_size if size is None else int(size)
    out = []
    for i, im in enumerate(_to_hwc_list(images)):
        if im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3:
            raise ValueError(f"images[{i}]: expected an HxWx3 uint8 array, got shape {im.shape} dtype {im.dtype}")
        h, w = im.shape[:2]
        if (h, w) != (size, size):
            shrink = h * w > size * size
            im = cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        if color_order != metadata.color_order:
            im = im[:, :, ::-1]
        out.append(np.ascontiguousarray(im))
    if not out:
        raise ValueError("images: expected at least one image")
    batch = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(metadata.mean).view(1, 3, 1, 1)
    std = torch.tensor(metadata.std).view(1, 3, 1, 1)
    return (batch - mean) / std
