"""Bad input gives clear errors; a failed parity check publishes nothing."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import mrface.export.exporter as exporter_module
from mrface.export.artefacts import MANIFEST, read_manifest, staged_output
from mrface.export.errors import ExportError, ParityError
from mrface.export.exporter import ExportOptions, export_model
from mrface.export.spec import GraphSpec


def test_training_mode_is_refused(btnet, tmp_path):
    btnet.train()
    try:
        with pytest.raises(ExportError, match=r"training mode.*model\.eval\(\)"):
            export_model(btnet, tmp_path / "out")
    finally:
        btnet.eval()
    assert not (tmp_path / "out").exists()


def test_unknown_branch_resolution(btnet, tmp_path):
    with pytest.raises(ExportError, match=r"resolutions \[20\].*\(112, 28, 14, 7\)"):
        export_model(btnet, tmp_path / "out", ExportOptions(resolutions=[28, 20]))
    assert not (tmp_path / "out").exists()


def test_output_dir_is_a_file(btnet, tmp_path):
    target = tmp_path / "taken"
    target.write_text("not a folder")
    with pytest.raises(ExportError, match="taken.*is a file; expected a directory"):
        export_model(btnet, target, ExportOptions(resolutions=[7]))
    assert target.read_text() == "not a folder"


def test_output_dir_below_a_file(btnet, tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ExportError, match="is a file; expected a directory"):
        export_model(btnet, tmp_path / "f" / "out", ExportOptions(resolutions=[7]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(resolution=28, kind="branch", input_size=100), "multiple"),
        (dict(resolution=28, kind="branch", input_size=14), "multiple"),
        (dict(resolution=28, kind="branch", opset=16), "opset=16"),
        (dict(resolution=28, kind="branch", input_format="uint8_nhwc", input_color_order="RGBA"), "RGBA"),
        (dict(resolution=28, kind="branch", input_format="float_nchw", input_color_order="BGR"), "uint8 input only"),
        (dict(resolution=28, kind="pathway"), "kind"),
    ],
)
def test_graph_spec_rejects_bad_options(kwargs, message):
    with pytest.raises(ExportError, match=message):
        GraphSpec(name="x", **kwargs)


def test_degrade_from_must_be_a_multiple_of_every_path(btnet, tmp_path):
    with pytest.raises(ExportError, match="input_size=100"):
        export_model(btnet, tmp_path / "out", ExportOptions(resolutions=[28], degrade_from=100))


def _corrupting(export_fn):
    """Wrap export_onnx so the written graph's largest weight is perturbed (a silently wrong export)."""

    def wrapped(graph, spec, metadata, path):
        export_fn(graph, spec, metadata, path)
        proto = onnx.load(str(path))
        init = max(proto.graph.initializer, key=lambda t: int(np.prod(t.dims)))
        w = numpy_helper.to_array(init)
        rng = np.random.default_rng(0)
        init.CopyFrom(numpy_helper.from_array((w + rng.normal(0, 3 * w.std(), w.shape)).astype(w.dtype), init.name))
        onnx.save(proto, str(path))
        return path

    return wrapped


def test_failed_parity_publishes_nothing(btnet, faces, tmp_path, monkeypatch):
    monkeypatch.setattr(exporter_module, "export_onnx", _corrupting(exporter_module.export_onnx))
    out = tmp_path / "out"
    with pytest.raises(ParityError, match="parity check failed") as info:
        export_model(btnet, out, ExportOptions(resolutions=[7], parity_images=faces, batch_sizes=(1, 7), threads=2))
    assert info.value.report is not None and not info.value.report.passed
    assert info.value.report.min_cosine < 0.9999
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no staging folder left behind
    with pytest.raises(ExportError, match="no manifest.json"):
        read_manifest(out)


def test_failed_publish_keeps_existing_folder(tmp_path):
    """An error inside the staging block leaves an earlier export untouched and no leftovers."""
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST).write_text('{"old": true}')
    (out / "a.onnx").write_text("old graph")
    with pytest.raises(RuntimeError), staged_output(out) as staging:
        (staging / "a.onnx").write_text("new graph")
        raise RuntimeError("parity failed")
    assert (out / "a.onnx").read_text() == "old graph"
    assert read_manifest(out) == {"old": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_publish_into_existing_folder_replaces_manifest_last(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST).write_text('{"old": true}')
    (out / "keep.txt").write_text("user file")
    with staged_output(out) as staging:
        (staging / "a.onnx").write_text("new graph")
        (staging / MANIFEST).write_text('{"new": true}')
    assert read_manifest(out) == {"new": True}
    assert (out / "a.onnx").read_text() == "new graph"
    assert (out / "keep.txt").read_text() == "user file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
