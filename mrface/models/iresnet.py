"""iResNet face backbones with InsightFace's module names (REFERENCE.md §1).

An InsightFace ``arcface_torch`` iresnet ``state_dict`` loads into :class:`IResNet` with
``strict=True``: stem ``conv1``/``bn1``/``prelu``; stages ``layer1..layer4`` of
:class:`IBasicBlock` (``bn1 conv1 bn2 prelu conv2 bn3`` + ``downsample.0/.1``); head ``bn2`` ->
flatten -> ``dropout`` -> ``fc`` (C·7·7 -> E) -> ``features`` (BatchNorm1d, weight fixed at 1).

Beyond the InsightFace layout:

* ``input_size``: stage k (1..4) has stride 2 only when ``input_size`` is a multiple of
  112, 56, 28, 14 (BTNet's rule), so 112/56/28/14/7 inputs all end at 7x7 (REFERENCE.md §2).
* ``widths``/``layers`` for tiny variants (``iresnet_tiny``: one block per stage, width 1/4).
* ``amp="fp16"|"bf16"``: autocast of the trunk, head (``fc``, ``features``) in float32.
* ``grad_checkpointing``: recompute each unit in backward (BatchNorm running statistics are then
  updated twice per step in training, as in timm; outputs and gradients are unchanged).
* ``channels_last``: works as is (``model.to(memory_format=torch.channels_last)``).
* ``num_units``: build only the first units (stem = unit 0, then one unit per block) and no head;
  BTNet branches are such truncated networks, so their state-dict names match the full one's.
* ``shortcut="subsample"`` and ``head_affine=False``: AdaFace's IR-net variant (a 1x1 stride-2
  max-pool shortcut where channels do not change; head BatchNorms without affine parameters).

Forward: ``x`` (N, 3, S, S) float -> (N, E) un-normalised embedding (or, truncated, the feature
map after the last unit). ``forward(x, start_unit=k)`` runs from unit k: ``x`` is then the
feature map that unit k expects (BTNet implants branch outputs this way).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from mrface.models.base import FaceModel, UnitStructure, amp_dtype_from, float32_region, trunk_autocast
from mrface.models.registry import register_model

STAGE_WIDTHS = (64, 128, 256, 512)
DEPTHS = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
    200: (6, 26, 60, 6),
}
FINAL_SIZE = 7
VALID_INPUT_SIZES = (7, 14, 28, 56, 112)


def stage_strides(input_size: int, num_stages: int = 4) -> list[int]:
    """Stride of each stage: 2 iff ``input_size`` is a multiple of 7·2^(num_stages-k) (k = 0-based stage).

    ``stage_strides(112) == [2, 2, 2, 2]``, ``stage_strides(28) == [1, 1, 2, 2]``, ``stage_strides(7) == [1] * 4``.
    """
    if input_size not in VALID_INPUT_SIZES:
        raise ValueError(f"input_size={input_size}: expected one of {VALID_INPUT_SIZES} (the net ends at 7x7)")
    return [2 if input_size % (FINAL_SIZE << (num_stages - k)) == 0 else 1 for k in range(num_stages)]


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class IBasicBlock(nn.Module):
    """bn1 -> conv1 (3x3) -> bn2 -> prelu -> conv2 (3x3, stride) -> bn3, plus shortcut; no final activation.

    x: (N, inplanes, H, W) -> (N, planes, H/stride, W/stride).
    """

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-5)
        self.conv1 = conv3x3(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
        self.prelu = nn.PReLU(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity


class IResNet(UnitStructure, FaceModel):
    """iResNet trunk (see module docstring). x: (N, 3, input_size, input_size) -> (N, embedding_size)."""

    def __init__(
        self,
        layers: Sequence[int],
        widths: Sequence[int] = STAGE_WIDTHS,
        *,
        embedding_size: int = 512,
        dropout: float = 0.0,
        input_size: int = 112,
        amp: str | None = None,
        grad_checkpointing: bool = False,
        num_units: int | None = None,
        shortcut: str = "conv",
        head_affine: bool = True,
        zero_init_residual: bool = False,
    ):
        super().__init__()
        layers, widths = [int(n) for n in layers], [int(w) for w in widths]
        if len(layers) != 4 or len(widths) != 4 or min(layers) < 1 or min(widths) < 1:
            raise ValueError(f"layers and widths must be 4 positive ints, got layers={layers} widths={widths}")
        if shortcut not in ("conv", "subsample"):
            raise ValueError(f"shortcut={shortcut!r}: expected 'conv' (InsightFace) or 'subsample' (AdaFace)")
        total_units = 1 + sum(layers)
        if num_units is not None and not 1 <= num_units <= total_units:
            raise ValueError(f"num_units={num_units}: expected 1..{total_units}")
        self.layers, self.widths = layers, widths
        self.config = dict(
            layers=layers,
            widths=widths,
            embedding_size=embedding_size,
            dropout=dropout,
            amp=amp,
            grad_checkpointing=grad_checkpointing,
            shortcut=shortcut,
            head_affine=head_affine,
        )
        self.input_size = input_size
        self.embedding_size = embedding_size
        self.amp_dtype = amp_dtype_from(amp)
        self.grad_checkpointing = grad_checkpointing
        self.truncated = num_units is not None
        build = total_units if num_units is None else num_units
        strides = stage_strides(input_size)

        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0], eps=1e-5)
        self.prelu = nn.PReLU(widths[0])
        self.unit_names = ["stem"]
        self.unit_strides = [1]
        inplanes, built = widths[0], 1
        for s, (depth, planes, stride) in enumerate(zip(layers, widths, strides, strict=True)):
            if built >= build:
                break
            blocks = []
            for b in range(depth):
                if built >= build:
                    break
                block_stride = stride if b == 0 else 1
                downsample = None
                if block_stride != 1 or inplanes != planes:
                    if shortcut == "subsample" and inplanes == planes:
                        downsample = nn.MaxPool2d(1, block_stride)
                    else:
                        downsample = nn.Sequential(
                            conv1x1(inplanes, planes, block_stride), nn.BatchNorm2d(planes, eps=1e-5)
                        )
                blocks.append(IBasicBlock(inplanes, planes, block_stride, downsample))
                inplanes = planes
                self.unit_names.append(f"layer{s + 1}.{b}")
                self.unit_strides.append(block_stride)
                built += 1
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))

        if not self.truncated:
            self.bn2 = nn.BatchNorm2d(widths[3], eps=1e-5, affine=head_affine)
            self.dropout = nn.Dropout(p=dropout)
            self.fc = nn.Linear(widths[3] * FINAL_SIZE * FINAL_SIZE, embedding_size)
            self.features = nn.BatchNorm1d(embedding_size, eps=1e-5, affine=head_affine)
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.1)
            elif isinstance(m, nn.BatchNorm2d) and m.affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            if zero_init_residual and isinstance(m, IBasicBlock):
                nn.init.zeros_(m.bn3.weight)
        if not self.truncated and self.features.affine:
            nn.init.ones_(self.features.weight)
            self.features.weight.requires_grad = False

    # ------------------------------------------------------------------------------- structure
    def module_unit(self, name: str) -> int | None:
        """Unit index that submodule ``name`` belongs to (0 = stem), or None for the head."""
        top = name.split(".")[0]
        if top in ("conv1", "bn1", "prelu"):
            return 0
        if top.startswith("layer"):
            return self.unit_names.index(".".join(name.split(".")[:2]))
        return None

    def make_branch(self, input_size: int, num_units: int) -> IResNet:
        """Same architecture built for ``input_size`` with only the first ``num_units`` units (a BTNet branch)."""
        return IResNet(**self.config, input_size=input_size, num_units=num_units)

    def _units(self) -> list[nn.Module]:
        units: list[nn.Module] = [self._stem]  # type: ignore[list-item]
        for s in range(4):
            units.extend(getattr(self, f"layer{s + 1}", ()))
        return units

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(self.bn1(self.conv1(x)))

    # --------------------------------------------------------------------------------- forward
    def forward_units(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Run units ``[start, stop)`` (stem = 0) under the model's autocast setting."""
        units = self._units()[start:stop]
        use_ckpt = self.grad_checkpointing and self.training and torch.is_grad_enabled()
        with trunk_autocast(x, self.amp_dtype):
            for unit in units:
                x = checkpoint(unit, x, use_reentrant=False) if use_ckpt else unit(x)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, 7, 7) feature map -> (N, E) embedding; ``fc`` and ``features`` run in float32."""
        with trunk_autocast(x, self.amp_dtype):
            x = self.dropout(torch.flatten(self.bn2(x), 1))
        with float32_region(x):
            return self.features(self.fc(x.float()))

    def forward(self, x: torch.Tensor, start_unit: int = 0) -> torch.Tensor:
        if start_unit == 0:
            self.check_input(x)
        x = self.forward_units(x, start_unit)
        return x if self.truncated else self.forward_head(x)


def iresnet(
    depth: int | None = None,
    *,
    layers: Sequence[int] | None = None,
    width: float = 1.0,
    **kwargs,
) -> IResNet:
    """Build an iResNet by depth (18/34/50/100/200) or explicit ``layers``, widths 64·width etc."""
    if (depth is None) == (layers is None):
        raise ValueError("give exactly one of depth (18/34/50/100/200) or layers (4 block counts)")
    if depth is not None:
        if depth not in DEPTHS:
            raise ValueError(f"depth={depth}: expected one of {sorted(DEPTHS)}")
        layers = DEPTHS[depth]
    if width <= 0:
        raise ValueError(f"width={width}: expected a positive multiplier")
    widths = [max(1, int(round(w * width))) for w in STAGE_WIDTHS]
    return IResNet(layers, widths, **kwargs)


# ------------------------------------------------------------------------------ registrations
TINY = dict(layers=(1, 1, 1, 1), width=0.25, embedding_size=128)  # iresnet_tiny: trains on a CPU


def _register_iresnet(depth: int) -> None:
    @register_model(f"iresnet{depth}", description=f"InsightFace iResNet-{depth}, 512-d")
    def factory(**kwargs: Any) -> FaceModel:
        return iresnet(depth, **kwargs)


for _depth in (18, 34, 50, 100, 200):
    _register_iresnet(_depth)


@register_model("iresnet_tiny", description="iResNet with 1 block/stage, width 1/4, 128-d: trains on a CPU")
def _iresnet_tiny(**kwargs: Any) -> FaceModel:
    return iresnet(**{**TINY, **kwargs})


def _register_adaface(depth: int) -> None:
    @register_model(f"adaface_ir{depth}", preprocessing="adaface", description=f"AdaFace IR-{depth} layout")
    def factory(**kwargs: Any) -> FaceModel:
        return iresnet(depth, **{"shortcut": "subsample", "head_affine": False, "dropout": 0.4, **kwargs})


for _depth in (18, 50, 100):
    _register_adaface(_depth)
