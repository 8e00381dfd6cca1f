"""``mrface train RECIPE --nproc 2`` (torchrun underneath, 2 gloo ranks on CPU) == one process with the same
global batch, on the dcr stage: DDP-averaged branch gradients and the centres updated over the all-gathered
global batch give the same branches and centres on every rank as the single process.

Only rank 0 logs, and this stage's loss is a per-rank mean (no Partial FC head to make it global), so the
logged losses are not compared; SGD rather than AdamW keeps float32 reduction-order noise in the gradients
from being amplified into full-size updates.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from helpers import env_1thread, losses, weights
from stage_helpers import TINY_DATA, extra_state, tiny_trunk_file

pytestmark = pytest.mark.distributed

CLI = "import sys; from mrface.cli import main; sys.exit(main())"


def _mrface_train(args: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", CLI, "train", *args], capture_output=True, text=True, env=env_1thread(), timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-5000:]


def test_nproc_2_matches_one_process(tmp_path):
    trunk = tiny_trunk_file(tmp_path / "trunk.safetensors")
    run = [
        "synthface_tiny_dcr",
        *TINY_DATA,
        f"dcr.trunk={trunk}",
        "train.max_steps=3",
        "optim.name=sgd",
        "optim.lr=0.5",
        "augment.kind=btnet",
        "augment.sizes=[112,56]",
        "schedule.warmup_epochs=0.5",
        "dcr.classifier_init=random",
    ]
    one, two = tmp_path / "one", tmp_path / "two"
    _mrface_train([*run, "data.batch_size=8", f"output={one}"])
    _mrface_train([*run, "data.batch_size=4", f"output={two}", "--nproc", "2"])

    last = "checkpoints/step_00000003"
    assert (two / last / "state_rank1.pt").is_file()  # two ranks did run
    assert len(losses(two)) == len(losses(one)) == 3
    w1, w2 = weights(one / "model.safetensors"), weights(two / "model.safetensors")
    assert w1.keys() == w2.keys()
    for key in w1:
        if key.startswith("trunk."):
            assert torch.equal(w1[key], w2[key]), key
        else:  # float32 sums in another order over 2 ranks
            scale = float(w1[key].abs().max())
            torch.testing.assert_close(w2[key], w1[key], rtol=0, atol=1e-5 * scale + 1e-7, msg=key)
    for r in (112, 8, 12, 16, 20):  # the branches (HR branch 0 included) did move from their identity initialisation
        assert (w1[f"branches.{r}.mapping.weight"] - torch.eye(32)).abs().max() > 1e-3

    for scale in (112, 8, 12, 16, 20):  # one centre table per scale
        centres = [extra_state(d, 3, rank=r)[f"centres_{scale}"] for d, r in ((one, 0), (two, 0), (two, 1))]
        assert torch.equal(centres[1], centres[2])  # every rank applies the same global-batch update
        torch.testing.assert_close(centres[1], centres[0], rtol=1e-5, atol=1e-6)
