"""Publishing export artefacts atomically: stage in a hidden sibling folder, verify, then move in.

An output folder holds graphs plus ``manifest.json``; the manifest is written last and is the only
mark of success, so a folder without one (or a failed run) is never mistaken for a verified export.
A failed export removes its staging folder and leaves an existing output folder as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mrface.export.errors import ExportError
from mrface.io import atomic_write

MANIFEST = "manifest.json"


def check_out_dir(out_dir: str | Path, argument: str = "out_dir") -> Path:
    """Validate an output folder path: it may not exist yet, but must not be a file (nor have a file parent)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ExportError(f"{argument} {str(out)!r} exists and is a file; expected a directory (new or existing)")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ExportError(f"{argument} {str(out)!r}: {str(parent)!r} is a file; expected a directory")
            break
    return out


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON to ``path`` via a temporary file in the same folder and ``os.replace``."""
    with atomic_write(path, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
        f.write("\n")


@contextmanager
def staged_output(out_dir: str | Path, argument: str = "out_dir") -> Iterator[Path]:
    """Yield a staging folder; on normal exit publish its contents into ``out_dir``, on error delete it.

    The staging folder's ``manifest.json`` (if any) is published last.
    """
    out = check_out_dir(out_dir, argument)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes 0700; the published folder gets the usual mode
    try:
        yield staging
        _publish(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _publish(staging: Path, out: Path) -> None:
    if not out.exists():
        os.replace(staging, out)
        return
    (out / MANIFEST).unlink(missing_ok=True)  # an older manifest must not vouch for files being replaced
    for item in sorted(staging.iterdir()):
        if item.name != MANIFEST:
            os.replace(item, out / item.name)
    if (staging / MANIFEST).exists():
        os.replace(staging / MANIFEST, out / MANIFEST)


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    """Load ``out_dir/manifest.json`` with a clear error when the folder holds no finished export."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise ExportError(f"{out_dir}: no {MANIFEST}; not a finished mrface export (a failed export writes none)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ExportError(f"{path}: not valid JSON ({exc})") from None
