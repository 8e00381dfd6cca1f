"""Shared checks for protocol loaders: every expected file is verified up front and all missing ones listed."""

from __future__ import annotations

import os
from pathlib import Path


class MissingFilesError(FileNotFoundError):
    """Some files or folders a protocol needs are absent; ``missing`` lists every one of them."""

    def __init__(self, protocol: str, root: Path, missing: list[Path]) -> None:
        self.protocol, self.root, self.missing = protocol, root, missing
        lines = "\n".join(f"  - {p}" for p in missing)
        super().__init__(f"{protocol} at {root}: {len(missing)} expected path(s) missing:\n{lines}")


def require(protocol: str, root: str | os.PathLike, paths: list[str]) -> Path:
    """Raise :class:`MissingFilesError` naming every path (relative to ``root``) that does not exist."""
    root = Path(root)
    if not root.is_dir():
        raise MissingFilesError(protocol, root, [root])
    missing = [root / p for p in paths if not (root / p).exists()]
    if missing:
        raise MissingFilesError(protocol, root, missing)
    return root


def parse_columns(path: Path, line: str, lineno: int, types: tuple[type, ...]) -> list:
    """Split a whitespace-separated line into ``types``; errors name the file, line and expectation."""
    fields = line.split()
    try:
        if len(fields) != len(types):
            raise ValueError
        return [t(f) for t, f in zip(types, fields, strict=True)]
    except ValueError:
        names = " ".join(t.__name__ for t in types)
        raise ValueError(f"{path}: line {lineno}: expected {len(types)} fields ({names}), got {line!r}") from None


def read_rows(path: Path, types: tuple[type, ...]) -> list[list]:
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            rows.append(parse_columns(path, line, lineno, types))
    return rows
