"""``export_model``: every resolution path of a model to verified ONNX graphs in one folder.

For each selected resolution: build the deployable path, wrap it (:class:`DeployGraph`), export it
with a dynamic batch axis, check parity with onnxruntime against PyTorch on SynthFace (or given)
images, and only when every graph passes publish them with ``manifest.json`` (see
:mod:`mrface.export.artefacts`). Output::

    OUT/<architecture>_r<r>[_u8].onnx   one graph per resolution path
    OUT/manifest.json                  model metadata, graph specs, parity reports, versions
"""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mrface.export.artefacts import MANIFEST, staged_output, write_json_atomic
from mrface.export.errors import ExportError
from mrface.export.graph import DeployGraph
from mrface.export.onnx import export_onnx
from mrface.export.parity import DEFAULT_BATCH_SIZES, FP32_MIN_COSINE, ParityReport, check_parity
from mrface.export.paths import check_exportable, resolution_path, select_resolutions
from mrface.export.spec import GraphSpec
from mrface.models import BTNet, FaceModel

MANIFEST_FORMAT = "mrface-onnx/1"


@dataclass(frozen=True)
class ExportOptions:
    """Choices for :func:`export_model`.

    Attributes:
        resolutions: paths to export (None = all; unknown ones raise).
        uint8_input: bake preprocessing in (uint8 NHWC input in ``input_color_order``).
        input_color_order: channel order of uint8 input (``"BGR"`` for OpenCV frames).
        degrade_from: graph input side S for every path; paths below S degrade in-graph with an
            S/r AveragePool (S must be a multiple of each r). None: each graph takes its own r.
        with_norm: add the ``norm`` output (N, 1).
        opset: ONNX opset (>= 17).
        batch_sizes: parity batch sizes (the graph must run at each).
        min_cosine: parity threshold (0.9999 for float32).
        parity_images: RGB uint8 (N, H, W, 3) faces; None = SynthFace(seed 0), one per identity.
        threads: onnxruntime intra-op threads for the parity run (None = default).
    """

    resolutions: Sequence[int] | None = None
    uint8_input: bool = False
    input_color_order: str = "RGB"
    degrade_from: int | None = None
    with_norm: bool = False
    opset: int = 18
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES
    min_cosine: float = FP32_MIN_COSINE
    parity_images: np.ndarray | None = None
    threads: int | None = None


@dataclass(frozen=True)
class ExportedGraph:
    """One published graph: its spec, final path and parity report."""

    spec: GraphSpec
    path: Path
    parity: ParityReport


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_model` published."""

    out_dir: Path
    manifest: Path
    graphs: list[ExportedGraph] = field(default_factory=list)


def synthface_images(count: int, seed: int = 0) -> np.ndarray:
    """``count`` SynthFace faces (one per identity), RGB uint8 (count, 112, 112, 3)."""
    from mrface.data.synthface import SynthFace

    return SynthFace(seed).render(np.arange(count), np.zeros(count, dtype=np.int64))


def graph_specs(model: FaceModel, options: ExportOptions) -> list[GraphSpec]:
    """The :class:`GraphSpec` of every graph ``options`` asks for (validates the options)."""
    meta = model.metadata or model.default_metadata()
    specs = []
    for r in select_resolutions(model, options.resolutions):
        kind = "model" if not isinstance(model, BTNet) else ("trunk" if r == model.trunk.input_size else "branch")
        specs.append(GraphSpec(
            name=f"{meta.architecture}_r{r}{'_u8' if options.uint8_input else ''}",
            resolution=r,
            kind=kind,
            input_format="uint8_nhwc" if options.uint8_input else "float_nchw",
            input_size=options.degrade_from or r,
            input_color_order=options.input_color_order if options.uint8_input else None,
            outputs=("embedding", "norm") if options.with_norm else ("embedding",),
            opset=options.opset,
        ))  # fmt: skip
    return specs


def _versions() -> dict[str, str]:
    out = {"torch": torch.__version__}
    for pkg in ("mrface", "onnx", "onnxruntime", "onnxscript"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def export_model(model: FaceModel, out_dir: str | Path, options: ExportOptions | None = None) -> ExportResult:
    """Export, verify and publish every selected path of ``model`` into ``out_dir`` (see module docstring).

    Raises ``ExportError`` for bad input (training mode, unknown resolution, ``out_dir`` a file)
    and ``ParityError`` when a graph fails its parity check; in both cases nothing is published.
    """
    options = options or ExportOptions()
    check_exportable(model)
    meta = model.metadata or model.default_metadata()
    specs = graph_specs(model, options)
    images = options.parity_images
    if images is None:
        images = synthface_images(max(options.batch_sizes))
    results: list[tuple[GraphSpec, str, ParityReport]] = []
    with staged_output(out_dir, "out_dir") as staging:
        for spec in specs:
            path = staging / f"{spec.name}.onnx"
            export_onnx(DeployGraph(resolution_path(model, spec.resolution), spec, meta), spec, meta, path)
            report = check_parity(path, model, spec, images, batch_sizes=options.batch_sizes,
                                  min_cosine=options.min_cosine, threads=options.threads)  # fmt: skip
            results.append((spec, path.name, report))
        write_json_atomic(staging / MANIFEST, {
            "format": MANIFEST_FORMAT,
            "model": _metadata_dict(meta),
            "graphs": [{"file": f, "spec": _spec_dict(s), "parity": r.to_dict()} for s, f, r in results],
            "versions": _versions(),
        })  # fmt: skip
    out = Path(out_dir)
    return ExportResult(out, out / MANIFEST, [ExportedGraph(s, out / f, r) for s, f, r in results])


def _metadata_dict(meta: Any) -> dict[str, Any]:
    return json.loads(meta.to_json())


def _spec_dict(spec: GraphSpec) -> dict[str, Any]:
    return json.loads(spec.to_json())


def check_options(options: ExportOptions) -> None:
    """Cheap validation that needs no model (used by the CLI before loading one)."""
    if options.degrade_from is not None and options.degrade_from < 1:
        raise ExportError(f"degrade_from={options.degrade_from}: expected a positive input side")
    if not options.batch_sizes or min(options.batch_sizes) < 1:
        raise ExportError(f"batch_sizes={list(options.batch_sizes)}: expected positive batch sizes")
