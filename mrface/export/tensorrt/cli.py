"""``mrface export --format tensorrt``: verified ONNX graphs, then one verified engine per graph.

Layout: ``OUT/onnx/`` (as ``--format onnx`` writes it) and ``OUT/trt_<precision>/`` with
``<graph>.engine``, ``<graph>.engine.json`` (engine metadata incl. parity) and ``manifest.json``,
published atomically once every engine passes parity against PyTorch (cosine >= 0.9999 fp32,
0.999 fp16, 0.99 int8). ``--precision fp16|int8`` exports FP16 / Q/DQ graphs and builds them
strongly typed (TensorRT 10 and 11); ``--fp16`` / ``--int8`` build float32 graphs with TensorRT
10's builder flags. Needs TensorRT and a GPU (unverified in CI; see deploy/README.md).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from mrface.export.artefacts import MANIFEST, staged_output, write_json_atomic
from mrface.export.calibration import CalibrationBatches, load_face_folder, synthface_calibration
from mrface.export.errors import ExportError
from mrface.export.exporter import ExportOptions, export_model, synthface_images
from mrface.export.loading import load_for_export
from mrface.export.parity import compare_runtime
from mrface.export.tensorrt.config import BatchProfile, EngineBuildConfig
from mrface.export.tensorrt.engine import TensorRTEngine, build_engine
from mrface.export.tensorrt.metadata import write_engine_metadata


def build_engines_from_args(args: argparse.Namespace, options: ExportOptions, out: Path) -> int:
    """Run the whole TensorRT export for parsed CLI ``args`` (see module docstring); returns 0."""
    flag_precision = "int8" if args.int8 else ("fp16" if args.fp16 else "fp32")
    if options.precision != "fp32" and flag_precision != "fp32":
        raise ExportError(
            f"--precision {options.precision} with --{flag_precision}: the graph's precision decides "
            "(strong typing); the --fp16/--int8 flags apply to float32 graphs on TensorRT 10"
        )
    precision = options.precision if options.precision != "fp32" else flag_precision
    profile = BatchProfile(args.min_batch, args.opt_batch, args.max_batch)
    config = EngineBuildConfig(
        precision=precision,
        profile=profile,
        calibrator=args.calibrator,
        graph_precision=options.precision,
        calibration_batch=min(32, profile.max),
        timing_cache=Path(args.timing_cache) if args.timing_cache else None,
    )
    model = load_for_export(args.model)
    onnx = export_model(model, out / "onnx", options)
    images = options.parity_images if options.parity_images is not None else synthface_images(64)
    batch_sizes = [b for b in options.batch_sizes if profile.min <= b <= profile.max] or [profile.opt]
    calib_images = None
    if config.needs_calibrator:
        calib_images = (
            load_face_folder(args.calib_dir, args.calib_count)
            if args.calib_dir
            else synthface_calibration(args.calib_count)
        )
    published = out / f"trt_{precision}"
    with staged_output(published, "--out") as staging:
        entries = []
        for graph in onnx.graphs:
            engine_path = staging / f"{graph.spec.name}.engine"
            calibration = None
            if calib_images is not None:
                calibration = CalibrationBatches(calib_images, graph.spec, model.metadata, config.calibration_batch)
            meta = build_engine(
                graph.path, engine_path, config, calibration, calibration_cache=staging / f"{graph.spec.name}.calib"
            )
            engine = TensorRTEngine(engine_path)

            def run(feed: np.ndarray, engine: TensorRTEngine = engine) -> list[np.ndarray]:
                emb = engine.run(torch.from_numpy(feed).to(engine.device))
                torch.cuda.current_stream().synchronize()
                return [emb.cpu().numpy()]

            spec_for_parity = replace(graph.spec, outputs=("embedding",))
            report = compare_runtime(
                run,
                model,
                spec_for_parity,
                images,
                batch_sizes=batch_sizes,
                min_cosine=config.min_cosine,
                source=str(engine_path),
            )
            write_engine_metadata(engine_path, replace(meta, parity=report.to_dict()))
            entries.append(
                {"engine": engine_path.name, "resolution": graph.spec.resolution, "parity": report.to_dict()}
            )
            print(f"{published / engine_path.name}  {report.summary()}")
        write_json_atomic(staging / MANIFEST, {"format": "mrface-trt/1", "precision": precision, "engines": entries})
    print(f"wrote {published / MANIFEST}")
    return 0
