"""Atomic writes: a finished write replaces the file whole; a failed one leaves the old file and no temporary."""

from __future__ import annotations

import json
import os

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from mrface.io import atomic_path, atomic_write, save_figure, torch_save, write_bytes, write_text

matplotlib.use("Agg")


class Crash(Exception):
    pass


def _siblings(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("mode", ["w", "wb"])
def test_crash_mid_write_keeps_the_old_file_and_removes_the_temporary(tmp_path, mode):
    path = tmp_path / "result.json"
    path.write_text('{"old": 1}')
    with pytest.raises(Crash), atomic_write(path, mode) as f:
        f.write('{"new": ' if mode == "w" else b'{"new": ')
        f.flush()
        assert _siblings(tmp_path) != ["result.json"]  # the partial data sit in a temporary beside it
        raise Crash
    assert path.read_text() == '{"old": 1}'
    assert _siblings(tmp_path) == ["result.json"]


def test_crash_without_an_old_file_leaves_nothing(tmp_path):
    with pytest.raises(Crash), atomic_path(tmp_path / "w.safetensors") as tmp:
        tmp.write_bytes(b"half")
        raise Crash
    assert _siblings(tmp_path) == []


def test_finished_write_replaces_the_file_with_usual_permissions(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")
    umask = os.umask(0o022)
    try:
        write_text(path, "new\n")
    finally:
        os.umask(umask)
    assert path.read_text() == "new\n"
    assert path.stat().st_mode & 0o777 == 0o644  # mkstemp alone would give 0600
    assert _siblings(tmp_path) == ["a.txt"]
    write_bytes(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"


def test_json_through_the_file_object(tmp_path):
    with atomic_write(tmp_path / "x.json", "w") as f:
        json.dump({"a": [1, 2]}, f)
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": [1, 2]}


def test_torch_save_round_trips_with_weights_only_load(tmp_path):
    state = {"w": torch.arange(6.0).reshape(2, 3), "step": 7}
    torch_save(state, tmp_path / "s.pt")
    back = torch.load(tmp_path / "s.pt", weights_only=True)
    assert back["step"] == 7 and torch.equal(back["w"], state["w"])


def test_save_figure_writes_a_png_pil_can_read(tmp_path):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1), dpi=50)
    ax.plot([0, 1], [0, 1])
    save_figure(fig, tmp_path / "p.png")
    plt.close(fig)
    with Image.open(tmp_path / "p.png") as im:
        assert im.format == "PNG" and im.size == (100, 50)
    assert _siblings(tmp_path) == ["p.png"]


def test_numpy_save_through_the_file_object_keeps_the_name(tmp_path):
    with atomic_write(tmp_path / "e.npy", "wb") as f:
        np.save(f, np.eye(2, dtype=np.float32))
    assert np.array_equal(np.load(tmp_path / "e.npy"), np.eye(2))
    assert _siblings(tmp_path) == ["e.npy"]


def test_read_mode_is_refused(tmp_path):
    with pytest.raises(ValueError, match="expected a write mode"), atomic_write(tmp_path / "x", "rb"):
        pass
