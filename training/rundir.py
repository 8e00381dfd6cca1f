"""The run directory: resolved config, seed, versions, a text log, metrics (JSON lines, tensorboard).

Layout of ``<output>/``::

    config.yaml      the resolved recipe (every default filled in)
    run.json         seed, world size, versions, command line, start time
    train.log        the text log (rank 0)
    metrics.jsonl    one JSON object per logged step: {"step", "loss", "lr", "images_per_s", ...}
    tb/              tensorboard scalars (only when the tensorboard package is installed)
    checkpoints/     see mrface.training.checkpoint
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import logging
import platform
import sys
from pathlib import Path
from typing import Any

from mrface.training.config import TrainConfig, to_yaml

LOGGER_NAME = "mrface.training"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("mrface", "torch", "numpy", "omegaconf", "safetensors", "tensorboard"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def setup_run_dir(cfg: TrainConfig, world_size: int, is_main: bool) -> tuple[Path, logging.Logger]:
    """Create the run directory (rank 0 writes) and a logger writing to train.log and stderr."""
    out = Path(cfg.output)
    logger = logging.getLogger(f"{LOGGER_NAME}.{out.resolve()}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    if not is_main:
        logger.addHandler(logging.NullHandler())
        return out, logger
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(to_yaml(cfg))
    info = {"seed": cfg.seed, "world_size": world_size, "versions": versions(), "argv": sys.argv,
            "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}  # fmt: skip
    (out / "run.json").write_text(json.dumps(info, indent=2))
    fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    for handler in (logging.FileHandler(out / "train.log"), logging.StreamHandler(sys.stderr)):
        handler.setFormatter(fmt)
        logger.addHandler(handler)
    return out, logger


class MetricsWriter:
    """Appends metric rows to metrics.jsonl and (when available and asked) tensorboard; rank 0 only."""

    def __init__(self, out: Path, enabled: bool, tensorboard: bool, logger: logging.Logger) -> None:
        self.enabled, self.tb = enabled, None
        self.path = out / "metrics.jsonl"
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tb"))
            except ImportError:
                logger.info("tensorboard is not installed: scalars go to metrics.jsonl only "
                            "(pip install tensorboard)")  # fmt: skip

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.tb.add_scalar(key, value, row["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_metrics(out: str | Path) -> list[dict[str, Any]]:
    """Rows of ``<out>/metrics.jsonl`` (used by tests and the demo)."""
    path = Path(out) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
