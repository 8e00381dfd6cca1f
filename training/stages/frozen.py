"""Frozen trunks for the stages that train on top of one (``dcr``, ``coreset``).

A trunk comes from a trunk run directory (its latest checkpoint), a checkpoint directory or an mrface
``.safetensors`` weights file (for instance an imported public model saved with
:func:`mrface.models.save_model`). A BTNet file gives its trunk (keys ``trunk.*``).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from mrface.models import FaceModel, ModelMetadata
from mrface.models.checkpoint import load_state_dict_checked, read_metadata, read_safetensors
from mrface.training.checkpoint import weights_file

# Arguments of a BTNet's metadata that describe its branches, not its trunk.
_BRANCH_ARGUMENTS = ("resolutions", "branch_bn")


def trunk_weights(path: str) -> tuple[dict[str, Tensor], ModelMetadata, str]:
    """(trunk state dict, the file's metadata, the weights file) for a run, checkpoint or weights file."""
    file = weights_file(path)
    state, _ = read_safetensors(file)
    meta = read_metadata(file)
    if meta.architecture.startswith("btnet"):
        state = {k[len("trunk.") :]: v for k, v in state.items() if k.startswith("trunk.")}
    return state, meta, file


def trunk_arguments(meta: ModelMetadata) -> dict[str, Any]:
    """``get_model`` keyword arguments of the trunk described by ``meta`` (BTNet branch arguments dropped)."""
    return {
        k: v
        for k, v in meta.arguments.items()
        if not meta.architecture.startswith("btnet") or k not in _BRANCH_ARGUMENTS
    }


def load_frozen(module: FaceModel, state: dict[str, Tensor], source: str) -> None:
    """Load ``state`` strictly into ``module`` and freeze it (no gradients; the stage keeps it in eval mode)."""
    load_state_dict_checked(module, state, source)
    module.requires_grad_(False)
    module.eval()
