"""TensorRT build choices that need no TensorRT: batch profiles, precision rules, build config.

An engine built from an mrface graph has one optimisation profile over the batch axis
(min <= opt <= max); the other input dimensions are fixed by the graph spec. Precision support by
TensorRT major version (documented API; see deploy/README.md):

* **Strongly typed** (TensorRT 10 and 11; the only mode of TensorRT >= 11): the graph's own types
  decide -- an mrface FP16 graph (``--precision fp16``) gives an FP16 engine, a Q/DQ graph
  (``--precision int8``) an INT8 engine, a float32 graph an FP32 engine. The network is created
  with ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` and no precision flag is set.
* **Builder flags** (TensorRT 10 only, float32 graphs only): ``fp16`` via ``BuilderFlag.FP16``;
  ``int8`` via ``BuilderFlag.INT8`` and an implicit-quantisation calibrator (entropy or minmax;
  deprecated since 10.1, removed in 11).

:func:`build_mode` picks the mode from the engine precision, the graph's precision and the
TensorRT version, and refuses combinations TensorRT cannot build.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mrface.export.errors import ExportError
from mrface.export.spec import GraphSpec

PRECISIONS = ("fp32", "fp16", "int8")
CALIBRATORS = ("entropy", "minmax")
#: Minimum cosine to PyTorch (float32) for an engine to pass its parity check.
PRECISION_MIN_COSINE = {"fp32": 0.9999, "fp16": 0.999, "int8": 0.99}


@dataclass(frozen=True)
class BatchProfile:
    """Optimisation profile over the batch axis: engines accept min <= N <= max, tuned for opt."""

    min: int = 1
    opt: int = 8
    max: int = 64

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ExportError(
                f"batch profile min={self.min} opt={self.opt} max={self.max}: need 1 <= min <= opt <= max"
            )

    def shapes(self, spec: GraphSpec) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(min, opt, max) input shapes of ``spec``'s graph for ``IOptimizationProfile.set_shape``."""
        return spec.input_shape(self.min), spec.input_shape(self.opt), spec.input_shape(self.max)

    def check_batch(self, batch: int, source: str = "engine") -> None:
        """Raise when ``batch`` is outside the profile."""
        if not self.min <= batch <= self.max:
            raise ExportError(f"{source}: batch {batch} outside the engine's profile [{self.min}, {self.max}]")


@dataclass(frozen=True)
class EngineBuildConfig:
    """How to build one engine.

    Attributes:
        precision: ``fp32``, ``fp16`` or ``int8`` (see module docstring for version rules).
        profile: batch optimisation profile.
        workspace_mib: builder workspace memory pool limit in MiB.
        calibrator: ``entropy`` (IInt8EntropyCalibrator2) or ``minmax`` (IInt8MinMaxCalibrator).
        calibration_batch: images per calibration batch (<= profile.max).
        timing_cache: file read before and written after the build (None: no cache).
        graph_precision: precision of the ONNX graph (``GraphSpec.precision``); an fp16/int8 graph
            is built strongly typed and ``precision`` must equal it.
    """

    precision: str = "fp16"
    profile: BatchProfile = BatchProfile()
    workspace_mib: int = 2048
    calibrator: str = "entropy"
    calibration_batch: int = 32
    timing_cache: Path | None = None
    graph_precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ExportError(f"precision={self.precision!r}: expected one of {PRECISIONS}")
        if self.graph_precision not in PRECISIONS:
            raise ExportError(f"graph_precision={self.graph_precision!r}: expected one of {PRECISIONS}")
        if self.graph_precision != "fp32" and self.precision != self.graph_precision:
            raise ExportError(
                f"precision={self.precision} from a {self.graph_precision} graph: a reduced-precision "
                "graph is built strongly typed, at its own precision"
            )
        if self.calibrator not in CALIBRATORS:
            raise ExportError(f"calibrator={self.calibrator!r}: expected one of {CALIBRATORS}")
        if self.workspace_mib < 1:
            raise ExportError(f"workspace_mib={self.workspace_mib}: expected >= 1")
        if self.needs_calibrator and not 1 <= self.calibration_batch <= self.profile.max:
            raise ExportError(
                f"calibration_batch={self.calibration_batch}: must be within 1..{self.profile.max} (profile max)"
            )

    @property
    def needs_calibrator(self) -> bool:
        """INT8 from a float32 graph (TensorRT 10 flags); a Q/DQ graph carries its own scales."""
        return self.precision == "int8" and self.graph_precision == "fp32"

    @property
    def min_cosine(self) -> float:
        return PRECISION_MIN_COSINE[self.precision]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["timing_cache"] = str(self.timing_cache) if self.timing_cache else None
        return out


def tensorrt_major(version: str) -> int:
    """Major version from a TensorRT version string ('10.3.0' -> 10)."""
    try:
        return int(version.split(".")[0])
    except ValueError:
        raise ExportError(f"TensorRT version {version!r}: not a version string") from None


def build_mode(precision: str, graph_precision: str, version: str) -> str:
    """``"strong"`` (strongly typed network, no precision flags) or ``"flags"`` (TensorRT 10 builder flags).

    Raises a clear error when TensorRT ``version`` cannot build ``precision`` from a
    ``graph_precision`` graph (see module docstring).
    """
    major = tensorrt_major(version)
    if major < 10:
        raise ExportError(f"TensorRT {version}: mrface targets the TensorRT 10/11 Python API (name-based tensors)")
    if graph_precision != "fp32":
        if precision != graph_precision:
            raise ExportError(f"precision={precision} from a {graph_precision} graph: build it at {graph_precision}")
        return "strong"
    if precision == "fp32" or major >= 11:
        if precision != "fp32":
            raise ExportError(
                f"precision={precision} from a float32 graph with TensorRT {version}: TensorRT 11 removed "
                "BuilderFlag.FP16/INT8 and calibrators (strong typing only). Export the graph itself at that "
                f"precision: mrface export --format tensorrt --precision {precision}"
            )
        return "strong" if major >= 11 else "flags"
    return "flags"
