"""``GraphSpec``: what one exported graph expects and returns (stored in every artefact).

Input formats:

* ``float_nchw``: (N, 3, S, S) float32, already in the model's colour order and normalisation
  (what ``model.preprocess`` returns).
* ``uint8_nhwc``: (N, S, S, 3) uint8 pixels in ``input_color_order``; colour swap and
  ``(x / 255 - mean) / std`` run inside the graph ("baked preprocessing").

``input_size`` S is the side the graph accepts. When S > ``resolution`` the graph degrades the
input to the path's resolution itself with an S/r box filter (ONNX ``AveragePool``, what cv2
INTER_AREA does for integer factors), so S must be a multiple of the resolution.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from mrface.export.errors import ExportError
from mrface.models.metadata import COLOR_ORDERS

INPUT_FORMATS = ("float_nchw", "uint8_nhwc")
PRECISIONS = ("fp32", "fp16", "int8")
IO_DTYPES = ("float32", "float16")
INPUT_NAME = "input"


@dataclass(frozen=True)
class GraphSpec:
    """One exported resolution path.

    Attributes:
        name: file stem of the artefact (e.g. ``btnet_tiny_r28``).
        resolution: the path's resolution r (trunk: the model's input size).
        kind: ``"trunk"`` (BTNet trunk), ``"branch"`` (BTNet branch + shared tail) or ``"model"``.
        input_format: ``float_nchw`` or ``uint8_nhwc`` (see module docstring).
        input_size: side S of the graph input in pixels.
        input_color_order: channel order of uint8 input (``None`` for float input).
        outputs: ``("embedding",)`` or ``("embedding", "norm")``; embedding (N, E) float32,
            norm (N, 1) float32 = L2 norm of the un-normalised embedding.
        opset: ONNX opset of the graph.
        precision: arithmetic of the graph body: ``fp32``; ``fp16`` (strongly typed FP16, input
            adapter and norm output in float32); ``int8`` (QuantizeLinear/DequantizeLinear pairs).
        io_dtype: dtype of float input and of the outputs: ``float32``, or ``float16`` (fp16 only).
    """

    name: str
    resolution: int
    kind: str
    input_format: str = "float_nchw"
    input_size: int = 0
    input_color_order: str | None = None
    outputs: tuple[str, ...] = ("embedding",)
    opset: int = 18
    precision: str = "fp32"
    io_dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.kind not in ("trunk", "branch", "model"):
            raise ExportError(f"GraphSpec.kind={self.kind!r}: expected trunk, branch or model")
        if self.input_format not in INPUT_FORMATS:
            raise ExportError(f"input_format={self.input_format!r}: expected one of {INPUT_FORMATS}")
        size = self.input_size or self.resolution
        object.__setattr__(self, "input_size", int(size))
        if size < self.resolution or size % self.resolution:
            raise ExportError(
                f"input_size={size} for the {self.resolution}px path: must be the resolution or a multiple of it "
                "(the graph degrades by an integer box filter, ONNX AveragePool)"
            )
        if self.input_format == "uint8_nhwc":
            if self.input_color_order not in COLOR_ORDERS:
                raise ExportError(f"input_color_order={self.input_color_order!r}: expected one of {COLOR_ORDERS}")
        elif self.input_color_order is not None:
            raise ExportError("input_color_order applies to uint8 input only (float input is already preprocessed)")
        outputs = tuple(self.outputs)
        if outputs not in (("embedding",), ("embedding", "norm")):
            raise ExportError(f"outputs={outputs}: expected ('embedding',) or ('embedding', 'norm')")
        object.__setattr__(self, "outputs", outputs)
        if self.opset < 17:
            raise ExportError(f"opset={self.opset}: expected 17 or newer")
        if self.precision not in PRECISIONS:
            raise ExportError(f"precision={self.precision!r}: expected one of {PRECISIONS}")
        if self.io_dtype not in IO_DTYPES:
            raise ExportError(f"io_dtype={self.io_dtype!r}: expected one of {IO_DTYPES}")
        if self.io_dtype == "float16" and self.precision != "fp16":
            raise ExportError(f"io_dtype=float16 needs precision fp16 (got {self.precision})")

    @property
    def degrade_factor(self) -> int:
        """Box-filter factor applied inside the graph (1 = none)."""
        return self.input_size // self.resolution

    @property
    def input_dtype(self) -> str:
        """numpy dtype name of the graph input: ``uint8``, ``float16`` or ``float32``."""
        return "uint8" if self.input_format == "uint8_nhwc" else self.io_dtype

    def input_shape(self, batch: int) -> tuple[int, int, int, int]:
        """Shape of the graph input for ``batch`` faces."""
        s = self.input_size
        return (batch, 3, s, s) if self.input_format == "float_nchw" else (batch, s, s, 3)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "<string>") -> GraphSpec:
        try:
            data = json.loads(text)
            data["outputs"] = tuple(data["outputs"])
            return cls(**data)
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ExportError(f"{source}: not an mrface graph spec ({exc})") from None
