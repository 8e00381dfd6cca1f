"""MobileFaceNet (Chen et al. 2018) with InsightFace ``arcface_torch`` module names.

Layout (``scale=1``, ``blocks=(1, 4, 6, 2)`` is the paper's 0.99 M-parameter network with a 128-d
output; ``scale=2`` is InsightFace's ``mbf``): ``layers.0`` conv 3x3 s2 -> ``layers.1`` depthwise
-> ``layers.2`` bottleneck s2 -> ``layers.3`` residual bottlenecks -> ``layers.4`` s2 ->
``layers.5`` -> ``layers.6`` s2 -> ``layers.7`` -> head ``conv_sep`` (1x1 -> 512) ->
``features`` (GDC: 7x7 depthwise linear conv, flatten, Linear 512 -> E without bias, BatchNorm1d).

Like :class:`~mrface.models.iresnet.IResNet` it is *implantable* (units = ``layers.0..7``; the
four stride-2 layers follow the resolution rule of ``input_size``), so
``BTNet(MobileFaceNet(...))`` is the multi-resolution edge model. x: (N, 3, S, S) -> (N, E).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from mrface.models.base import FaceModel, UnitStructure, amp_dtype_from, float32_region, trunk_autocast
from mrface.models.iresnet import FINAL_SIZE, stage_strides
from mrface.models.registry import register_model


class ConvBlock(nn.Module):
    """Conv (no bias) -> BatchNorm -> PReLU, as ``layers.0/1/2``."""

    def __init__(self, in_c: int, out_c: int, kernel: int = 1, stride: int = 1, padding: int = 0, groups: int = 1):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_c, out_c, kernel, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_c),
            nn.PReLU(out_c),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class LinearBlock(nn.Module):
    """Conv (no bias) -> BatchNorm, no activation."""

    def __init__(self, in_c: int, out_c: int, kernel: int = 1, stride: int = 1, padding: int = 0, groups: int = 1):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_c, out_c, kernel, stride, padding, groups=groups, bias=False), nn.BatchNorm2d(out_c)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class DepthWise(nn.Module):
    """Inverted bottleneck: 1x1 expand to ``groups`` -> 3x3 depthwise (stride) -> 1x1 linear project."""

    def __init__(self, in_c: int, out_c: int, residual: bool = False, stride: int = 2, groups: int = 1):
        super().__init__()
        self.residual = residual
        self.layers = nn.Sequential(
            ConvBlock(in_c, groups, 1),
            ConvBlock(groups, groups, 3, stride, 1, groups=groups),
            LinearBlock(groups, out_c, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        return x + out if self.residual else out


class Residual(nn.Module):
    """``num_block`` residual stride-1 bottlenecks."""

    def __init__(self, c: int, num_block: int, groups: int):
        super().__init__()
        self.layers = nn.Sequential(*[DepthWise(c, c, True, 1, groups) for _ in range(num_block)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class GDC(nn.Module):
    """Global depthwise conv head: (N, 512, 7, 7) -> (N, E)."""

    def __init__(self, embedding_size: int):
        super().__init__()
        self.layers = nn.Sequential(
            LinearBlock(512, 512, FINAL_SIZE, 1, 0, groups=512),
            nn.Flatten(),
            nn.Linear(512, embedding_size, bias=False),
            nn.BatchNorm1d(embedding_size),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class MobileFaceNet(UnitStructure, FaceModel):
    """MobileFaceNet; see module docstring. ``num_units`` builds a truncated (branch) network without head."""

    def __init__(
        self,
        *,
        embedding_size: int = 128,
        blocks: Sequence[int] = (1, 4, 6, 2),
        scale: int = 1,
        input_size: int = 112,
        amp: str | None = None,
        num_units: int | None = None,
    ):
        super().__init__()
        blocks = [int(b) for b in blocks]
        if len(blocks) != 4 or min(blocks) < 1:
            raise ValueError(f"blocks must be 4 positive ints, got {blocks}")
        if num_units is not None and not 1 <= num_units <= 8:
            raise ValueError(f"num_units={num_units}: expected 1..8")
        self.config = dict(embedding_size=embedding_size, blocks=blocks, scale=scale, amp=amp)
        self.input_size = input_size
        self.embedding_size = embedding_size
        self.amp_dtype = amp_dtype_from(amp)
        self.truncated = num_units is not None
        s1, s2, s3, s4 = stage_strides(input_size)
        c = 64 * scale
        units: list[nn.Module] = [ConvBlock(3, c, 3, s1, 1)]
        if blocks[0] == 1:
            units.append(ConvBlock(c, c, 3, 1, 1, groups=64))
        else:
            units.append(Residual(c, blocks[0], groups=128))
        units += [
            DepthWise(c, c, stride=s2, groups=128),
            Residual(c, blocks[1], groups=128),
            DepthWise(c, 2 * c, stride=s3, groups=256),
            Residual(2 * c, blocks[2], groups=256),
            DepthWise(2 * c, 2 * c, stride=s4, groups=512),
            Residual(2 * c, blocks[3], groups=256),
        ]
        self.unit_strides = [s1, 1, s2, 1, s3, 1, s4, 1]
        keep = 8 if num_units is None else num_units
        self.layers = nn.ModuleList(units[:keep])
        self.unit_strides = self.unit_strides[:keep]
        self.unit_names = [f"layers.{i}" for i in range(keep)]
        if not self.truncated:
            self.conv_sep = ConvBlock(2 * c, 512, 1)
            self.features = GDC(embedding_size)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def module_unit(self, name: str) -> int | None:
        parts = name.split(".")
        return int(parts[1]) if parts[0] == "layers" and len(parts) > 1 else None

    def make_branch(self, input_size: int, num_units: int) -> MobileFaceNet:
        return MobileFaceNet(**self.config, input_size=input_size, num_units=num_units)

    def forward_units(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        with trunk_autocast(x, self.amp_dtype):
            for unit in list(self.layers)[start:stop]:
                x = unit(x)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        with float32_region(x):
            return self.features(self.conv_sep(x.float()))

    def forward(self, x: torch.Tensor, start_unit: int = 0) -> torch.Tensor:
        if start_unit == 0:
            self.check_input(x)
        x = self.forward_units(x, start_unit)
        return x if self.truncated else self.forward_head(x)


# ------------------------------------------------------------------------------ registrations
@register_model("mobilefacenet", description="MobileFaceNet (0.99 M params), 128-d")
def _mobilefacenet(**kwargs: Any) -> FaceModel:
    return MobileFaceNet(**kwargs)


@register_model("mbf", description="InsightFace MobileFaceNet (scale 2), 512-d")
def _mbf(**kwargs: Any) -> FaceModel:
    return MobileFaceNet(**{"scale": 2, "embedding_size": 512, **kwargs})
