"""Exact resume: 2k steps straight == k steps, a hard kill, and a resumed run (losses and weights identical);
SIGTERM saves a checkpoint at the current step; an interrupted checkpoint write leaves the previous one."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers import TINY, env_1thread, losses, run_module, weights

from mrface.models import get_model
from mrface.training import checkpoint as ckpt_io
from mrface.training.config import load_recipe
from mrface.training.distributed import DistEnv
from mrface.training.trainer import train

K = 3
# 8 identities x 4 images, batch 8: 4 steps per epoch, so the resumed part crosses an epoch boundary.
RUN = [*TINY, "augment.kind=btnet", f"train.max_steps={2 * K}", f"checkpoint.every={K}", "schedule.warmup_epochs=0.5"]

# Child process: SIGKILL itself when the metrics row of step K+1 is written (after the checkpoint of
# step K, before the next one), i.e. a hard kill mid-run with no chance to clean up.
KILLER = """
import os, signal, sys
from mrface.training import rundir
write = rundir.MetricsWriter.write
def write_then_die(self, row):
    write(self, row)
    if row.get("step") == {kill_at}:
        os.kill(os.getpid(), signal.SIGKILL)
rundir.MetricsWriter.write = write_then_die
from mrface.training.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_kill_and_resume_reproduces_the_uninterrupted_run(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run_module(["synthface_tiny_trunk", *RUN, f"output={straight}"])

    killed = subprocess.run(
        [sys.executable, "-c", KILLER.format(kill_at=K + 1), "synthface_tiny_trunk", *RUN, f"output={resumed}"],
        capture_output=True,
        text=True,
        env=env_1thread(),
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert [p.name for p in ckpt_io.complete_checkpoints(resumed / "checkpoints")] == [f"step_{K:08d}"]
    assert len(losses(resumed)) == K + 1  # a step after the checkpoint was logged before the kill

    run_module(["synthface_tiny_trunk", *RUN, f"output={resumed}", "resume=auto"])
    assert losses(resumed) == losses(straight)  # bitwise: same data order, RNG, schedule, optimiser state
    for name in ("model.safetensors", f"checkpoints/step_{2 * K:08d}/head_rank0.safetensors"):
        a, b = weights(resumed / name), weights(straight / name)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}: {key} differs after resume"


def test_sigterm_saves_a_checkpoint_at_the_current_step(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mrface.training",
            "synthface_tiny_trunk",
            *TINY,
            "train.max_steps=100000",
            f"output={out}",
        ],
        env=env_1thread(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        metrics = out / "metrics.jsonl"
        while proc.poll() is None and (not metrics.is_file() or len(metrics.read_text().splitlines()) < 2):
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err[-3000:]
    last_logged = losses(out)
    latest = ckpt_io.latest_checkpoint(out / "checkpoints")
    assert latest is not None and ckpt_io.read_manifest(latest)["step"] == len(last_logged) >= 2
    state = ckpt_io.load_training_state(latest, DistEnv(0, 1, 0, torch.device("cpu")))
    assert state["step"] == len(last_logged)


def test_interrupted_checkpoint_write_leaves_the_previous_one_loadable(tmp_path, monkeypatch):
    out = tmp_path / "run"
    cfg = load_recipe("synthface_tiny_trunk", [*TINY, "train.max_steps=4", "checkpoint.every=2", f"output={out}"])
    real_save = ckpt_io.save_model

    def crash_on_second_checkpoint(model, path):
        if "step_00000004" in str(path):
            raise KeyboardInterrupt("simulated crash while writing the checkpoint of step 4")
        return real_save(model, path)

    monkeypatch.setattr(ckpt_io, "save_model", crash_on_second_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    assert (out / "checkpoints" / ".step_00000004.tmp").is_dir()  # the partial write stays hidden
    latest = ckpt_io.latest_checkpoint(out / "checkpoints")
    assert latest is not None and latest.name == "step_00000002"
    model = get_model("iresnet_tiny", width=0.125, embedding_size=32)
    ckpt_io.load_model_weights(latest, model)
    state = ckpt_io.load_training_state(latest, DistEnv(0, 1, 0, torch.device("cpu")))
    assert state["step"] == 2 and json.loads((latest / "manifest.json").read_text())["step"] == 2

    monkeypatch.setattr(ckpt_io, "save_model", real_save)
    cfg.resume = "auto"
    result = train(cfg)
    assert result.steps == 4 and len(losses(out)) == 4
    assert [p.name for p in ckpt_io.complete_checkpoints(out / "checkpoints")] == ["step_00000002", "step_00000004"]
