"""``mrface eval ijb|tinyface|scface|survface``: benchmark protocols from their files (registered by eval.cli).

Each command loads the model (``--model``: checkpoint or registry name), checks the dataset tree
(every missing file listed in one error, exit code 2), extracts with progress bars (``--quiet`` turns
them off), prints a table and writes a run directory (results.json, report.md, PNG plots).
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from mrface.eval import cli_common as common
from mrface.eval.extract import FLIP_MODES
from mrface.eval.identification import CMC_LEVELS, GALLERY_MODES
from mrface.eval.metrics import OPEN_SET_VARIANTS, ROC_FARS
from mrface.eval.protocols.ijb import IjbFlags
from mrface.eval.search import BACKENDS
from mrface.models.branch_select import INDICATORS, STRATEGIES


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,5,20, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _fractions(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated fractions like 0.3,0.1, got {text!r}") from None
    if not values or any(not 0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected fractions in (0, 1], got {text!r}")
    return values


def _yes_no(text: str) -> bool:
    if text.lower() in ("yes", "true", "1"):
        return True
    if text.lower() in ("no", "false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected yes or no, got {text!r}")


def _routing(args: argparse.Namespace) -> Any:
    from mrface.eval.crops import CropRouting

    return CropRouting(indicator=args.indicator, strategy=args.strategy, upsample=args.upsample)


def _start(args: argparse.Namespace) -> Any:
    return common.load_eval_model(args.model)


def _write(
    args: argparse.Namespace,
    kind: str,
    title: str,
    model: Any,
    settings: dict[str, Any],
    results: dict[str, Any],
    tables: list[dict[str, Any]],
    plots: list[dict[str, Any]],
) -> int:
    from mrface.eval.report import new_report, write_report

    report = new_report(
        kind, title, settings={"model": args.model, **settings}, model=common.model_json(model), results=results
    )
    report["tables"] += tables
    report["plots"] += plots
    text = "\n\n".join(f"{t['title']}\n{common.table_text(t['columns'], t['rows'])}" for t in tables)
    return common.finish(write_report(args.out, report), text)


# ----------------------------------------------------------------------------------------- commands
def _cmd_tinyface(args: argparse.Namespace) -> int:
    from mrface.eval.protocols.tinyface import evaluate_tinyface

    model = _start(args)
    res = evaluate_tinyface(
        model,
        args.root,
        options=common.extract_options(args),
        routing=_routing(args),
        ranks=args.ranks,
        level=args.level,
        backend=args.backend,
    )
    rows = [[f"rank-{r}", 100 * v] for r, v in res.cmc.items()]
    table = {
        "title": f"TinyFace closed-set identification ({res.num_probes} probes, "
        f"{res.num_gallery_match} + {res.num_distractors} distractors, {args.level} ranks)",
        "columns": ["rank", "identification %"],
        "rows": rows,
    }
    plot = {
        "name": "cmc",
        "title": "TinyFace CMC",
        "xlabel": "rank",
        "ylabel": "identification %",
        "series": [{"label": args.level, "x": list(res.cmc), "y": [100 * v for v in res.cmc.values()]}],
    }
    return _write(args, "tinyface", "TinyFace", model, res.settings, res.summary(), [table], [plot])


def _cmd_scface(args: argparse.Namespace) -> int:
    from mrface.eval.protocols.scface import evaluate_scface

    model = _start(args)
    res = evaluate_scface(
        model,
        args.root,
        protocol=args.protocol,
        cams=args.cams,
        options=common.extract_options(args),
        routing=_routing(args),
        ranks=args.ranks,
        subjects=args.subjects,
    )
    columns = ["distance", "probes", *[f"rank-{r} %" for r in args.ranks]]
    rows = [[f"d{d}", res.num_probes[d], *[100 * c[r] for r in args.ranks]] for d, c in res.per_distance.items()]
    table = {"title": f"SCface {res.protocol} ({res.num_gallery} mugshots)", "columns": columns, "rows": rows}
    r1 = args.ranks[0]
    plot = {
        "name": "rank_vs_distance",
        "title": f"SCface rank-{r1} by distance",
        "xlabel": "distance (1 = 4.2 m)",
        "ylabel": f"rank-{r1} %",
        "series": [
            {"label": res.protocol, "x": list(res.per_distance), "y": [100 * c[r1] for c in res.per_distance.values()]}
        ],
    }
    return _write(args, "scface", "SCface", model, res.settings, res.summary(), [table], [plot])


def _cmd_survface(args: argparse.Namespace) -> int:
    from mrface.eval.protocols.survface import evaluate_survface

    model = _start(args)
    res = evaluate_survface(
        model,
        args.root,
        options=common.extract_options(args),
        routing=_routing(args),
        fpirs=args.fpirs,
        rank=args.rank,
        variant=args.variant,
        gallery_mode=args.gallery,
        setup=args.setup,
    )
    o = res.open_set
    rows = [[f"{f:g}", 100 * v, o.thresholds[f]] for f, v in o.tpir.items()] + [["AUC", 100 * o.auc, "-"]]
    table = {
        "title": f"QMUL-SurvFace 1:N ({args.variant}, TPIR at rank {args.rank}; {res.num_gallery} gallery, "
        f"{res.num_mated} mated, {res.num_unmated} unmated)",
        "columns": ["FPIR", "TPIR %", "threshold"],
        "rows": rows,
    }
    x, y = common.thin_curve(o.curve_fpir, 100 * np.asarray(o.curve_tpir))
    plot = {
        "name": "tpir_fpir",
        "title": "SurvFace TPIR vs FPIR",
        "xlabel": "FPIR",
        "ylabel": f"TPIR@rank{args.rank} %",
        "series": [{"label": args.variant, "x": x, "y": y}],
    }
    return _write(args, "survface", "QMUL-SurvFace", model, res.settings, res.summary(), [table], [plot])


def ijb_flags_from_args(args: argparse.Namespace) -> IjbFlags:
    """The IJB test-mode flags: a ``--preset`` with any explicit flag overriding it, or all three flags."""
    from mrface.eval.protocols.ijb import IjbFlags

    given = {"flip": args.test_flip, "norm_weighting": args.norm_weighting, "detector_score": args.detector_score}
    base = IjbFlags.preset(args.preset).as_dict() if args.preset else {}
    missing = [k for k, v in given.items() if v is None and k not in base]
    if missing:
        raise ValueError(
            f"ijb: give --preset (arcface_torch or btnet) or all of --test-flip, --norm-weighting, "
            f"--detector-score (missing: {', '.join(missing)})"
        )
    return IjbFlags(**{**base, **{k: v for k, v in given.items() if v is not None}})


def _cmd_ijb(args: argparse.Namespace) -> int:
    from mrface.eval.protocols import ijb_mixed_cli
    from mrface.eval.protocols.ijb import evaluate_ijb

    flags = ijb_flags_from_args(args)
    if ijb_mixed_cli.wants_mixed(args):
        return ijb_mixed_cli.run(args, flags)
    args.variant = args.variant or "nist"
    model = _start(args)
    res = evaluate_ijb(
        model,
        args.root,
        flags,
        name=args.name,
        resolution=args.resolution,
        upsample=args.upsample,
        options=common.extract_options(args, flip="none"),
        fars=args.fars,
        one_to_n=not args.no_1n,
        variant=args.variant,
        fpirs=args.fpirs,
        rank=args.rank,
        chunk=args.chunk,
    )
    rows = [[f"{f:g}", 100 * v] for f, v in res.roc.tar_at_far.items()]
    tables = [
        {
            "title": f"{args.name.upper()} 1:1 ({res.num_pairs} pairs, {res.num_templates} templates, flags "
            f"{flags.as_dict()})",
            "columns": ["FAR", "TAR %"],
            "rows": rows,
        }
    ]
    if res.one_to_n:
        rows = [[g, f"{f:g}", 100 * v] for g, o in res.one_to_n.items() for f, v in o.tpir.items()]
        rows += [[g, f"rank-{r}", 100 * v] for g, o in res.one_to_n.items() for r, v in o.rank_rates.items()]
        tables.append(
            {
                "title": f"{args.name.upper()} 1:N ({args.variant}, TPIR at rank {args.rank})",
                "columns": ["gallery", "FPIR / rank", "TPIR %"],
                "rows": rows,
            }
        )
    keep = res.roc.fpr > 0
    x, y = common.thin_curve(res.roc.fpr[keep], 100 * res.roc.tpr[keep])
    plot = {
        "name": "roc",
        "title": f"{args.name.upper()} 1:1 ROC",
        "xlabel": "FAR",
        "ylabel": "TAR %",
        "xscale": "log",
        "series": [{"label": f"@{args.resolution}", "x": x, "y": y}],
    }
    return _write(args, "ijb", args.name.upper(), model, res.settings, res.summary(), tables, [plot])


# ---------------------------------------------------------------------------------------- arguments
def _extraction(p: argparse.ArgumentParser, flip: bool = True, routing: bool = True) -> None:
    p.add_argument("--model", required=True, help="checkpoint .safetensors or registry name (random weights)")
    p.add_argument("--root", required=True, help="dataset root folder (the layout of REFERENCE.md §8)")
    p.add_argument("--out", required=True, help="run directory for results.json, report.md and plots")
    if flip:
        p.add_argument("--flip", default="pre_norm_vector_add", choices=FLIP_MODES, help="flip fusion mode")
    if routing:
        p.add_argument("--indicator", default="max", choices=INDICATORS, help="crop size indicator for branches")
        p.add_argument("--strategy", default="ceil", choices=STRATEGIES, help="branch choice from the indicator")
        p.add_argument("--upsample", action="store_true", help="resize every crop to the trunk input (no branches)")
    p.add_argument("--filter", default="bilinear", help="down-sampling filter (mrface.ops.DEGRADE_FILTERS)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--amp", default=None, choices=["fp16", "bf16"])
    p.add_argument("--device", default=None, help="torch device (default: the model's)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def register(sub: argparse._SubParsersAction, clear_errors: Any) -> None:
    """Add the protocol commands to the ``mrface eval`` sub-parsers; ``clear_errors`` wraps each command."""
    t = sub.add_parser("tinyface", help="TinyFace closed-set rank-1/5/20 (probe vs match + distractors)")
    _extraction(t)
    t.add_argument("--ranks", type=_ints, default=(1, 5, 20))
    t.add_argument(
        "--level",
        default="entry",
        choices=CMC_LEVELS,
        help="entry: any of the top-R gallery images matches (published rule); subject: ranks of subjects",
    )
    t.add_argument("--backend", default="auto", choices=BACKENDS, help="gallery search (faiss when installed)")
    t.set_defaults(func=clear_errors(_cmd_tinyface))

    s = sub.add_parser("scface", help="SCface per-distance rank-1 identification, gallery = mugshots")
    _extraction(s)
    s.add_argument(
        "--protocol",
        default="finetune50",
        choices=["finetune50", "all130"],
        help="finetune50: test subjects 51-130 (fine-tune on 1-50 first); all130: zero-shot",
    )
    s.add_argument("--cams", type=_ints, default=(1, 2, 3, 4, 5), help="surveillance cameras (6-8 are IR)")
    s.add_argument("--ranks", type=_ints, default=(1,))
    s.add_argument("--subjects", type=int, default=130, help="highest subject id present (130 in SCface)")
    s.set_defaults(func=clear_errors(_cmd_scface))

    v = sub.add_parser("survface", help="QMUL-SurvFace open-set 1:N: TPIR@FPIR and AUC")
    _extraction(v)
    v.add_argument(
        "--variant",
        default="nist",
        choices=[x for x in OPEN_SET_VARIANTS if x != "insightface_1n"],
        help="nist, or btnet_survface for BTNet's published numbers",
    )
    v.add_argument("--rank", type=int, default=20, help="R of TPIR_R (BTNet reports TPIR20)")
    v.add_argument("--fpirs", type=_fractions, default=(0.3, 0.2, 0.1, 0.01))
    v.add_argument(
        "--gallery",
        default="entries",
        choices=[*GALLERY_MODES, "raw_prototypes"],
        help="entries: every gallery image; prototypes: one unit mean of unit features per subject; "
        "raw_prototypes: mean raw feature, then normalised (BTNet)",
    )
    v.add_argument(
        "--setup",
        default="mrface",
        choices=["mrface", "btnet"],
        help="btnet: BTNet's eval_survface_1n_multi_reso.py (PIL bicubic resize to the branch, "
        "raw_prototypes, btnet_survface variant, no flip); overrides --variant/--gallery/--flip",
    )
    v.set_defaults(func=clear_errors(_cmd_survface))

    j = sub.add_parser("ijb", help="IJB-B/C 1:1 TAR@FAR and 1:N from loose crops + 5-point landmarks")
    _extraction(j, flip=False, routing=False)
    j.add_argument("--name", default="ijbc", choices=["ijbc", "ijbb"])
    j.add_argument(
        "--preset",
        choices=["arcface_torch", "btnet"],
        default=None,
        help="public flag set: arcface_torch eval_ijbc.py (flip, norm score, detector score) or BTNet's "
        "eval_ijbc_*_multi_reso.py (flip, detector score, no norm score); flags below override it",
    )
    j.add_argument("--test-flip", type=_yes_no, default=None, help="F2: add the mirrored image's feature (yes/no)")
    j.add_argument(
        "--norm-weighting",
        type=_yes_no,
        default=None,
        help="N1: keep feature norms as weights instead of L2-normalising images (yes/no)",
    )
    j.add_argument("--detector-score", type=_yes_no, default=None, help="D1: weight by faceness (yes/no)")
    j.add_argument("--resolution", type=int, default=112, help="degrade aligned crops to this size (its branch)")
    j.add_argument("--upsample", action="store_true", help="with --resolution: back to 112 through the trunk")
    j.add_argument("--fars", type=_fractions, default=ROC_FARS)
    j.add_argument("--no-1n", action="store_true", help="skip 1:N (no 1:N csv files needed)")
    j.add_argument(
        "--variant",
        default="nist",
        choices=OPEN_SET_VARIANTS,
        help="1:N rule (default nist; insightface_1n with --pair/--matrix, as the BTNet script)",
    )
    j.add_argument("--rank", type=int, default=1)
    j.add_argument("--fpirs", type=_fractions, default=(0.01, 0.1))
    j.add_argument("--chunk", type=int, default=2048, help="images aligned and embedded at a time")
    from mrface.eval.protocols import ijb_mixed_cli

    ijb_mixed_cli.add_arguments(j)
    j.set_defaults(func=clear_errors(_cmd_ijb))
