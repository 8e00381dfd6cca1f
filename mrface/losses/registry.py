"""``get_head(name, ...)`` / ``get_margin(name, ...)``: every margin head with published defaults."""

from __future__ import annotations

from collections.abc import Callable

from mrface.losses.margins import AdaFace, CombinedMargin, CurricularFace, MagFace, Margin, QGFace
from mrface.losses.partial_fc import PartialFC

__all__ = ["get_head", "get_margin", "list_heads"]

# name -> (margin class, published defaults)
_MARGINS: dict[str, tuple[Callable[..., Margin], dict]] = {
    "arcface": (CombinedMargin, {"s": 64.0, "m1": 1.0, "m2": 0.5, "m3": 0.0}),
    # arcface_torch's CombinedMarginLoss (straight-through, no theta + m > pi fallback)
    "arcface_btnet": (
        CombinedMargin,
        {"s": 64.0, "m1": 1.0, "m2": 0.5, "m3": 0.0, "gradient": "exact", "fallback": "linear"},
    ),  # the older ArcFace class (BTNet losses.py)
    "cosface": (CombinedMargin, {"s": 64.0, "m1": 1.0, "m2": 0.0, "m3": 0.4}),
    "combined": (CombinedMargin, {"s": 64.0, "m1": 1.0, "m2": 0.3, "m3": 0.2}),
    "curricularface": (CurricularFace, {"s": 64.0, "m": 0.5}),
    "adaface": (AdaFace, {"s": 64.0, "m": 0.4, "h": 0.333}),
    "magface": (MagFace, {"s": 64.0, "l_a": 10.0, "u_a": 110.0, "l_m": 0.45, "u_m": 0.8, "lambda_g": 35.0}),
    "qgface": (QGFace, {"s": 64.0, "m": 0.4, "h": 0.333}),
}
_HEAD_KWARGS = ("sample_rate", "process_group", "ignore_index", "fused", "interclass_filtering_threshold")


def list_heads() -> list[str]:
    return sorted(_MARGINS)


def get_margin(name: str, **kwargs) -> Margin:
    """Margin ``name`` with published defaults, overridden by ``kwargs``."""
    key = name.lower()
    if key not in _MARGINS:
        raise ValueError(f"unknown head name {name!r}; expected one of {list_heads()}")
    cls, defaults = _MARGINS[key]
    return cls(**{**defaults, **kwargs})


def get_head(name: str, embedding_size: int = 512, num_classes: int = 1000, **kwargs) -> PartialFC:
    """A :class:`PartialFC` head (single process unless torch.distributed is initialised).

    ``sample_rate``, ``process_group``, ``ignore_index``, ``fused`` and ``interclass_filtering_threshold`` go to
    PartialFC, the rest to the margin,
    e.g. ``get_head("arcface", 512, 93431, m2=0.45, gradient="straight_through")``.
    """
    head_kw = {k: kwargs.pop(k) for k in _HEAD_KWARGS if k in kwargs}
    return PartialFC(embedding_size, num_classes, get_margin(name, **kwargs), **head_kw)
