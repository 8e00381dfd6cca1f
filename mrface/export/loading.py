"""Resolve ``--model`` for export: a run folder, a ``.safetensors`` checkpoint, or a registry name.

A run folder is searched for ``model.safetensors``, then ``final.safetensors``, then a single
``*.safetensors`` at its top level (each with the JSON metadata written by
``mrface.models.save_model``). A registry name builds the model with random weights (for testing
the pipeline) and says so with a warning.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from mrface.export.errors import ExportError
from mrface.models import FaceModel, list_models, load_model
from mrface.models.registry import get_model

RUN_DIR_NAMES = ("model.safetensors", "final.safetensors")


def find_checkpoint(run_dir: Path) -> Path:
    """The weight file of a run folder (see module docstring)."""
    for name in RUN_DIR_NAMES:
        if (run_dir / name).is_file():
            return run_dir / name
    found = sorted(run_dir.glob("*.safetensors"))
    if len(found) == 1:
        return found[0]
    listed = ", ".join(p.name for p in found) or "none"
    raise ExportError(
        f"--model {run_dir}: expected {' or '.join(RUN_DIR_NAMES)} or exactly one *.safetensors in the run "
        f"folder, found {listed}"
    )


def load_for_export(spec: str) -> FaceModel:
    """The model named by ``spec`` (folder, checkpoint file or registry name), in eval mode."""
    path = Path(spec)
    if path.is_dir():
        return load_model(find_checkpoint(path)).eval()
    if path.suffix == ".safetensors" or path.exists():
        if not path.is_file():
            raise ExportError(f"--model {spec}: no such checkpoint (expected a .safetensors file from save_model)")
        return load_model(path).eval()
    if spec in list_models():
        warnings.warn(f"--model {spec}: a registry name, so the weights are RANDOM", stacklevel=2)
        return get_model(spec).eval()
    raise ExportError(f"--model {spec!r}: not a run folder, a .safetensors checkpoint or a registered model "
                      f"({', '.join(list_models())})")  # fmt: skip
