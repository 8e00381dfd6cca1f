"""The training loop: one function, read top to bottom (DESIGN.md §6).

``train(cfg)`` runs the recipe's stage (see :mod:`mrface.training.stages`) in this process; under
torchrun every rank calls it. Per optimiser step: ``accumulate`` micro-batches, each augmented on
the device, forwarded through the DDP-wrapped network and the sharded Partial FC head under AMP;
a NaN/inf loss stops the run (or skips the step with ``train.skip_nonfinite``); gradients of the
backbone are clipped; the optimiser and the lr schedule step. Checkpoints are atomic and hold
everything an exact resume needs (see :mod:`mrface.training.checkpoint`); SIGTERM/SIGINT finish the
current step, save a checkpoint and return ``interrupted=True``.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset
from tqdm import tqdm

from mrface.models import save_model
from mrface.training import checkpoint as ckpt_io
from mrface.training.config import TrainConfig
from mrface.training.data import GlobalBatchSampler, build_dataset, dataset_classes, make_loader
from mrface.training.distributed import DistEnv, all_agree, barrier, init_distributed
from mrface.training.rundir import MetricsWriter, setup_run_dir
from mrface.training.schedule import build_scheduler
from mrface.training.stage_coreset import coreset_stage
from mrface.training.stage_dcr import dcr_stage
from mrface.training.stages import Stage, distill_stage, trunk_stage
from mrface.training.validation import Validator

INTERRUPTED_EXIT_CODE = 143


class NonFiniteLossError(FloatingPointError):
    """A NaN/inf loss; the message names the step and summarises the offending batch."""


@dataclass
class TrainResult:
    output: Path
    steps: int  # optimiser steps done (including skipped ones)
    interrupted: bool = False
    skipped_nonfinite: int = 0
    losses: list[float] = field(default_factory=list)  # loss of every step run in this call
    validation: dict[str, float] = field(default_factory=dict)


def _batch_stats(step: int, images: Tensor, labels: Tensor, logs: dict[str, Tensor]) -> str:
    x = images.float()
    finite = torch.isfinite(x)
    parts = [f"step {step}: non-finite loss", f"images {tuple(x.shape)} non-finite values {int((~finite).sum())}",
             f"min {x[finite].min().item() if finite.any() else float('nan'):.4g} "
             f"max {x[finite].max().item() if finite.any() else float('nan'):.4g} "
             f"mean {x[finite].mean().item() if finite.any() else float('nan'):.4g}",
             f"labels {labels.min().item()}..{labels.max().item()}"]  # fmt: skip
    parts += [f"{k}={v.item():.4g}" for k, v in logs.items() if v.numel() == 1]
    return "; ".join(parts)


def batchnorm_parameter_ids(module: nn.Module) -> set[int]:
    """ids of the parameters of every BatchNorm module (AdaFace train_val.py: no weight decay for them)."""
    return {id(p) for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            for p in m.parameters(recurse=False)}  # fmt: skip


def _build_optimizer(cfg: TrainConfig, params: list[nn.Parameter], no_decay: set[int] = frozenset()
                     ) -> torch.optim.Optimizer:  # fmt: skip
    """SGD/AdamW over ``params``; those whose id is in ``no_decay`` get weight decay 0 (a second group)."""
    o = cfg.optim
    if no_decay:
        params = [{"params": [p for p in params if id(p) not in no_decay]},
                  {"params": [p for p in params if id(p) in no_decay], "weight_decay": 0.0}]  # fmt: skip
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    return torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)


def _build_stage(cfg: TrainConfig, env: DistEnv, dataset: Dataset | None) -> tuple[Stage, Dataset]:
    if cfg.stage == "dcr":
        return dcr_stage(cfg, env, dataset)
    if cfg.stage == "coreset":
        return coreset_stage(cfg, env, dataset)
    if cfg.stage == "distill":
        stage, num_classes = distill_stage(cfg, env)
    else:
        num_classes = 0
    color = cfg.data.color
    if dataset is None:
        meta = stage.model.metadata if cfg.stage == "distill" else None
        color = color or (meta.color_order if meta else "RGB")
        dataset, data_classes = build_dataset(cfg.data, color)
    else:
        data_classes = dataset_classes(dataset)
    if cfg.stage == "trunk":
        stage = trunk_stage(cfg, env, data_classes)
    elif data_classes > num_classes:
        raise ValueError(f"data has {data_classes} classes but the teacher's classifier only {num_classes}")
    return stage, dataset


def train(cfg: TrainConfig, dataset: Dataset | None = None) -> TrainResult:
    """Run ``cfg`` (a loaded recipe) in this process; ``dataset`` replaces the recipe's data when given."""
    env = init_distributed()
    torch.manual_seed(cfg.seed + env.rank)
    random.seed(cfg.seed + env.rank)
    np.random.seed(cfg.seed + env.rank)  # noqa: NPY002 - seeds the global state libraries draw from
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True)
    out, log = setup_run_dir(cfg, env.world_size, env.is_main)
    stage, dataset = _build_stage(cfg, env, dataset)
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
        raise ValueError(f"data: {len(dataset)} images < one step ({batch} x {env.world_size} ranks x "
                         f"{accumulate} micro-batches)")  # fmt: skip
    total_steps = cfg.train.max_steps or math.ceil(cfg.train.epochs * steps_per_epoch)

    backbone_params = [p for p in stage.net.parameters() if p.requires_grad]
    params = backbone_params + [p for m in beside for p in m.parameters() if p.requires_grad]
    no_decay = batchnorm_parameter_ids(stage.net) if cfg.optim.no_decay_bn else set()
    optimizer = _build_optimizer(cfg, params, no_decay)
    scheduler = build_scheduler(optimizer, cfg.schedule, total_steps, steps_per_epoch)
    amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.optim.amp]
    scaler = torch.amp.GradScaler(env.device.type, enabled=cfg.optim.amp == "fp16")
    validator = Validator(cfg.eval, log) if env.is_main and cfg.eval.bins else None

    # Resume: weights, head shards, optimiser, schedule, scaler, RNG, counters.
    start_step, skipped = 0, 0
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
        if env.is_main and (out / "metrics.jsonl").is_file():  # drop rows logged after the checkpoint
            rows = (out / "metrics.jsonl").read_text().splitlines()
            kept = [r for r in rows if r.strip() and json.loads(r)["step"] <= start_step]
            (out / "metrics.jsonl").write_text("".join(r + "\n" for r in kept))
        log.info(f"resumed from {resume_from} at step {start_step}")
    barrier(env)

    sampler = (stage.sampler or GlobalBatchSampler)(len(dataset), batch, env.rank, env.world_size, cfg.seed,
                                                    total=total_steps * accumulate, start=start_step * accumulate)
    batches = iter(make_loader(dataset, sampler, cfg.data.workers))
    metrics = MetricsWriter(out, env.is_main, cfg.train.tensorboard, log)
    classes = head.num_classes if head is not None else getattr(model, "num_classes", "?")
    log.info(f"stage {cfg.stage}: {len(dataset)} samples, {classes} classes, world size {env.world_size}, "
             f"global batch {batch * env.world_size * accumulate}, {total_steps} steps "
             f"({steps_per_epoch} per epoch) on {env.device}")  # fmt: skip

    stop = {"signal": None}

    def on_signal(signum: int, frame: object) -> None:
        stop["signal"] = signum

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)} if in_main_thread else {}

    def training_state(step: int) -> dict:
        return {"step": step, "skipped_nonfinite": skipped, "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "rng": ckpt_io.rng_state(), "extra": extra.state_dict() if extra is not None else {}}  # fmt: skip

    def save(step: int) -> Path:
        return ckpt_io.save_checkpoint(ckpt_root, step, env, model, head, training_state(step), cfg.checkpoint.keep)

    result = TrainResult(out, start_step, skipped_nonfinite=skipped)
    bar = tqdm(total=total_steps, initial=start_step, disable=not (env.is_main and cfg.train.progress),
               desc=cfg.stage, dynamic_ncols=True)  # fmt: skip
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
                images, labels = next(batches)
                images = images.to(env.device, non_blocking=True)
                labels = labels.to(env.device, non_blocking=True)
                if cfg.model.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                if nonfinite:  # the step is skipped: keep the data order, compute nothing
                    continue
                sync = a == accumulate - 1 or not isinstance(net, DistributedDataParallel)
                with (contextlib.nullcontext() if sync else net.no_sync()), torch.autocast(
                        env.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):  # fmt: skip
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
            else:
                if cfg.optim.clip_grad > 0:
                    scaler.unscale_(optimizer)
                    for group in stage.clip_groups or [backbone_params]:  # BTNet: each branch on its own
                        torch.nn.utils.clip_grad_norm_(group, cfg.optim.clip_grad)
                scaler.step(optimizer)
                scaler.update()
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            done = step + 1
            result.steps, result.skipped_nonfinite = done, skipped
            images_since += batch * env.world_size * accumulate
            if not nonfinite:
                result.losses.append(step_loss)
            bar.update(1)
            if done % cfg.train.log_every == 0 or done == total_steps:
                elapsed = time.perf_counter() - tick
                row = {"step": done, "loss": step_loss if not nonfinite else float("nan"), "lr": lr,
                       "images_per_s": images_since / max(elapsed, 1e-9), "skipped_nonfinite": skipped}  # fmt: skip
                row.update({k: float(v) for k, v in logs.items() if v.numel() == 1})
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
        log.info(f"done: {total_steps} steps, {skipped} skipped; model in {out / 'model.safetensors'}")
        return result
    finally:
        bar.close()
        metrics.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
