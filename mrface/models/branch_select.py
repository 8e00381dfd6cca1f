"""Test-time branch choice for multi-resolution models (REFERENCE.md §2).

``indicator`` turns a probe's raw (w, h) into one size: ``max``, ``avg`` ((w + h) // 2, an integer, as
BTNet's evaluation scripts), ``mean`` ((w + h) / 2, the exact midpoint: an option) or ``min``.
``strategy`` maps that size to an available branch resolution:

* ``ceil`` (default): the smallest branch >= size (the largest branch when none is).
* ``near``: the nearest branch, ties going to the smaller one.
* ``floor``: the largest branch <= size (the smallest branch when none is).

With branches {112, 28, 14, 7}: ceil ≥29→112, 15–28→28, 8–14→14, ≤7→7; near ≥71→112, 22–70→28,
11–21→14, ≤10→7; floor ≥112→112, 28–111→28, 14–27→14, ≤13→7.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

INDICATORS = ("max", "avg", "mean", "min")
STRATEGIES = ("ceil", "near", "floor")


def size_indicator(width: float, height: float, indicator: str = "max") -> float:
    """One size for a (width, height) probe by ``indicator`` (max/avg/mean/min)."""
    if indicator == "max":
        return float(max(width, height))
    if indicator == "avg":
        return float((int(width) + int(height)) // 2)
    if indicator == "mean":
        return (width + height) / 2.0
    if indicator == "min":
        return float(min(width, height))
    raise ValueError(f"indicator={indicator!r}: expected one of {INDICATORS}")


def choose_resolution(size: float, resolutions: Iterable[int], strategy: str = "ceil") -> int:
    """Branch resolution for an indicator ``size`` by ``strategy`` (ceil/near/floor), see module docstring."""
    res = sorted({int(r) for r in resolutions})
    if not res:
        raise ValueError("resolutions: expected at least one branch resolution")
    if strategy == "ceil":
        return next((r for r in res if r >= size), res[-1])
    if strategy == "floor":
        return next((r for r in reversed(res) if r <= size), res[0])
    if strategy == "near":
        return min(res, key=lambda r: (abs(size - r), r))
    raise ValueError(f"strategy={strategy!r}: expected one of {STRATEGIES}")


def choose_branches(
    sizes: Sequence[tuple[float, float]],
    resolutions: Iterable[int],
    indicator: str = "max",
    strategy: str = "ceil",
) -> list[int]:
    """Branch resolution per (width, height) in ``sizes``."""
    res = list(resolutions)
    return [choose_resolution(size_indicator(w, h, indicator), res, strategy) for w, h in sizes]
