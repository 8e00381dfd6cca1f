"""Shared helpers of the training tests: tiny recipes, subprocess runs, weight comparisons."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

# A model small enough for many CPU steps per test (iresnet_tiny at half its width). No channels_last:
# torch's CPU kernels crash on 8-channel channels_last tensors.
TINY = [
    "model.name=iresnet_tiny",
    "model.args.width=0.125",
    "model.args.embedding_size=32",
    "data.kind=synth",
    "data.synth_identities=8",
    "data.synth_images=4",
    "data.batch_size=8",
    "train.progress=false",
    "train.tensorboard=false",
    "train.log_every=1",
    "head.args.s=16.0",
]


def env_1thread() -> dict[str, str]:
    """Subprocess environment: one intra-op thread (deterministic and kind to the shared cores)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_module(args: list[str], timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """``python -m mrface.training ARGS`` in a subprocess; raises with its stderr when it fails."""
    proc = subprocess.run(
        [sys.executable, "-m", "mrface.training", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env_1thread(),
        **kwargs,
    )
    if proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}")
    return proc


def losses(out: Path) -> list[float]:
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1)), "one row per step, in order"
    return [r["loss"] for r in rows]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))
