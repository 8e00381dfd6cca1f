"""Learning-rate schedules of the recipes, as a factor of the base lr per optimiser step.

* warm-up: factor k / warmup_steps at step k < warmup_steps (0 at the first step), as BTNet's
  PolyScheduler and arcface_torch's PolynomialLRWarmup (whose closed form is the same for k >= 1;
  at k = 0 the latter returns the base lr, an artefact of the scheduler's initial step, not kept);
* ``poly``: (1 - (k - w) / (T - w))^power after the warm-up (PolynomialLRWarmup's closed form;
  power 1 in arcface_torch, 2 in BTNet);
* ``multistep``: gamma^(number of milestones passed), milestones in steps;
* ``constant``.
"""

from __future__ import annotations

import torch

from mrface.training.config import ScheduleConfig


def lr_factor(step: int, total_steps: int, warmup_steps: int, cfg: ScheduleConfig, milestones: list[int]) -> float:
    """Multiplier of the base lr at optimiser step ``step`` (0-based) of ``total_steps``."""
    if step < warmup_steps:
        return step / warmup_steps
    if cfg.kind == "poly":
        span = max(1, total_steps - warmup_steps)
        return max(0.0, 1.0 - (step - warmup_steps) / span) ** cfg.power
    if cfg.kind == "multistep":
        return cfg.gamma ** sum(step >= m for m in milestones)
    return 1.0


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, total_steps: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR over ``lr_factor``; epochs in the recipe are converted with ``steps_per_epoch``."""
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    milestones = [int(round(m * steps_per_epoch)) for m in cfg.milestones]
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup, cfg, milestones)
    )
