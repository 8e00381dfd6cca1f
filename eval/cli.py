"""``mrface eval …``: verification, crossres, synthface, report (registered by mrface.cli).

Every command writes a run directory (``--out``) holding results.json, report.md and PNG plots
(:mod:`mrface.eval.report`); ``mrface eval report RUN_DIR`` re-renders them from the JSON.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mrface.eval import cli_common as common
from mrface.eval.extract import FLIP_MODES


def _load_bins(paths: list[str], skip_corrupt: bool = False) -> dict[str, Any]:
    """``--bins`` files -> {stem: VerificationPairs}; with ``--skip-corrupt`` undecodable pairs are dropped
    and named on stderr (and in the report's settings)."""
    from mrface.data.bins import load_bin

    sets = {}
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise FileNotFoundError(f"--bins {p}: no such file (expected an InsightFace verification .bin)")
        sets[path.stem] = load_bin(path, size=112, skip_corrupt=skip_corrupt)
        for msg in sets[path.stem].skipped:
            print(f"mrface eval: warning: corrupt pair skipped: {msg}", file=sys.stderr)
    return sets


def _check_common(args: argparse.Namespace) -> None:
    """``--device`` names a device this machine has; ``--out`` is (or can become) a folder."""
    from mrface.errors import UserError

    device = getattr(args, "device", None)
    if device:
        import torch

        try:
            kind = torch.device(device).type
        except RuntimeError:
            raise UserError(f"--device {device}", "expected a torch device such as cpu, cuda or cuda:1") from None
        if kind == "cuda" and not torch.cuda.is_available():
            raise UserError(
                f"--device {device}",
                "CUDA is not available on this machine (no GPU visible to torch "
                f"{torch.__version__}); expected --device cpu",
            )
    out = getattr(args, "out", None)
    if out:
        for p in (Path(out), *Path(out).parents):
            if p.exists():
                if not p.is_dir():
                    raise UserError(
                        f"--out {out}", f"{p} is a file; expected a folder for results.json, report.md and plots"
                    )
                break


def _clear_errors(func: Any) -> Any:
    """Missing files and bad input end with one 'mrface eval: error: …' line and exit code 2, not a
    traceback (``--debug`` shows it)."""
    from mrface.errors import run_command

    def run(args: argparse.Namespace) -> int:
        def checked() -> int:
            _check_common(args)
            return func(args)

        return run_command("eval", checked, getattr(args, "debug", False))

    return run


def _erc_quality(args: argparse.Namespace, sets: dict[str, Any]) -> Any:
    """None (no ERC), ``"norm"``, or the per-image array of ``--erc FILE.npy`` (one .bin only)."""
    if args.erc is None or args.erc == "norm":
        return args.erc
    if len(sets) != 1:
        raise ValueError(
            f"--erc {args.erc}: a quality file holds one .bin set's images; pass a single --bins "
            f"(got {len(sets)}) or use --erc norm"
        )
    from mrface.eval.erc import load_quality_array

    return load_quality_array(args.erc, len(next(iter(sets.values())).images))


def _cmd_verification(args: argparse.Namespace) -> int:
    from mrface.eval.report import new_report, write_report
    from mrface.eval.verification import evaluate_pairs

    model = common.load_eval_model(args.model)
    sets = _load_bins(args.bins, args.skip_corrupt)
    options = common.extract_options(args)
    r1, r2 = args.pair
    results, rows, plots = {}, [], []
    quality = _erc_quality(args, sets)
    erc_series = []
    for name, pairs in sets.items():
        if quality is None:
            res = evaluate_pairs(model, pairs, r1, r2, upsample=args.upsample, options=options)
            results[name] = res.summary()
        else:
            from mrface.eval.erc import verification_erc

            res, erc = verification_erc(
                model, pairs, r1, r2, upsample=args.upsample, options=options, quality=quality, fmr=args.erc_fmr
            )
            results[name] = {
                **res.summary(),
                "erc": {
                    "quality": args.erc,
                    "fmr": erc.fmr,
                    "threshold": erc.threshold,
                    "reject_fractions": erc.reject_fractions.tolist(),
                    "fnmr": erc.fnmr.tolist(),
                },
            }
            erc_series.append({"label": name, "x": erc.reject_fractions.tolist(), "y": erc.fnmr.tolist()})
        rows.append([name, f"{r1}&{r2}", 100 * res.accuracy, 100 * res.accuracy_std, 100 * res.val])
        plots.append({"label": name, "x": res.fpr.tolist(), "y": res.tpr.tolist()})
    columns = ["set", "pair", "accuracy %", "± std", "VAL@FAR=1e-3 %"]
    settings = {
        "model": args.model,
        "bins": args.bins,
        "pair": [r1, r2],
        "upsample": args.upsample,
        "extraction": options.as_dict(),
        "erc": args.erc,
        "erc_fmr": args.erc_fmr,
        "corrupt_pairs_skipped": {n: p.skipped for n, p in sets.items()},
    }
    report = new_report(
        "verification", "Verification", settings=settings, model=common.model_json(model), results=results
    )
    report["tables"].append({"title": "Verification (10-fold)", "columns": columns, "rows": rows})
    report["plots"].append(
        {
            "name": "roc",
            "title": "ROC (fold-averaged)",
            "xlabel": "FAR",
            "ylabel": "TAR",
            "xscale": "log",
            "series": plots,
        }
    )
    if erc_series:
        report["plots"].append(
            {
                "name": "erc",
                "title": f"ERC (quality: {args.erc}, FMR {args.erc_fmr:g})",
                "xlabel": "rejected fraction",
                "ylabel": "FNMR",
                "series": erc_series,
            }
        )
    return common.finish(write_report(args.out, report), common.table_text(columns, rows))


def _cmd_crossres(args: argparse.Namespace) -> int:
    from mrface.eval.report import new_report, write_report
    from mrface.eval.verification import crossres_matrix

    model = common.load_eval_model(args.model)
    sets = _load_bins(args.bins, args.skip_corrupt)
    options = common.extract_options(args)
    rows_data = crossres_matrix(model, sets, args.resolutions, baseline=args.baseline, options=options)
    names = list(sets)
    columns = ["pair", "mode", *[f"{n} %" for n in names], "average %"]
    rows = [
        [r["pair"], r["mode"], *[100 * r["results"][n]["accuracy"] for n in names], 100 * r["average"]]
        for r in rows_data
    ]
    settings = {
        "model": args.model,
        "bins": args.bins,
        "resolutions": list(args.resolutions),
        "baseline": args.baseline,
        "extraction": options.as_dict(),
        "corrupt_pairs_skipped": {n: p.skipped for n, p in sets.items()},
    }
    report = new_report(
        "crossres",
        "Cross-resolution verification matrix",
        settings=settings,
        model=common.model_json(model),
        results={"rows": rows_data},
    )
    report["tables"].append({"title": "Accuracy by resolution pair", "columns": columns, "rows": rows})
    series = []
    for mode in ("branch", "upsampled"):
        high = max(args.resolutions)
        pts = sorted((r["r2"], 100 * r["average"]) for r in rows_data if r["mode"] == mode and r["r1"] == high)
        if pts:
            series.append(
                {"label": f"{max(args.resolutions)}&r ({mode})", "x": [p[0] for p in pts], "y": [p[1] for p in pts]}
            )
    report["plots"].append(
        {
            "name": "accuracy_vs_resolution",
            "title": "Average accuracy vs resolution",
            "xlabel": "resolution r (px)",
            "ylabel": "accuracy %",
            "xscale": "log",
            "series": series,
        }
    )
    return common.finish(write_report(args.out, report), common.table_text(columns, rows))


def _cmd_synthface(args: argparse.Namespace) -> int:
    from mrface.eval.synthface_report import synthface_report

    files = synthface_report(
        args.out,
        num_pairs=args.pairs,
        seed=args.seed,
        options=common.extract_options(args),
        include_random_cnn=not args.no_cnn,
    )
    print((Path(args.out) / "report.md").read_text())
    return common.finish(files)


def _cmd_report(args: argparse.Namespace) -> int:
    from mrface.eval.report import render_report

    return common.finish(render_report(args.run_dir))


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="run directory for results.json, report.md and plots")
    p.add_argument("--flip", default="pre_norm_vector_add", choices=FLIP_MODES, help="flip fusion mode")
    p.add_argument("--filter", default="bilinear", help="down-sampling filter (mrface.ops.DEGRADE_FILTERS)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--amp", default=None, choices=["fp16", "bf16"])
    p.add_argument("--device", default=None, help="torch device (default: the model's)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--skip-corrupt",
        action="store_true",
        help="drop pairs with an undecodable image (counted and named) instead of stopping",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``eval`` and its sub-commands to the ``mrface`` parser."""
    ev = subparsers.add_parser(
        "eval", help="evaluate models: verification, crossres, ijb, tinyface, scface, survface, synthface, report"
    )
    sub = ev.add_subparsers(dest="eval_command", required=True)

    v = sub.add_parser("verification", help="10-fold verification on .bin sets at a resolution pair")
    v.add_argument("--model", required=True, help="checkpoint .safetensors or registry name (random weights)")
    v.add_argument("--bins", nargs="+", required=True, help="verification .bin files")
    v.add_argument(
        "--pair", type=common.parse_pair, default=(112, 112), help="resolutions of image 1 and 2, e.g. 112,7"
    )
    v.add_argument("--upsample", action="store_true", help="resize degraded images back to 112 (trunk only)")
    v.add_argument(
        "--erc",
        default=None,
        metavar="norm|FILE.npy",
        help="ERC curve with quality = the raw embedding norm (MagFace/AdaFace) or a per-image .npy",
    )
    v.add_argument("--erc-fmr", type=float, default=1e-3, help="FMR fixing the ERC threshold")
    _common(v)
    v.set_defaults(func=_clear_errors(_cmd_verification))

    c = sub.add_parser("crossres", help="BTNet-style matrix: rows 112&r, r&r, 112&112")
    c.add_argument("--model", required=True)
    c.add_argument("--bins", "--pairs", nargs="+", required=True, dest="bins", help="verification .bin files")
    c.add_argument("--resolutions", type=common.parse_resolutions, default=(112, 28, 14, 7))
    c.add_argument("--baseline", action="store_true", help="also the trunk-only baseline (inputs upsampled)")
    _common(c)
    c.set_defaults(func=_clear_errors(_cmd_crossres))

    s = sub.add_parser("synthface", help="the SynthFace report (no face data needed)")
    s.add_argument("--pairs", type=int, default=600)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--no-cnn", action="store_true", help="skip the random-init CNN row")
    _common(s)
    s.set_defaults(func=_clear_errors(_cmd_synthface))

    from mrface.eval.protocols.cli import register as register_protocols

    register_protocols(sub, _clear_errors)

    r = sub.add_parser("report", help="re-render report.md and PNG plots from RUN_DIR/results.json")
    r.add_argument("run_dir")
    r.set_defaults(func=_clear_errors(_cmd_report))


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser(prog="mrface")
    register(parser.add_subparsers(dest="command", required=True))
    ns = parser.parse_args()
    sys.exit(ns.func(ns))
