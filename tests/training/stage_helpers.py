"""Helpers of the dcr/coreset stage tests: a tiny frozen trunk (weights file or trunk run), a fixed face
set, and an in-process SIGTERM after a given step (the trainer then saves a checkpoint and returns)."""

from __future__ import annotations

import signal
from pathlib import Path

import torch
from helpers import TINY
from torch.utils.data import TensorDataset

from mrface.models import get_model, save_model
from mrface.training import rundir
from mrface.training.config import load_recipe
from mrface.training.data import synth_tensors
from mrface.training.trainer import train

TINY_ARGS = {"width": 0.125, "embedding_size": 32}
# The data and logging part of TINY (the model is the stage's own).
TINY_DATA = [o for o in TINY if not o.startswith(("model.", "head."))]


def tiny_trunk_file(path: Path, seed: int = 0) -> Path:
    """A random-init iresnet_tiny (width 1/8, 32-d) saved as an mrface weights file."""
    torch.manual_seed(seed)
    return save_model(get_model("iresnet_tiny", **TINY_ARGS), path)


def tiny_trunk_run(out: Path) -> Path:
    """A synthface_tiny_trunk run of 2 steps on the tiny data (its run directory)."""
    train(load_recipe("synthface_tiny_trunk", [*TINY, "train.max_steps=2", f"output={out}"]))
    return out


def faces(identities: int = 8, images: int = 4) -> TensorDataset:
    """SynthFace images (N, 3, 112, 112) in [-1, 1] with labels; ``num_classes`` set."""
    x, y = synth_tensors(identities, images, seed=0)
    ds = TensorDataset(x.float().div(127.5).sub(1.0), y)
    ds.num_classes = identities
    return ds


def sigterm_after_step(monkeypatch, step: int) -> None:
    """Raise SIGTERM in this process once the metrics row of ``step`` is written (log_every=1)."""
    write = rundir.MetricsWriter.write

    def write_then_signal(self, row):
        write(self, row)
        if row.get("step") == step and "loss" in row:
            signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(rundir.MetricsWriter, "write", write_then_signal)
