"""onnxruntime sessions for exported graphs (CPU by default)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mrface.export.errors import ExportError


def require_onnxruntime() -> Any:
    """Import ``onnxruntime`` or raise an error naming the extra to install."""
    try:
        import onnxruntime
    except ImportError:
        raise ExportError("running ONNX graphs needs 'onnxruntime': pip install 'mrface[export]'") from None
    return onnxruntime


def ort_session(
    path: str | Path, *, threads: int | None = None, providers: Sequence[str] = ("CPUExecutionProvider",)
) -> Any:
    """An ``onnxruntime.InferenceSession`` for ``path``; ``threads`` caps intra-op threads (None = ORT default)."""
    ort = require_onnxruntime()
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such ONNX file")
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = int(threads)
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
