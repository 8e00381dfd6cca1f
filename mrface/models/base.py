"""``FaceModel``: the base class of every mrface model (an ``nn.Module`` that carries metadata).

Subclasses set ``input_size`` and ``embedding_size``; :func:`mrface.models.get_model` attaches a
:class:`~mrface.models.metadata.ModelMetadata`. ``model.preprocess(images)`` turns uint8 HWC
images into the float batch the model expects.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from mrface.models.metadata import ModelMetadata, preprocess

AMP_DTYPES = {None: None, "fp16": torch.float16, "bf16": torch.bfloat16}


def amp_dtype_from(name: str | None) -> torch.dtype | None:
    """``None``/``"fp16"``/``"bf16"`` -> autocast dtype (strings keep the choice JSON-serialisable)."""
    if name not in AMP_DTYPES:
        raise ValueError(f"amp={name!r}: expected one of {list(AMP_DTYPES)}")
    return AMP_DTYPES[name]


def trunk_autocast(x: torch.Tensor, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` on ``x``'s device, or a no-op context (leaving any outer autocast) for None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(x.device.type, dtype=dtype)


def float32_region(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """Disable autocast on ``x``'s device (a no-op context where autocast does not exist, e.g. meta)."""
    if not torch.amp.is_autocast_available(x.device.type):
        return contextlib.nullcontext()
    return torch.autocast(x.device.type, enabled=False)


class FaceModel(nn.Module):
    """An ``nn.Module`` mapping (N, 3, S, S) float images to (N, E) embeddings, with metadata."""

    input_size: int = 112
    embedding_size: int = 512

    def __init__(self) -> None:
        super().__init__()
        self.metadata: ModelMetadata | None = None

    @property
    def resolutions(self) -> tuple[int, ...]:
        """Input sides the model has a path for; a single-resolution model has one, ``(input_size,)``.

        Multi-resolution models override it (BTNet: trunk side first, then its branches; DCR: its LR sides).
        """
        return (int(self.input_size),)

    def default_metadata(self) -> ModelMetadata:
        """Metadata from the model's own sizes when none was attached by the registry."""
        return ModelMetadata(
            architecture=type(self).__name__,
            input_size=self.input_size,
            embedding_size=self.embedding_size,
        )

    def preprocess(self, images: Any, *, color_order: str = "RGB", size: int | None = None) -> torch.Tensor:
        """uint8 HWC image(s) -> (N, 3, S, S) float tensor per this model's metadata (see ``preprocess``)."""
        metadata = self.metadata if self.metadata is not None else self.default_metadata()
        return preprocess(images, metadata, color_order=color_order, size=size)

    def check_input(self, x: torch.Tensor, size: int | None = None) -> None:
        """Raise a clear error when ``x`` is not (N, 3, size, size)."""
        size = self.input_size if size is None else size
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] != size or x.shape[3] != size:
            raise ValueError(
                f"{type(self).__name__}: expected input of shape (N, 3, {size}, {size}), got {tuple(x.shape)}"
            )


class UnitStructure:
    """Mixin for networks built as a chain of units (``unit_names``, ``unit_strides``, set by the
    subclass) that branches can be cut from: unit count and the spatial side after each unit."""

    input_size: int
    unit_names: list[str]
    unit_strides: list[int]

    @property
    def num_units(self) -> int:
        return len(self.unit_names)

    def unit_output_sizes(self) -> list[int]:
        """Spatial side after each unit, e.g. 112 input: [112, 56, 56, 56, 28, ...]."""
        sizes, size = [], self.input_size
        for stride in self.unit_strides:
            size //= stride
            sizes.append(size)
        return sizes
