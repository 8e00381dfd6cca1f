"""``mrface export``: run folder -> verified graphs; bad arguments -> exit 2 with a clear message."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from export_helpers import randomise_bn

from mrface.cli import main
from mrface.export.session import ort_session
from mrface.models import get_model, save_model


def _checkpoint(run: Path, step: int, seed: int, complete: bool = True) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = get_model("btnet_tiny")
    randomise_bn(model, seed)
    folder = run / "checkpoints" / f"step_{step:08d}"
    save_model(model.eval(), folder / "model.safetensors")
    if complete:
        (folder / "manifest.json").write_text(json.dumps({"step": step}))
    return model


def test_cli_exports_latest_complete_checkpoint(tmp_path, faces, capsys):
    run = tmp_path / "run"
    _checkpoint(run, 5, seed=5)
    latest = _checkpoint(run, 10, seed=10)
    _checkpoint(run, 20, seed=20, complete=False)  # killed mid-write: must be ignored
    out = tmp_path / "onnx"
    code = main(
        [
            "export",
            "--model",
            str(run),
            "--format",
            "onnx",
            "--out",
            str(out),
            "--resolutions",
            "7",
            "--batch-sizes",
            "1",
            "3",
            "--threads",
            "2",
            "--accuracy-pairs",
            "20",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "btnet_tiny_r7" in printed and "ok" in printed
    assert "10-fold accuracy" in printed and "on 20 held-out SynthFace pairs" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    accuracy = manifest["graphs"][0]["accuracy"]
    assert accuracy["pairs"] == 20 and accuracy["drop"] == accuracy["accuracy_fp32"] - accuracy["accuracy"]
    assert [g["file"] for g in manifest["graphs"]] == ["btnet_tiny_r7.onnx"]
    x = latest.preprocess(faces[:3], size=7)
    emb = ort_session(out / "btnet_tiny_r7.onnx", threads=2).run(["embedding"], {"input": x.numpy()})[0]
    with torch.inference_mode():
        ref = latest(x, resolution=7).numpy()
    np.testing.assert_allclose(emb, ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())


def test_cli_out_is_a_file(tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("x")
    code = main(["export", "--model", "btnet_tiny", "--out", str(target)])
    assert code == 2
    assert f"--out {str(target)!r} exists and is a file" in capsys.readouterr().err


def test_cli_unknown_resolution(tmp_path, capsys):
    code = main(["export", "--model", "btnet_tiny", "--out", str(tmp_path / "o"), "--resolutions", "20"])
    assert code == 2
    assert "resolutions [20]: unknown branch resolution" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_missing_model(tmp_path, capsys):
    code = main(["export", "--model", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "nope.safetensors" in capsys.readouterr().err


def test_cli_run_folder_without_checkpoint(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    code = main(["export", "--model", str(tmp_path / "run"), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "complete checkpoint" in capsys.readouterr().err


def test_cli_precision_arguments_checked_before_loading(tmp_path, capsys):
    code = main(["export", "--model", "btnet_tiny", "--out", str(tmp_path / "o"), "--precision", "int8", "--fp16-io"])
    assert code == 2
    assert "fp16 I/O applies to precision fp16 only (precision=int8)" in capsys.readouterr().err
    code = main(["export", "--model", "btnet_tiny", "--out", str(tmp_path / "o"), "--calib", str(tmp_path)])
    assert code == 2
    assert "calibration faces apply to precision int8 only" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
