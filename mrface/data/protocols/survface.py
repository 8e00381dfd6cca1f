"""QMUL-SurvFace open-set identification test set (native low-resolution crops).

``Face_Identification_Test_Set/{gallery, mated_probe, unmated_probe}/`` image folders, each with a
MATLAB list ``<folder>_img_ID_pairs.mat`` beside it holding a cell array of image names and a numeric
array of 1-based subject ids (unmated probes: names only). Lists are read with scipy; the variable
names are found by type (first cell array of strings, first numeric array), as releases differ.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io

from mrface.data.protocols.common import MissingFilesError, require

SETS = ("gallery", "mated_probe", "unmated_probe")
TEST = "Face_Identification_Test_Set"


@dataclass
class SurvFace:
    gallery: list[tuple[Path, int]]
    mated_probe: list[tuple[Path, int]]
    unmated_probe: list[tuple[Path, int]]  # ids -1


def _strings(value: np.ndarray) -> list[str] | None:
    if value.dtype == object:
        flat = [np.asarray(v).reshape(-1) for v in value.reshape(-1)]
        if flat and all(f.dtype.kind == "U" and f.size == 1 for f in flat):
            return [str(f[0]) for f in flat]
    if value.dtype.kind == "U":
        return [str(v).strip() for v in value.reshape(-1)]
    return None


def read_mat_list(path: Path, need_ids: bool) -> tuple[list[str], np.ndarray | None]:
    """(image names, 1-based ids or None) from a SurvFace .mat list."""
    mat = {k: v for k, v in scipy.io.loadmat(path).items() if not k.startswith("__")}
    names = next((s for v in mat.values() if isinstance(v, np.ndarray) and (s := _strings(v)) is not None), None)
    ids = next((v.reshape(-1) for v in mat.values() if isinstance(v, np.ndarray) and v.dtype.kind in "iuf"), None)
    if names is None:
        raise ValueError(f"{path}: no cell array of image names among variables {sorted(mat)}")
    if need_ids:
        if ids is None:
            raise ValueError(f"{path}: no numeric id array among variables {sorted(mat)}")
        if len(ids) != len(names):
            raise ValueError(f"{path}: {len(names)} image names but {len(ids)} ids")
        if (ids < 1).any() or (ids != np.round(ids)).any():
            raise ValueError(f"{path}: ids must be positive integers (1-based)")
    return names, (ids.astype(np.int64) if need_ids else None)


def load_survface(root: str | os.PathLike) -> SurvFace:
    """Lists of (path, subject id); every missing folder, list or listed image is reported."""
    paths = [f"{TEST}/{s}" for s in SETS] + [f"{TEST}/{s}_img_ID_pairs.mat" for s in SETS]
    root = require("QMUL-SurvFace", root, paths)
    out, missing = {}, []
    for s in SETS:
        names, ids = read_mat_list(root / TEST / f"{s}_img_ID_pairs.mat", need_ids=s != "unmated_probe")
        files = [root / TEST / s / n for n in names]
        missing += [f for f in files if not f.is_file()]
        out[s] = list(zip(files, ids.tolist() if ids is not None else [-1] * len(files), strict=True))
    if missing:
        raise MissingFilesError("QMUL-SurvFace", root, missing)
    return SurvFace(**out)
