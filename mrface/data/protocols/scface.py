"""SCface: 130 subjects, frontal mugshot gallery, surveillance probes at 3 distances.

Layout: ``mugshot_frontal_cropped_all/{sid:03d}_frontal.{jpg,JPG}`` and
``surveillance_cameras_distance_{d}/cam{c}/{sid:03d}_cam{c}_{d}.jpg`` (d = 1..3, cams 1..5 visible;
``cams`` can add the IR cams 6..8 when present). Protocols: ``finetune50`` (subjects 1..50 to
fine-tune, 51..130 to test) and ``all130`` (zero-shot on every subject).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mrface.data.protocols.common import MissingFilesError, require

PROTOCOLS = {"finetune50": (range(1, 51), range(51, 131)), "all130": (range(0), range(1, 131))}


@dataclass
class SCface:
    protocol: str
    train_subjects: list[int]
    gallery: list[tuple[Path, int]]  # mugshots of the test subjects
    probes: dict[int, list[tuple[Path, int]]]  # distance -> (path, subject)
    train: list[tuple[Path, int]]  # mugshots + probes of the fine-tuning subjects


def _find(folder: Path, stem: str) -> Path | None:
    for ext in (".jpg", ".JPG", ".jpeg", ".png"):
        if (folder / (stem + ext)).is_file():
            return folder / (stem + ext)
    return None


def load_scface(
    root: str | os.PathLike, protocol: str = "finetune50", cams: tuple[int, ...] = (1, 2, 3, 4, 5), subjects: int = 130
) -> SCface:
    """Collect gallery/probe lists for ``protocol``; every missing image or folder is listed."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"load_scface: protocol must be one of {sorted(PROTOCOLS)}, got {protocol!r}")
    folders = ["mugshot_frontal_cropped_all"] + [
        f"surveillance_cameras_distance_{d}/cam{c}" for d in (1, 2, 3) for c in cams
    ]
    root = require("SCface", root, folders)
    train_ids, test_ids = (list(r) for r in PROTOCOLS[protocol])
    test_ids = [s for s in test_ids if s <= subjects]
    missing: list[Path] = []

    def get(folder: str, stem: str, sid: int) -> tuple[Path, int] | None:
        p = _find(root / folder, stem)
        if p is None:
            missing.append(root / folder / (stem + ".jpg"))
            return None
        return (p, sid)

    def probes_of(ids: list[int], d: int) -> list[tuple[Path, int]]:
        items = [get(f"surveillance_cameras_distance_{d}/cam{c}", f"{s:03d}_cam{c}_{d}", s) for s in ids for c in cams]
        return [x for x in items if x]

    gallery = [x for x in (get(folders[0], f"{s:03d}_frontal", s) for s in test_ids) if x]
    probes = {d: probes_of(test_ids, d) for d in (1, 2, 3)}
    train = [x for x in (get(folders[0], f"{s:03d}_frontal", s) for s in train_ids) if x]
    for d in (1, 2, 3):
        train += probes_of(train_ids, d)
    if missing:
        raise MissingFilesError(f"SCface ({protocol})", root, missing)
    return SCface(protocol, train_ids, gallery, probes, train)
