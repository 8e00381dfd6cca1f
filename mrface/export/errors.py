"""Errors raised by the deployment layer (all subclass ``ValueError`` so callers can catch one type)."""

from __future__ import annotations


class ExportError(ValueError):
    """A model, option or output location cannot be exported as asked (the message says why)."""


class ParityError(ExportError):
    """An exported graph disagrees with PyTorch beyond the tolerance; nothing was published.

    ``report`` holds the :class:`~mrface.export.parity.ParityReport` that failed.
    """

    def __init__(self, message: str, report: object | None = None) -> None:
        super().__init__(message)
        self.report = report
