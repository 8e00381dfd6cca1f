"""``mrface eval tinyface|scface|survface|ijb`` and ``verification --erc``: reports carry the protocol's numbers,
missing files end in one clear error (exit 2) listing them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mrface.cli import main
from mrface.data.bins import write_bin
from mrface.eval import cli_common as eval_common
from mrface.eval.protocols.ijb import IjbFlags, evaluate_ijb
from mrface.eval.protocols.scface import evaluate_scface
from mrface.eval.protocols.survface import evaluate_survface
from mrface.eval.protocols.tinyface import evaluate_tinyface
from mrface.eval.verification import ExtractOptions


@pytest.fixture
def use_model(monkeypatch, pooled_linear):
    monkeypatch.setattr(eval_common, "load_eval_model", lambda spec: pooled_linear)
    return pooled_linear


def _results(out):
    return json.loads((out / "results.json").read_text())


def test_tinyface_and_survface_commands(tmp_path, tinyface_root, survface_root, use_model, capsys):
    out = tmp_path / "tf"
    assert (
        main(
            [
                "eval",
                "tinyface",
                "--model",
                "m",
                "--root",
                str(tinyface_root),
                "--out",
                str(out),
                "--quiet",
                "--level",
                "subject",
                "--ranks",
                "1,5",
            ]
        )
        == 0
    )
    want = evaluate_tinyface(use_model, tinyface_root, ranks=(1, 5), level="subject")
    data = _results(out)
    assert data["results"]["cmc"] == {"1": want.cmc[1], "5": want.cmc[5]}
    assert data["settings"]["level"] == "subject" and data["kind"] == "tinyface"
    assert "rank-1" in capsys.readouterr().out and (out / "report.md").is_file()

    out = tmp_path / "sf"
    root, _ = survface_root
    assert (
        main(
            [
                "eval",
                "survface",
                "--model",
                "m",
                "--root",
                str(root),
                "--out",
                str(out),
                "--quiet",
                "--variant",
                "btnet_survface",
                "--rank",
                "3",
                "--fpirs",
                "0.5,0.2",
            ]
        )
        == 0
    )
    want = evaluate_survface(use_model, root, variant="btnet_survface", rank=3, fpirs=(0.5, 0.2))
    data = _results(out)
    assert data["results"]["variant"] == "btnet_survface" and data["results"]["rank"] == 3
    assert data["results"]["tpir"] == pytest.approx({str(k): v for k, v in want.open_set.tpir.items()})
    assert data["results"]["auc"] == pytest.approx(want.open_set.auc)


def test_scface_and_ijb_commands(tmp_path, scface_root, ijb_root, use_model):
    out = tmp_path / "sc"
    assert (
        main(
            [
                "eval",
                "scface",
                "--model",
                "m",
                "--root",
                str(scface_root),
                "--out",
                str(out),
                "--quiet",
                "--cams",
                "1",
                "--protocol",
                "finetune50",
                "--flip",
                "none",
                "--subjects",
                "53",
            ]
        )
        == 0
    )
    want = evaluate_scface(use_model, scface_root, cams=(1,), options=ExtractOptions(flip="none"), subjects=53)
    data = _results(out)
    assert data["results"]["per_distance"] == {f"d{d}": {"1": v[1]} for d, v in want.per_distance.items()}
    assert data["settings"]["extraction"]["flip"] == "none"

    root, _ = ijb_root
    out = tmp_path / "ijb"
    assert (
        main(
            [
                "eval",
                "ijb",
                "--model",
                "m",
                "--root",
                str(root),
                "--out",
                str(out),
                "--quiet",
                "--test-flip",
                "yes",
                "--norm-weighting",
                "no",
                "--detector-score",
                "yes",
                "--fars",
                "0.01,0.1",
                "--fpirs",
                "0.5",
            ]
        )
        == 0
    )
    want = evaluate_ijb(use_model, root, IjbFlags(True, False, True), fars=(0.01, 0.1), fpirs=(0.5,))
    data = _results(out)
    assert data["settings"]["flags"] == {"flip": True, "norm_weighting": False, "detector_score": True}
    assert data["results"]["tar_at_far"] == pytest.approx({str(k): v for k, v in want.roc.tar_at_far.items()})
    assert sorted(data["results"]["one_to_n"]) == ["G1", "G2"]


def test_missing_files_and_arguments_are_clear(tmp_path, ijb_root, use_model, capsys):
    assert main(["eval", "tinyface", "--model", "m", "--root", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    assert "TinyFace" in (err := capsys.readouterr().err) and "nope" in err
    (tmp_path / "sc").mkdir()
    assert main(["eval", "scface", "--model", "m", "--root", str(tmp_path / "sc"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "16 expected path(s) missing" in err and "mugshot_frontal_cropped_all" in err
    root, _ = ijb_root
    # test-mode flags must be given explicitly (or by a named public preset)
    assert main(["eval", "ijb", "--model", "m", "--root", str(root), "--out", str(tmp_path)]) == 2
    assert "--test-flip" in capsys.readouterr().err
    assert (
        main(
            [
                "eval",
                "ijb",
                "--model",
                "m",
                "--root",
                str(tmp_path / "sc"),
                "--out",
                str(tmp_path / "o"),
                "--test-flip",
                "no",
                "--norm-weighting",
                "no",
                "--detector-score",
                "no",
            ]
        )
        == 2
    )
    assert "ijbc_name_5pts_score.txt" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", "survface", "--model", "m", "--root", "r", "--out", "o", "--fpirs", "0.5,2"])


def test_verification_erc_option(tmp_path, synth_images, use_model, capsys):
    images, _ = synth_images
    first = np.concatenate([images[0::3][:10], images[0::3][:10]])
    second = np.concatenate([images[1::3][:10], images[1::3][np.roll(np.arange(10), 1)]])
    write_bin(tmp_path / "s.bin", np.stack([first, second], 1).reshape(-1, 112, 112, 3), np.arange(20) < 10, ext=".png")
    out = tmp_path / "v"
    assert (
        main(
            [
                "eval",
                "verification",
                "--model",
                "m",
                "--bins",
                str(tmp_path / "s.bin"),
                "--erc",
                "norm",
                "--erc-fmr",
                "0.1",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    data = _results(out)
    erc = data["results"]["s"]["erc"]
    assert erc["quality"] == "norm" and erc["fmr"] == 0.1 and len(erc["fnmr"]) == len(erc["reject_fractions"])
    assert [p["name"] for p in data["plots"]] == ["roc", "erc"]
    np.save(tmp_path / "q.npy", np.arange(40.0))
    assert (
        main(
            [
                "eval",
                "verification",
                "--model",
                "m",
                "--bins",
                str(tmp_path / "s.bin"),
                "--erc",
                str(tmp_path / "q.npy"),
                "--out",
                str(tmp_path / "v2"),
                "--quiet",
            ]
        )
        == 0
    )
    assert _results(tmp_path / "v2")["results"]["s"]["erc"]["quality"].endswith("q.npy")
    np.save(tmp_path / "bad.npy", np.arange(7.0))
    assert (
        main(
            [
                "eval",
                "verification",
                "--model",
                "m",
                "--bins",
                str(tmp_path / "s.bin"),
                "--erc",
                str(tmp_path / "bad.npy"),
                "--out",
                str(tmp_path / "v3"),
                "--quiet",
            ]
        )
        == 2
    )
    assert "expected a (40,) numeric array" in capsys.readouterr().err
