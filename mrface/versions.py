"""Installed package versions, recorded with every run, report, export and benchmark."""

from __future__ import annotations

import importlib.metadata
import platform
from collections.abc import Sequence

#: Packages recorded when a caller names none.
DEFAULT_PACKAGES = ("mrface", "torch", "numpy")


def package_version(name: str, missing: str | None = "not installed") -> str | None:
    """Installed version of distribution ``name`` (``"torch"``, ``"faiss-cpu"``), or ``missing`` when absent."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return missing


def versions(
    packages: Sequence[str] = DEFAULT_PACKAGES, *, missing: str | None = "not installed", python: bool = True
) -> dict[str, str | None]:
    """{"python": "3.11.9", package: version, ...} for ``packages`` (``missing`` for those not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()} if python else {}
    return out | {name: package_version(name, missing) for name in packages}
