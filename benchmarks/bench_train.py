"""Training throughput (images/s) of one full step: BTNet resolution augmentation, backbone forward and
backward, Partial FC (CurricularFace) loss, gradient clipping, SGD step — the trainer's inner loop.

Timed with the median of ``--repeats`` steps after ``--warmup`` steps on a fixed random batch.
Examples:
    python benchmarks/bench_train.py                                  # iresnet_tiny and iresnet18 on CPU
    python benchmarks/bench_train.py --device cuda --models iresnet50 --batch 128 --amp bf16
"""

from __future__ import annotations

import argparse
import contextlib

import torch
from common import median_time, print_table, write_json

from mrface.losses import get_head
from mrface.models import get_model
from mrface.training.augment import ResolutionAugment
from mrface.training.config import AugmentConfig


def train_step_rate(name: str, device: str, batch: int, classes: int, amp: str, channels_last: bool,
                    repeats: int, warmup: int) -> float:  # fmt: skip
    """Images per second of a training step of model ``name`` with a ``classes``-way head."""
    torch.manual_seed(0)
    model = get_model(name).to(device).train()
    head = get_head("curricularface", model.embedding_size, classes).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    params = [*model.parameters(), *head.parameters()]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)
    augment = ResolutionAugment(AugmentConfig(kind="btnet"), seed=0, rank=0, world_size=1, accumulate=1)
    x = torch.randn(batch, 3, 112, 112, device=device)
    y = torch.randint(0, classes, (batch,), device=device)
    dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    scaler = torch.amp.GradScaler(device, enabled=amp == "fp16")
    step = [0]

    def one_step() -> None:
        images = augment(x, step[0], 0)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        ctx = torch.autocast(device, dtype=dtype) if dtype else contextlib.nullcontext()
        with ctx:
            loss, _ = head(model(images), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        scaler.step(optimizer)
        scaler.update()
        step[0] += 1

    return batch / median_time(one_step, device, repeats=repeats, warmup=warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["iresnet_tiny", "iresnet18"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", default=None, help="JSON path (default: bench_results/train-<time>.json)")
    args = parser.parse_args()
    rows = []
    for name in args.models:
        rate = train_step_rate(name, args.device, args.batch, args.classes, args.amp, args.channels_last,
                               args.repeats, args.warmup)  # fmt: skip
        rows.append({"model": name, "device": args.device, "batch": args.batch, "amp": args.amp,
                     "channels_last": args.channels_last, "threads": torch.get_num_threads(),
                     "images_per_s": round(rate, 1)})  # fmt: skip
        print_table(rows[-1:], list(rows[-1]))
    print()
    print_table(rows, list(rows[0]))
    write_json("train", rows, args.out)


if __name__ == "__main__":
    main()
