"""Fixtures of the loss tests: one 2-rank gloo run shared by every distributed test."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import losses_dist_worker as cases  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def two_rank_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("pfc")
    port = _free_port()
    worker = str(Path(cases.__file__))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [
        subprocess.Popen(
            [sys.executable, worker, str(r), "2", str(port), str(out)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for r in range(2)
    ]
    logs = [p.communicate(timeout=240)[0].decode() for p in procs]
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]
