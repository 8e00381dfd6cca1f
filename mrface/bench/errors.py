"""The error every ``mrface bench`` module raises for input it cannot use (printed as one line, exit code 2)."""

from __future__ import annotations


class BenchError(Exception):
    """A user-facing error (bad argument, missing folder or file); exit code 2."""
