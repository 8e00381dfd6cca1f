"""``mrface export``: verified ONNX graphs (and TensorRT engines where available) from a model.

    mrface export --model RUN_DIR|CKPT.safetensors|NAME --format onnx --out DIR
        [--resolutions 112 28] [--uint8-input --input-color-order BGR] [--degrade-from 112]
        [--with-norm] [--opset 18] [--batch-sizes 1 7 64] [--min-cosine 0.9999]
        [--precision fp32|fp16|int8] [--fp16-io] [--calib DIR] [--calib-size 128]
        [--calib-method minmax|entropy|percentile] [--calib-seed 1] [--accuracy-pairs 400]
    mrface export --model ... --format tensorrt --out DIR [--precision fp16|int8 ...]
        [--min-batch 1 --opt-batch 8 --max-batch 64] [--timing-cache FILE]
    (TensorRT 10 only: --fp16 / --int8 --calib-dir FOLDER build from float32 graphs with builder flags)

--precision fp16 writes strongly typed FP16 graphs, --precision int8 Q/DQ graphs calibrated on
--calib DIR (aligned crops of any size, routed per path) or SynthFace; both are verified in
onnxruntime on CPU (cosine to PyTorch float32: fp16 every face >= 0.9999, int8 mean >= 0.995) and
scored on held-out SynthFace pairs (10-fold accuracy and its drop, in the manifest).

Exit codes: 0 verified artefacts written; 1 a parity check failed (nothing published);
2 bad input or a missing dependency (the message names the argument or package).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mrface.export.errors import ExportError, ParityError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export`` subcommand to the ``mrface`` CLI."""
    p = subparsers.add_parser(
        "export",
        help="export a model to verified ONNX graphs / TensorRT engines",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="run folder, .safetensors checkpoint, or registry name (random)")
    p.add_argument("--format", choices=("onnx", "tensorrt"), default="onnx")
    p.add_argument("--out", required=True, help="output folder (created; must not be a file)")
    p.add_argument("--resolutions", type=int, nargs="+", default=None, help="paths to export (default: all)")
    p.add_argument("--uint8-input", action="store_true", help="bake preprocessing in: uint8 NHWC input")
    p.add_argument("--input-color-order", choices=("RGB", "BGR"), default="RGB", help="channel order of uint8 input")
    p.add_argument(
        "--degrade-from",
        type=int,
        default=None,
        help="graph input side; smaller paths degrade in-graph with AveragePool",
    )
    p.add_argument("--with-norm", action="store_true", help="add a 'norm' output (N, 1)")
    p.add_argument("--opset", type=int, default=18)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 7, 64], help="parity batch sizes")
    p.add_argument(
        "--min-cosine",
        type=float,
        default=None,
        help="parity threshold (default: 0.9999 every face for fp32/fp16, 0.995 mean for int8)",
    )
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32", help="graph precision")
    p.add_argument("--fp16-io", action="store_true", help="fp16 graphs: float16 input and outputs")
    p.add_argument("--calib", default=None, help="int8: folder of aligned face crops (any size; default SynthFace)")
    p.add_argument("--calib-size", type=int, default=128, help="int8: calibration faces per path")
    p.add_argument("--calib-method", choices=("minmax", "entropy", "percentile"), default="minmax")
    p.add_argument("--calib-seed", type=int, default=1, help="int8: seed of the calibration choice")
    p.add_argument("--keep-float", nargs="+", default=(), help="int8: extra node names left in float")
    p.add_argument(
        "--accuracy-pairs", type=int, default=400, help="held-out SynthFace pairs for the 10-fold accuracy (0 = skip)"
    )
    p.add_argument(
        "--max-accuracy-drop",
        type=float,
        default=None,
        help="refuse a graph whose accuracy drops more than this vs PyTorch float32",
    )
    p.add_argument("--threads", type=int, default=None, help="onnxruntime threads for the parity check")
    trt = p.add_argument_group("tensorrt")
    trt.add_argument("--fp16", action="store_true", help="TensorRT 10 builder flag on float32 graphs")
    trt.add_argument("--int8", action="store_true", help="TensorRT 10 builder flag + calibrator on float32 graphs")
    trt.add_argument("--calibrator", choices=("entropy", "minmax"), default="entropy")
    trt.add_argument("--calib-dir", default=None, help="folder of face crops for INT8 calibration (default SynthFace)")
    trt.add_argument("--calib-count", type=int, default=512)
    trt.add_argument("--min-batch", type=int, default=1)
    trt.add_argument("--opt-batch", type=int, default=8)
    trt.add_argument("--max-batch", type=int, default=64)
    trt.add_argument("--timing-cache", default=None, help="TensorRT timing cache file (read and updated)")
    p.set_defaults(func=run)


def _options(args: argparse.Namespace):
    from mrface.export.exporter import ExportOptions

    return ExportOptions(
        resolutions=args.resolutions,
        uint8_input=args.uint8_input,
        input_color_order=args.input_color_order,
        degrade_from=args.degrade_from,
        with_norm=args.with_norm,
        opset=args.opset,
        batch_sizes=tuple(args.batch_sizes),
        min_cosine=args.min_cosine,
        threads=args.threads,
        precision=args.precision,
        fp16_io=args.fp16_io,
        calib_dir=args.calib,
        calib_size=args.calib_size,
        calib_method=args.calib_method,
        calib_seed=args.calib_seed,
        keep_float=tuple(args.keep_float),
        accuracy_pairs=args.accuracy_pairs,
        max_accuracy_drop=args.max_accuracy_drop,
    )


def run(args: argparse.Namespace) -> int:
    """Entry point of ``mrface export`` (see module docstring for exit codes).

    Bad input raises (``ExportError``, ``ValueError``, ``FileNotFoundError``) and reaches the
    ``mrface`` CLI's :func:`~mrface.errors.run_command`, which prints the one error line and returns 2;
    only a failed parity check has its own exit code.
    """
    try:
        return _run_tensorrt(args) if args.format == "tensorrt" else _run_onnx(args)
    except ParityError as exc:
        print(f"mrface export: error: {exc}; nothing was written to {args.out}", file=sys.stderr)
        return 1


def _run_onnx(args: argparse.Namespace) -> int:
    from mrface.export.artefacts import check_out_dir
    from mrface.export.exporter import check_options, export_model
    from mrface.export.loading import load_for_export
    from mrface.export.onnx import require_onnx
    from mrface.export.session import require_onnxruntime

    options = _options(args)
    check_options(options)
    check_out_dir(args.out, "--out")
    require_onnx(), require_onnxruntime()
    model = load_for_export(args.model)
    result = export_model(model, args.out, options)
    for graph in result.graphs:
        print(f"{graph.path}  {graph.parity.summary()}")
        if graph.accuracy is not None:
            acc = graph.accuracy
            print(
                f"    10-fold accuracy {acc['accuracy']:.4f} (PyTorch fp32 {acc['accuracy_fp32']:.4f}, "
                f"drop {acc['drop']:+.4f}) on {acc['pairs']} held-out SynthFace pairs"
            )
    print(f"wrote {result.manifest}")
    return 0


def _run_tensorrt(args: argparse.Namespace) -> int:
    from mrface.export.tensorrt import tensorrt_unavailable_reason

    reason = tensorrt_unavailable_reason()
    if reason:
        raise ExportError(f"--format tensorrt: {reason}")
    from mrface.export.tensorrt.cli import build_engines_from_args

    return build_engines_from_args(args, _options(args), Path(args.out))
