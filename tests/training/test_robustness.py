"""Nothing lost, nothing silent: run folders, non-finite training, corrupt data, torn logs, full disks,
malicious resume states and file modes. Each test makes the damaged input itself."""

from __future__ import annotations

import errno
import os
import re
import struct

import numpy as np
import pytest
import torch
from helpers import TINY, losses
from torch.utils.data import TensorDataset

from mrface.cli import main
from mrface.data.images import encode_image
from mrface.data.insightface import InsightFaceRecord, write_insightface
from mrface.errors import UserError, run_command
from mrface.models import get_model
from mrface.training import checkpoint as ckpt_io
from mrface.training.config import RecipeError, load_recipe
from mrface.training.data import synth_tensors
from mrface.training.distributed import DistEnv
from mrface.training.rundir import RunFolderInUse, read_json_lines
from mrface.training.trainer import CorruptDataError, NonFiniteLossError, NonFiniteWeightsError, train

CPU = DistEnv(0, 1, 0, torch.device("cpu"))


def _cfg(out, *overrides):
    return load_recipe("synthface_tiny_trunk", [*TINY, f"output={out}", "augment.kind=none", *overrides])


@pytest.fixture(scope="module")
def faces() -> TensorDataset:
    images, labels = synth_tensors(8, 4, seed=0)
    ds = TensorDataset(images.float().div(127.5).sub(1.0), labels)
    ds.num_classes = 8
    return ds


# ----------------------------------------------------------------------------------- run folders
def test_a_new_run_refuses_an_old_run_and_overwrite_moves_it_aside(tmp_path, faces):
    out = tmp_path / "run"
    old_umask = os.umask(0o022)
    try:
        train(_cfg(out, "train.max_steps=1"), dataset=faces)
    finally:
        os.umask(old_umask)
    assert (out / "model.safetensors").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    with pytest.raises(RunFolderInUse, match=rf"output={out}: .*resume=auto.*overwrite=true"):
        train(_cfg(out, "train.max_steps=2", "seed=1"), dataset=faces)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # untouched

    result = train(_cfg(out, "train.max_steps=2", "seed=1", "overwrite=true"), dataset=faces)
    assert result.steps == 2 and len(losses(out)) == 2
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(moved) == 1
    assert {p.relative_to(moved[0]): p.read_bytes() for p in moved[0].rglob("*") if p.is_file()} == before
    assert [p.name for p in ckpt_io.complete_checkpoints(out / "checkpoints")] == ["step_00000002"]


def test_retention_deletes_only_checkpoints_of_the_current_run(tmp_path):
    root = tmp_path / "checkpoints"
    model = get_model("iresnet_tiny", width=0.125, embedding_size=32)
    state = {"step": 0}
    ckpt_io.save_checkpoint(root, 100, CPU, model, None, state, keep=1, run_id="older-run")
    for step in (1, 2, 3):
        ckpt_io.save_checkpoint(root, step, CPU, model, None, state, keep=1, run_id="this-run")
    names = [p.name for p in ckpt_io.complete_checkpoints(root)]
    assert names == ["step_00000003", "step_00000100"]  # step 100 is another run's: never deleted


def test_the_demo_resumes_its_own_folder_and_refuses_another(tmp_path, capsys, monkeypatch):
    from mrface.training import demo

    calls = []

    def fake_run_demo(out, quick, seed=0, export=True, resume=False):
        calls.append(resume)
        (out / f"trained_seed{seed}").write_text("x")
        return {"table": {}, "summary": {}, "report_files": [], "export": {}, "seconds": 0.0}

    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    assert main(["demo", "--quick", "--out", str(out)]) == 0  # same settings: resumed, not refused
    assert calls == [False, True]
    capsys.readouterr()

    assert main(["demo", "--quick", "--seed", "1", "--out", str(out)]) == 2  # other settings: refused
    err = capsys.readouterr().err
    assert err.startswith(f"mrface demo: error: --out={out}: ") and "--overwrite" in err
    assert sorted(p.name for p in out.iterdir()) == ["demo.json", "trained_seed0"] and calls == [False, True]

    assert main(["demo", "--quick", "--seed", "1", "--out", str(out), "--overwrite"]) == 0
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("demo.old-")]
    assert len(moved) == 1 and (moved[0] / "trained_seed0").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["demo.json", "trained_seed1"] and calls[-1] is False


# ------------------------------------------------------------------------------ non-finite runs
@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("optim.lr=nan", "optim.lr=nan, expected a finite number"),
        ("optim.lr=-0.1", "optim.lr=-0.1, expected a learning rate > 0"),
        ("head.args.s=inf", "head.args.s=inf, expected a finite number"),
        ("optim.momentum=1.5", "optim.momentum=1.5, expected a momentum in"),
        ("augment.sizes=[]", r"augment.sizes=\[\], expected a non-empty list of image sides in 1..112"),
        ("augment.sizes=[113]", r"augment.sizes=\[113\], expected"),
        ("model.name=iresnet_tini", "model.name='iresnet_tini' is not registered; did you mean 'iresnet_tiny'"),
        ("head.name=arcfase", "head.name='arcfase' is not registered; did you mean 'arcface'"),
    ],
)
def test_recipe_numbers_and_names_are_checked(tmp_path, override, key):
    with pytest.raises(RecipeError, match=key):
        _cfg(tmp_path, override)


def test_train_cli_prints_one_line_and_creates_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "synthface_tiny_trunk", *TINY, f"output={out}", "optim.lr=nan"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mrface train: error: ") and "optim.lr=nan" in err[0]
    assert not out.exists()


def test_skipped_steps_are_limited(tmp_path, faces):
    x = torch.full_like(faces.tensors[0], float("nan"))  # every step's loss is NaN
    poisoned = TensorDataset(x, faces.tensors[1])
    poisoned.num_classes = 8
    cfg = _cfg(tmp_path, "train.max_steps=4", "train.skip_nonfinite=true", "train.max_skipped=1")
    with pytest.raises(NonFiniteLossError, match=r"step 2: 2 steps skipped .* more than train.max_skipped=1"):
        train(cfg, dataset=poisoned)
    assert not (tmp_path / "model.safetensors").exists()
    assert "mrface train: error: step 2: 2 steps skipped" in (tmp_path / "train.log").read_text()


def test_nonfinite_weights_are_never_published(tmp_path, faces):
    cfg = _cfg(tmp_path, "train.max_steps=1")
    cfg.optim.lr = float("nan")  # past the recipe check: the first step's loss is finite, its update is not
    with pytest.raises(NonFiniteWeightsError, match="step 1: the weights hold NaN/inf"):
        train(cfg, dataset=faces)
    assert not (tmp_path / "model.safetensors").exists()
    assert ckpt_io.complete_checkpoints(tmp_path / "checkpoints") == []


def test_a_weight_norm_blow_up_is_reported(tmp_path, faces):
    train(_cfg(tmp_path, "train.max_steps=1", "optim.lr=1e4", "schedule.warmup_epochs=0"), dataset=faces)
    log = (tmp_path / "train.log").read_text()
    assert re.search(r"step 1: warning: weight norm grew from \S+ to \S+ \(\d+x\)", log), log


# ---------------------------------------------------------------------------------- corrupt data
def _damaged_rec(tmp_path):
    """32 SynthFace JPEGs (8 identities) in a .rec; record 3 undecodable, record 9 with a bad magic,
    record 20 labelled 200. Returns (path, {index: byte offset})."""
    images, labels = synth_tensors(8, 4, seed=0)
    rec = tmp_path / "data" / "train.rec"
    pairs = zip(images, labels, strict=True)
    samples = ((int(y), encode_image(x.permute(1, 2, 0).numpy(), ".jpg", 90)) for x, y in pairs)
    write_insightface(rec, samples, 8)
    reader = InsightFaceRecord(rec)
    offsets = {i: reader.reader.offset(reader.image_keys[i]) for i in (3, 9, 20)}
    data = bytearray(rec.read_bytes())
    data[offsets[3] + 8 + 24 : offsets[3] + 8 + 56] = b"\xff" * 32  # image bytes garbage, framing intact
    data[offsets[9] : offsets[9] + 4] = b"XXXX"  # chunk magic flipped
    data[offsets[20] + 8 + 4 : offsets[20] + 8 + 8] = struct.pack("<f", 200.0)  # header label
    rec.write_bytes(bytes(data))
    return rec, offsets


def test_corrupt_records_stop_the_run_after_a_checkpoint(tmp_path):
    rec, offsets = _damaged_rec(tmp_path)
    out = tmp_path / "run"
    with pytest.raises(CorruptDataError) as info:
        train(_cfg(out, "data.kind=rec", f"data.path={rec}", "train.max_steps=4"))
    text = str(info.value)
    found = re.match(rf"{rec}: record (\d+) \(key \d+\) at byte offset (\d+): .*checkpoint of step (\d+) saved", text)
    assert found, text
    index, offset, step = (int(v) for v in found.groups())
    assert offsets[index] == offset
    assert ckpt_io.read_manifest(ckpt_io.latest_checkpoint(out / "checkpoints"))["step"] == step
    assert f"mrface train: error: {rec}: record {index}" in (out / "train.log").read_text()


def test_corrupt_records_are_skipped_counted_and_named(tmp_path):
    rec, offsets = _damaged_rec(tmp_path)
    out = tmp_path / "run"
    result = train(_cfg(out, "data.kind=rec", f"data.path={rec}", "train.max_steps=4", "data.skip_corrupt=true"))
    assert result.steps == 4 and len(result.losses) == 4  # one epoch: every record was read once
    assert sorted(int(re.search(r"record (\d+)", r).group(1)) for r in result.corrupt) == [3, 9, 20]
    log = (out / "train.log").read_text()
    assert f"record 9 (key 10) at byte offset {offsets[9]}: bad magic" in log
    assert "record 20 (key 21)" in log and "label 200 outside [0, 8)" in log
    assert "3 corrupt samples skipped" in log
    assert read_json_lines(out / "metrics.jsonl")[-1]["corrupt_skipped"] == 3

    with pytest.raises(CorruptDataError, match=r"more than data.max_corrupt=1"):
        train(
            _cfg(
                tmp_path / "run2",
                "data.kind=rec",
                f"data.path={rec}",
                "train.max_steps=4",
                "data.skip_corrupt=true",
                "data.max_corrupt=1",
            )
        )


def test_a_label_outside_the_classes_is_corrupt_not_dropped(tmp_path, faces):
    labels = faces.tensors[1].clone()
    labels[5] = -1
    bad = TensorDataset(faces.tensors[0], labels)
    bad.num_classes = 8
    with pytest.raises(CorruptDataError, match=r"sample 5: label -1 outside \[0, 8\)"):
        train(_cfg(tmp_path, "train.max_steps=4"), dataset=bad)


# ------------------------------------------------------------------------- torn logs, full disks
def test_resume_drops_a_torn_metrics_line_and_stale_temporaries(tmp_path, faces):
    train(_cfg(tmp_path, "train.max_steps=2", "checkpoint.every=1"), dataset=faces)
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "loss": 4.1')  # what a power loss mid-write leaves
    stale = tmp_path / "checkpoints" / ".step_00000003.tmp"
    stale.mkdir()
    (stale / "state_rank0.pt").write_bytes(b"half")
    result = train(_cfg(tmp_path, "train.max_steps=3", "checkpoint.every=1", "resume=auto"), dataset=faces)
    assert result.steps == 3 and len(losses(tmp_path)) == 3
    assert not stale.exists()
    log = (tmp_path / "train.log").read_text()
    assert "metrics.jsonl: line 3: torn last line dropped" in log and "removed a temporary" in log


def test_a_damaged_line_before_the_last_is_an_error(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2, "lo\n{"step": 3}\n')
    with pytest.raises(UserError, match=rf"{path}: line 2: expected one JSON object per line"):
        read_json_lines(path)


def test_a_full_disk_ends_in_one_line_and_the_retry_resumes(tmp_path, faces, monkeypatch, capsys):
    real = ckpt_io.torch_save

    def disk_full(obj, path):
        if "step_00000002" in str(path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(obj, path)

    monkeypatch.setattr(ckpt_io, "torch_save", disk_full)
    cfg = _cfg(tmp_path, "train.max_steps=3", "checkpoint.every=1")
    assert run_command("train", lambda: train(cfg, dataset=faces)) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.match(r"mrface train: error: \S+\.step_00000002\.tmp/state_rank0\.pt: No space left on device", err)
    assert not (tmp_path / "checkpoints" / ".step_00000002.tmp").exists()  # nothing half-written blocks a retry
    assert [p.name for p in ckpt_io.complete_checkpoints(tmp_path / "checkpoints")] == ["step_00000001"]

    monkeypatch.setattr(ckpt_io, "torch_save", real)
    result = train(_cfg(tmp_path, "train.max_steps=3", "checkpoint.every=1", "resume=auto"), dataset=faces)
    assert result.steps == 3 and len(losses(tmp_path)) == 3


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_malicious_resume_state_is_refused(tmp_path, faces):
    train(_cfg(tmp_path, "train.max_steps=1"), dataset=faces)
    state = ckpt_io.latest_checkpoint(tmp_path / "checkpoints") / "state_rank0.pt"
    marker = tmp_path / "code_ran"
    torch.save({"step": 1, "x": _RunsCode(str(marker))}, state)
    with pytest.raises(UserError) as info:
        train(_cfg(tmp_path, "train.max_steps=2", "resume=auto"), dataset=faces)
    assert str(info.value).startswith(f"{state}: refused: it references") and "weights_only=False" not in str(
        info.value
    )
    assert not marker.exists()
    assert np.isfinite(losses(tmp_path)).all() and len(losses(tmp_path)) == 1
