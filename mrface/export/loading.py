"""Resolve ``--model`` for export: a run folder, a checkpoint folder, a ``.safetensors`` file, or a name.

Folders follow the training layout (``training/checkpoint.py``; read here by convention, since
the library does not import the training layer):

* a folder holding ``model.safetensors`` (a checkpoint folder, or e.g. ``demo/distill``) uses it;
* a run folder uses ``checkpoints/step_<n>/model.safetensors`` of the highest step whose
  ``manifest.json`` exists (complete checkpoints only).

A registry name builds the model with random weights (to try the pipeline) and warns about it.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

from mrface.export.errors import ExportError
from mrface.models import FaceModel, list_models, load_model
from mrface.models.registry import get_model

_STEP_DIR = re.compile(r"^step_(\d+)$")


def find_checkpoint(folder: Path) -> Path:
    """The ``model.safetensors`` of a checkpoint folder or of a run folder's latest complete checkpoint."""
    if (folder / "model.safetensors").is_file():
        return folder / "model.safetensors"
    root = folder / "checkpoints"
    steps = []
    if root.is_dir():
        for p in root.iterdir():
            match = _STEP_DIR.match(p.name)
            if match and (p / "manifest.json").is_file() and (p / "model.safetensors").is_file():
                steps.append((int(match.group(1)), p / "model.safetensors"))
    if not steps:
        raise ExportError(
            f"--model {folder}: expected a folder with model.safetensors, or a run folder with a complete "
            f"checkpoint under {root}/step_<n>/ (model.safetensors + manifest.json); found neither"
        )
    return max(steps)[1]


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
    raise ExportError(
        f"--model {spec!r}: not a run folder, a .safetensors checkpoint or a registered model "
        f"({', '.join(list_models())})"
    )
