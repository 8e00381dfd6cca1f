"""``OnnxFaceRunner``: faces of any size in, embeddings out, through exported ONNX graphs.

Loads a folder written by :func:`mrface.export.export_model` (its ``manifest.json`` and one
float-input graph per resolution path), routes each face to a path with the routing every entry point shares
(:func:`mrface.models.branch_select.route_and_run`, same resizer as ``MultiResolutionFaceModel``) and
runs each group with onnxruntime.

Example::

    runner = OnnxFaceRunner("exports/btnet", color_order="BGR")   # cv2 frames
    out = runner([face_a, face_b])       # list of HxWx3 uint8 crops of any size
    out.embeddings                       # (N, E) float32 numpy, input order
    out.branches                         # resolution each face went through
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mrface.export.artefacts import read_manifest
from mrface.export.errors import ExportError
from mrface.export.session import ort_session
from mrface.export.spec import INPUT_NAME, GraphSpec
from mrface.models.branch_select import DEFAULT_RESIZER, check_route_options, route_and_run
from mrface.models.metadata import ModelMetadata


@dataclass(frozen=True)
class RunnerOutput:
    """embeddings (N, E) float32 in input order; branches: resolution per face."""

    embeddings: np.ndarray
    branches: list[int]


class OnnxFaceRunner:
    """Multi-resolution inference over an export folder (see module docstring)."""

    def __init__(
        self,
        export_dir: str | Path,
        *,
        indicator: str = "max",
        strategy: str = "ceil",
        resizer: str = DEFAULT_RESIZER,
        color_order: str = "RGB",
        threads: int | None = None,
        providers: tuple[str, ...] = ("CPUExecutionProvider",),
    ) -> None:
        check_route_options(indicator, strategy, color_order, resizer)
        self.indicator, self.strategy, self.resizer, self.color_order = indicator, strategy, resizer, color_order
        export_dir = Path(export_dir)
        manifest = read_manifest(export_dir)
        self.metadata = ModelMetadata.from_json(json.dumps(manifest["model"]), source=str(export_dir))
        self.sessions: dict[int, Any] = {}
        self.specs: dict[int, GraphSpec] = {}
        for entry in manifest["graphs"]:
            spec = GraphSpec.from_json(json.dumps(entry["spec"]), source=f"{export_dir}/{entry['file']}")
            if spec.input_format != "float_nchw" or spec.degrade_factor != 1:
                raise ExportError(
                    f"{export_dir}/{entry['file']}: the runner needs float_nchw graphs at their own resolution "
                    f"(got {spec.input_format}, input {spec.input_size}px); export without --uint8-input/--degrade-from"
                )
            self.specs[spec.resolution] = spec
            self.sessions[spec.resolution] = ort_session(
                export_dir / entry["file"], threads=threads, providers=providers
            )

    @property
    def resolutions(self) -> tuple[int, ...]:
        return tuple(sorted(self.sessions, reverse=True))

    def __call__(self, images: Any) -> RunnerOutput:
        """images: list of HxWx3 uint8 arrays (any sizes, ``color_order``) or an NxHxWx3 array."""
        routed = route_and_run(
            images,
            {r: self._runner(r) for r in self.resolutions},
            indicator=self.indicator,
            strategy=self.strategy,
            resizer=self.resizer,
            metadata=self.metadata,
            color_order=self.color_order,
        )
        return RunnerOutput(routed.outputs.numpy(), routed.branches)

    def _runner(self, resolution: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """(n, 3, r, r) float batch -> (n, E) float32 embeddings from the graph of ``resolution``."""
        session, dtype = self.sessions[resolution], self.specs[resolution].input_dtype

        def run(batch: torch.Tensor) -> torch.Tensor:
            emb = session.run(["embedding"], {INPUT_NAME: batch.numpy().astype(dtype, copy=False)})[0]
            return torch.from_numpy(emb).float()  # float16 outputs (fp16 I/O graphs) widen to float32 here

        return run
