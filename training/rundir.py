"""The run directory: resolved config, seed, versions, a text log, metrics (JSON lines, tensorboard).

Layout of ``<output>/``::

    config.yaml      the resolved recipe (every default filled in)
    run.json         seed, world size, versions, command line, start time
    train.log        the text log (rank 0)
    metrics.jsonl    one JSON object per logged step: {"step", "loss", "lr", "images_per_s", ...}
    tb/              tensorboard scalars (only when the tensorboard package is installed)
    checkpoints/     see mrface.training.checkpoint

A new run (``resume=none``) refuses a folder that already holds files, unless ``overwrite=true``,
which first moves the old run aside to ``<output>.old-<UTC time>`` (nothing is deleted or mixed).
``resume=auto`` or ``resume=PATH`` continue in the folder. Leftover temporary folders of an
interrupted checkpoint write are removed when a run starts. Append-only logs (metrics.jsonl) may end
in a torn line after a crash or a full disk: it is dropped with a warning.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mrface.errors import UserError
from mrface.io import write_text
from mrface.training.config import TrainConfig, to_yaml
from mrface.versions import versions

LOGGER_NAME = "mrface.training"


#: Packages whose versions every run records in run.json.
RUN_PACKAGES = ("mrface", "torch", "numpy", "omegaconf", "safetensors", "tensorboard")


class RunFolderInUse(UserError):
    """``output`` holds another run and this one neither resumes it nor may overwrite it."""


def moved_aside_name(out: Path) -> Path:
    """A free sibling name ``<out>.old-<UTC time>[-k]`` for an old run moved out of the way."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    target, k = out.with_name(f"{out.name}.old-{stamp}"), 1
    while target.exists():
        target, k = out.with_name(f"{out.name}.old-{stamp}-{k}"), k + 1
    return target


RUN_REMEDY = "resume it with resume=auto, choose another output, or add overwrite=true to move the old run aside"


def claim_output(out: Path, resume: str, overwrite: bool, key: str = "output", remedy: str = RUN_REMEDY) -> Path | None:
    """Make ``out`` usable by a run: refuse a non-empty folder unless resuming or ``overwrite``.

    Returns where an old run was moved (``overwrite``), else None. Raises :class:`RunFolderInUse`.
    """
    if not out.exists():
        return None
    if not out.is_dir():
        raise UserError(f"{key}={out}", "exists and is not a folder; expected a new or empty folder")
    if resume != "none" or not any(out.iterdir()):
        return None
    if not overwrite:
        raise RunFolderInUse(
            f"{key}={out}",
            f"the folder already holds files (an earlier run?); expected a new or empty folder: {remedy}",
        )
    target = moved_aside_name(out)
    os.replace(out, target)
    return target


def clean_stale_temporaries(out: Path) -> list[Path]:
    """Remove temporary folders/files left by a write that died (full disk, kill) under ``out``."""
    found = [*(out / "checkpoints").glob(".step_*.tmp"), *out.glob(".*.tmp")] if out.is_dir() else []
    for p in found:
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    return found


def setup_run_dir(cfg: TrainConfig, world_size: int, is_main: bool) -> tuple[Path, logging.Logger]:
    """Claim the run directory (rank 0 writes, see :func:`claim_output`) and a logger writing to
    train.log and stderr."""
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
    moved = claim_output(out, cfg.resume, cfg.overwrite)
    out.mkdir(parents=True, exist_ok=True)
    stale = clean_stale_temporaries(out)
    write_text(out / "config.yaml", to_yaml(cfg))
    info = {
        "seed": cfg.seed,
        "world_size": world_size,
        "versions": versions(RUN_PACKAGES),
        "argv": sys.argv,
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    write_text(out / "run.json", json.dumps(info, indent=2))
    fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    for handler in (logging.FileHandler(out / "train.log"), logging.StreamHandler(sys.stderr)):
        handler.setFormatter(fmt)
        logger.addHandler(handler)
    if moved is not None:
        logger.info(f"overwrite=true: the previous run in {out} was moved to {moved}")
    for p in stale:
        logger.info(f"removed a temporary left by an interrupted write: {p}")
    return out, logger


def append_error_line(out: Path, line: str) -> None:
    """Add a one-line error to ``<out>/train.log`` (the file handler only; stderr already has it)."""
    log = out / "train.log"
    if log.is_file():
        with log.open("a") as f:
            f.write(f"{_dt.datetime.now().strftime('%H:%M:%S')} {line}\n")


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
                logger.info("tensorboard is not installed: scalars go to metrics.jsonl only (pip install tensorboard)")

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


def read_json_lines(path: str | Path, warn: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Rows of an append-only JSON-lines log. A torn last line (crash, full disk) is dropped with a
    warning (``warn``, default :func:`warnings.warn`); a damaged line before the last raises
    :class:`UserError` naming the file and line."""
    path = Path(path)
    lines = path.read_text(errors="replace").splitlines()
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not a JSON object")
        except ValueError as err:
            if i == last:
                msg = f"{path}: line {i + 1}: torn last line dropped ({err}): {line[:80]!r}"
                warn(msg) if warn is not None else warnings.warn(msg, stacklevel=2)
                break
            raise UserError(f"{path}: line {i + 1}", f"expected one JSON object per line ({err})") from None
        rows.append(row)
    return rows


def rewrite_json_lines(path: Path, rows: list[dict[str, Any]]) -> None:
    """Replace ``path`` with ``rows`` atomically (temp file + rename)."""
    write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
