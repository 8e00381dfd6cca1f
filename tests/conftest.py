"""Shared pytest configuration: GPU tests skip without CUDA; Triton-interpreter tests need triton."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

# Without a GPU, Triton kernels can only run interpreted; the flag must be set before any
# @triton.jit function is defined, i.e. before mrface.kernels modules are imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    no_cuda = pytest.mark.skip(reason="needs a CUDA device")
    no_triton = pytest.mark.skip(reason="needs the triton package")
    # On a GPU machine Triton runs compiled; its kernels are tested there by the gpu-marked tests.
    compiled_triton = pytest.mark.skip(reason="TRITON_INTERPRET is off (GPU machine): covered by gpu tests")
    have_triton = importlib.util.find_spec("triton") is not None
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(no_cuda)
        if "triton_interpreter" in item.keywords and not have_triton:
            item.add_marker(no_triton)
        elif "triton_interpreter" in item.keywords and not interpreted:
            item.add_marker(compiled_triton)


@pytest.fixture
def generator() -> torch.Generator:
    """A freshly seeded CPU generator per test."""
    return torch.Generator().manual_seed(0)
