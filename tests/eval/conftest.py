"""Tiny models and SynthFace data for the evaluation tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mrface.models import FaceModel, ModelMetadata


class PooledLinear(FaceModel):
    """(N, 3, S, S) -> 4x4 average pool -> linear -> (N, 8): cheap, deterministic, flip-sensitive."""

    embedding_size = 8

    def __init__(self, color_order: str = "BGR", seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.fc = torch.nn.Linear(48, 8)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(8, 48, generator=gen))
            self.fc.bias.copy_(torch.randn(8, generator=gen))
        self.metadata = ModelMetadata(architecture="pooled_linear", color_order=color_order, mean=(0.1, 0.2, 0.3),
                                      std=(0.5, 0.6, 0.7), embedding_size=8)  # fmt: skip
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.fc(F.adaptive_avg_pool2d(x, 4).flatten(1))


@pytest.fixture
def pooled_linear() -> PooledLinear:
    return PooledLinear()


@pytest.fixture(scope="session")
def synth_images() -> tuple[np.ndarray, np.ndarray]:
    """(images (60, 112, 112, 3) uint8 RGB, identities (60,)): 20 identities x 3 images."""
    from mrface.data.synthface import SynthFace

    ids = np.repeat(np.arange(20), 3)
    return SynthFace(seed=7).render(ids, np.tile(np.arange(3), 20)), ids
