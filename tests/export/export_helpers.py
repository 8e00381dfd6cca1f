"""Helpers shared by the export tests."""

from __future__ import annotations

import torch


def randomise_bn(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial BatchNorm statistics/affine values, so BN folding or a wrong BN copy shows up."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
                if m.affine:
                    m.weight.copy_(1 + torch.randn(m.num_features, generator=g) * 0.1)
                    m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
