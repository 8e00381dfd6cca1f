"""Helpers shared by the ``mrface eval`` commands: argument parsers, model loading, extraction options,
report tables and curve thinning. Every eval CLI module imports these; none imports another CLI module."""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

MAX_CURVE_POINTS = 400


def parse_resolutions(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 112,28,14,7, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive resolutions, got {text!r}")
    return values


def parse_pair(text: str) -> tuple[int, int]:
    values = parse_resolutions(text.replace("&", ","))
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"expected a resolution pair like 112,7 or 112&7, got {text!r}")
    return values[0], values[1]


def load_eval_model(spec: str) -> Any:
    """A checkpoint path (.safetensors + metadata JSON) or a registry name (random init, with a warning)."""
    from mrface.models import list_models, load_model
    from mrface.models.registry import get_model

    path = Path(spec)
    if path.suffix == ".safetensors" or path.exists():
        if not path.is_file():
            raise FileNotFoundError(
                f"--model {spec}: no such checkpoint file (expected a .safetensors file "
                "written by mrface.models.save_model)"
            )
        return load_model(path)
    if spec in list_models():
        warnings.warn(
            f"--model {spec}: a registry name, so the weights are RANDOM (pass a checkpoint path)", stacklevel=2
        )
        return get_model(spec).eval()
    raise ValueError(f"--model {spec!r}: neither an existing checkpoint file nor a registered model {list_models()}")


def extract_options(args: argparse.Namespace, flip: str | None = None) -> Any:
    from mrface.eval.verification import ExtractOptions

    return ExtractOptions(
        flip=flip or args.flip,
        filter=args.filter,
        batch_size=args.batch_size,
        amp=args.amp,
        device=args.device,
        progress=not args.quiet,
    )


def model_json(model: Any) -> dict[str, Any] | None:
    meta = getattr(model, "metadata", None)
    return json.loads(meta.to_json()) if meta is not None else None


def table_text(columns: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(c) for c in columns]] + [[f"{c:.2f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells)


def finish(files: list[Path], table: str | None = None) -> int:
    if table:
        print(table)
    for f in files:
        print(f"wrote {f}")
    return 0


def thin_curve(x: np.ndarray, y: np.ndarray, n: int = MAX_CURVE_POINTS) -> tuple[list[float], list[float]]:
    """At most ``n`` evenly spaced points of a curve (first and last kept), for JSON and plots."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    idx = np.unique(np.linspace(0, len(x) - 1, min(n, len(x))).round().astype(int)) if len(x) else np.arange(0)
    return x[idx].tolist(), y[idx].tolist()
