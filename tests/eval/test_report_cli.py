"""Reports (schema, Markdown, non-trivial PNGs) and the ``mrface eval`` CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mrface.cli import main
from mrface.data.bins import write_bin
from mrface.eval import cli_common as eval_common
from mrface.eval.report import SCHEMA, new_report, render_report, validate_report, write_report


@pytest.fixture
def matplotlib():
    """Only the tests that render PNGs need matplotlib (optional extra 'plot'); the rest run without it."""
    return pytest.importorskip("matplotlib", reason="plots need matplotlib (optional extra 'plot')")


def _report():
    rep = new_report(
        "test",
        "A test",
        settings={"k": 1},
        model={"architecture": "x"},
        results={"acc": np.float64(0.5), "arr": np.arange(3), "t": float("-inf")},
    )
    rep["tables"].append({"title": "T", "columns": ["a", "b"], "rows": [["x", 0.123456]]})
    rep["plots"].append(
        {
            "name": "roc",
            "title": "ROC",
            "xlabel": "FAR",
            "ylabel": "TAR",
            "xscale": "log",
            "series": [{"label": "m", "x": [1e-3, 1e-2, 1.0], "y": [0.2, 0.6, 1.0]}],
        }
    )
    return rep


def _png_is_nontrivial(path):
    from PIL import Image

    arr = np.asarray(Image.open(path).convert("RGB"))
    assert arr.shape[0] > 100 and arr.shape[1] > 100
    assert arr.std() > 5  # not a constant image
    assert len(np.unique(arr.reshape(-1, 3), axis=0)) > 10


def test_write_report_json_markdown_png(tmp_path, matplotlib):
    files = write_report(tmp_path / "run", _report())
    names = sorted(f.name for f in files)
    assert names == ["report.md", "results.json", "roc.png"]
    data = json.loads((tmp_path / "run" / "results.json").read_text())
    validate_report(data)
    assert data["schema"] == SCHEMA and data["results"]["arr"] == [0, 1, 2] and data["results"]["t"] == "-inf"
    assert {"torch", "numpy", "python"} <= set(data["versions"])
    md = (tmp_path / "run" / "report.md").read_text()
    assert "| x | 0.12 |" in md and "![ROC](roc.png)" in md
    _png_is_nontrivial(tmp_path / "run" / "roc.png")
    (tmp_path / "run" / "roc.png").unlink()
    assert main(["eval", "report", str(tmp_path / "run")]) == 0
    _png_is_nontrivial(tmp_path / "run" / "roc.png")


def test_validation_names_the_bad_field(tmp_path):
    rep = _report()
    rep["tables"][0]["rows"].append(["only one"])
    with pytest.raises(ValueError, match=r"tables\[0\].rows\[1\]"):
        write_report(tmp_path, rep)
    rep = _report()
    del rep["versions"]
    with pytest.raises(ValueError, match="missing fields"):
        validate_report(rep)
    with pytest.raises(FileNotFoundError, match="results.json"):
        render_report(tmp_path / "nothing")


def test_cli_errors_are_clear(tmp_path, capsys):
    assert main(["eval", "report", str(tmp_path)]) == 2
    assert "results.json" in capsys.readouterr().err
    code = main(
        [
            "eval",
            "verification",
            "--model",
            str(tmp_path / "m.safetensors"),
            "--bins",
            "x.bin",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2 and "no such checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", "crossres", "--model", "m", "--bins", "a.bin", "--resolutions", "112,x", "--out", "o"])


def test_cli_crossres_and_verification(tmp_path, monkeypatch, capsys, synth_images, pooled_linear, matplotlib):
    images, _ = synth_images  # 20 identities x 3 images, identity-major
    first = np.concatenate([images[0::3][:10], images[0::3][:10]])
    second = np.concatenate([images[1::3][:10], images[1::3][np.roll(np.arange(10), 1)]])
    pair_images = np.stack([first, second], 1).reshape(-1, 112, 112, 3)
    issame = np.array([True] * 10 + [False] * 10)
    write_bin(tmp_path / "s.bin", pair_images, issame, ext=".png")
    monkeypatch.setattr(eval_common, "load_eval_model", lambda spec: pooled_linear)
    out = tmp_path / "cr"
    assert (
        main(
            [
                "eval",
                "crossres",
                "--model",
                "x",
                "--bins",
                str(tmp_path / "s.bin"),
                "--resolutions",
                "112,14",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "112&14" in text and "14&14" in text and "112&112" in text
    data = json.loads((out / "results.json").read_text())
    assert [r["pair"] for r in data["results"]["rows"]] == ["112&14", "14&14", "112&112"]
    assert data["settings"]["resolutions"] == [112, 14]
    _png_is_nontrivial(out / "accuracy_vs_resolution.png")
    out = tmp_path / "v"
    assert (
        main(
            [
                "eval",
                "verification",
                "--model",
                "x",
                "--bins",
                str(tmp_path / "s.bin"),
                "--pair",
                "112&7",
                "--flip",
                "concat",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    data = json.loads((out / "results.json").read_text())
    assert data["settings"]["pair"] == [112, 7] and data["settings"]["extraction"]["flip"] == "concat"
    assert 0.0 <= data["results"]["s"]["accuracy"] <= 1.0
    _png_is_nontrivial(out / "roc.png")


def test_eval_errors_are_one_line(tmp_path, capsys, monkeypatch):
    import torch

    from mrface.models import get_model, save_model

    model = tmp_path / "m.safetensors"
    save_model(get_model("iresnet_tiny", width=0.125, embedding_size=32), model)
    good = tmp_path / "good.bin"
    write_bin(good, np.zeros((4, 112, 112, 3), np.uint8), [True, False])
    truncated = tmp_path / "cut.bin"
    truncated.write_bytes(good.read_bytes()[:300])
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cases = [
        (["--bins", str(truncated), "--out", str(tmp_path / "o1")], f"{truncated}: not a readable verification"),
        (
            ["--bins", str(good), "--device", "cuda", "--out", str(tmp_path / "o2")],
            "--device cuda: CUDA is not available",
        ),
        (["--bins", str(good), "--out", str(a_file)], f"--out {a_file}: {a_file} is a file; expected a folder"),
    ]
    for extra, expected in cases:
        assert main(["eval", "verification", "--model", str(model), "--quiet", *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"mrface eval: error: {expected}") and err.count("\n") == 1, err
