"""Shared fixtures for the export tests: one seeded btnet_tiny, SynthFace faces, and two exports.

Exports are module-expensive (~5-10 s per graph on 2 cores), so each export is made once per
session and shared by the tests that read it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnx", reason="export tests need the 'export' extra (onnx)")
pytest.importorskip("onnxruntime", reason="export tests need the 'export' extra (onnxruntime)")
pytest.importorskip("onnxscript", reason="export tests need onnxscript (torch.export-based ONNX exporter)")

from export_helpers import randomise_bn  # noqa: E402

from mrface.export.exporter import ExportOptions, export_model, synthface_images  # noqa: E402
from mrface.models import get_model  # noqa: E402


@pytest.fixture(scope="session")
def btnet() -> torch.nn.Module:
    """btnet_tiny (trunk 112 + branches 28/14/7, branch BN copies) in eval mode, seeded weights."""
    torch.manual_seed(0)
    model = get_model("btnet_tiny")
    randomise_bn(model, 1)
    return model.eval()


@pytest.fixture(scope="session")
def faces() -> np.ndarray:
    """64 SynthFace faces (64 identities), RGB uint8 (64, 112, 112, 3)."""
    return synthface_images(64)


@pytest.fixture(scope="session")
def float_export(btnet, faces, tmp_path_factory):
    """Every path of ``btnet`` as float-input graphs, parity-checked at batch 1, 7, 64."""
    out = tmp_path_factory.mktemp("float") / "btnet"
    return export_model(btnet, out, ExportOptions(parity_images=faces, threads=2, accuracy_pairs=0))


@pytest.fixture(scope="session")
def u8_export(btnet, faces, tmp_path_factory):
    """Trunk and 14 px branch with baked preprocessing: BGR uint8 112x112 input, norm output."""
    out = tmp_path_factory.mktemp("u8") / "btnet"
    options = ExportOptions(
        resolutions=[112, 14],
        uint8_input=True,
        input_color_order="BGR",
        degrade_from=112,
        with_norm=True,
        parity_images=faces,
        threads=2,
        accuracy_pairs=0,
    )
    return export_model(btnet, out, options)
