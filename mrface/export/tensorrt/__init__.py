"""TensorRT deployment: engines built from mrface ONNX graphs, their metadata, INT8 calibration, the CLI.

Modules, one job each: ``config`` (batch profiles, precision rules, build config; no TensorRT),
``metadata`` (the ``<engine>.json`` beside every engine), ``calibration`` (INT8 calibrators over
mrface calibration batches), ``engine`` (build, load and run engines; :class:`TensorRTEmbedder`
routes faces to per-resolution engines) and ``cli`` (``mrface export --format tensorrt``).
TensorRT itself is imported on use, so every module imports without it.
"""

from mrface.export.tensorrt.config import BatchProfile, EngineBuildConfig
from mrface.export.tensorrt.engine import TensorRTEmbedder, TensorRTEngine, build_engine, tensorrt_unavailable_reason
from mrface.export.tensorrt.metadata import EngineMetadata, read_engine_metadata, write_engine_metadata

__all__ = [
    "BatchProfile",
    "EngineBuildConfig",
    "EngineMetadata",
    "TensorRTEmbedder",
    "TensorRTEngine",
    "build_engine",
    "read_engine_metadata",
    "write_engine_metadata",
    "tensorrt_unavailable_reason",
]
