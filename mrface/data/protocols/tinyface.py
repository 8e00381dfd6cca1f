"""TinyFace closed-set identification: ``Testing_Set/{Probe, Gallery_Match, Gallery_Distractor}``.

The label of a probe or gallery-match image is the integer prefix of its file name (``12_3.jpg`` ->
12); distractors have no label (-1). Evaluation: rank-1/5/20 over gallery = match + distractors.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from mrface.data.datasets import IMAGE_SUFFIXES
from mrface.data.protocols.common import require

FOLDERS = ("Testing_Set/Probe", "Testing_Set/Gallery_Match", "Testing_Set/Gallery_Distractor")


@dataclass
class TinyFace:
    probe: list[tuple[Path, int]]
    gallery_match: list[tuple[Path, int]]
    gallery_distractor: list[tuple[Path, int]]  # labels all -1


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _labelled(folder: Path) -> list[tuple[Path, int]]:
    out = []
    for p in _images(folder):
        m = re.match(r"(\d+)", p.name)
        if m is None:
            raise ValueError(f"{p}: TinyFace file names must start with the integer identity label")
        out.append((p, int(m.group(1))))
    return out


def load_tinyface(root: str | os.PathLike) -> TinyFace:
    """Lists of (path, label); raises listing every missing folder; empty folders are errors too."""
    root = require("TinyFace", root, list(FOLDERS))
    probe, match = _labelled(root / FOLDERS[0]), _labelled(root / FOLDERS[1])
    distractor = [(p, -1) for p in _images(root / FOLDERS[2])]
    for name, items in zip(FOLDERS, (probe, match, distractor), strict=True):
        if not items:
            raise ValueError(f"{root / name}: no images")
    unmatched = sorted({lbl for _, lbl in probe} - {lbl for _, lbl in match})
    if unmatched:
        raise ValueError(f"{root}: probe labels without a gallery match: {unmatched[:10]}")
    return TinyFace(probe, match, distractor)
