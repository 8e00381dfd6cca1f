"""Shared helpers of the training tests: tiny recipes, subprocess runs (one process or torchrun), metrics rows,
weight comparisons."""

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


def run_torchrun(args: list[str], nproc: int = 2, timeout: float = 600) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=NPROC -m mrface.training ARGS`` (gloo on CPU); raises on failure."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            "-m",
            "mrface.training",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env_1thread(),
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    return proc


def metrics_rows(out: Path) -> list[dict]:
    """The rows of a run's metrics.jsonl, in order."""
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines() if line.strip()]


def losses(out: Path) -> list[float]:
    rows = [r for r in metrics_rows(out) if "loss" in r]
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1)), "one row per step, in order"
    return [r["loss"] for r in rows]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def assert_same_weights(a: Path, b: Path) -> None:
    """Two safetensors files hold the same tensor names with bit-identical values."""
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def assert_weights_close(got: Path, want: Path, rel: float = 1e-3, floor: float = 1e-6) -> None:
    """Every tensor of ``got`` within ``rel`` x (the largest magnitude of the same tensor in ``want``) + ``floor``:
    float32 reductions run in another order across ranks, while a wrong gradient scale or a missed all-reduce moves
    the weights by a sizeable fraction of lr x grad."""
    w_got, w_want = weights(got), weights(want)
    assert w_got.keys() == w_want.keys()
    for key, ref in w_want.items():
        scale = float(ref.float().abs().max())
        torch.testing.assert_close(w_got[key], ref, rtol=0, atol=rel * scale + floor, msg=key)
