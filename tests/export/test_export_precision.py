"""Reduced precision on CPU with onnxruntime: FP16 graphs (strongly typed, parity >= 0.9999) and INT8
Q/DQ graphs (Q/DQ nodes present, symmetric per-channel, mean cosine >= 0.995), refusal of a graph
calibrated on a broken set, calibration determinism, per-path routing of calibration crops."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, numpy_helper

from mrface.export.calibration import CalibrationBatches, path_calibration_faces
from mrface.export.errors import ExportError, ParityError
from mrface.export.exporter import ExportOptions, export_model, synthface_images
from mrface.export.onnx import read_onnx_metadata
from mrface.export.precision import convert_fp16
from mrface.export.quantize import quantize_int8
from mrface.export.session import ort_session


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def torch_embedding(model, x: torch.Tensor, r: int) -> np.ndarray:
    with torch.inference_mode():
        return model(x, resolution=r).numpy()


@pytest.fixture(scope="module")
def fp32_r28(btnet, faces, tmp_path_factory):
    """The 28 px path as a float32 graph (input for the lower-level conversion tests)."""
    out = tmp_path_factory.mktemp("p32") / "btnet"
    return export_model(
        btnet,
        out,
        ExportOptions(resolutions=[28], parity_images=faces, batch_sizes=(1, 16), threads=2, accuracy_pairs=0),
    ).graphs[0]


@pytest.fixture(scope="module")
def int8_export(btnet, faces, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "btnet"
    options = ExportOptions(
        resolutions=[28],
        precision="int8",
        parity_images=faces,
        batch_sizes=(1, 64),
        threads=2,
        calib_size=48,
        accuracy_pairs=20,
    )
    return export_model(btnet, out, options)


@pytest.fixture(scope="module")
def fp16_export(btnet, faces, tmp_path_factory):
    out = tmp_path_factory.mktemp("fp16") / "btnet"
    options = ExportOptions(
        resolutions=[14],
        precision="fp16",
        with_norm=True,
        parity_images=faces,
        batch_sizes=(1, 64),
        threads=2,
        accuracy_pairs=20,
    )
    return export_model(btnet, out, options)


def _initializers(proto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}


# ------------------------------------------------------------------------------------------ INT8
def test_int8_graph_has_qdq_nodes_and_runs(int8_export, btnet):
    g = int8_export.graphs[0]
    assert g.path.name == "btnet_tiny_r28_int8.onnx" and g.spec.precision == "int8"
    proto = onnx.load(str(g.path))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("QuantizeLinear") > 5 and ops.count("DequantizeLinear") > ops.count("QuantizeLinear")
    inits = _initializers(proto)
    producers = {o: n for n in proto.graph.node for o in n.output}
    for node in proto.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            zero = inits[node.input[2]]
            assert zero.dtype == np.int8 and not zero.any()  # symmetric INT8, as TensorRT requires
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    quantised = [c for c in convs if c.input[1] in producers and producers[c.input[1]].op_type == "DequantizeLinear"]
    # Rule: the first Conv and the embedding Gemm stay float; every other Conv takes a dequantised weight.
    assert convs[0] not in quantised and len(quantised) == len(convs) - 1
    gemm = next(n for n in proto.graph.node if n.op_type == "Gemm")
    assert gemm.input[1] in inits and inits[gemm.input[1]].dtype == np.float32
    for conv in quantised:  # per output channel: one scale per filter
        dq = producers[conv.input[1]]
        weight_q = inits[dq.input[0]]
        assert weight_q.dtype == np.int8 and inits[dq.input[1]].shape == (weight_q.shape[0],)
    # Runs, and an independent check against PyTorch on fresh faces.
    rgb = synthface_images(64, seed=3)
    x = btnet.preprocess(rgb, size=28)
    out = ort_session(g.path, threads=2).run(["embedding"], {"input": x.numpy()})[0]
    cos = cosine(out, torch_embedding(btnet, x, 28))
    assert cos.mean() >= 0.995 and cos.min() < 0.99999  # quantised: close, but not float32-exact


def test_int8_manifest_records_parity_accuracy_and_calibration(int8_export):
    manifest = json.loads(int8_export.manifest.read_text())
    assert manifest["precision"] == "int8"
    entry = manifest["graphs"][0]
    parity = entry["parity"]
    assert parity["criterion"] == "mean" and parity["threshold"] == 0.995 and parity["passed"]
    assert parity["mean_cosine"] >= 0.995 and parity["min_cosine"] <= parity["mean_cosine"]
    acc = entry["accuracy"]
    assert acc["pairs"] == 20 and acc["folds"] == 10 and 0 <= acc["accuracy"] <= 1
    assert acc["drop"] == pytest.approx(acc["accuracy_fp32"] - acc["accuracy"])
    quant = entry["quantization"]
    assert quant["method"] == "minmax" and quant["calibration"]["source"] == "synthface"
    assert quant["calibration"]["used"] == 48 and len(quant["float_layers"]) == 2
    assert entry["size_bytes"] == int8_export.graphs[0].path.stat().st_size
    _, spec = read_onnx_metadata(int8_export.graphs[0].path)
    assert spec.precision == "int8"


def test_broken_calibration_set_is_refused(btnet, faces, tmp_path):
    """Calibrating on blank crops gives activation ranges real faces overflow: the export must refuse."""
    blank = [np.full((28, 28, 3), 128, np.uint8)] * 40
    out = tmp_path / "out"
    options = ExportOptions(
        resolutions=[28],
        precision="int8",
        calib_images=blank,
        parity_images=faces,
        batch_sizes=(1, 64),
        threads=2,
        accuracy_pairs=0,
    )
    with pytest.raises(ParityError) as info:
        export_model(btnet, out, options)
    message = str(info.value)
    assert "28px path (int8)" in message and "mean cosine to PyTorch float32" in message
    figure = float(message.split("mean cosine to PyTorch float32 ")[1].split(" ")[0])
    assert figure < 0.995 and info.value.report.mean_cosine == pytest.approx(figure, abs=1e-5)
    assert not out.exists()


def test_calibration_is_deterministic_for_a_seed(fp32_r28, btnet, tmp_path):
    crops = [im for im in synthface_images(96, seed=7)]
    meta = btnet.metadata

    def quantise(seed: int, name: str) -> bytes:
        faces, _ = path_calibration_faces(crops, (112, 28, 14, 7), 28, 28, count=32, seed=seed, min_routed=32)
        quantize_int8(fp32_r28.path, tmp_path / name, CalibrationBatches(faces, fp32_r28.spec, meta, 16))
        return (tmp_path / name).read_bytes()

    first, again, other = quantise(1, "a.onnx"), quantise(1, "b.onnx"), quantise(2, "c.onnx")
    assert first == again
    scales = [
        {k: v for k, v in _initializers(onnx.load_from_string(b)).items() if k.endswith("_scale")}
        for b in (first, other)
    ]
    assert scales[0].keys() == scales[1].keys()
    assert any(not np.array_equal(scales[0][k], scales[1][k]) for k in scales[0])


def test_calibration_crops_routed_per_path():
    small = [np.full((20, 18, 3), i, np.uint8) for i in range(40)]  # max side 20 -> ceil -> the 28 px path
    large = [np.full((120, 110, 3), 100 + i, np.uint8) for i in range(10)]  # -> the 112 px path
    crops = small + large
    faces, info = path_calibration_faces(crops, (112, 28, 14, 7), 28, 28, count=100, min_routed=32)
    assert info == {"source": "routed", "routed": 40, "used": 40, "seed": 0}
    assert faces.shape == (40, 28, 28, 3) and sorted(faces[:, 0, 0, 0]) == list(range(40))
    # 10 routed to the 112 px path (< 32): every crop, resized, fills it up to count.
    faces, info = path_calibration_faces(crops, (112, 28, 14, 7), 112, 112, count=30, min_routed=32)
    assert info["source"] == "all resized" and info["routed"] == 10 and faces.shape == (30, 112, 112, 3)
    with pytest.raises(ExportError, match="calibration size 0"):
        path_calibration_faces(crops, (112, 28), 28, 28, count=0)


# ------------------------------------------------------------------------------------------ FP16
def test_fp16_graph_is_strongly_typed_fp16_with_fp32_edges(fp16_export):
    g = fp16_export.graphs[0]
    assert g.path.name == "btnet_tiny_r14_fp16.onnx"
    proto = onnx.load(str(g.path))
    inferred = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    assert inferred.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert {o.type.tensor_type.elem_type for o in inferred.graph.output} == {TensorProto.FLOAT}
    inits = _initializers(proto)
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    assert all(inits[c.input[1]].dtype == np.float16 for c in convs)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    types |= {v.name: v.type.tensor_type.elem_type for v in inferred.graph.output}
    norm = next(n for n in proto.graph.node if n.op_type == "ReduceL2")
    assert types[norm.input[0]] == TensorProto.FLOAT and types[norm.output[0]] == TensorProto.FLOAT
    assert types[convs[0].output[0]] == TensorProto.FLOAT16


def test_fp16_parity_against_pytorch(fp16_export, btnet):
    g = fp16_export.graphs[0]
    assert g.parity.passed and g.parity.criterion == "min" and g.parity.min_cosine >= 0.9999
    rgb = synthface_images(64, seed=4)
    x = btnet.preprocess(rgb, size=14)
    emb, norm = ort_session(g.path, threads=2).run(["embedding", "norm"], {"input": x.numpy()})
    ref = torch_embedding(btnet, x, 14)
    assert emb.dtype == np.float32 and cosine(emb, ref).min() >= 0.9999
    np.testing.assert_allclose(norm[:, 0], np.linalg.norm(emb.astype(np.float64), axis=1), rtol=1e-5)
    assert fp16_export.graphs[0].accuracy["pairs"] == 20


def test_fp16_io_option(fp32_r28, btnet, tmp_path):
    path = convert_fp16(fp32_r28.path, tmp_path / "io16.onnx", io_dtype="float16")
    proto = onnx.load(str(path))
    assert proto.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert proto.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert read_onnx_metadata(path)[0] == btnet.metadata  # metadata props survive the conversion
    x = btnet.preprocess(synthface_images(16, seed=6), size=28)
    emb = ort_session(path, threads=2).run(["embedding"], {"input": x.numpy().astype(np.float16)})[0]
    assert emb.dtype == np.float16
    assert cosine(emb, torch_embedding(btnet, x, 28)).min() >= 0.9999


def test_precision_option_errors(btnet, tmp_path):
    with pytest.raises(ExportError, match="fp16 I/O applies to precision fp16 only"):
        export_model(btnet, tmp_path / "o", ExportOptions(precision="int8", fp16_io=True))
    with pytest.raises(ExportError, match="precision='fp8'"):
        export_model(btnet, tmp_path / "o", ExportOptions(precision="fp8"))
    with pytest.raises(ExportError, match="calib_method='kl'"):
        export_model(btnet, tmp_path / "o", ExportOptions(precision="int8", calib_method="kl"))
    with pytest.raises(ExportError, match="calibration faces apply to precision int8 only"):
        export_model(btnet, tmp_path / "o", ExportOptions(precision="fp16", calib_dir=tmp_path))
    assert not (tmp_path / "o").exists()


def test_runner_serves_an_fp16_export(fp16_export, btnet, faces):
    import cv2

    from mrface.export.runner import OnnxFaceRunner

    small = [cv2.resize(f, (14, 14), interpolation=cv2.INTER_AREA) for f in faces[:9]]
    out = OnnxFaceRunner(fp16_export.out_dir, threads=2)(small)
    assert out.branches == [14] * 9 and out.embeddings.dtype == np.float32
    ref = torch_embedding(btnet, btnet.preprocess(np.stack(small), size=14), 14)
    assert cosine(out.embeddings, ref).min() >= 0.9999
