"""Model zoo table: parameters and MACs per path (mrface.models.summary) plus eval throughput.

Counts come from shapes only (models built on the meta device), so they are exact and instant;
``--throughput`` also times an eval forward (img/s, median of ``--repeats``) on ``--device``.
Example:
    python benchmarks/bench_models.py
    python benchmarks/bench_models.py --throughput --models iresnet_tiny btnet_tiny --batch 64
"""

from __future__ import annotations

import argparse

import torch
from common import median_time, print_table, write_json

from mrface.models import get_model, summary

DEFAULT_MODELS = [
    "iresnet18",
    "iresnet50",
    "iresnet100",
    "iresnet200",
    "iresnet_tiny",
    "mobilefacenet",
    "mbf",
    "btnet_r50",
    "btnet_tiny",
    "btnet_mobilefacenet",
]


def rows_for(name: str, device: str, throughput: bool, batch: int, repeats: int) -> list[dict]:
    with torch.device("meta"):
        meta_model = get_model(name)
    rows = []
    for r in meta_model.resolutions:
        s = summary(meta_model, r)
        row = {
            "model": name,
            "resolution": r,
            "GMACs": round(s.macs / 1e9, 3),
            "path_Mparams": round(s.path_params / 1e6, 2),
            "branch_Mparams": round(s.owned_params / 1e6, 2),
            "model_Mparams": round(s.total_params / 1e6, 2),
        }
        if throughput:
            model = get_model(name).eval().to(device)
            x = torch.randn(batch, 3, r, r, device=device)
            with torch.inference_mode():
                t = median_time(
                    lambda m=model, x=x, r=r: m(x, resolution=r) if r != m.input_size else m(x), device, repeats
                )
            row["img_per_s"] = round(batch / t, 1)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--throughput", action="store_true")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    rows = []
    for name in args.models:
        rows += rows_for(name, args.device, args.throughput, args.batch, args.repeats)
    columns = ["model", "resolution", "GMACs", "path_Mparams", "branch_Mparams", "model_Mparams"]
    print_table(rows, columns + (["img_per_s"] if args.throughput else []))
    write_json("models", rows, args.out)


if __name__ == "__main__":
    main()
