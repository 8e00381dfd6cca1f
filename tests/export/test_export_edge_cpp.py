"""The C++ edge core (deploy/cpp): builds without TensorRT, passes its self-test, and preprocesses
faces exactly like the Python runners (same csrc resize kernel). Slow: compiles a CMake project."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mrface.export.exporter import synthface_images
from mrface.models.branch_select import prepare_face
from mrface.models.metadata import ModelMetadata

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def edge_build(tmp_path_factory) -> Path:
    if shutil.which("cmake") is None or shutil.which("c++") is None:
        pytest.skip("needs cmake and a C++ compiler")
    build = tmp_path_factory.mktemp("edge")
    subprocess.run(["cmake", "-S", str(ROOT / "deploy" / "cpp"), "-B", str(build)], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build), "-j2"], check=True, capture_output=True)
    return build


def test_selftest_passes(edge_build):
    result = subprocess.run([str(edge_build / "mrface_edge_selftest")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "all checks passed" in result.stdout


@pytest.mark.parametrize(("size", "r"), [((37, 51), 28), ((20, 20), 28), ((130, 90), 112), ((9, 12), 7)])
def test_cpp_preprocessing_matches_python(edge_build, tmp_path, size, r):
    w, h = size
    face = cv2.resize(synthface_images(1)[0], (w, h), interpolation=cv2.INTER_AREA)
    ppm = tmp_path / "face.ppm"
    ppm.write_bytes(f"P6 {w} {h} 255\n".encode() + face.tobytes())
    out = tmp_path / "x.bin"
    subprocess.run([str(edge_build / "mrface_edge_selftest"), "--preprocess", str(ppm), str(r), str(out)], check=True)
    got = np.fromfile(out, dtype=np.float32).reshape(3, r, r)
    meta = ModelMetadata(architecture="x")  # insightface preset: RGB, mean 0.5, std 0.5
    ref = prepare_face(face, r, "bilinear", meta, "RGB")  # the shared routing's default resizer
    torch.testing.assert_close(torch.from_numpy(got), ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize(("precision", "io_dtype", "order"), [("int8", "float32", "RGB"), ("fp16", "float16", "BGR")])
def test_cpp_reads_engine_metadata_written_by_python(edge_build, tmp_path, precision, io_dtype, order):
    """The runner's metadata reader parses the <engine>.json Python writes (precision, I/O dtype)."""
    from mrface.export.spec import GraphSpec
    from mrface.export.tensorrt.config import BatchProfile, EngineBuildConfig
    from mrface.export.tensorrt.metadata import EngineMetadata, write_engine_metadata

    spec = GraphSpec(name=f"m_r14_{precision}", resolution=14, kind="branch", precision=precision, io_dtype=io_dtype)
    build = EngineBuildConfig(precision=precision, graph_precision=precision).to_dict()
    meta = EngineMetadata(
        engine_file="m.engine",
        onnx_file="m.onnx",
        onnx_sha256="ab" * 32,
        spec=spec,
        model=ModelMetadata(architecture="x", color_order=order),
        precision=precision,
        profile=BatchProfile(1, 8, 64),
        tensorrt_version="11.0.0",
        device_name="GPU",
        build=build,
    )
    write_engine_metadata(tmp_path / "m.engine", meta)
    result = subprocess.run(
        [str(edge_build / "mrface_edge_selftest"), "--engine-info", str(tmp_path / "m.engine")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.split() == [
        f"precision={precision}",
        f"io_dtype={io_dtype}",
        "input_format=float_nchw",
        "resolution=14",
        f"color_order={order}",
    ]
