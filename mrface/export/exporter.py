"""``export_model``: every resolution path of a model to verified ONNX graphs in one folder.

For each selected resolution: build the deployable path, wrap it (:class:`DeployGraph`), export it
with a dynamic batch axis in float32, convert it to the requested precision (FP16:
:mod:`mrface.export.precision`; INT8 Q/DQ, calibrated per path: :mod:`mrface.export.quantize`),
check parity with onnxruntime (CPU) against the PyTorch float32 model on SynthFace (or given)
images, measure 10-fold verification accuracy on held-out SynthFace pairs
(:mod:`mrface.export.accuracy`), and only when every graph passes publish them with
``manifest.json`` (see :mod:`mrface.export.artefacts`). Output::

    OUT/<architecture>_r<r>[_u8][_fp16|_int8][_io16].onnx   one graph per resolution path
    OUT/manifest.json        model metadata, graph specs, parity, accuracy, calibration, versions

Thresholds (``ParityError`` naming the path and the figure; nothing is published): float32 and
FP16 every cosine >= 0.9999, INT8 mean cosine >= 0.995 (see :mod:`mrface.export.parity`), and
optionally an accuracy drop no larger than ``max_accuracy_drop``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mrface.export.accuracy import heldout_pairs, verification_accuracy
from mrface.export.artefacts import MANIFEST, staged_output, write_json_atomic
from mrface.export.calibration import (
    CalibrationBatches,
    load_face_crops,
    path_calibration_faces,
    resize_square,
    synthface_calibration,
)
from mrface.export.errors import ExportError, ParityError
from mrface.export.graph import DeployGraph
from mrface.export.onnx import export_onnx
from mrface.export.parity import DEFAULT_BATCH_SIZES, PRECISION_THRESHOLDS, ParityReport, compare_runtime
from mrface.export.paths import check_exportable, resolution_path, select_resolutions
from mrface.export.precision import convert_fp16
from mrface.export.quantize import CALIBRATION_METHODS, quantize_int8
from mrface.export.session import ort_session
from mrface.export.spec import INPUT_NAME, PRECISIONS, GraphSpec
from mrface.models import BTNet, FaceModel
from mrface.versions import versions

MANIFEST_FORMAT = "mrface-onnx/1"
CALIBRATION_BATCH = 16
#: Packages whose versions the manifest records ("unknown" when absent).
EXPORT_PACKAGES = ("torch", "mrface", "onnx", "onnxruntime", "onnxscript")


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
        min_cosine: parity threshold; None = the precision's (0.9999 every face for fp32/fp16,
            0.995 mean for int8).
        parity_images: RGB uint8 (N, H, W, 3) faces; None = SynthFace(seed 0), one per identity.
        threads: onnxruntime intra-op threads for the parity run (None = default).
        precision: ``fp32``, ``fp16`` (strongly typed FP16 graph) or ``int8`` (Q/DQ graph).
        fp16_io: FP16 graphs take float16 input and give float16 outputs (default float32 I/O).
        calib_dir: folder of aligned face crops of any size for INT8 calibration, routed per path
            (None = SynthFace faces).
        calib_images: the same as a list of RGB uint8 HxWx3 crops (instead of ``calib_dir``).
        calib_size: calibration faces per path (at most).
        calib_method: ``minmax``, ``entropy`` or ``percentile``.
        calib_seed: seed of the calibration choice (SynthFace seed; permutation of folder crops).
        keep_float: extra node names INT8 leaves in float (beyond the rule in ``quantize``).
        accuracy_pairs: held-out SynthFace pairs for the 10-fold accuracy (0 = skip).
        max_accuracy_drop: refuse a graph whose accuracy is lower than PyTorch float32's by more
            (None = report only).
    """

    resolutions: Sequence[int] | None = None
    uint8_input: bool = False
    input_color_order: str = "RGB"
    degrade_from: int | None = None
    with_norm: bool = False
    opset: int = 18
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES
    min_cosine: float | None = None
    parity_images: np.ndarray | None = None
    threads: int | None = None
    precision: str = "fp32"
    fp16_io: bool = False
    calib_dir: str | Path | None = None
    calib_images: Sequence[np.ndarray] | None = None
    calib_size: int = 128
    calib_method: str = "minmax"
    calib_seed: int = 1
    keep_float: Sequence[str] = ()
    accuracy_pairs: int = 400
    max_accuracy_drop: float | None = None

    def threshold(self) -> tuple[float, str]:
        """(cosine threshold, criterion ``min``/``mean``) for this precision."""
        default, criterion = PRECISION_THRESHOLDS[self.precision]
        return (default if self.min_cosine is None else float(self.min_cosine)), criterion


@dataclass(frozen=True)
class ExportedGraph:
    """One published graph: its spec, final path and parity report."""

    spec: GraphSpec
    path: Path
    parity: ParityReport
    accuracy: dict[str, Any] | None = None


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
    suffix = ("_u8" if options.uint8_input else "") + ("" if options.precision == "fp32" else f"_{options.precision}")
    suffix += "_io16" if options.fp16_io else ""
    for r in select_resolutions(model, options.resolutions):
        kind = "model" if not isinstance(model, BTNet) else ("trunk" if r == model.trunk.input_size else "branch")
        specs.append(
            GraphSpec(
                name=f"{meta.architecture}_r{r}{suffix}",
                resolution=r,
                kind=kind,
                input_format="uint8_nhwc" if options.uint8_input else "float_nchw",
                input_size=options.degrade_from or r,
                input_color_order=options.input_color_order if options.uint8_input else None,
                outputs=("embedding", "norm") if options.with_norm else ("embedding",),
                opset=options.opset,
                precision=options.precision,
                io_dtype="float16" if options.fp16_io else "float32",
            )
        )
    return specs


def export_model(model: FaceModel, out_dir: str | Path, options: ExportOptions | None = None) -> ExportResult:
    """Export, verify and publish every selected path of ``model`` into ``out_dir`` (see module docstring).

    Raises ``ExportError`` for bad input (training mode, unknown resolution, ``out_dir`` a file)
    and ``ParityError`` when a graph fails its parity check; in both cases nothing is published.
    """
    options = options or ExportOptions()
    check_options(options)
    check_exportable(model)
    meta = model.metadata or model.default_metadata()
    specs = graph_specs(model, options)
    images = options.parity_images
    if images is None:
        images = synthface_images(max(options.batch_sizes))
    crops = _calibration_crops(options) if options.precision == "int8" else None
    pairs: tuple[np.ndarray, np.ndarray] | None = None  # rendered once, when the first graph passed parity
    threshold, criterion = options.threshold()
    entries: list[dict[str, Any]] = []
    graphs: list[ExportedGraph] = []
    with staged_output(out_dir, "out_dir") as staging:
        for spec in specs:
            path = staging / f"{spec.name}.onnx"
            float_path = path if spec.precision == "fp32" else staging / f".{spec.name}.fp32.onnx"
            export_onnx(DeployGraph(resolution_path(model, spec.resolution), spec, meta), spec, meta, float_path)
            entry: dict[str, Any] = {"file": path.name, "spec": _spec_dict(spec)}
            if spec.precision == "fp16":
                convert_fp16(float_path, path, spec.io_dtype)
            elif spec.precision == "int8":
                entry["quantization"] = _quantize(model, spec, float_path, path, crops, options)
            if float_path != path:
                float_path.unlink()
            session = ort_session(path, threads=options.threads)

            def run(feed: np.ndarray, session: Any = session, spec: GraphSpec = spec) -> list[np.ndarray]:
                return session.run(list(spec.outputs), {INPUT_NAME: feed})

            report = compare_runtime(
                run,
                model,
                spec,
                images,
                batch_sizes=options.batch_sizes,
                min_cosine=threshold,
                criterion=criterion,
                source=str(path.name),
            )
            accuracy = None
            if options.accuracy_pairs:
                pairs = pairs or heldout_pairs(options.accuracy_pairs)
                accuracy = verification_accuracy(run, model, spec, *pairs)
                limit = options.max_accuracy_drop
                if limit is not None and accuracy["drop"] > limit:
                    raise ParityError(
                        f"{spec.name} ({spec.resolution}px path, {spec.precision}): 10-fold accuracy "
                        f"{accuracy['accuracy']:.4f} is {accuracy['drop']:.4f} below PyTorch float32 "
                        f"({accuracy['accuracy_fp32']:.4f}); max_accuracy_drop={limit}",
                        report,
                    )
            entry |= {"parity": report.to_dict(), "accuracy": accuracy, "size_bytes": path.stat().st_size}
            entries.append(entry)
            graphs.append(ExportedGraph(spec, Path(out_dir) / path.name, report, accuracy))
        write_json_atomic(
            staging / MANIFEST,
            {
                "format": MANIFEST_FORMAT,
                "precision": options.precision,
                "model": _metadata_dict(meta),
                "graphs": entries,
                "versions": versions(EXPORT_PACKAGES, missing="unknown", python=False),
            },
        )
    out = Path(out_dir)
    return ExportResult(out, out / MANIFEST, graphs)


def _calibration_crops(options: ExportOptions) -> list[np.ndarray] | None:
    """User crops for INT8 calibration (folder or list), or None for SynthFace."""
    if options.calib_dir is not None and options.calib_images is not None:
        raise ExportError("calib_dir and calib_images: give one calibration source, not both")
    if options.calib_dir is not None:
        return load_face_crops(options.calib_dir)[0]
    if options.calib_images is not None:
        crops = [np.asarray(im) for im in options.calib_images]
        for i, im in enumerate(crops):
            if im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3:
                raise ExportError(f"calib_images[{i}]: expected an RGB uint8 HxWx3 crop, got {im.shape} {im.dtype}")
        if not crops:
            raise ExportError("calib_images: empty")
        return crops
    return None


def _quantize(
    model: FaceModel, spec: GraphSpec, src: Path, dst: Path, crops: list[np.ndarray] | None, options: ExportOptions
) -> dict[str, Any]:
    """Calibrate and quantise one path; returns the manifest's ``quantization`` entry."""
    meta = model.metadata or model.default_metadata()
    if crops is None:
        faces = np.stack(
            [resize_square(im, spec.input_size) for im in synthface_calibration(options.calib_size, options.calib_seed)]
        )
        provenance: dict[str, Any] = {"source": "synthface", "used": len(faces), "seed": options.calib_seed}
    else:
        faces, provenance = path_calibration_faces(
            crops,
            select_resolutions(model, None),
            spec.resolution,
            spec.input_size,
            count=options.calib_size,
            seed=options.calib_seed,
        )
    batches = CalibrationBatches(faces, spec, meta, min(CALIBRATION_BATCH, len(faces)))
    print(
        f"{spec.name}: calibrating INT8 ({options.calib_method}) on {len(faces)} faces ({provenance['source']})",
        flush=True,
    )
    info = quantize_int8(src, dst, batches, method=options.calib_method, keep_float=options.keep_float)
    return info | {"calibration": provenance | {"dropped": batches.dropped}}


def _metadata_dict(meta: Any) -> dict[str, Any]:
    return json.loads(meta.to_json())


def _spec_dict(spec: GraphSpec) -> dict[str, Any]:
    return json.loads(spec.to_json())


def check_options(options: ExportOptions) -> None:
    """Cheap validation that needs no model (used by the CLI before loading one)."""
    if options.precision not in PRECISIONS:
        raise ExportError(f"precision={options.precision!r}: expected one of {PRECISIONS}")
    if options.fp16_io and options.precision != "fp16":
        raise ExportError(f"fp16 I/O applies to precision fp16 only (precision={options.precision})")
    if options.calib_method not in CALIBRATION_METHODS:
        raise ExportError(f"calib_method={options.calib_method!r}: expected one of {CALIBRATION_METHODS}")
    if options.calib_size < 1:
        raise ExportError(f"calib_size={options.calib_size}: expected >= 1")
    if options.accuracy_pairs and options.accuracy_pairs < 10:
        raise ExportError(f"accuracy_pairs={options.accuracy_pairs}: 10-fold accuracy needs >= 10 pairs (0 = skip)")
    if options.precision != "int8" and (options.calib_dir is not None or options.calib_images is not None):
        raise ExportError(f"calibration faces apply to precision int8 only (precision={options.precision})")
    if options.degrade_from is not None and options.degrade_from < 1:
        raise ExportError(f"degrade_from={options.degrade_from}: expected a positive input side")
    if not options.batch_sizes or min(options.batch_sizes) < 1:
        raise ExportError(f"batch_sizes={list(options.batch_sizes)}: expected positive batch sizes")
