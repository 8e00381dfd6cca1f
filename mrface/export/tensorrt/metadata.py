"""Engine metadata: the JSON file stored beside every TensorRT engine (``<engine>.json``).

TensorRT plans are tied to the TensorRT version and GPU they were built on, and carry none of the
model's preprocessing facts, so mrface writes them next to the plan and checks them on load.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mrface.export.artefacts import write_json_atomic
from mrface.export.errors import ExportError
from mrface.export.spec import GraphSpec
from mrface.export.tensorrt.config import BatchProfile
from mrface.models.metadata import ModelMetadata

FORMAT = "mrface-trt-engine/1"


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class EngineMetadata:
    """Facts about one engine (see module docstring). ``parity``: report dict or None (not checked)."""

    engine_file: str
    onnx_file: str
    onnx_sha256: str
    spec: GraphSpec
    model: ModelMetadata
    precision: str
    profile: BatchProfile
    tensorrt_version: str
    device_name: str
    build: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["spec"] = json.loads(self.spec.to_json())
        out["model"] = json.loads(self.model.to_json())
        return {"format": FORMAT} | out


def metadata_path(engine_path: str | Path) -> Path:
    """``x.engine`` -> ``x.engine.json``."""
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


def write_engine_metadata(engine_path: str | Path, meta: EngineMetadata) -> Path:
    path = metadata_path(engine_path)
    write_json_atomic(path, meta.to_dict())
    return path


def read_engine_metadata(engine_path: str | Path) -> EngineMetadata:
    """Parse ``<engine>.json``; errors name the file and what is missing."""
    path = metadata_path(engine_path)
    if not path.is_file():
        raise ExportError(f"{engine_path}: no engine metadata {path.name} beside it (built outside mrface?)")
    try:
        data = json.loads(path.read_text())
        if data.pop("format", None) != FORMAT:
            raise ExportError(f"{path}: not an {FORMAT} file")
        data["spec"] = GraphSpec.from_json(json.dumps(data["spec"]), source=str(path))
        data["model"] = ModelMetadata.from_json(json.dumps(data["model"]), source=str(path))
        data["profile"] = BatchProfile(**data["profile"])
        return EngineMetadata(**data)
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ExportError(f"{path}: malformed engine metadata ({exc})") from None


def check_compatible(meta: EngineMetadata, tensorrt_version: str, device_name: str, source: str = "engine") -> None:
    """Engines only load on the TensorRT major.minor and GPU model they were built for."""
    built = ".".join(meta.tensorrt_version.split(".")[:2])
    running = ".".join(tensorrt_version.split(".")[:2])
    if built != running:
        raise ExportError(
            f"{source}: built with TensorRT {meta.tensorrt_version}, this is {tensorrt_version}; "
            "rebuild the engine (plans are not portable across TensorRT versions)"
        )
    if meta.device_name != device_name:
        raise ExportError(f"{source}: built for GPU {meta.device_name!r}, this is {device_name!r}; rebuild the engine")
