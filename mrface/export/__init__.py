"""Deployment: ONNX export with parity checks, onnxruntime and TensorRT runners.

Public API::

    from mrface.export import ExportOptions, export_model, OnnxFaceRunner, read_onnx_metadata

    result = export_model(model.eval(), "exports/btnet")      # every path, verified, atomic
    runner = OnnxFaceRunner("exports/btnet")                   # mixed-size faces -> embeddings
    meta, spec = read_onnx_metadata(result.graphs[0].path)

Modules, one job each: ``paths`` (deployable per-resolution modules), ``spec`` (GraphSpec),
``graph`` (input adapter: baked preprocessing, AveragePool degradation, outputs), ``onnx``
(export + metadata props), ``precision`` (FP16 graphs), ``quantize`` (INT8 Q/DQ graphs),
``session`` (onnxruntime), ``parity`` (checks vs PyTorch), ``accuracy`` (10-fold on held-out pairs),
``artefacts`` (atomic publishing, manifest), ``exporter`` (export_model), ``loading`` (--model),
``runner`` (OnnxFaceRunner, routed by :mod:`mrface.models.branch_select`), ``calibration`` (INT8
calibration faces and batches), ``tensorrt/`` (engines: config, metadata, calibration, engine,
cli; TensorRTEmbedder) and ``cli`` (``mrface export``).

Heavy optional dependencies (onnx, onnxruntime, onnxscript, tensorrt) are imported on use.
"""

from mrface.export.errors import ExportError, ParityError
from mrface.export.exporter import ExportOptions, ExportResult, export_model
from mrface.export.onnx import read_onnx_metadata
from mrface.export.parity import ParityReport
from mrface.export.runner import OnnxFaceRunner
from mrface.export.spec import GraphSpec

__all__ = [
    "ExportError",
    "ExportOptions",
    "ExportResult",
    "GraphSpec",
    "OnnxFaceRunner",
    "ParityError",
    "ParityReport",
    "export_model",
    "read_onnx_metadata",
]
