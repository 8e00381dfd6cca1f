"""One-line errors: expected failures print ``mrface <cmd>: error: <where>: <what>`` and exit 2;
``--debug`` shows the traceback; unsafe pickles are refused naming the file, never suggesting
``weights_only=False``."""

from __future__ import annotations

import errno
import os

import pytest
import torch

from mrface.cli import main
from mrface.errors import UserError, published_mode, run_command, safe_torch_load


def test_user_error_is_one_line_with_exit_code_2(capsys):
    def fail() -> int:
        raise UserError("data.path=x.rec", "no such file")

    assert run_command("train", fail) == 2
    assert capsys.readouterr().err == "mrface train: error: data.path=x.rec: no such file\n"


def test_a_full_disk_names_the_file(capsys):
    def fail() -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/runs/a/model.safetensors")

    assert run_command("train", fail) == 2
    err = capsys.readouterr().err
    assert err.startswith("mrface train: error: /runs/a/model.safetensors: No space left on device")
    assert err.count("\n") == 1


def test_debug_shows_the_traceback_and_bugs_are_not_hidden():
    def fail() -> int:
        raise UserError("x", "y")

    with pytest.raises(UserError):
        run_command("train", fail, debug=True)
    with pytest.raises(ZeroDivisionError):  # a bug is not an expected failure: it keeps its traceback
        run_command("train", lambda: 1 // 0)


def test_cli_maps_errors_and_debug_flag(tmp_path, capsys):
    missing = tmp_path / "nope"
    assert main(["data", "pack", str(missing), str(tmp_path / "o.rec")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mrface data: error: ") and str(missing) in err and "Traceback" not in err
    with pytest.raises(FileNotFoundError):
        main(["data", "pack", str(missing), str(tmp_path / "o.rec"), "--debug"])


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # would create the marker file if it ever ran


def test_unsafe_pickle_is_refused_naming_the_file(tmp_path):
    marker, path = tmp_path / "ran", tmp_path / "state.pt"
    torch.save({"step": 1, "payload": _RunsCode(str(marker))}, path)
    with pytest.raises(UserError) as info:
        safe_torch_load(path)
    text = str(info.value)
    assert text.startswith(f"{path}: refused") and "weights_only" not in text and "io.open" in text
    assert not marker.exists()


def test_truncated_torch_file_is_named(tmp_path):
    path = tmp_path / "state.pt"
    torch.save({"w": torch.zeros(100)}, path)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(UserError, match=rf"^{path}: not a readable PyTorch file"):
        safe_torch_load(path)


def test_published_mode_follows_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        path = tmp_path / "f"
        path.write_text("x")
        os.chmod(path, 0o600)
        published_mode(path)
        assert path.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)
