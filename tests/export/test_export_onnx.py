"""ONNX export: dynamic batch, parity with onnxruntime, metadata, baked preprocessing, AveragePool."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from mrface.export.exporter import synthface_images
from mrface.export.onnx import read_onnx_metadata
from mrface.export.session import ort_session


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def graph_op_types(path) -> set[str]:
    """Node types of an ONNX file's main graph, read with the onnx package."""
    return {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}


def torch_embedding(model, x: torch.Tensor, r: int) -> np.ndarray:
    with torch.inference_mode():
        return model(x, resolution=r).numpy()


def test_every_path_exported_and_parity_reported(float_export, btnet):
    assert [g.spec.resolution for g in float_export.graphs] == [112, 28, 14, 7]
    assert [g.spec.kind for g in float_export.graphs] == ["trunk", "branch", "branch", "branch"]
    for g in float_export.graphs:
        assert g.path.is_file()
        assert g.parity.passed
        assert [b.batch for b in g.parity.batches] == [1, 7, 64]
        assert g.parity.min_cosine >= 0.9999
        assert g.parity.max_abs < 1e-3 and g.parity.max_rel < 1e-4


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_graph_matches_pytorch_at_batch(float_export, btnet, batch):
    """Independent of the exporter's own check: fresh faces (another SynthFace seed), every path."""
    rgb = synthface_images(64, seed=3)[:batch]
    for g in float_export.graphs:
        r = g.spec.resolution
        x = btnet.preprocess(rgb, size=r)
        out = ort_session(g.path, threads=2).run(["embedding"], {"input": x.numpy()})[0]
        ref = torch_embedding(btnet, x, r)
        assert out.shape == (batch, btnet.embedding_size)
        assert cosine(out, ref).min() >= 0.9999, (r, batch)
        assert np.abs(out - ref).max() < 1e-3


def test_batch_axis_is_symbolic_and_opset(float_export):
    for g in float_export.graphs:
        proto = onnx.load(str(g.path))
        dims = proto.graph.input[0].type.tensor_type.shape.dim
        assert dims[0].dim_param and not dims[0].dim_value
        assert [d.dim_value for d in dims[1:]] == [3, g.spec.resolution, g.spec.resolution]
        assert [o.name for o in proto.graph.output] == ["embedding"]
        assert max(op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")) >= 17


def test_branch_graph_uses_branch_batchnorm_copies(float_export, btnet):
    """With branch_bn the 28 px path must use its own tail BN copies, not the trunk's."""
    g = next(g for g in float_export.graphs if g.spec.resolution == 28)
    x = btnet.preprocess(synthface_images(4, seed=5), size=28)
    out = ort_session(g.path, threads=2).run(["embedding"], {"input": x.numpy()})[0]
    branch = btnet.branch(28)
    with torch.inference_mode():
        wrong = btnet.trunk(branch(x), start_unit=branch.implant_unit + 1).numpy()
    assert cosine(out, wrong).min() < 0.9999
    assert cosine(out, torch_embedding(btnet, x, 28)).min() >= 0.9999


def test_metadata_round_trip(float_export, u8_export, btnet):
    for g in float_export.graphs + u8_export.graphs:
        meta, spec = read_onnx_metadata(g.path)
        assert meta == btnet.metadata
        assert spec == g.spec
        props = {p.key: p.value for p in onnx.load(str(g.path), load_external_data=False).metadata_props}
        assert props["color_order"] == btnet.metadata.color_order
        assert json.loads(props["mean"]) == list(btnet.metadata.mean)
        assert json.loads(props["std"]) == list(btnet.metadata.std)
        assert int(props["branch_resolution"]) == g.spec.resolution
        assert int(props["input_size"]) == g.spec.input_size
    manifest = json.loads(float_export.manifest.read_text())
    assert [e["file"] for e in manifest["graphs"]] == [g.path.name for g in float_export.graphs]
    assert manifest["model"] == json.loads(btnet.metadata.to_json())
    assert all(e["parity"]["passed"] for e in manifest["graphs"])


def test_baked_preprocessing_trunk_matches_pytorch_preprocess(u8_export, btnet, faces):
    g = next(g for g in u8_export.graphs if g.spec.resolution == 112)
    bgr = np.ascontiguousarray(faces[:7, :, :, ::-1])
    emb, norm = ort_session(g.path, threads=2).run(["embedding", "norm"], {"input": bgr})
    ref = torch_embedding(btnet, btnet.preprocess(bgr, color_order="BGR"), 112)
    assert cosine(emb, ref).min() >= 0.9999
    np.testing.assert_allclose(norm[:, 0], np.linalg.norm(ref, axis=1), rtol=1e-4)
    # The colour swap is real: feeding RGB to the BGR graph changes the embedding.
    swapped = ort_session(g.path, threads=2).run(["embedding"], {"input": np.ascontiguousarray(faces[:7])})[0]
    assert cosine(swapped, ref).min() < 0.9999


def test_baked_preprocessing_branch_degrades_with_averagepool(u8_export, btnet, faces):
    g = next(g for g in u8_export.graphs if g.spec.resolution == 14)
    assert g.spec.input_size == 112 and g.spec.degrade_factor == 8
    ops = graph_op_types(g.path)
    assert "AveragePool" in ops and "Resize" not in ops
    bgr = np.ascontiguousarray(faces[:7, :, :, ::-1])
    emb = ort_session(g.path, threads=2).run(["embedding"], {"input": bgr})[0]
    # Exact semantics: normalise, then an 8x8 box filter.
    ref = torch_embedding(btnet, F.avg_pool2d(btnet.preprocess(bgr, color_order="BGR"), 8), 14)
    assert cosine(emb, ref).min() >= 0.9999
    # Same as the PyTorch route through cv2 INTER_AREA on uint8 (which rounds to 8 bits first).
    via_cv2 = torch_embedding(btnet, btnet.preprocess(faces[:7], size=14), 14)
    assert cosine(emb, via_cv2).min() >= 0.999


def test_trunk_graph_has_no_pooling_added(u8_export):
    g = next(g for g in u8_export.graphs if g.spec.resolution == 112)
    assert "AveragePool" not in graph_op_types(g.path)
