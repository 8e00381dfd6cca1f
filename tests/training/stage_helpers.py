"""Helpers of the stage tests: a tiny frozen trunk (weights file or trunk run), a fixed face set and a one-batch
slice of it, an in-process SIGTERM after a given step (the trainer then saves a checkpoint and returns), an
interrupted-and-resumed run beside a straight one, and the stage's saved ``extra`` state."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import torch
from helpers import TINY
from torch.utils.data import TensorDataset

from mrface.models import get_model, save_model
from mrface.training import rundir
from mrface.training.config import TrainConfig, load_recipe
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


def one_batch() -> TensorDataset:
    """8 faces of 8 identities (image 0 of each): a dataset of exactly one batch of 8, so every step sees them."""
    data = faces()
    pick = torch.arange(0, 32, 4)
    ds = TensorDataset(data.tensors[0][pick], data.tensors[1][pick])
    ds.num_classes = 8
    return ds


def sigterm_after_step(monkeypatch, step: int) -> None:
    """Raise SIGTERM in this process once the metrics row of ``step`` is written (log_every=1)."""
    write = rundir.MetricsWriter.write

    def write_then_signal(self, row):
        write(self, row)
        if row.get("step") == step and "loss" in row:
            signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(rundir.MetricsWriter, "write", write_then_signal)


def straight_and_resumed(
    make_cfg: Callable[..., TrainConfig],
    overrides: list[str],
    dataset,
    tmp_path: Path,
    monkeypatch,
    stop_after: int = 2,
    while_stopped: Callable[[Path], None] | None = None,
) -> tuple[Path, Path]:
    """(straight run, resumed run) folders: the same recipe run once straight through and once stopped by SIGTERM
    after step ``stop_after``, then continued with ``resume=auto``. ``while_stopped(run)`` looks at the stopped run
    before it continues."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(make_cfg(*overrides, f"output={straight}"), dataset=dataset)
    with monkeypatch.context() as m:
        sigterm_after_step(m, stop_after)
        first = train(make_cfg(*overrides, f"output={resumed}"), dataset=dataset)
    assert first.interrupted and first.steps == stop_after
    if while_stopped is not None:
        while_stopped(resumed)
    train(make_cfg(*overrides, f"output={resumed}", "resume=auto"), dataset=dataset)
    return straight, resumed


def extra_state(run: Path, step: int, rank: int = 0) -> dict[str, torch.Tensor]:
    """The stage's ``extra`` state (DCR centres, QGFace queue) saved by ``rank`` in the checkpoint of ``step``."""
    path = Path(run) / "checkpoints" / f"step_{step:08d}" / f"state_rank{rank}.pt"
    return torch.load(path, weights_only=True)["extra"]
