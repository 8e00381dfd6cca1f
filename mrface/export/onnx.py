"""ONNX export of one :class:`~mrface.export.graph.DeployGraph` with a dynamic batch axis.

Uses the ``torch.export``-based exporter (``torch.onnx.export(..., dynamo=True)``) with a symbolic
batch dimension, opset >= 17, input ``"input"`` and outputs ``"embedding"`` (+ ``"norm"``). The
model's metadata goes into the ONNX ``metadata_props``:

================  ==========================================================================
key               value
================  ==========================================================================
mrface.model      ModelMetadata JSON (``mrface.models.ModelMetadata.from_json`` reads it)
mrface.graph      GraphSpec JSON (input format/size/colour order, outputs, opset)
color_order       model colour order after preprocessing (``RGB``/``BGR``)
mean, std         JSON lists, applied to x / 255
input_size        graph input side S; ``branch_resolution``: the path's resolution r
input_format      ``float_nchw`` or ``uint8_nhwc``; ``embedding_size``: E
================  ==========================================================================

The flat keys are for consumers that do not parse JSON blobs (the C++ runner reads them).
Requires the ``export`` extra (``onnx``, ``onnxruntime``, ``onnxscript``).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import torch

from mrface.export.errors import ExportError
from mrface.export.graph import DeployGraph
from mrface.export.spec import INPUT_NAME, GraphSpec
from mrface.models.metadata import ModelMetadata

MODEL_KEY = "mrface.model"
GRAPH_KEY = "mrface.graph"
MAX_BATCH = 4096  # upper bound of the symbolic batch dimension (torch.export needs one)


def require_onnx() -> Any:
    """Import ``onnx`` or raise an error naming the extra to install."""
    try:
        import onnx
    except ImportError:
        raise ExportError("ONNX export needs the 'onnx' package: pip install 'mrface[export]'") from None
    return onnx


def metadata_props(metadata: ModelMetadata, spec: GraphSpec) -> dict[str, str]:
    """The ``metadata_props`` written into every exported graph (see module docstring)."""
    return {
        MODEL_KEY: metadata.to_json(),
        GRAPH_KEY: spec.to_json(),
        "color_order": metadata.color_order,
        "mean": json.dumps(list(metadata.mean)),
        "std": json.dumps(list(metadata.std)),
        "input_size": str(spec.input_size),
        "branch_resolution": str(spec.resolution),
        "input_format": spec.input_format,
        "embedding_size": str(metadata.embedding_size),
    }


def read_onnx_metadata(path: str | Path) -> tuple[ModelMetadata, GraphSpec]:
    """Model metadata and graph spec stored in an exported ``.onnx`` file."""
    onnx = require_onnx()
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such ONNX file")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - onnx raises DecodeError, OSError, ...
        raise ExportError(f"{path}: not a readable ONNX file ({exc})") from None
    props = {p.key: p.value for p in proto.metadata_props}
    if MODEL_KEY not in props or GRAPH_KEY not in props:
        raise ExportError(f"{path}: no mrface metadata ({MODEL_KEY!r}, {GRAPH_KEY!r}); was it exported by mrface?")
    return (
        ModelMetadata.from_json(props[MODEL_KEY], source=f"{path}:{MODEL_KEY}"),
        GraphSpec.from_json(props[GRAPH_KEY], source=f"{path}:{GRAPH_KEY}"),
    )


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the exporter's progress prints, warnings and registration log lines (errors still raise)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def export_onnx(graph: DeployGraph, spec: GraphSpec, metadata: ModelMetadata, path: str | Path) -> Path:
    """Export ``graph`` to ``path`` (overwritten) with a dynamic batch axis; returns ``path``.

    The trace uses a batch of 2 so no size-1 specialisation can creep in; the graph is checked
    with ``onnx.checker`` and its batch dimension must be symbolic.
    """
    onnx = require_onnx()
    path = Path(path)
    dtype = torch.uint8 if spec.input_format == "uint8_nhwc" else torch.float32
    example = torch.zeros(spec.input_shape(2), dtype=dtype)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    log = io.StringIO()
    with _quiet_exporter(), contextlib.redirect_stdout(log):
        try:
            torch.onnx.export(
                graph.eval(),
                (example,),
                str(path),
                input_names=[INPUT_NAME],
                output_names=list(spec.outputs),
                opset_version=spec.opset,
                dynamo=True,
                dynamic_shapes={"x": {0: batch}},
                external_data=False,
                verbose=False,
            )
        except Exception as exc:  # noqa: BLE001 - the exporter raises many types; re-raise with context
            raise ExportError(
                f"ONNX export of {spec.name} ({spec.resolution}px) failed: {exc}\nexporter log:\n{log.getvalue()}"
            ) from exc
    proto = onnx.load(str(path))
    if not proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param:
        raise ExportError(f"{path}: exported graph has a fixed batch dimension; expected a symbolic one")
    del proto.metadata_props[:]
    for key, value in metadata_props(metadata, spec).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
    return path
