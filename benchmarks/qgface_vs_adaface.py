"""AdaFace alone vs QGFace on SynthFace with the same budget.

For each seed, two runs of the same tiny iResNet, the same SynthFace training identities, the same number
of optimiser steps, batch (faces per step), optimiser and schedule:

* ``adaface``: stage ``trunk``, AdaFace head (s, m=0.4, h=0.333), AdaFace low-resolution augmentation
  (20 % of the faces at a side in 22..112) and flip — the public AdaFace recipe, scaled down;
* ``qgface``: stage ``qgface`` (recipe ``synthface_tiny_qgface``): every face as clean + RandomRescale
  view, quality-gated AdaFace head on both, proxy-updated queue contrastive term.

Each model is evaluated on ``--pairs`` held-out SynthFace pairs (identities 100000+, never trained on),
at 112&112, 112&14, 112&7 and 14&14 (the low side degraded with antialiased bilinear and upsampled back
to 112, as a single-resolution model sees it), 10-fold accuracy; the table gives mean ± std over seeds
and the training throughput (faces per second, mean of the logged rows after the first) of each method.
Writes ``--out`` (JSON) and prints a Markdown table. Wall-clock numbers depend on the machine's load.

    python benchmarks/qgface_vs_adaface.py --steps 60 --batch 32 --seeds 0 1 2 --pairs 1000 --out q.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mrface.eval.synthface_bench import synthface_pairs
from mrface.eval.verification import ExtractOptions, embed_at, score_pairs
from mrface.io import write_text
from mrface.models import load_model
from mrface.training.config import load_recipe
from mrface.training.trainer import train

PAIRS = ((112, 112), (112, 14), (112, 7), (14, 14))


def common(args: argparse.Namespace, seed: int, out: Path) -> list[str]:
    return [
        f"seed={seed}",
        f"output={out}",
        "model.name=iresnet_tiny",
        f"model.args.width={args.width}",
        f"model.args.embedding_size={args.embedding}",
        f"data.synth_identities={args.identities}",
        f"data.synth_images={args.images}",
        f"data.batch_size={args.batch}",
        f"train.max_steps={args.steps}",
        "train.progress=false",
        "train.tensorboard=false",
        "train.log_every=5",
        f"optim.lr={args.lr}",
        "schedule.warmup_epochs=0",
        f"head.args.s={args.s}",
    ]


def run(method: str, args: argparse.Namespace, seed: int, root: Path) -> dict:
    out = root / f"{method}_seed{seed}"
    if method == "adaface":
        cfg = load_recipe(
            "synthface_tiny_trunk",
            [
                *common(args, seed, out),
                "head.name=adaface",
                "head.args.m=0.4",
                "head.args.h=0.333",
                "augment.kind=adaface",
                "augment.prob=0.2",
                "augment.min_size=22",
                "augment.flip=true",
            ],
        )
    else:
        jpeg = f"qgface.jpeg_quality={args.jpeg_quality}"
        cfg = load_recipe("synthface_tiny_qgface", [*common(args, seed, out), jpeg])
    tick = time.perf_counter()
    train(cfg)
    seconds = time.perf_counter() - tick
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines() if r.strip()]
    speeds = [r["images_per_s"] for r in rows if "images_per_s" in r][1:]
    model = load_model(out / "model.safetensors").eval()
    pairs, _ = synthface_pairs(num_pairs=args.pairs, num_identities=args.test_identities, seed=args.pair_seed)
    opts = ExtractOptions(flip="none", filter="bilinear_aa", batch_size=128)
    feats = {r: embed_at(model, pairs.images, r, r != 112, opts, pairs.color).features for r in {112, 14, 7}}
    acc = {}
    for r1, r2 in PAIRS:
        res = score_pairs(feats[r1][0::2], feats[r2][1::2], pairs.issame)
        acc[f"{r1}&{r2}"] = float(res.accuracy)
    return {
        "method": method,
        "seed": seed,
        "accuracy": acc,
        "faces_per_s": float(np.mean(speeds)) if speeds else None,
        "train_seconds": seconds,
    }


def table(results: list[dict]) -> str:
    lines = [
        "| method | " + " | ".join(f"{a}&{b}" for a, b in PAIRS) + " | train faces/s |",
        "|---|" + "---|" * (len(PAIRS) + 1),
    ]
    for method in ("adaface", "qgface"):
        rs = [r for r in results if r["method"] == method]
        if not rs:
            continue
        cells = []
        for a, b in PAIRS:
            v = 100 * np.array([r["accuracy"][f"{a}&{b}"] for r in rs])
            cells.append(f"{v.mean():.2f} ± {v.std():.2f}")
        speed = np.array([r["faces_per_s"] for r in rs if r["faces_per_s"]])
        cells.append(f"{speed.mean():.1f}" if speed.size else "-")
        lines.append(f"| {method} (n={len(rs)}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--pairs", type=int, default=1000)
    p.add_argument("--pair-seed", type=int, default=1)
    p.add_argument("--test-identities", type=int, default=200)
    p.add_argument("--identities", type=int, default=64)
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--width", type=float, default=0.125)
    p.add_argument("--embedding", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--s", type=float, default=32.0)
    p.add_argument("--jpeg-quality", type=int, default=75, help="qgface.jpeg_quality (0 = no JPEG step)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("qgface_vs_adaface.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for method in ("adaface", "qgface"):
                results.append(run(method, args, seed, Path(tmp)))
                print(json.dumps(results[-1]), flush=True)
                write_text(
                    args.out,
                    json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=1),
                )
    print(table(results))


if __name__ == "__main__":
    main()
