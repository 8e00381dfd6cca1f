"""FP16 graphs: a float32 mrface graph -> a strongly typed FP16 graph with float32 islands.

Conversion uses ONNX Runtime's converter (``onnxruntime.transformers.float16``, the
onnxconverter-common algorithm): every float tensor and initializer becomes float16 and Cast
nodes are inserted where a float32 node meets a float16 one, so each tensor has one declared type
and TensorRT 11 can build the graph as a strongly typed network (no precision flags).

Kept in float32 (the block list), for accuracy where FP16 loses it and the cost is nil:

* the **input adapter**: every node before the first ``Conv`` (uint8 -> float cast, colour swap,
  ``x * scale + shift`` normalisation, in-graph ``AveragePool`` degradation);
* the **embedding norm** (``ReduceL2`` of the ``norm`` output; a sum of E squares can overflow FP16).

I/O: float32 input/outputs by default (Casts at the edges), or float16 with ``io_dtype="float16"``
(a uint8 input stays uint8). The result is topologically sorted and passes ``onnx.checker``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mrface.export.errors import ExportError

#: Op types always kept in float32 (see module docstring).
FP32_OPS = ("ReduceL2",)


def input_adapter_nodes(graph: Any) -> list[str]:
    """Names of the nodes before the first ``Conv`` (graph order is topological in exported files)."""
    names = []
    for node in graph.node:
        if node.op_type == "Conv":
            return names
        names.append(node.name)
    raise ExportError("fp16 conversion: the graph has no Conv node; not an mrface face model graph")


def float32_tensors(proto: Any, ops: tuple[str, ...]) -> set[str]:
    """Outputs of the nodes the block list keeps in float32 (their type is float32 by construction)."""
    return {o for n in proto.graph.node if n.op_type in ops for o in n.output}


def _drop_cast_round_trips(proto: Any, float32: set[str]) -> None:
    """Cast(fp16) -> Cast(fp32) after a float32 node becomes one Identity (no rounding of the norm output).

    The converter makes every graph output float16 inside and casts it back at the edge, which would
    round the float32 ``norm`` to FP16 precision on its way out.
    """
    from onnx import TensorProto

    producers = {o: n for n in proto.graph.node for o in n.output}
    consumers: dict[str, int] = {}
    for n in proto.graph.node:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1
    dead = []
    for node in proto.graph.node:
        if node.op_type != "Cast" or node.attribute[0].i != TensorProto.FLOAT:
            continue
        first = producers.get(node.input[0])
        if first is None or first.op_type != "Cast" or first.attribute[0].i != TensorProto.FLOAT16:
            continue
        if first.input[0] not in float32:
            continue
        node.op_type = "Identity"
        del node.attribute[:]
        node.input[0] = first.input[0]
        if consumers.get(first.output[0], 0) == 1 and first.output[0] not in {o.name for o in proto.graph.output}:
            dead.append(first)
    for node in dead:
        proto.graph.node.remove(node)


def convert_fp16(src: str | Path, dst: str | Path, io_dtype: str = "float32") -> Path:
    """Write the FP16 version of float32 graph ``src`` to ``dst`` (see module docstring); returns ``dst``."""
    import onnx

    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
        from onnxruntime.transformers.onnx_model import OnnxModel
    except ImportError:
        raise ExportError("fp16 export needs onnxruntime's transformers tools: pip install onnxruntime") from None
    if io_dtype not in ("float32", "float16"):
        raise ExportError(f"io_dtype={io_dtype!r}: expected float32 or float16")
    proto = onnx.load(str(src))
    for node in proto.graph.node:  # the converter's block lists match node names: every node needs one
        if not node.name:
            raise ExportError(f"{src}: unnamed {node.op_type} node; expected an mrface-exported graph")
    half = convert_float_to_float16(
        proto,
        keep_io_types=io_dtype == "float32",
        op_block_list=list(FP32_OPS),
        node_block_list=input_adapter_nodes(proto.graph),
    )
    model = OnnxModel(half)
    model.topological_sort()  # the converter appends its Cast nodes at the end
    half = model.model
    _drop_cast_round_trips(half, float32_tensors(half, FP32_OPS))
    onnx.checker.check_model(half, full_check=True)
    onnx.save(half, str(dst))
    return Path(dst)
