"""TensorRT engines for exported graphs: build, load, run, and route faces to branch engines.

A thin layer over TensorRT's documented Python API (10.x and 11.x), imported lazily so this
module imports without TensorRT. What needs TensorRT and a GPU -- :func:`build_engine`,
:class:`TensorRTEngine`, ``calibration.make_calibrator`` -- is exercised only by ``gpu``-marked
tests; all logic around it (profiles, calibration batching, metadata, routing) lives in TensorRT-free modules
and in :class:`TensorRTEmbedder`, which runs any object with ``max_batch``/``device``/``run``.

Runtime: buffers are torch tensors on the engine's device; ``execute_async_v3`` is enqueued on
``torch.cuda.current_stream()``, so results are ordered with surrounding torch work (no pycuda).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from mrface.export.calibration import CalibrationBatches
from mrface.export.errors import ExportError
from mrface.export.onnx import read_onnx_metadata
from mrface.export.spec import INPUT_NAME
from mrface.export.tensorrt.calibration import CalibratorFeed, make_calibrator
from mrface.export.tensorrt.config import EngineBuildConfig, build_mode
from mrface.export.tensorrt.metadata import (
    EngineMetadata,
    check_compatible,
    read_engine_metadata,
    sha256_file,
    write_engine_metadata,
)
from mrface.io import write_bytes
from mrface.models.branch_select import DEFAULT_RESIZER, check_route_options, route_and_run
from mrface.models.metadata import ModelMetadata


def tensorrt_unavailable_reason() -> str | None:
    """None when TensorRT and a CUDA device are usable here, else a sentence saying what is missing."""
    if importlib.util.find_spec("tensorrt") is None:
        return (
            "TensorRT is not installed (pip install tensorrt from NVIDIA's index, or the system packages); "
            "ONNX export works without it: --format onnx"
        )
    if not torch.cuda.is_available():
        return "no CUDA device visible: TensorRT engines need an NVIDIA GPU"
    return None


def _trt() -> Any:
    reason = tensorrt_unavailable_reason()
    if reason:
        raise ExportError(reason)
    import tensorrt

    return tensorrt


def _logger(trt: Any) -> Any:
    return trt.Logger(trt.Logger.WARNING)


# ------------------------------------------------------------------------------------------- build
def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    config: EngineBuildConfig,
    calibration: CalibrationBatches | None = None,
    calibration_cache: str | Path | None = None,
) -> EngineMetadata:
    """Build ``engine_path`` (+ ``<engine>.json``) from an mrface ONNX graph; returns the metadata."""
    trt = _trt()
    model_meta, spec = read_onnx_metadata(onnx_path)
    if spec.precision != config.graph_precision:
        raise ExportError(f"{onnx_path}: a {spec.precision} graph, but the build config says {config.graph_precision}")
    mode = build_mode(config.precision, spec.precision, trt.__version__)
    logger = _logger(trt)
    builder = trt.Builder(logger)
    strongly_typed = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(strongly_typed if mode == "strong" else 0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"{onnx_path}: TensorRT could not parse the graph: {errors}")
    build = builder.create_builder_config()
    build.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.workspace_mib << 20)
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, *config.profile.shapes(spec))
    build.add_optimization_profile(profile)
    if mode == "flags" and config.precision in ("fp16", "int8"):
        build.set_flag(trt.BuilderFlag.FP16)  # INT8 engines keep FP16 for layers without INT8 kernels
    if mode == "flags" and config.precision == "int8":
        if calibration is None:
            raise ExportError("precision=int8 needs calibration images (a folder or SynthFace)")
        build.set_flag(trt.BuilderFlag.INT8)
        buffer = torch.empty(
            calibration.shape, dtype=torch.from_numpy(np.empty(0, calibration.dtype)).dtype, device="cuda"
        )
        calibrator = make_calibrator(trt, CalibratorFeed(calibration, buffer, calibration_cache), config.calibrator)
        build.int8_calibrator = calibrator
        build.set_calibration_profile(profile)
    cache_path = Path(config.timing_cache) if config.timing_cache else None
    if cache_path is not None:
        cache = build.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
        build.set_timing_cache(cache, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, build)
    if plan is None:
        raise ExportError(f"{onnx_path}: TensorRT engine build failed (see the TensorRT log above)")
    engine_path = Path(engine_path)
    write_bytes(engine_path, bytes(plan))
    if cache_path is not None:
        write_bytes(cache_path, bytes(build.get_timing_cache().serialize()))
    meta = EngineMetadata(
        engine_file=engine_path.name,
        onnx_file=Path(onnx_path).name,
        onnx_sha256=sha256_file(onnx_path),
        spec=spec,
        model=model_meta,
        precision=config.precision,
        profile=config.profile,
        tensorrt_version=trt.__version__,
        device_name=torch.cuda.get_device_name(),
        build=config.to_dict()
        | {"mode": mode, "io_dtype": spec.io_dtype}
        | ({"calibration_batches": len(calibration)} if calibration is not None and mode == "flags" else {}),
    )
    write_engine_metadata(engine_path, meta)
    return meta


# ------------------------------------------------------------------------------------------- run
class EngineLike(Protocol):
    """What :class:`TensorRTEmbedder` needs from an engine."""

    max_batch: int
    device: torch.device

    def run(self, x: torch.Tensor) -> torch.Tensor: ...


class TensorRTEngine:
    """One deserialised engine with one execution context; ``run`` is enqueued on the current stream."""

    def __init__(self, engine_path: str | Path) -> None:
        trt = _trt()
        engine_path = Path(engine_path)
        self.meta = read_engine_metadata(engine_path)
        check_compatible(self.meta, trt.__version__, torch.cuda.get_device_name(), str(engine_path))
        runtime = trt.Runtime(_logger(trt))
        self.engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise ExportError(f"{engine_path}: TensorRT could not deserialise the engine")
        self.context = self.engine.create_execution_context()
        self.device = torch.device("cuda", torch.cuda.current_device())
        self.max_batch = self.meta.profile.max
        self.outputs = list(self.meta.spec.outputs)
        self._trt = trt

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """x: graph input on the engine's device (``spec.input_shape(N)``) -> embedding (N, E) float32.

        Asynchronous on ``torch.cuda.current_stream()``; torch orders later work on that stream.
        """
        spec = self.meta.spec
        if tuple(x.shape[1:]) != spec.input_shape(1)[1:]:
            raise ExportError(f"{self.meta.engine_file}: input {tuple(x.shape)}, expected {spec.input_shape(-1)}")
        self.meta.profile.check_batch(int(x.shape[0]), self.meta.engine_file)
        io = torch.float16 if spec.io_dtype == "float16" else torch.float32
        if spec.input_format == "float_nchw":
            x = x.to(io)
        x = x.to(self.device).contiguous()
        self.context.set_input_shape(INPUT_NAME, tuple(x.shape))
        self.context.set_tensor_address(INPUT_NAME, x.data_ptr())
        results = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            results[name] = torch.empty(shape, dtype=io, device=self.device)
            self.context.set_tensor_address(name, results[name].data_ptr())
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise ExportError(f"{self.meta.engine_file}: execute_async_v3 failed")
        x.record_stream(stream)
        return results["embedding"].float()


class TensorRTEmbedder:
    """Faces of any size -> embeddings through per-resolution engines, routed by the shared routing
    (:func:`mrface.models.branch_select.route_and_run`, as MultiResolutionFaceModel).

    ``engines``: resolution -> engine (anything with ``max_batch``, ``device``, ``run``); each must
    take float NCHW input at its own resolution. Groups larger than an engine's profile are split.
    """

    def __init__(
        self,
        engines: Mapping[int, EngineLike],
        metadata: ModelMetadata,
        *,
        indicator: str = "max",
        strategy: str = "ceil",
        resizer: str = DEFAULT_RESIZER,
        color_order: str = "RGB",
    ) -> None:
        check_route_options(indicator, strategy, color_order, resizer)
        if not engines:
            raise ExportError("TensorRTEmbedder: expected at least one engine")
        self.engines = dict(engines)
        self.metadata = metadata
        self.indicator, self.strategy, self.resizer, self.color_order = indicator, strategy, resizer, color_order

    @classmethod
    def from_folder(cls, folder: str | Path, **kwargs: Any) -> TensorRTEmbedder:
        """Load every ``*.engine`` in ``folder`` (float-input engines, one per resolution)."""
        engines: dict[int, TensorRTEngine] = {}
        for path in sorted(Path(folder).glob("*.engine")):
            engine = TensorRTEngine(path)
            spec = engine.meta.spec
            if spec.input_format != "float_nchw" or spec.degrade_factor != 1:
                raise ExportError(f"{path}: the embedder needs float_nchw engines at their own resolution")
            if spec.resolution in engines:
                raise ExportError(f"{folder}: two engines for resolution {spec.resolution}")
            engines[spec.resolution] = engine
        if not engines:
            raise ExportError(f"{folder}: no *.engine files")
        return cls(engines, next(iter(engines.values())).meta.model, **kwargs)

    @property
    def resolutions(self) -> tuple[int, ...]:
        return tuple(sorted(self.engines, reverse=True))

    def __call__(self, images: Any) -> tuple[torch.Tensor, list[int]]:
        """images: list of HxWx3 uint8 arrays (``color_order``) -> (embeddings (N, E), branch per face)."""
        routed = route_and_run(
            images,
            {r: self._runner(r) for r in self.resolutions},
            indicator=self.indicator,
            strategy=self.strategy,
            resizer=self.resizer,
            metadata=self.metadata,
            color_order=self.color_order,
        )
        return routed.outputs, routed.branches

    def _runner(self, resolution: int) -> Any:
        """(n, 3, r, r) float batch -> (n, E) on the first engine's device, in chunks of the engine's max batch."""
        engine, device = self.engines[resolution], next(iter(self.engines.values())).device

        def run(batch: torch.Tensor) -> torch.Tensor:
            batch = batch.to(engine.device, non_blocking=True)
            parts = split_batches(len(batch), engine.max_batch)
            return torch.cat([engine.run(batch[part]).to(device) for part in parts])

        return run


def split_batches(n: int, max_batch: int) -> list[slice]:
    """Slices covering range(n) in chunks of at most ``max_batch`` (engine profiles cap the batch)."""
    if max_batch < 1:
        raise ValueError(f"max_batch={max_batch}: expected >= 1")
    return [slice(i, min(i + max_batch, n)) for i in range(0, n, max_batch)]
