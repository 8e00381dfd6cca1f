"""``mrface eval ijb --pair R1,R2`` / ``--matrix``: BTNet's mixed-resolution IJB tables
(:mod:`mrface.eval.protocols.ijb_mixed`).

Adds its arguments to the ``ijb`` parser (:func:`add_arguments`); ``mrface eval ijb`` hands over to
:func:`run` when ``--pair`` or ``--matrix`` is given. Writes results.json, report.md, roc.png and
matrix.png (TAR@FAR and TPIR@FPIR bars per setting) into ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from mrface.eval import cli_common as common
from mrface.eval.protocols.ijb import IjbFlags

PRIMARY_FAR = 1e-4  # BTNet's IJB-C 1:1 column
PRIMARY_FPIR = 0.1  # BTNet's IJB-C 1:N column


def _flag01(text: str) -> bool:
    if text not in ("0", "1"):
        raise argparse.ArgumentTypeError(f"expected 0 or 1 (the public scripts' --upsample values), got {text!r}")
    return text == "1"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The mixed-resolution options of ``mrface eval ijb``."""
    from mrface.eval.protocols.ijb_mixed import MODES

    g = p.add_argument_group("mixed resolutions (BTNet's IJB-C tables)")
    g.add_argument(
        "--pair",
        type=common.parse_pair,
        default=None,
        metavar="R1,R2",
        help="view 1 at R1 and view 2 at R2 px, e.g. 112,7 (see --mixed-mode)",
    )
    g.add_argument("--matrix", action="store_true", help="every BTNet row: 112&7 112&14 112&28 7&7 14&14 28&28 112&112")
    g.add_argument(
        "--upsample1",
        type=_flag01,
        default=False,
        metavar="0|1",
        help="resize view 1 back to 112 for the trunk (public flag; README's table: 0)",
    )
    g.add_argument("--upsample2", type=_flag01, default=False, metavar="0|1", help="the same for view 2")
    g.add_argument(
        "--mixed-mode",
        default="aggregate",
        choices=MODES,
        help="aggregate: each image = view1 + mirrored view2 (the public scripts); cross: side 1 / "
        "gallery from view 1, side 2 / probes from view 2",
    )
    # --variant stays None unless given: nist for one resolution, insightface_1n (the public script) here
    p.set_defaults(variant=None)


def wants_mixed(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "pair", None) or getattr(args, "matrix", False))


def settings_from_args(args: argparse.Namespace) -> list[Any]:
    from mrface.eval.protocols.ijb_mixed import BTNET_PAIRS, MixedSetting

    if args.matrix and args.pair:
        raise ValueError("--pair and --matrix: pass one of them (--matrix runs every BTNet pair)")
    pairs = BTNET_PAIRS if args.matrix else [args.pair]
    return [MixedSetting(r1, r2, args.upsample1, args.upsample2, args.mixed_mode) for r1, r2 in pairs]


def _nearest(table: dict[float, float], key: float) -> float:
    k = min(table, key=lambda f: abs(np.log10(f) - np.log10(key)))
    return table[k]


def run(args: argparse.Namespace, flags: IjbFlags) -> int:
    """The ``--pair`` / ``--matrix`` command (called from ``mrface eval ijb``)."""
    from mrface.eval.protocols.ijb_mixed import evaluate_ijb_mixed, plot_matrix_png
    from mrface.eval.report import new_report, write_report

    settings = settings_from_args(args)
    variant = args.variant or "insightface_1n"  # the public 1:N script: G1 ∪ G2, every probe mated
    model = common.load_eval_model(args.model)
    results = evaluate_ijb_mixed(
        model,
        args.root,
        flags,
        settings,
        name=args.name,
        options=common.extract_options(args, flip="none"),
        fars=args.fars,
        one_to_n=not args.no_1n,
        variant=variant,
        fpirs=args.fpirs,
        rank=args.rank,
        chunk=args.chunk,
    )
    name = args.name.upper()
    far_cols = [f"TAR@{f:g} %" for f in args.fars]
    rows, bars, series = [], [], []
    for label, res in results.items():
        row = [label, *[100 * res.roc.tar_at_far[f] for f in args.fars]]
        bar = {"pair": label, f"1:1 TAR@FAR={PRIMARY_FAR:g}": 100 * _nearest(res.roc.tar_at_far, PRIMARY_FAR)}
        for g, o in res.one_to_n.items():
            row += [100 * v for v in o.tpir.values()] + [100 * v for v in o.rank_rates.values()]
            bar[f"1:N {g} TPIR@FPIR={PRIMARY_FPIR:g}"] = 100 * _nearest(o.tpir, PRIMARY_FPIR)
        rows.append(row)
        bars.append(bar)
        keep = res.roc.fpr > 0
        x, y = common.thin_curve(res.roc.fpr[keep], 100 * res.roc.tpr[keep])
        series.append({"label": label, "x": x, "y": y})
    columns = ["setting", *far_cols]
    first = next(iter(results.values()))
    for g, o in first.one_to_n.items():
        columns += [f"{g} TPIR@{f:g} %" for f in o.tpir] + [f"{g} rank-{r} %" for r in o.rank_rates]
    s0 = settings[0]
    title = (
        f"{name} at mixed resolutions ({s0.mode}; upsample1={int(s0.upsample1)}, upsample2={int(s0.upsample2)}; "
        f"{first.num_pairs} pairs, {first.num_templates} templates; flags {flags.as_dict()}; 1:N {variant})"
    )
    report = new_report(
        "ijb_mixed",
        f"{name} mixed resolutions",
        settings={"model": args.model, "settings": {k: r.settings for k, r in results.items()}},
        model=common.model_json(model),
        results={k: r.summary() for k, r in results.items()},
    )
    report["tables"].append({"title": title, "columns": columns, "rows": rows})
    report["plots"].append(
        {
            "name": "roc",
            "title": f"{name} 1:1 ROC per setting",
            "xlabel": "FAR",
            "ylabel": "TAR %",
            "xscale": "log",
            "series": series,
        }
    )
    files = write_report(args.out, report)
    png = Path(args.out) / "matrix.png"
    try:
        plot_matrix_png(bars, png, f"{name}: TAR@FAR={PRIMARY_FAR:g} and TPIR@FPIR={PRIMARY_FPIR:g}")
        files.append(png)
    except ImportError:
        print("matplotlib is not installed: matrix.png skipped (pip install 'mrface[plot]')")
    return common.finish(files, f"{title}\n{common.table_text(columns, rows)}")
