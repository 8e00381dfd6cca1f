"""Our logic around TensorRT, tested without TensorRT: profiles, precision rules, calibration
batching and feed, engine metadata, and the embedder's routing/splitting (with stand-in engines)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

import mrface.export.tensorrt.engine as trt_module
from mrface.cli import main
from mrface.export.calibration import CalibrationBatches, load_face_folder, synthface_calibration
from mrface.export.errors import ExportError
from mrface.export.paths import resolution_path
from mrface.export.spec import GraphSpec
from mrface.export.tensorrt import TensorRTEmbedder
from mrface.export.tensorrt.calibration import CalibratorFeed, make_calibrator
from mrface.export.tensorrt.config import BatchProfile, EngineBuildConfig, build_mode
from mrface.export.tensorrt.metadata import (
    EngineMetadata,
    check_compatible,
    metadata_path,
    read_engine_metadata,
    write_engine_metadata,
)
from mrface.models import MultiResolutionFaceModel

FLOAT28 = GraphSpec(name="m_r28", resolution=28, kind="branch")
U8_14 = GraphSpec(
    name="m_r14_u8", resolution=14, kind="branch", input_format="uint8_nhwc", input_size=112, input_color_order="BGR"
)


# --------------------------------------------------------------------------------------- profiles
def test_profile_shapes_follow_the_graph_input():
    p = BatchProfile(1, 8, 64)
    assert p.shapes(FLOAT28) == ((1, 3, 28, 28), (8, 3, 28, 28), (64, 3, 28, 28))
    assert p.shapes(U8_14) == ((1, 112, 112, 3), (8, 112, 112, 3), (64, 112, 112, 3))


@pytest.mark.parametrize(("lo", "opt", "hi"), [(0, 1, 2), (4, 2, 8), (1, 9, 8)])
def test_profile_rejects_unordered(lo, opt, hi):
    with pytest.raises(ExportError, match="need 1 <= min <= opt <= max"):
        BatchProfile(lo, opt, hi)


def test_profile_check_batch():
    p = BatchProfile(2, 4, 8)
    p.check_batch(2)
    p.check_batch(8)
    with pytest.raises(ExportError, match=r"batch 9 outside .* \[2, 8\]"):
        p.check_batch(9, "x.engine")


def test_build_config_validation():
    with pytest.raises(ExportError, match="precision='int4'"):
        EngineBuildConfig(precision="int4")
    with pytest.raises(ExportError, match="calibrator='percentile'"):
        EngineBuildConfig(calibrator="percentile")
    with pytest.raises(ExportError, match="calibration_batch=128"):
        EngineBuildConfig(precision="int8", calibration_batch=128, profile=BatchProfile(1, 8, 64))
    assert EngineBuildConfig(precision="fp16").min_cosine == 0.999
    assert EngineBuildConfig(precision="int8").min_cosine == 0.99


def test_precision_rules_by_tensorrt_version():
    for precision in ("fp32", "fp16", "int8"):
        build_mode(precision, "fp32", "10.3.0")
    build_mode("fp32", "fp32", "11.1.0")
    with pytest.raises(ExportError, match="TensorRT 11 removed"):
        build_mode("fp16", "fp32", "11.1.0")
    with pytest.raises(ExportError, match="TensorRT 8.6.1"):
        build_mode("fp32", "fp32", "8.6.1")


@pytest.mark.parametrize(
    ("precision", "graph", "version", "mode"),
    [
        ("fp16", "fp16", "11.1.0", "strong"),  # TensorRT 11: FP16 and Q/DQ graphs build strongly typed
        ("int8", "int8", "11.0.0", "strong"),
        ("fp32", "fp32", "11.0.0", "strong"),  # TensorRT 11 has no weak typing at all
        ("fp16", "fp16", "10.3.0", "strong"),  # TensorRT 10 can take the same strongly typed route
        ("int8", "int8", "10.3.0", "strong"),
        ("fp32", "fp32", "10.3.0", "flags"),
        ("fp16", "fp32", "10.3.0", "flags"),  # ... or its builder flags on a float32 graph
        ("int8", "fp32", "10.3.0", "flags"),
    ],
)
def test_build_mode(precision, graph, version, mode):
    assert build_mode(precision, graph, version) == mode


def test_build_mode_refusals():
    with pytest.raises(ExportError, match="--precision int8"):
        build_mode("int8", "fp32", "11.0.0")
    with pytest.raises(ExportError, match="build it at fp16"):
        build_mode("int8", "fp16", "10.3.0")
    with pytest.raises(ExportError, match="strongly typed, at its own precision"):
        EngineBuildConfig(precision="fp32", graph_precision="int8")
    # A Q/DQ graph carries its own scales: no calibrator, so no calibration batch constraint.
    qdq = EngineBuildConfig(precision="int8", graph_precision="int8", calibration_batch=999)
    assert not qdq.needs_calibrator and qdq.to_dict()["graph_precision"] == "int8"
    assert EngineBuildConfig(precision="int8").needs_calibrator


# ------------------------------------------------------------------------------------ calibration
def test_calibration_batches_float(btnet):
    images = synthface_calibration(70)
    batches = CalibrationBatches(images, FLOAT28, btnet.metadata, 32)
    assert (len(batches), batches.dropped) == (2, 6)
    got = list(batches)
    assert [b.shape for b in got] == [(32, 3, 28, 28)] * 2 and all(b.dtype == np.float32 for b in got)
    np.testing.assert_allclose(got[1], btnet.preprocess(images[32:64], size=28).numpy(), rtol=0, atol=1e-6)
    assert len(list(batches)) == 2  # iterable again (TensorRT may calibrate twice)


def test_calibration_batches_uint8_bgr(btnet):
    images = synthface_calibration(8)
    (batch,) = list(CalibrationBatches(images, U8_14, btnet.metadata, 8))
    assert batch.dtype == np.uint8 and batch.shape == (8, 112, 112, 3)
    np.testing.assert_array_equal(batch, images[:, :, :, ::-1])


def test_calibration_needs_a_full_batch(btnet):
    with pytest.raises(ExportError, match="5 images cannot fill one batch of 8"):
        CalibrationBatches(synthface_calibration(5), FLOAT28, btnet.metadata, 8)


def test_synthface_calibration_differs_from_parity_images(faces):
    calib = synthface_calibration(8)
    assert calib.shape == (8, 112, 112, 3)
    assert not any(np.array_equal(c, f) for c in calib for f in faces[:8])


def test_load_face_folder(tmp_path):
    rgb = np.zeros((60, 50, 3), np.uint8)
    rgb[..., 0] = 200  # red in RGB
    (tmp_path / "sub").mkdir()
    cv2.imwrite(str(tmp_path / "a.png"), rgb[:, :, ::-1])
    cv2.imwrite(str(tmp_path / "sub" / "b.png"), np.full((150, 150, 3), 90, np.uint8))
    (tmp_path / "notes.txt").write_text("ignored")
    faces = load_face_folder(tmp_path)
    assert faces.shape == (2, 112, 112, 3) and faces.dtype == np.uint8
    assert faces[0, ..., 0].min() == 200 and faces[0, ..., 2].max() == 0
    assert load_face_folder(tmp_path, limit=1).shape[0] == 1
    (tmp_path / "c.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ExportError, match=r"c\.jpg: unreadable"):
        load_face_folder(tmp_path)


def test_load_face_folder_errors(tmp_path):
    with pytest.raises(ExportError, match="not a directory"):
        load_face_folder(tmp_path / "missing")
    with pytest.raises(ExportError, match="no images"):
        load_face_folder(tmp_path)


def test_calibrator_feed_serves_each_batch_then_stops(btnet, tmp_path):
    images = synthface_calibration(12)
    batches = CalibrationBatches(images, FLOAT28, btnet.metadata, 4)
    buffer = torch.full(batches.shape, float("nan"))
    feed = CalibratorFeed(batches, buffer, tmp_path / "calib.cache")
    expected = list(batches)
    for k in range(3):
        assert feed.next_pointers() == [buffer.data_ptr()]
        np.testing.assert_array_equal(buffer.numpy(), expected[k])
    assert feed.next_pointers() is None and feed.served == 3
    assert feed.batch_size() == 4
    assert feed.read_cache() is None
    feed.write_cache(b"table")
    assert feed.read_cache() == b"table"
    with pytest.raises(ExportError, match="calibration buffer"):
        CalibratorFeed(batches, torch.empty(4, 3, 14, 14), None)


@pytest.mark.parametrize(
    ("kind", "base"), [("entropy", "IInt8EntropyCalibrator2"), ("minmax", "IInt8MinMaxCalibrator")]
)
def test_make_calibrator_subclasses_the_documented_class_and_serves_the_feed(btnet, tmp_path, kind, base):
    """A stand-in ``tensorrt`` module with the two documented calibrator base classes."""

    class Base:
        def __init__(self) -> None:
            self.base_initialised = True

    fake_trt = type(
        "trt", (), {"IInt8EntropyCalibrator2": type("E", (Base,), {}), "IInt8MinMaxCalibrator": type("M", (Base,), {})}
    )
    batches = CalibrationBatches(synthface_calibration(8), FLOAT28, btnet.metadata, 4)
    buffer = torch.empty(batches.shape)
    calibrator = make_calibrator(fake_trt, CalibratorFeed(batches, buffer, tmp_path / "c.cache"), kind)
    assert isinstance(calibrator, getattr(fake_trt, base)) and calibrator.base_initialised
    assert calibrator.get_batch_size() == 4
    assert calibrator.get_batch(["input"]) == [buffer.data_ptr()]
    assert calibrator.get_batch(["input"]) == [buffer.data_ptr()]
    assert calibrator.get_batch(["input"]) is None
    assert calibrator.read_calibration_cache() is None
    calibrator.write_calibration_cache(memoryview(b"scales"))
    assert (tmp_path / "c.cache").read_bytes() == b"scales" == calibrator.read_calibration_cache()


# ------------------------------------------------------------------------------- engine metadata
def _engine_meta(btnet) -> EngineMetadata:
    return EngineMetadata(
        engine_file="m_r28.engine",
        onnx_file="m_r28.onnx",
        onnx_sha256="ab" * 32,
        spec=FLOAT28,
        model=btnet.metadata,
        precision="fp16",
        profile=BatchProfile(1, 8, 64),
        tensorrt_version="10.3.0",
        device_name="NVIDIA H100",
        build=EngineBuildConfig().to_dict(),
    )


def test_engine_metadata_round_trip(btnet, tmp_path):
    meta = _engine_meta(btnet)
    path = write_engine_metadata(tmp_path / "m_r28.engine", meta)
    assert path == metadata_path(tmp_path / "m_r28.engine") and path.name == "m_r28.engine.json"
    assert read_engine_metadata(tmp_path / "m_r28.engine") == meta


def test_engine_metadata_errors(btnet, tmp_path):
    with pytest.raises(ExportError, match="no engine metadata"):
        read_engine_metadata(tmp_path / "x.engine")
    (tmp_path / "x.engine.json").write_text('{"format": "other"}')
    with pytest.raises(ExportError, match="not an mrface-trt-engine/1 file"):
        read_engine_metadata(tmp_path / "x.engine")
    meta = _engine_meta(btnet)
    check_compatible(meta, "10.3.1", "NVIDIA H100")
    with pytest.raises(ExportError, match="built with TensorRT 10.3.0, this is 10.5.0"):
        check_compatible(meta, "10.5.0", "NVIDIA H100")
    with pytest.raises(ExportError, match="built for GPU 'NVIDIA H100'"):
        check_compatible(meta, "10.3.0", "NVIDIA L4")


# ------------------------------------------------------------------------------------- embedder
class StandInEngine:
    """An engine stand-in running the deployable PyTorch path; records each batch size it got."""

    def __init__(self, module: torch.nn.Module, max_batch: int) -> None:
        self.module, self.max_batch, self.device, self.batches = module, max_batch, torch.device("cpu"), []

    def run(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[0] <= self.max_batch
        self.batches.append(int(x.shape[0]))
        with torch.inference_mode():
            return self.module(x)


def test_embedder_routes_and_splits_like_multires(btnet, faces):
    from test_export_runner import mixed_faces

    images = mixed_faces(faces) + mixed_faces(faces[16:], seed=1)
    engines = {r: StandInEngine(resolution_path(btnet, r), max_batch=3) for r in btnet.resolutions}
    emb, branches = TensorRTEmbedder(engines, btnet.metadata, strategy="near")(images)
    with torch.inference_mode():
        ref = MultiResolutionFaceModel(btnet, strategy="near")(images)
    assert branches == ref.branches
    torch.testing.assert_close(emb, ref.embeddings, rtol=1e-4, atol=1e-4)
    for r, engine in engines.items():
        n = branches.count(r)
        assert sum(engine.batches) == n and max(engine.batches, default=0) <= 3
        assert len(engine.batches) == -(-n // 3)


def test_embedder_validation(btnet):
    with pytest.raises(ExportError, match="at least one engine"):
        TensorRTEmbedder({}, btnet.metadata)
    with pytest.raises(ValueError, match="indicator='area'"):
        TensorRTEmbedder({112: StandInEngine(torch.nn.Identity(), 4)}, btnet.metadata, indicator="area")


# ------------------------------------------------------------------------------- without TensorRT
def test_cli_tensorrt_without_tensorrt_says_so(tmp_path, monkeypatch, capsys):
    real = trt_module.importlib.util.find_spec
    monkeypatch.setattr(
        trt_module.importlib.util, "find_spec", lambda name, *a: None if name == "tensorrt" else real(name, *a)
    )
    code = main(["export", "--model", "btnet_tiny", "--format", "tensorrt", "--out", str(tmp_path / "o"), "--fp16"])
    assert code == 2
    assert "TensorRT is not installed" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
