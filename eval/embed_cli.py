"""``mrface embed MODEL INPUT... --out FILE`` and ``mrface search --gallery G --probe P --top K``.

``embed`` writes the embeddings of every readable face crop (:mod:`mrface.eval.embed`) and prints how
many were embedded per branch and which inputs were skipped and why. ``search`` prints the top-K
gallery faces of every probe with cosine scores and, with ``--out``, writes them as JSON.
Bad input ends with one ``mrface <command>: error: …`` line and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from mrface.io import write_text

MAX_SKIPPED_SHOWN = 20


def _errors(command: str, func: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except (FileNotFoundError, ValueError, ImportError) as exc:
            print(f"mrface {command}: error: {exc}", file=sys.stderr)
            return 2

    return run


def _cmd_embed(args: argparse.Namespace) -> int:
    from mrface.eval.embed import FaceEmbedder

    if Path(args.out).suffix not in (".npy", ".safetensors"):
        raise ValueError(f"--out {args.out}: expected a .npy (with a .json beside it) or .safetensors file name")
    embedder = FaceEmbedder(
        args.model,
        resolution=args.resolution,
        flip=args.flip,
        indicator=args.indicator,
        strategy=args.strategy,
        resizer=args.resizer,
        batch_size=args.batch_size,
        amp=args.amp,
        device=args.device,
        progress=not args.quiet,
    )
    result = embedder.embed(args.inputs)
    if len(result) == 0:
        raise ValueError(
            f"no face crop could be embedded from {args.inputs} ({len(result.skipped)} skipped: {result.skipped[:3]})"
        )
    files = result.save(args.out)
    per_branch = ", ".join(f"{b} px: {n}" for b, n in sorted(Counter(result.branches.tolist()).items()))
    print(
        f"embedded {len(result)} faces ({result.embeddings.shape[1]}-d; by model input {per_branch}); "
        f"skipped {len(result.skipped)}"
    )
    for s in result.skipped[:MAX_SKIPPED_SHOWN]:
        print(f"  skipped {s['path']}: {s['reason']}")
    if len(result.skipped) > MAX_SKIPPED_SHOWN:
        print(f"  … {len(result.skipped) - MAX_SKIPPED_SHOWN} more listed under 'skipped' in the metadata")
    for f in files:
        print(f"wrote {f}")
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    from mrface.eval.embed import search

    res = search(args.gallery, args.probe, top=args.top, backend=args.backend)
    rows = res.rows()
    for r in rows:
        best = "  ".join(f"{m['rank']}. {os.path.basename(m['gallery'])} {m['score']:.3f}" for m in r["matches"])
        print(f"{r['probe']}: {best}")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text(
            out,
            json.dumps(
                {
                    "gallery": str(args.gallery),
                    "probe": str(args.probe),
                    "top": args.top,
                    "backend": res.backend,
                    "results": rows,
                },
                indent=1,
            ),
        )
        print(f"wrote {out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``embed`` and ``search`` to the ``mrface`` parser."""
    from mrface.eval.search import BACKENDS
    from mrface.models.branch_select import DEFAULT_RESIZER, INDICATORS, RESIZERS, STRATEGIES

    e = subparsers.add_parser("embed", help="embed aligned face crops of any size (files, folders, list files)")
    e.add_argument("model", help="checkpoint .safetensors (with its metadata JSON)")
    e.add_argument("inputs", nargs="+", help="image files, folders (recursive) or list files (.txt, one path a line)")
    e.add_argument("--out", required=True, help="FILE.npy (+ FILE.json) or FILE.safetensors")
    e.add_argument(
        "--resolution",
        type=int,
        default=None,
        help="treat every crop as this size (its branch) instead of routing each by its own size",
    )
    e.add_argument("--flip", default="pre_norm_vector_add", choices=["none", "sum", "pre_norm_vector_add"])
    e.add_argument("--indicator", default="max", choices=INDICATORS, help="crop size indicator for branches")
    e.add_argument("--strategy", default="ceil", choices=STRATEGIES, help="branch choice from the indicator")
    e.add_argument("--resizer", default=DEFAULT_RESIZER, choices=RESIZERS, help="how a crop is resized to its branch")
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--amp", default=None, choices=["fp16", "bf16"])
    e.add_argument("--device", default=None, help="torch device (default: cpu)")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=_errors("embed", _cmd_embed))

    s = subparsers.add_parser("search", help="top-K gallery faces for every probe face (embeddings from embed)")
    s.add_argument("--gallery", required=True, help="embeddings file of the gallery")
    s.add_argument("--probe", required=True, help="embeddings file of the probes")
    s.add_argument("--top", type=int, default=5)
    s.add_argument("--backend", default="auto", choices=BACKENDS, help="faiss when installed (auto), or numpy")
    s.add_argument("--out", default=None, help="write the results as JSON")
    s.set_defaults(func=_errors("search", _cmd_search))
