"""``DeployGraph``: a resolution path wrapped with its input adapter and named outputs.

``forward(x)`` with ``x`` shaped ``spec.input_shape(N)``:

1. uint8 NHWC input -> float NCHW, channel swap when ``input_color_order`` differs from the
   model's, and ``(x / 255 - mean) / std`` folded into one multiply-add (baked preprocessing);
2. when ``spec.input_size > spec.resolution``: ``avg_pool2d`` by the integer factor (exported as
   ONNX ``AveragePool``, which TensorRT supports; never an antialiased ``Resize``);
3. the path -> embedding (N, E); with ``"norm"`` in ``spec.outputs`` also (N, 1) L2 norm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mrface.export.spec import GraphSpec
from mrface.models.metadata import ModelMetadata


class DeployGraph(nn.Module):
    """See module docstring. ``path``: (N, 3, r, r) float -> (N, E) module from ``resolution_path``."""

    def __init__(self, path: nn.Module, spec: GraphSpec, metadata: ModelMetadata) -> None:
        super().__init__()
        self.path = path
        self.uint8 = spec.input_format == "uint8_nhwc"
        self.swap = self.uint8 and spec.input_color_order != metadata.color_order
        self.factor = spec.degrade_factor
        self.with_norm = "norm" in spec.outputs
        std = torch.tensor(metadata.std, dtype=torch.float32).view(1, 3, 1, 1)
        mean = torch.tensor(metadata.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * std), persistent=False)
        self.register_buffer("shift", -mean / std, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if self.uint8:
            x = x.permute(0, 3, 1, 2).to(torch.float32)
            if self.swap:
                x = x.flip(1)
            x = x * self.scale + self.shift
        if self.factor > 1:
            x = F.avg_pool2d(x, kernel_size=self.factor, stride=self.factor)
        embedding = self.path(x)
        if self.with_norm:
            return embedding, torch.linalg.vector_norm(embedding, dim=1, keepdim=True)
        return embedding
