"""Atomic training checkpoints: written to a temporary folder, renamed into place when complete.

Layout of ``<output>/checkpoints/step_<8 digits>/``::

    model.safetensors, model.json   the trained network (mrface.models.save_model: weights + metadata)
    head_rank<r>.safetensors        rank r's Partial FC shard (centres + margin buffers)
    state_rank<r>.pt                rank r's optimiser, schedule, grad scaler, RNG states, counters
                                    (torch.save; loaded with weights_only=True)
    manifest.json                   step, world size, classes, run id; written last: its presence = complete

A folder is only ever renamed from ``.step_<n>.tmp`` once every rank has written its files, so a
run killed mid-write leaves the previous checkpoint as the latest complete one. The last ``keep``
checkpoints of the current run (same ``run_id`` in the manifest) are kept; checkpoints of other runs
are never deleted. A failed write (full disk) removes its temporary folder before the error propagates.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from mrface.errors import safe_torch_load
from mrface.io import atomic_path, torch_save, write_text
from mrface.losses import PartialFC, reshard_state_dicts, shard_range
from mrface.models import FaceModel, load_weights, save_model
from mrface.training.distributed import DistEnv, barrier

_STEP_DIR = re.compile(r"^step_(\d{8})$")
MANIFEST = "manifest.json"


class CheckpointNotFound(FileNotFoundError):
    """No complete checkpoint where one was expected."""


# ----------------------------------------------------------------------------------- RNG states
def rng_state() -> dict[str, Any]:
    """Every RNG a training step may draw from (torch CPU/CUDA, numpy, python), as plain tensors/ints."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 - the global state libraries use
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["cached"]))  # noqa: NPY002
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------- write
def head_tensors(head: PartialFC) -> dict[str, torch.Tensor]:
    """Shard tensors of a Partial FC state dict (without its ``_extra_state`` bookkeeping)."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in head.state_dict().items() if k != "_extra_state"}


def save_checkpoint(
    root: Path,
    step: int,
    env: DistEnv,
    model: FaceModel,
    head: PartialFC | None,
    state: dict[str, Any],
    keep: int,
    run_id: str | None = None,
) -> Path:
    """Write checkpoint ``step`` under ``root`` (a collective: every rank calls it). Returns its folder.

    ``run_id`` is stored in the manifest; retention deletes only older checkpoints with the same id.
    """
    final, tmp = root / f"step_{step:08d}", root / f".step_{step:08d}.tmp"
    if (final / MANIFEST).is_file() and read_manifest(final).get("run_id") == run_id:  # saved already
        return final
    try:
        return _write_checkpoint(root, step, env, model, head, state, keep, run_id, final, tmp)
    except OSError:
        if env.is_main:  # a full disk must not leave a half-written folder behind
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_checkpoint(
    root: Path,
    step: int,
    env: DistEnv,
    model: FaceModel,
    head: PartialFC | None,
    state: dict[str, Any],
    keep: int,
    run_id: str | None,
    final: Path,
    tmp: Path,
) -> Path:
    if env.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier(env)
    if head is not None:
        file = tmp / f"head_rank{env.rank}.safetensors"
        with atomic_path(file) as part:
            save_file(head_tensors(head), str(part))
    torch_save(state, tmp / f"state_rank{env.rank}.pt")
    if env.is_main:
        save_model(model, tmp / "model.safetensors")
    barrier(env)
    if env.is_main:
        manifest = {
            "step": step,
            "world_size": env.world_size,
            "num_classes": head.num_classes if head is not None else None,
            "embedding_size": head.embedding_size if head is not None else None,
            "run_id": run_id,
        }
        write_text(tmp / MANIFEST, json.dumps(manifest, indent=2))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        ours = [c for c in complete_checkpoints(root) if run_id is None or _run_id(c) == run_id]
        for old in ours[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    barrier(env)
    return final


# ----------------------------------------------------------------------------------------- read
def _run_id(ckpt: Path) -> str | None:
    try:
        return read_manifest(ckpt).get("run_id")
    except CheckpointNotFound:
        return None


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoint folders under ``root``, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _STEP_DIR.match(p.name) and (p / MANIFEST).is_file()]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))


def latest_checkpoint(root: Path) -> Path | None:
    found = complete_checkpoints(root)
    return found[-1] if found else None


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint folder, or a run directory (its latest complete checkpoint) -> checkpoint folder."""
    p = Path(path)
    if (p / MANIFEST).is_file():
        return p
    if p.is_file():
        raise CheckpointNotFound(
            f"{p}: a file; expected a run directory or a checkpoint folder (weights of "
            "other projects, e.g. .pt files, go through mrface.models.importers)"
        )
    latest = latest_checkpoint(p / "checkpoints")
    if latest is None:
        raise CheckpointNotFound(
            f"{p}: neither a checkpoint folder (no {MANIFEST}) nor a run directory "
            f"with a complete checkpoint under {p / 'checkpoints'}"
        )
    return latest


def weights_file(path: str) -> str:
    """A .safetensors file, or a run / checkpoint folder -> its model.safetensors."""
    if path.endswith(".safetensors"):
        return path
    return str(resolve_checkpoint(path) / "model.safetensors")


def read_manifest(ckpt: Path) -> dict[str, Any]:
    try:
        return json.loads((ckpt / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointNotFound(f"{ckpt / MANIFEST}: unreadable manifest ({err})") from None


def load_training_state(ckpt: Path, env: DistEnv) -> dict[str, Any]:
    """This rank's training state (weights_only=True). The world size must match the checkpoint's."""
    manifest = read_manifest(ckpt)
    if manifest["world_size"] != env.world_size:
        raise ValueError(
            f"{ckpt}: saved with world size {manifest['world_size']}, resuming with "
            f"{env.world_size}; exact resume needs the same number of processes"
        )
    return safe_torch_load(ckpt / f"state_rank{env.rank}.pt")


def load_model_weights(ckpt: Path, model: FaceModel) -> None:
    load_weights(model, ckpt / "model.safetensors")


def load_head(ckpt: Path, head: PartialFC) -> None:
    """Load the Partial FC shards into ``head``, re-sharding when the world size changed."""
    manifest = read_manifest(ckpt)
    if manifest["num_classes"] != head.num_classes or manifest["embedding_size"] != head.embedding_size:
        raise ValueError(
            f"{ckpt}: classifier has {manifest['num_classes']} classes x {manifest['embedding_size']}, "
            f"this head {head.num_classes} x {head.embedding_size}"
        )
    saved_world = manifest["world_size"]
    if saved_world == head.world_size:
        sd: dict[str, Any] = dict(load_file(str(ckpt / f"head_rank{head.rank}.safetensors")))
        sd["_extra_state"] = head.get_extra_state()
    else:
        shards = []
        for r in range(saved_world):
            shard: dict[str, Any] = dict(load_file(str(ckpt / f"head_rank{r}.safetensors")))
            start, _ = shard_range(head.num_classes, saved_world, r)
            shard["_extra_state"] = dict(head.get_extra_state(), rank=r, world_size=saved_world, start=start)
            shards.append(shard)
        sd = reshard_state_dicts(shards, head.world_size)[head.rank]
    head.load_state_dict({k: v.to(head.weight.device) if torch.is_tensor(v) else v for k, v in sd.items()})
