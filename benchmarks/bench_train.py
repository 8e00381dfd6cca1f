"""Training throughput (images/s) of one full step and of its variants: BTNet resolution augmentation,
backbone forward and backward, Partial FC (CurricularFace) loss, gradient clipping, SGD step — the
trainer's inner loop.

Every model gets the ``base`` row (fused Partial FC head, float32, contiguous, eager, one fixed
in-memory batch); the models in ``--variant-models`` also get one row per variant, each changing one
thing against ``base``:

* ``reference_head``: ``PartialFC(fused=False)`` (materialised (B, C) logits) instead of the fused op;
* ``amp``: autocast in ``--amp`` (bf16 by default, also on CPU; fp16 adds a GradScaler);
* ``channels_last``: model and batch in channels_last (skipped with a printed reason on CPU when a
  convolution has fewer than 16 channels: torch's CPU kernels crash on 8-channel channels_last);
* ``compile``: ``torch.compile`` of the backbone (compile time is in ``first_step_s``, not the rate);
* ``recordio``: batches come from a SynthFace RecordIO file through ``RecordDataset`` + DataLoader
  with ``--workers`` workers; the row also gives the loader's own rate (``loader_images_per_s``) and
  whether it keeps up with the in-memory step rate.

``--base amp channels_last`` moves those settings into ``base`` (and so into every row): the GPU fast
path, against which the head, compile and loader variants are then measured. ``--distill MODEL`` adds
one row for a BTNet distillation step (teacher trunk without gradient, every branch on its own
low-resolution input, feature + embedding MSE and the frozen classifier's loss per branch, SGD on the
branches) with the base's AMP / channels_last settings.

Timed with the median of ``--repeats`` steps after ``--warmup`` steps; ``vs_base`` = rate / base rate.
A variant that fails is reported in its row's note; the base row must run. Examples:
    python benchmarks/bench_train.py                                  # iresnet_tiny (+variants), iresnet18
    python benchmarks/bench_train.py --quick                          # tiny sizes, no compile: checks it runs
    python benchmarks/bench_train.py --device cuda --models iresnet50 --batch 128 --amp bf16
    python benchmarks/bench_train.py --device cuda --models iresnet50 --batch 256 --classes 100000 \
        --base amp channels_last --variants reference_head compile recordio --distill btnet_r50
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from common import median_time, print_table, write_json, write_partial

from mrface.losses import get_head
from mrface.models import get_model
from mrface.training.augment import ResolutionAugment
from mrface.training.config import AugmentConfig

MIN_CHANNELS_LAST_CPU = 16  # torch CPU kernels segfault on 8-channel channels_last tensors


@dataclass(frozen=True)
class Variant:
    """One training configuration; every field but ``name`` differs from ``base`` in at most one place."""

    name: str
    fused: bool = True
    amp: bool = False
    channels_last: bool = False
    compile: bool = False
    data: str = "memory"  # "memory": one fixed in-memory batch; "recordio": RecordDataset + DataLoader


VARIANTS = {
    v.name: v
    for v in (
        Variant("base"),
        Variant("reference_head", fused=False),
        Variant("amp", amp=True),
        Variant("channels_last", channels_last=True),
        Variant("compile", compile=True),
        Variant("recordio", data="recordio"),
    )
}


def channels_last_problem(model: torch.nn.Module, device: str) -> str | None:
    """Why channels_last must not run for ``model`` on ``device`` (None when it may)."""
    if device != "cpu":
        return None
    narrow = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    if narrow and min(narrow) < MIN_CHANNELS_LAST_CPU:
        return (
            f"skipped: a convolution has {min(narrow)} output channels; torch's CPU kernels crash on "
            f"channels_last tensors that narrow (< {MIN_CHANNELS_LAST_CPU})"
        )
    return None


def build_model(name: str, width: float | None) -> torch.nn.Module:
    """``get_model(name)``, with ``width`` passed for tiny variants when given."""
    return get_model(name, **({"width": width} if width is not None else {}))


Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]


def make_train_step(
    model: torch.nn.Module,
    device: str,
    batch: int,
    classes: int,
    variant: Variant,
    amp_dtype: str = "bf16",
    batches: Batches | None = None,
    rank: int = 0,
    world_size: int = 1,
    wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
) -> Callable[[], None]:
    """A closure running one optimiser step of ``model`` with a ``classes``-way Partial FC head.

    ``batches`` yields (images (B, 3, 112, 112) float, labels (B,)) on the CPU; without it one fixed
    random batch is reused. ``wrap`` wraps the backbone (DDP); under torch.distributed the head is
    sharded over the default group as in the trainer. ``rank``/``world_size`` go to the augmentation.
    """
    torch.manual_seed(rank)
    model = model.to(device).train()
    head = get_head("curricularface", model.embedding_size, classes, fused=variant.fused).to(device)
    if variant.channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = wrap(model) if wrap is not None else model
    if variant.compile:
        net = torch.compile(net)
    params = [*model.parameters(), *head.parameters()]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)
    augment = ResolutionAugment(AugmentConfig(kind="btnet"), seed=0, rank=rank, world_size=world_size, accumulate=1)
    fixed = (torch.randn(batch, 3, 112, 112, device=device), torch.randint(0, classes, (batch,), device=device))
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp_dtype] if variant.amp else None
    scaler = torch.amp.GradScaler(device, enabled=dtype == torch.float16)
    step = [0]

    def one_step() -> None:
        if batches is None:
            x, y = fixed
        else:
            x, y = next(batches)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        images = augment(x, step[0], 0)
        if variant.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        ctx = torch.autocast(device, dtype=dtype) if dtype else contextlib.nullcontext()
        with ctx:
            loss, _ = head(net(images), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        scaler.step(optimizer)
        scaler.update()
        step[0] += 1

    return one_step


def base_variant(settings: list[str]) -> Variant:
    """The ``base`` row with ``--base`` settings (``amp``, ``channels_last``) switched on."""
    return dataclasses.replace(VARIANTS["base"], **{name: True for name in settings})


def derived_variant(name: str, base: Variant) -> Variant | None:
    """Variant ``name`` applied on top of ``base``; None when it changes nothing there (``amp`` over an AMP base)."""
    change = {
        f.name: getattr(VARIANTS[name], f.name)
        for f in dataclasses.fields(Variant)
        if f.name != "name" and getattr(VARIANTS[name], f.name) != getattr(VARIANTS["base"], f.name)
    }
    if all(getattr(base, k) == v for k, v in change.items()):
        return None
    return dataclasses.replace(base, name=name, **change)


def make_distill_step(
    name: str, device: str, batch: int, classes: int, base: Variant, amp_dtype: str = "bf16", width: float | None = None
) -> Callable[[], None]:
    """A closure running one BTNet distillation step: the stage's BranchStudents (teacher trunk once, without
    gradient), BTNetDistillLoss per branch with a frozen ``classes``-way CurricularFace head, SGD on the branches."""
    import torch.nn.functional as F

    from mrface.losses.distill import BTNetDistillLoss
    from mrface.models import BTNet
    from mrface.training.stages.distill import BranchStudents

    torch.manual_seed(0)
    model = build_model(name, width)
    if not isinstance(model, BTNet):
        raise ValueError(f"--distill {name}: not a BTNet model (e.g. btnet_r50, btnet_tiny)")
    model = model.to(device).train()
    model.trunk.requires_grad_(False)
    model.trunk.eval()
    if base.channels_last:
        model = model.to(memory_format=torch.channels_last)
    head = get_head("curricularface", model.embedding_size, classes, fused=base.fused).to(device)
    criterion = BTNetDistillLoss(head, 0.5, 0.5, freeze_classifier=True)
    resolutions = [int(r) for r in model.branches]  # the branch resolutions (model.resolutions adds the trunk's)
    net = BranchStudents(model, resolutions)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    x_hr = torch.randn(batch, 3, 112, 112, device=device)
    labels = torch.randint(0, classes, (batch,), device=device)
    memory = torch.channels_last if base.channels_last else torch.contiguous_format
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp_dtype] if base.amp else None
    scaler = torch.amp.GradScaler(device, enabled=dtype == torch.float16)

    def one_step() -> None:
        lows = [
            F.interpolate(x_hr, size=(r, r), mode="bilinear", antialias=True).contiguous(memory_format=memory)
            for r in resolutions
        ]
        ctx = torch.autocast(device, dtype=dtype) if dtype else contextlib.nullcontext()
        with ctx:
            outs = net(x_hr.contiguous(memory_format=memory), lows)
            total = sum(
                criterion(o.student_feature, o.teacher_feature, o.student_embedding, o.teacher_embedding, labels)[0]
                for o in outs.values()
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        scaler.step(optimizer)
        scaler.update()

    return one_step


def run_distill(name: str, base: Variant, args: argparse.Namespace) -> dict:
    """The ``distill`` row: images/s of one BTNet distillation step (all branches) with the base settings."""
    row = {
        "model": name,
        "variant": "distill",
        "head": "fused (frozen)" if base.fused else "reference (frozen)",
        "amp": args.amp if base.amp else "none",
        "channels_last": base.channels_last,
        "compile": False,
        "data": "memory",
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "images_per_s": None,
        "first_step_s": None,
    }
    step = make_distill_step(name, args.device, args.batch, args.classes, base, args.amp, args.width)
    start = time.perf_counter()
    step()
    row["first_step_s"] = round(time.perf_counter() - start, 2)
    row["images_per_s"] = args.batch / median_time(step, args.device, repeats=args.repeats, warmup=args.warmup)
    return row


def write_recordio(folder: Path, images: int, classes: int) -> Path:
    """A SynthFace RecordIO training file of ``images`` images over at most ``classes`` identities."""
    from mrface.data.synth_writer import write_synth

    per_id = max(1, -(-images // classes))
    write_synth(folder, identities=-(-images // per_id), images=per_id, pairs=2, val_identities=2, resolutions=(112,))
    return folder / "train.rec"


def record_batches(rec: Path, batch: int, workers: int) -> Batches:
    """Endless (images, labels) batches from ``rec`` (a new epoch, reshuffled, when one runs out)."""
    from mrface.data.datasets import RecordDataset, make_loader

    loader = make_loader(RecordDataset(rec), batch_size=batch, workers=workers, shuffle=True, drop_last=True)
    while True:
        yield from loader


def loader_rate(rec: Path, batch: int, workers: int, steps: int) -> float:
    """Images per second the RecordIO loader alone delivers (worker start-up and first batch not counted)."""
    it = record_batches(rec, batch, workers)
    next(it)
    start = time.perf_counter()
    for _ in range(steps):
        next(it)
    return steps * batch / (time.perf_counter() - start)


def run_variant(name: str, variant: Variant, args: argparse.Namespace, rec: Path | None) -> dict:
    """One row: images/s of ``variant`` for model ``name`` (or a note saying why it did not run)."""
    torch.manual_seed(0)
    model = build_model(name, args.width)
    row = {
        "model": name,
        "variant": variant.name,
        "head": "fused" if variant.fused else "reference",
        "amp": args.amp if variant.amp else "none",
        "channels_last": variant.channels_last,
        "compile": variant.compile,
        "data": variant.data,
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "images_per_s": None,
        "first_step_s": None,
    }
    if variant.channels_last and (problem := channels_last_problem(model, args.device)):
        print(f"{name} {variant.name}: {problem}")
        return row | {"note": problem}
    batches = record_batches(rec, args.batch, args.workers) if variant.data == "recordio" and rec else None
    step = make_train_step(model, args.device, args.batch, args.classes, variant, args.amp, batches)
    start = time.perf_counter()
    step()  # first step: compilation, autotuning, loader workers starting
    row["first_step_s"] = round(time.perf_counter() - start, 2)
    row["images_per_s"] = args.batch / median_time(step, args.device, repeats=args.repeats, warmup=args.warmup)
    if variant.data == "recordio" and rec is not None:
        row["loader_images_per_s"] = loader_rate(rec, args.batch, args.workers, max(args.repeats, 4))
        row["workers"] = args.workers
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=None, help="default: iresnet_tiny iresnet18")
    parser.add_argument(
        "--variant-models",
        nargs="+",
        default=None,
        help="models that also get the variant rows (default: the first of --models)",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        default=None,
        choices=[v for v in VARIANTS if v != "base"],
        help="default: all (without compile under --quick)",
    )
    parser.add_argument("--no-compile", action="store_true", help="drop the torch.compile variant")
    parser.add_argument(
        "--base",
        nargs="+",
        default=[],
        choices=["amp", "channels_last"],
        help="settings of the base row (and so of every row): e.g. amp channels_last on a GPU",
    )
    parser.add_argument(
        "--distill",
        nargs="+",
        default=None,
        metavar="MODEL",
        help="BTNet models that also get a distillation-step row (e.g. btnet_r50)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=None, help="default 32 (8 under --quick)")
    parser.add_argument("--classes", type=int, default=None, help="default 1000 (100 under --quick)")
    parser.add_argument("--amp", choices=["bf16", "fp16"], default="bf16", help="autocast dtype of the amp variant")
    parser.add_argument("--width", type=float, default=None, help="width multiplier for tiny models")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the recordio variant")
    parser.add_argument("--record-images", type=int, default=None, help="images in the RecordIO file")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps (default 5, 2 under --quick)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps after the first (default 2 / 1)")
    parser.add_argument("--quick", action="store_true", help="iresnet_tiny, batch 8, 100 classes, no compile")
    parser.add_argument("--out", default=None, help="JSON path (default: bench_results/train-<time>.json)")
    args = parser.parse_args()
    quick = args.quick
    args.models = args.models or (["iresnet_tiny"] if quick else ["iresnet_tiny", "iresnet18"])
    variant_models = args.variant_models or args.models[:1]
    args.batch = args.batch or (8 if quick else 32)
    args.classes = args.classes or (100 if quick else 1000)
    args.repeats = args.repeats or (2 if quick else 5)
    args.warmup = args.warmup if args.warmup is not None else (1 if quick else 2)
    names = args.variants or [v for v in VARIANTS if v != "base" and not (quick and v == "compile")]
    names = [v for v in names if not (args.no_compile and v == "compile")]
    base_settings = base_variant(args.base)
    rec_images = args.record_images or max(4 * args.batch, 128 if quick else 1024)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rec = write_recordio(Path(tmp), rec_images, args.classes) if "recordio" in names else None
        for name in args.models:
            base = run_variant(name, base_settings, args, rec)
            rows.append(base | {"vs_base": 1.0})
            print_table(rows[-1:], list(rows[-1]))
            write_partial("train", rows, args.out)
            for vname in names if name in variant_models else []:
                variant = derived_variant(vname, base_settings)
                if variant is None:
                    print(f"{name} {vname}: already in the base row (--base {' '.join(args.base)})")
                    continue
                try:
                    row = run_variant(name, variant, args, rec)
                except Exception as err:  # a failing variant is a result; the table goes on
                    row = {"model": name, "variant": vname, "note": f"failed: {type(err).__name__}: {err}"[:200]}
                    print(f"{name} {vname}: {row['note']}")
                if row.get("images_per_s"):
                    row["vs_base"] = row["images_per_s"] / base["images_per_s"]
                if row.get("loader_images_per_s"):
                    row["loader_keeps_up"] = row["loader_images_per_s"] >= base["images_per_s"]
                rows.append(row)
                print_table(rows[-1:], list(rows[-1]))
                write_partial("train", rows, args.out)
        for name in args.distill or []:
            try:
                row = run_distill(name, base_settings, args)
            except Exception as err:  # reported in its row, as a failing variant is
                row = {"model": name, "variant": "distill", "note": f"failed: {type(err).__name__}: {err}"[:200]}
                print(f"{name} distill: {row['note']}")
            rows.append(row)
            print_table(rows[-1:], list(rows[-1]))
            write_partial("train", rows, args.out)
    columns = [
        "model",
        "variant",
        "head",
        "amp",
        "channels_last",
        "compile",
        "data",
        "batch",
        "threads",
        "images_per_s",
        "vs_base",
        "first_step_s",
        "loader_images_per_s",
        "loader_keeps_up",
        "note",
    ]
    print()
    print_table(rows, columns)
    write_json(
        "train",
        rows,
        args.out,
        {
            "device": args.device,
            "classes": args.classes,
            "repeats": args.repeats,
            "base": args.base,
            "warmup": args.warmup,
            "quick": quick,
        },
    )


if __name__ == "__main__":
    main()
