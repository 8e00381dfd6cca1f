"""Atomic file writes: every file mrface publishes appears whole or not at all.

A writer fills a temporary file in the destination's folder (``.<name>.<random>.tmp``, so
``os.replace`` never crosses file systems and :func:`mrface.training.rundir.clean_stale_temporaries`
finds what a killed process left), fsyncs it, gives it the usual umask permissions and renames it
over the destination. An exception inside the block removes the temporary file and leaves the old
destination untouched.

    with atomic_write(path, "w") as f:      # a file object
        json.dump(obj, f)
    with atomic_path(path) as tmp:          # a file name, for APIs that need one (safetensors)
        save_file(tensors, str(tmp))
    write_text(path, text); write_bytes(path, data); torch_save(obj, path); save_figure(fig, "x.png")

Parent folders are not created here: callers decide where output may go.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from mrface.errors import published_mode


def _fsync(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temporary_sibling(path: str | os.PathLike) -> Path:
    """Create an empty private temporary file beside ``path`` (``.<name>.<random>.tmp``) and return its name."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """fsync ``tmp``, give it the usual umask permissions (mkstemp makes 0600) and rename it onto ``path``."""
    _fsync(tmp)
    published_mode(tmp)
    os.replace(tmp, path)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file name beside ``path``; on normal exit it replaces ``path``, on error it is removed."""
    tmp = temporary_sibling(path)
    try:
        yield tmp
        publish(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """``open(path, mode)`` made atomic: yield a file object on a temporary sibling, published on normal exit.

    ``mode``: ``"w"``, ``"wb"`` (or with ``+``); ``open_kwargs`` go to :func:`open` (``encoding``, ``newline``).
    """
    if "w" not in mode:
        raise ValueError(f"atomic_write({path}): mode {mode!r}; expected a write mode such as 'w' or 'wb'")
    with atomic_path(path) as tmp, open(tmp, mode, **open_kwargs) as f:
        yield f


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """``Path(path).write_bytes(data)``, atomically."""
    with atomic_write(path, "wb") as f:
        f.write(data)


def write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """``Path(path).write_text(text)``, atomically."""
    with atomic_write(path, "w", encoding=encoding) as f:
        f.write(text)


def torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)``, atomically."""
    import torch

    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


def save_figure(fig: Any, path: str | os.PathLike, **savefig_kwargs: Any) -> None:
    """``fig.savefig(path)`` for a matplotlib figure, atomically; the format follows the suffix (PNG when none)."""
    fmt = savefig_kwargs.pop("format", None) or Path(path).suffix.lstrip(".").lower() or "png"
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format=fmt, **savefig_kwargs)
