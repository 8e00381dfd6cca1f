"""``mrface demo [--quick] [--out DIR]``: the whole multi-resolution method on SynthFace, on a CPU.

1. writes a SynthFace training set (RecordIO) and verification pairs of held-out identities (.bin);
2. trains a tiny multi-resolution TNet (recipe ``synthface_tiny_trunk``: random 112/56/28/14/7
   down-and-up augmentation, CurricularFace, Partial FC);
3. distils the 28/14/7 branches against the frozen TNet and its frozen classifier
   (recipe ``synthface_tiny_distill``);
4. evaluates the cross-resolution verification matrix: "trunk only" (the low-resolution image
   resized back to 112 through the TNet) against "BTNet" (each image through the branch of its
   resolution), and writes a report (results.json, report.md, plots);
5. exports the BTNet to ONNX and checks onnxruntime parity when ``mrface.export`` provides
   ``export_model``;
6. prints the table and where everything is.

``--quick`` (about 5 minutes on 2 cores) trains fewer steps and scores 400 pairs; the default trains
twice as long and scores 1,000 pairs (steadier numbers).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mrface.io import write_text
from mrface.training.demo_report import PAIRS_ORDER, TABLE_COLUMNS, format_table

__all__ = ["PAIRS_ORDER", "register", "run", "run_demo", "format_table"]

DEFAULT_OUT = "mrface_demo"


@dataclass(frozen=True)
class DemoSize:
    identities: int  # training identities
    images: int  # images per training identity
    pairs: int  # verification pairs
    val_identities: int  # held-out identities the pairs come from
    trunk_epochs: float
    distill_epochs: float
    batch_size: int


SIZES = {
    # Many images per identity (SynthFace is free) and several hundred distillation steps are what the
    # branches need to beat the upsampled trunk at 112&14 and 112&7 (measured on 1,000 pairs: with
    # 8 images per identity and 48 steps they stayed 2-5 points below it).
    "quick": DemoSize(
        identities=64, images=32, pairs=400, val_identities=200, trunk_epochs=1.5, distill_epochs=9, batch_size=64
    ),
    "full": DemoSize(
        identities=64, images=32, pairs=1000, val_identities=300, trunk_epochs=3, distill_epochs=12, batch_size=64
    ),
}


class DemoInterrupted(RuntimeError):
    """SIGTERM/SIGINT arrived during a training stage (its checkpoint was saved)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="train and evaluate a tiny BTNet on SynthFace (CPU, minutes)", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="shorter run (about 5 minutes on 2 CPU cores)")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default: ./{DEFAULT_OUT})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-export", action="store_true", help="skip the ONNX export step")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="move an existing demo with other settings in --out aside (it is refused otherwise)",
    )
    parser.set_defaults(func=run)


def _say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def _common(size: DemoSize, rec: Path, seed: int) -> list[str]:
    return [
        f"seed={seed}",
        "data.kind=rec",
        f"data.path={rec}",
        f"data.batch_size={size.batch_size}",
        "train.progress=true",
        "train.tensorboard=false",
        "train.log_every=10",
    ]


def export_onnx(model: Any, out: Path) -> dict[str, Any]:
    """Export ``model`` with ``mrface.export.export_model``; a status dict."""
    from mrface.export import export_model

    result = export_model(model.eval(), out)
    graphs = [{"file": str(g.path), **g.parity.to_dict()} for g in result.graphs]
    return {"status": "ok", "out_dir": str(result.out_dir), "graphs": graphs}


def _train_stage(recipe: str, overrides: list[str], out: Path, what: str) -> None:
    """Train ``recipe`` with ``overrides`` into ``out``; DemoInterrupted when a signal stopped it."""
    from mrface.training.config import load_recipe
    from mrface.training.trainer import train

    result = train(load_recipe(recipe, overrides))
    if result.interrupted:
        raise DemoInterrupted(f"stopped by a signal during {what}; checkpoint in {out}")
    if result.losses:
        _say(f"    loss {result.losses[0]:.2f} -> {result.losses[-1]:.2f} in {result.steps} steps")
    else:
        _say(f"    already trained ({result.steps} steps), resumed from its last checkpoint")


def run_demo(out: Path, quick: bool, seed: int = 0, export: bool = True, resume: bool = False) -> dict[str, Any]:
    """Run every step (see module doc); returns {"table", "report_files", "export", "seconds"}.

    ``resume``: continue the training stages of an earlier demo with the same settings in ``out``.
    """
    from mrface.data.bins import load_bin
    from mrface.data.synth_writer import write_synth
    from mrface.eval.report import new_report, write_report
    from mrface.eval.verification import ExtractOptions
    from mrface.models import load_model
    from mrface.training.demo_report import fold_matrix, plot_table_png, summarise, table_rows

    size = SIZES["quick" if quick else "full"]
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    _say(f"1/5 SynthFace: {size.identities} identities x {size.images} images, {size.pairs} pairs -> {out / 'data'}")
    data = write_synth(
        out / "data",
        identities=size.identities,
        images=size.images,
        seed=seed,
        pairs=size.pairs,
        resolutions=(112,),
        val_identities=size.val_identities,
    )
    common = [*_common(size, data.rec, seed), f"resume={'auto' if resume else 'none'}"]

    _say("2/5 training the multi-resolution TNet (recipe synthface_tiny_trunk)")
    _train_stage(
        "synthface_tiny_trunk",
        [*common, f"output={out / 'trunk'}", f"train.epochs={size.trunk_epochs}"],
        out / "trunk",
        "TNet training",
    )

    _say("3/5 distilling the 28/14/7 branches (recipe synthface_tiny_distill)")
    _train_stage(
        "synthface_tiny_distill",
        [
            *common,
            f"output={out / 'distill'}",
            f"distill.teacher={out / 'trunk'}",
            f"train.epochs={size.distill_epochs}",
        ],
        out / "distill",
        "distillation",
    )

    _say("4/5 cross-resolution verification: trunk only vs BTNet")
    model = load_model(out / "distill" / "model.safetensors")
    pairs = load_bin(data.bins[112])
    options = ExtractOptions(flip="pre_norm_vector_add", filter="bilinear", batch_size=200)
    folds = fold_matrix(model, pairs, (112, 28, 14, 7), options)
    summary = summarise(folds)
    table = {p: {"trunk_only": s["trunk_only"], "btnet": s["btnet"]} for p, s in summary.items()}

    export_status: dict[str, Any] = {"status": "skipped", "reason": "--no-export"}
    if export:
        _say("5/5 ONNX export + onnxruntime parity")
        try:
            export_status = export_onnx(model, out / "onnx")
        except ImportError as err:
            export_status = {"status": "skipped", "reason": f"missing dependency: {err}"}
        _say(f"    {export_status['status']}: {export_status.get('reason', export_status.get('out_dir', ''))}")

    settings = {
        "quick": quick,
        "seed": seed,
        **size.__dict__,
        "trunk_recipe": "synthface_tiny_trunk",
        "distill_recipe": "synthface_tiny_distill",
        "extract": options.as_dict(),
        "threads": torch.get_num_threads(),
    }
    report = new_report(
        "demo",
        "mrface demo: cross-resolution verification on SynthFace (held-out identities)",
        settings=settings,
        model=json.loads(model.metadata.to_json()),
        results={
            "table": table,
            "uncertainty": summary,
            "export": export_status,
            "fold_accuracies": {p: {k: v.tolist() for k, v in f.items()} for p, f in folds.items()},
        },
    )
    report["tables"].append(
        {
            "title": (
                f"Verification accuracy (%) at resolution pairs, 10-fold on {size.pairs} held-out pairs, seed "
                f"{seed}. ± is the standard error over folds; the gain is paired (same pairs, same folds) and "
                "its 95 % interval covers pair sampling only, not seed-to-seed training variation"
            ),
            "columns": TABLE_COLUMNS,
            "rows": table_rows(summary),
        }
    )
    files = write_report(out / "report", report)
    png = out / "report" / "crossres_table.png"
    try:
        plot_table_png(
            summary,
            png,
            f"mrface demo{' --quick' if quick else ''} (seed {seed}, {size.pairs} pairs): trunk only vs BTNet",
        )
        files.append(png)
    except ImportError:
        _say("    matplotlib is not installed: crossres_table.png skipped (pip install 'mrface[plot]')")
    return {
        "table": table,
        "summary": summary,
        "report_files": files,
        "export": export_status,
        "seconds": time.perf_counter() - start,
    }


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(f"mrface demo: --out {out} exists and is not a folder", file=sys.stderr)
        return 2
    from mrface.training.rundir import claim_output

    # The same settings resume an earlier demo in --out; other settings (or another run) are refused
    # unless --overwrite moves them aside, so two runs never mix.
    settings, marker = {"seed": args.seed, "quick": bool(args.quick)}, out / "demo.json"
    try:
        same = marker.is_file() and json.loads(marker.read_text()) == settings
    except ValueError:
        same = False
    moved = claim_output(
        out,
        "auto" if same else "none",
        args.overwrite,
        key="--out",
        remedy="rerun with the settings of the demo there to resume it, choose another --out, or add "
        "--overwrite to move it aside",
    )
    if moved is not None:
        _say(f"--overwrite: the previous contents of {out} were moved to {moved}")
    out.mkdir(parents=True, exist_ok=True)
    write_text(marker, json.dumps(settings) + "\n")
    try:
        result = run_demo(out, args.quick, args.seed, export=not args.no_export, resume=same)
    except DemoInterrupted as err:
        print(f"mrface demo: {err}", file=sys.stderr)
        from mrface.training.trainer import INTERRUPTED_EXIT_CODE

        return INTERRUPTED_EXIT_CODE
    print()
    print(format_table(result["summary"]))
    print("(± standard error over the 10 folds; the interval covers pair sampling, not seed-to-seed variation)")
    print()
    print(f"report: {', '.join(str(p) for p in result['report_files'])}")
    png = [p for p in result["report_files"] if p.name == "crossres_table.png"]
    if png:
        print(f"plot: {png[0]}")
    print(f"models: {out / 'trunk' / 'model.safetensors'} (TNet), {out / 'distill' / 'model.safetensors'} (BTNet)")
    print(f"time: {result['seconds']:.0f} s")
    return 0
