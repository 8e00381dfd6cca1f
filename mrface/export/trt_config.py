"""TensorRT build choices that need no TensorRT: batch profiles, precision rules, build config.

An engine built from an mrface graph has one optimisation profile over the batch axis
(min <= opt <= max); the other input dimensions are fixed by the graph spec. Precision support by
TensorRT major version (documented API; see deploy/README.md):

* TensorRT 10: ``fp32``; ``fp16`` via ``BuilderFlag.FP16``; ``int8`` via ``BuilderFlag.INT8`` and an
  implicit-quantisation calibrator (entropy or minmax; deprecated since 10.1 but present).
* TensorRT >= 11: weak typing and calibrators are removed; only ``fp32`` from our float32 graphs
  (FP16 needs a strongly typed FP16 ONNX, INT8 needs Q/DQ nodes: neither is produced here).
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
    """

    precision: str = "fp16"
    profile: BatchProfile = BatchProfile()
    workspace_mib: int = 2048
    calibrator: str = "entropy"
    calibration_batch: int = 32
    timing_cache: Path | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ExportError(f"precision={self.precision!r}: expected one of {PRECISIONS}")
        if self.calibrator not in CALIBRATORS:
            raise ExportError(f"calibrator={self.calibrator!r}: expected one of {CALIBRATORS}")
        if self.workspace_mib < 1:
            raise ExportError(f"workspace_mib={self.workspace_mib}: expected >= 1")
        if self.precision == "int8" and not 1 <= self.calibration_batch <= self.profile.max:
            raise ExportError(
                f"calibration_batch={self.calibration_batch}: must be within 1..{self.profile.max} (profile max)"
            )

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


def check_precision_supported(precision: str, version: str) -> None:
    """Raise a clear error when ``precision`` cannot be built by TensorRT ``version`` from our graphs."""
    major = tensorrt_major(version)
    if major < 10:
        raise ExportError(f"TensorRT {version}: mrface targets the TensorRT 10/11 Python API (name-based tensors)")
    if major >= 11 and precision != "fp32":
        raise ExportError(
            f"precision={precision} with TensorRT {version}: TensorRT 11 removed BuilderFlag.FP16/INT8 and "
            "calibrators (strong typing only); mrface does not yet export FP16 or Q/DQ-quantised ONNX. "
            "Use --precision fp32 or TensorRT 10."
        )
