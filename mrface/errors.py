"""User-facing errors: one line ``mrface <cmd>: error: <file/key>: <what was expected>``, exit code 2.

A command raises :class:`UserError` (or one of the library's own ``ValueError``/``OSError`` kinds)
for input it cannot use; :func:`run_command` (called by every CLI entry point) turns an expected
failure into that one line on stderr and exit code 2. ``--debug`` (or ``MRFACE_DEBUG=1``) shows the
traceback instead. :func:`safe_torch_load` is the only way mrface reads a ``torch.save`` file: the
weights-only unpickler, with a refusal that names the file and the forbidden object.
"""

from __future__ import annotations

import errno
import os
import pickle
import re
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXIT_USER_ERROR = 2


class UserError(ValueError):
    """Input mrface cannot use. ``where``: the file, key or argument; ``expected``: what was expected."""

    def __init__(self, where: str | os.PathLike, expected: str) -> None:
        self.where, self.expected = str(where), expected
        super().__init__(f"{self.where}: {expected}")


# OSError kinds that are the user's situation (a path, the disk), not a bug of mrface.
_USER_ERRNOS = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EACCES,
    errno.EPERM,
    errno.ENOENT,
    errno.EISDIR,
    errno.ENOTDIR,
    errno.EEXIST,
    errno.EROFS,
    errno.ENOTEMPTY,
}


def is_expected(exc: BaseException) -> bool:
    """Whether ``exc`` is an expected failure (bad input, missing file, full disk) rather than a bug."""
    if isinstance(
        exc,
        (
            UserError,
            ValueError,
            pickle.UnpicklingError,
            FileNotFoundError,
            NotADirectoryError,
            IsADirectoryError,
            PermissionError,
            FileExistsError,
        ),
    ):
        return True
    return isinstance(exc, OSError) and exc.errno in _USER_ERRNOS


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line; OSErrors name their file and say what to do about a full disk."""
    if isinstance(exc, OSError) and not isinstance(exc, UserError) and exc.errno is not None:
        where = exc.filename if exc.filename is not None else "?"
        what = exc.strerror or str(exc)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            what += " (free some space and rerun; completed files and checkpoints are kept)"
        text = f"{where}: {what}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def debug_requested(argv: list[str]) -> tuple[bool, list[str]]:
    """(debug?, argv without ``--debug``); ``MRFACE_DEBUG=1`` also asks for tracebacks."""
    debug = "--debug" in argv or os.environ.get("MRFACE_DEBUG", "") not in ("", "0")
    return debug, [a for a in argv if a != "--debug"]


def run_command(
    name: str, func: Callable[[], int], debug: bool = False, also_log: Callable[[str], None] | None = None
) -> int:
    """Call ``func``; map an expected failure to ``mrface <name>: error: ...`` and exit code 2.

    ``also_log`` receives the same line (training writes it to train.log). With ``debug`` the
    exception propagates with its traceback.
    """
    try:
        return int(func() or 0)
    except Exception as exc:
        if debug or not is_expected(exc):
            raise
        line = f"mrface {name}: error: {one_line(exc)}"
        print(line, file=sys.stderr)
        if also_log is not None:
            also_log(line)
        return EXIT_USER_ERROR


# ------------------------------------------------------------------------------ torch.save files
def refused_global(message: str) -> str:
    """The object a weights-only unpickler refused (``GLOBAL posix.system`` -> ``posix.system``), from
    torch's message, whose advice to turn the protection off is never repeated."""
    found = re.search(r"GLOBAL ([\w.]+)", message)
    return found.group(1) if found else "an object other than tensors and plain containers"


def unsafe_pickle_message(path: str | os.PathLike, exc: BaseException) -> str:
    """``<path>: refused: ...`` for a torch/pickle file the safe loader would not read."""
    return (
        f"{path}: refused: it references {refused_global(str(exc))}, which may run code; mrface reads only "
        "tensors and plain containers from .pt files, so nothing was loaded (re-save the file from a trusted "
        "source as .safetensors)"
    )


def safe_torch_load(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``; refusals and unreadable files raise :class:`UserError`."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(path, "no such file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        where, what = unsafe_pickle_message(path, exc).split(": ", 1)
        raise UserError(where, what) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(path, f"not a readable PyTorch file (truncated or corrupt?): {first}") from None


def published_mode(path: str | os.PathLike, directory: bool = False) -> None:
    """Give a file written through a private temp file the usual umask permissions (0644 under umask 022)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if directory else 0o666) & ~umask)
