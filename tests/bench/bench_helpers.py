"""Helpers of the ``mrface bench`` tests: run the CLI in-process, build small reports."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from mrface.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_bench(*argv: str) -> tuple[int, str, str]:
    """``mrface bench *argv`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["bench", *argv])
    return code, out.getvalue(), err.getvalue()


def make_report(benchmarks: dict, quick: bool = False) -> dict:
    """A minimal suite report holding ``benchmarks`` (name -> entry)."""
    return {"machine": {"cpu": "test cpu", "cores": 2}, "quick": quick, "benchmarks": benchmarks}


def write_json(path: Path, report: dict) -> Path:
    path.write_text(json.dumps(report))
    return path
