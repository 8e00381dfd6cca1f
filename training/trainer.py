"""The training loop: one function, read top to bottom (DESIGN.md §6).

``train(cfg)`` runs the recipe's stage (see :mod:`mrface.training.stages`) in this process; under
torchrun every rank calls it. Per optimiser step: ``accumulate`` micro-batches, each augmented on
the device, forwarded through the DDP-wrapped network and the sharded Partial FC head under AMP;
a NaN/inf loss stops the run (or skips the step with ``train.skip_nonfinite``, at most
``train.max_skipped`` times); gradients of the backbone are clipped; the optimiser and the lr
schedule step. Weights are checked finite before every checkpoint and the published model, and a
weight or gradient norm 100x its starting value is reported once in train.log. Corrupt samples
(unreadable records/images, labels outside ``[0, classes)``) stop the run after a checkpoint, or are
replaced and counted with ``data.skip_corrupt`` (at most ``data.max_corrupt``). Checkpoints are
atomic and hold everything an exact resume needs (see :mod:`mrface.training.checkpoint`); SIGTERM/SIGINT finish the
current step, save a checkpoint and return ``interrupted=True``.
"""

from __future__ import annotations

import contextlib
import math
import random
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset
from tqdm import tqdm

from mrface.errors import UserError, is_expected, one_line
from mrface.models import save_model
from mrface.training import checkpoint as ckpt_io
from mrface.training.config import TrainConfig, check_paths
from mrface.training.data import (
    UNREPLACEABLE,
    CheckedSamples,
    GlobalBatchSampler,
    dataset_classes,
    make_loader,
)
from mrface.training.distributed import all_agree, barrier, init_distributed
from mrface.training.rundir import (
    MetricsWriter,
    RunFolderInUse,
    append_error_line,
    read_json_lines,
    rewrite_json_lines,
    setup_run_dir,
)
from mrface.training.schedule import build_scheduler
from mrface.training.stages import build_stage
from mrface.training.validation import Validator

INTERRUPTED_EXIT_CODE = 143
NORM_GROWTH_WARNING = 100.0  # a weight/gradient norm this many times its starting value is reported


class NonFiniteLossError(FloatingPointError):
    """A NaN/inf loss; the message names the step and summarises the offending batch."""


class NonFiniteWeightsError(NonFiniteLossError):
    """Weights hold NaN/inf: nothing is checkpointed or published."""


class CorruptDataError(UserError):
    """A corrupt sample without ``data.skip_corrupt``, or more than ``data.max_corrupt`` with it."""


def nonfinite_tensors(module: nn.Module) -> list[str]:
    """Names of the floating-point parameters/buffers of ``module`` holding NaN or inf."""
    return [k for k, v in module.state_dict().items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def _norm(tensors: list[Tensor]) -> float:
    if not tensors:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack([t.detach().float().norm() for t in tensors])))


@dataclass
class TrainResult:
    output: Path
    steps: int  # optimiser steps done (including skipped ones)
    interrupted: bool = False
    skipped_nonfinite: int = 0
    corrupt: list[str] = field(default_factory=list)  # corrupt samples skipped (data.skip_corrupt), described
    losses: list[float] = field(default_factory=list)  # loss of every step run in this call
    validation: dict[str, float] = field(default_factory=dict)


def _batch_stats(step: int, images: Tensor, labels: Tensor, logs: dict[str, Tensor]) -> str:
    x = images.float()
    finite = torch.isfinite(x)
    parts = [
        f"step {step}: non-finite loss",
        f"images {tuple(x.shape)} non-finite values {int((~finite).sum())}",
        f"min {x[finite].min().item() if finite.any() else float('nan'):.4g} "
        f"max {x[finite].max().item() if finite.any() else float('nan'):.4g} "
        f"mean {x[finite].mean().item() if finite.any() else float('nan'):.4g}",
        f"labels {labels.min().item()}..{labels.max().item()}",
    ]
    parts += [f"{k}={v.item():.4g}" for k, v in logs.items() if v.numel() == 1]
    return "; ".join(parts)


def batchnorm_parameter_ids(module: nn.Module) -> set[int]:
    """ids of the parameters of every BatchNorm module (AdaFace train_val.py: no weight decay for them)."""
    return {
        id(p)
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        for p in m.parameters(recurse=False)
    }


def _build_optimizer(
    cfg: TrainConfig, params: list[nn.Parameter], no_decay: set[int] = frozenset()
) -> torch.optim.Optimizer:
    """SGD/AdamW over ``params``; those whose id is in ``no_decay`` get weight decay 0 (a second group)."""
    o = cfg.optim
    if no_decay:
        params = [
            {"params": [p for p in params if id(p) not in no_decay]},
            {"params": [p for p in params if id(p) in no_decay], "weight_decay": 0.0},
        ]
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    return torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)


def _classes_or_none(dataset: Dataset) -> int | None:
    try:
        return dataset_classes(dataset)
    except ValueError:
        return None


def train(cfg: TrainConfig, dataset: Dataset | None = None) -> TrainResult:
    """Run ``cfg`` (a loaded recipe) in this process; ``dataset`` replaces the recipe's data when given.

    An expected failure (bad data, full disk, non-finite training) also goes to ``train.log`` as one
    ``mrface train: error: ...`` line before it propagates.
    """
    try:
        return _train(cfg, dataset)
    except Exception as exc:
        if not isinstance(exc, RunFolderInUse) and (is_expected(exc) or isinstance(exc, FloatingPointError)):
            append_error_line(Path(cfg.output), f"mrface train: error: {one_line(exc)}")
        raise


def _train(cfg: TrainConfig, dataset: Dataset | None) -> TrainResult:
    check_paths(cfg, data=dataset is None)
    env = init_distributed()
    torch.manual_seed(cfg.seed + env.rank)
    random.seed(cfg.seed + env.rank)
    np.random.seed(cfg.seed + env.rank)  # noqa: NPY002 - seeds the global state libraries draw from
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True)
    out, log = setup_run_dir(cfg, env.world_size, env.is_main)
    stage, dataset = build_stage(cfg, env, dataset)
    if stage.sampler is None:  # (image, label) samples: checked, and replaced with data.skip_corrupt
        classes_known = stage.head.num_classes if stage.head is not None else _classes_or_none(dataset)
        dataset = CheckedSamples(dataset, classes_known, cfg.data.skip_corrupt)
    model, head, extra = (m.to(env.device) if m is not None else None for m in (stage.model, stage.head, stage.extra))
    beside = [m for m in (head, extra) if m is not None]  # loss-side modules: trained and saved beside the model
    if cfg.model.channels_last:
        model.to(memory_format=torch.channels_last)
    if cfg.model.sync_bn and env.distributed:
        if env.device.type != "cuda":
            raise ValueError("model.sync_bn=true needs CUDA (torch's SyncBatchNorm has no CPU kernel)")
        stage.net = nn.SyncBatchNorm.convert_sync_batchnorm(stage.net)
    net = stage.net
    if env.distributed:
        net = DistributedDataParallel(net, device_ids=[env.device.index] if env.device.type == "cuda" else None)
    if cfg.model.compile:
        net = torch.compile(net)

    # Sizes of the run: a step is `accumulate` global micro-batches.
    accumulate, batch = cfg.optim.accumulate, cfg.data.batch_size
    steps_per_epoch = len(dataset) // (batch * env.world_size * accumulate)
    if steps_per_epoch < 1:
        raise ValueError(
            f"data: {len(dataset)} images < one step ({batch} x {env.world_size} ranks x {accumulate} micro-batches)"
        )
    total_steps = cfg.train.max_steps or math.ceil(cfg.train.epochs * steps_per_epoch)

    backbone_params = [p for p in stage.net.parameters() if p.requires_grad]
    params = backbone_params + [p for m in beside for p in m.parameters() if p.requires_grad]
    no_decay = batchnorm_parameter_ids(stage.net) if cfg.optim.no_decay_bn else set()
    optimizer = _build_optimizer(cfg, params, no_decay)
    scheduler = build_scheduler(optimizer, cfg.schedule, total_steps, steps_per_epoch)
    amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.optim.amp]
    scaler = torch.amp.GradScaler(env.device.type, enabled=cfg.optim.amp == "fp16")
    validator = Validator(cfg.eval, log, cfg.data.skip_corrupt) if env.is_main and cfg.eval.bins else None

    # Resume: weights, head shards, optimiser, schedule, scaler, RNG, counters.
    start_step, skipped, corrupt = 0, 0, []
    run_id = uuid.uuid4().hex  # checkpoint retention only ever deletes checkpoints of this run
    ckpt_root = out / "checkpoints"
    resume_from = ckpt_io.latest_checkpoint(ckpt_root) if cfg.resume == "auto" else None
    if cfg.resume not in ("none", "auto"):
        resume_from = ckpt_io.resolve_checkpoint(cfg.resume)
    if resume_from is not None:
        state = ckpt_io.load_training_state(resume_from, env)
        ckpt_io.load_model_weights(resume_from, model)
        if head is not None:
            ckpt_io.load_head(resume_from, head)
        if extra is not None:
            extra.load_state_dict(state["extra"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        ckpt_io.set_rng_state(state["rng"])
        start_step, skipped = int(state["step"]), int(state["skipped_nonfinite"])
        corrupt = list(state.get("corrupt", []))
        run_id = ckpt_io.read_manifest(resume_from).get("run_id") or run_id
        log.info(f"resumed from {resume_from} at step {start_step}")
    if env.is_main and (out / "metrics.jsonl").is_file():  # drop rows logged after the checkpoint (or torn)
        rows = read_json_lines(out / "metrics.jsonl", warn=log.warning)
        rewrite_json_lines(out / "metrics.jsonl", [r for r in rows if r.get("step", 0) <= start_step])
    barrier(env)

    sampler = (stage.sampler or GlobalBatchSampler)(
        len(dataset),
        batch,
        env.rank,
        env.world_size,
        cfg.seed,
        total=total_steps * accumulate,
        start=start_step * accumulate,
    )
    batches = iter(make_loader(dataset, sampler, cfg.data.workers))
    metrics = MetricsWriter(out, env.is_main, cfg.train.tensorboard, log)
    classes = head.num_classes if head is not None else getattr(model, "num_classes", "?")
    log.info(
        f"stage {cfg.stage}: {len(dataset)} samples, {classes} classes, world size {env.world_size}, "
        f"global batch {batch * env.world_size * accumulate}, {total_steps} steps "
        f"({steps_per_epoch} per epoch) on {env.device}"
    )

    stop = {"signal": None}

    def on_signal(signum: int, frame: object) -> None:
        stop["signal"] = signum

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)} if in_main_thread else {}

    def training_state(step: int) -> dict:
        return {
            "step": step,
            "skipped_nonfinite": skipped,
            "corrupt": list(corrupt),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": ckpt_io.rng_state(),
            "extra": extra.state_dict() if extra is not None else {},
        }

    def save(step: int) -> Path:
        bad = nonfinite_tensors(model)
        if bad:
            raise NonFiniteWeightsError(
                f"step {step}: the weights hold NaN/inf ({len(bad)} tensors, e.g. "
                f"{', '.join(bad[:3])}); nothing was saved. Lower optim.lr, use "
                "optim.clip_grad, or resume an earlier checkpoint"
            )
        return ckpt_io.save_checkpoint(
            ckpt_root, step, env, model, head, training_state(step), cfg.checkpoint.keep, run_id=run_id
        )

    def check_samples(step: int, reasons: list[str]) -> None:
        """Count/name corrupt samples of a micro-batch; stop (after a checkpoint) when they may not be skipped."""
        new = [r for r in reasons if r not in corrupt]
        if cfg.data.skip_corrupt:
            for r in new:
                corrupt.append(r)
                log.warning(f"step {step + 1}: corrupt sample skipped ({len(corrupt)} so far): {r}")
        fatal = any(r.startswith(UNREPLACEABLE) for r in reasons) or bool(reasons) and not cfg.data.skip_corrupt
        too_many = len(corrupt) > cfg.data.max_corrupt
        if all_agree(env, fatal or too_many):
            save(step)
            if too_many and not fatal:
                raise CorruptDataError(
                    "data",
                    f"{len(corrupt)} corrupt samples, more than data.max_corrupt="
                    f"{cfg.data.max_corrupt}; last: {corrupt[-1]}",
                )
            raise CorruptDataError(
                reasons[0] if fatal else "data (another rank)",
                f"expected a readable image with a label in [0, classes); checkpoint of step "
                f"{step} saved: fix or remove the record, or set data.skip_corrupt=true, then "
                "resume with resume=auto",
            )

    first_norms: dict[str, float] = {"weight norm": _norm(backbone_params)}  # growth is measured from here

    def watch_norm(name: str, value: float, step: int) -> None:
        """Report once when a norm grows by orders of magnitude (the run may be diverging); the weight norm
        is compared with the weights this call started from, the gradient norm with its first value."""
        if not math.isfinite(value) or value <= 0:
            return
        first = first_norms.setdefault(name, value)
        if value > NORM_GROWTH_WARNING * first and f"{name}_warned" not in first_norms:
            first_norms[f"{name}_warned"] = 1.0
            log.warning(
                f"step {step}: warning: {name} grew from {first:.3g} to {value:.3g} "
                f"({value / first:.0f}x); the run may be diverging (optim.lr={cfg.optim.lr:g})"
            )

    result = TrainResult(out, start_step, skipped_nonfinite=skipped)
    bar = tqdm(
        total=total_steps,
        initial=start_step,
        disable=not (env.is_main and cfg.train.progress),
        desc=cfg.stage,
        dynamic_ncols=True,
    )
    stage.train_mode()
    tick, images_since = time.perf_counter(), 0
    try:
        for step in range(start_step, total_steps):
            optimizer.zero_grad(set_to_none=True)
            step_loss, nonfinite, logs = 0.0, False, {}
            # A skipped step must not leave NaN in BN running statistics or margin EMAs either.
            buffers = [b for m in (model, *beside) for b in m.buffers()] if cfg.train.skip_nonfinite else []
            saved_buffers = [b.detach().clone() for b in buffers]
            for a in range(accumulate):
                images, labels, *reasons = next(batches)  # reasons: CheckedSamples batches only (not templates)
                check_samples(step, [r for r in reasons[0] if r] if reasons else [])
                images = images.to(env.device, non_blocking=True)
                labels = labels.to(env.device, non_blocking=True)
                if cfg.model.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                if nonfinite:  # the step is skipped: keep the data order, compute nothing
                    continue
                sync = a == accumulate - 1 or not isinstance(net, DistributedDataParallel)
                with (
                    contextlib.nullcontext() if sync else net.no_sync(),
                    torch.autocast(env.device.type, dtype=amp_dtype, enabled=amp_dtype is not None),
                ):
                    loss, logs = stage.loss_fn(net, images, labels, step, a)
                nonfinite = all_agree(env, not bool(torch.isfinite(loss.detach())))
                if nonfinite:
                    if not cfg.train.skip_nonfinite:
                        raise NonFiniteLossError(_batch_stats(step + 1, images, labels, logs))
                    continue
                scaler.scale(loss / accumulate).backward()
                step_loss += float(loss.detach()) / accumulate
            if nonfinite:
                optimizer.zero_grad(set_to_none=True)
                with torch.no_grad():
                    for b, saved in zip(buffers, saved_buffers, strict=True):
                        b.copy_(saved)
                skipped += 1
                log.info(f"step {step + 1}: non-finite loss, step skipped ({skipped} so far)")
                if skipped > cfg.train.max_skipped:
                    raise NonFiniteLossError(
                        f"step {step + 1}: {skipped} steps skipped for a non-finite loss, more "
                        f"than train.max_skipped={cfg.train.max_skipped}; the run is stopped "
                        "(lower optim.lr or check the data)"
                    )
            else:
                grads = [p.grad for p in backbone_params if p.grad is not None]
                if grads and ((step + 1) % cfg.train.log_every == 0 or step == start_step):
                    grad_norm = _norm(grads) / (scaler.get_scale() if scaler.is_enabled() else 1.0)
                    logs = {**logs, "grad_norm": torch.tensor(grad_norm)}
                    watch_norm("gradient norm", grad_norm, step + 1)
                if cfg.optim.clip_grad > 0:
                    scaler.unscale_(optimizer)
                    for group in stage.clip_groups or [backbone_params]:  # BTNet: each branch on its own
                        torch.nn.utils.clip_grad_norm_(group, cfg.optim.clip_grad)
                scaler.step(optimizer)
                scaler.update()
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            done = step + 1
            result.steps, result.skipped_nonfinite, result.corrupt = done, skipped, list(corrupt)
            images_since += batch * env.world_size * accumulate
            if not nonfinite:
                result.losses.append(step_loss)
            bar.update(1)
            if done % cfg.train.log_every == 0 or done == total_steps:
                elapsed = time.perf_counter() - tick
                row = {
                    "step": done,
                    "loss": step_loss if not nonfinite else float("nan"),
                    "lr": lr,
                    "images_per_s": images_since / max(elapsed, 1e-9),
                    "skipped_nonfinite": skipped,
                }
                row.update({k: float(v) for k, v in logs.items() if v.numel() == 1})
                row["weight_norm"] = _norm(backbone_params)
                watch_norm("weight norm", row["weight_norm"], done)
                if cfg.data.skip_corrupt:
                    row["corrupt_skipped"] = len(corrupt)
                metrics.write(row)
                bar.set_postfix(loss=f"{step_loss:.3f}", lr=f"{lr:.3g}", img_s=f"{row['images_per_s']:.0f}")
                tick, images_since = time.perf_counter(), 0
            if validator is not None and cfg.eval.every and done % cfg.eval.every == 0:
                metrics.write({"step": done, **validator.run(model, done)})
                stage.train_mode()
            if cfg.eval.bins and cfg.eval.every and done % cfg.eval.every == 0:
                barrier(env)
            if cfg.checkpoint.every and done % cfg.checkpoint.every == 0:
                save(done)
            if all_agree(env, stop["signal"] is not None):
                save(done)
                log.info(f"signal received: checkpoint saved at step {done}; resume with resume=auto")
                result.interrupted = True
                return result
        save(total_steps)
        if env.is_main:
            save_model(model, out / "model.safetensors")
        if validator is not None:
            result.validation = validator.run(model, total_steps)
            metrics.write({"step": total_steps, **result.validation})
        barrier(env)
        log.info(
            f"done: {total_steps} steps, {skipped} skipped, {len(corrupt)} corrupt samples skipped; "
            f"model in {out / 'model.safetensors'}"
        )
        return result
    finally:
        bar.close()
        metrics.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
