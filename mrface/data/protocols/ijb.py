"""IJB-B / IJB-C in the InsightFace evaluation layout (REFERENCE.md §8).

``root/loose_crop/*.jpg``; ``root/meta/{name}_name_5pts_score.txt`` (image name, 10 landmark
numbers x1 y1 .. x5 y5, faceness score); ``{name}_face_tid_mid.txt`` (image name, template id,
media id); ``{name}_template_pair_label.txt`` (tid1, tid2, 0/1); optional 1:N csv files
(``TEMPLATE_ID``, ``SUBJECT_ID`` columns, e.g. ``ijbc_1N_gallery_G1.csv``).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrface.data.images import decode_image
from mrface.data.protocols.align import align_face
from mrface.data.protocols.common import MissingFilesError, read_rows, require

ONE_TO_N = {
    "ijbc": ("ijbc_1N_gallery_G1.csv", "ijbc_1N_gallery_G2.csv", "ijbc_1N_probe_mixed.csv"),
    "ijbb": ("ijbb_1N_gallery_S1.csv", "ijbb_1N_gallery_S2.csv", "ijbb_1N_probe_mixed.csv"),
}


@dataclass
class IJB:
    """Parsed IJB metadata. Per image arrays are aligned with ``names``."""

    root: Path
    names: list[str]
    landmarks: np.ndarray  # (N, 5, 2) float32
    faceness: np.ndarray  # (N,) float32
    templates: np.ndarray  # (N,) int64
    medias: np.ndarray  # (N,) int64
    pairs: np.ndarray  # (P, 2) int64 template ids
    labels: np.ndarray  # (P,) int8 1 = same subject

    def aligned(self, index: int, size: int = 112, color: str = "RGB") -> np.ndarray:
        """Image ``index`` decoded and aligned to the ArcFace template: (size, size, 3) uint8."""
        path = self.root / "loose_crop" / self.names[index]
        return align_face(decode_image(path.read_bytes(), color), self.landmarks[index], size)

    def one_to_n(self, filename: str) -> dict[int, int]:
        """{template id: subject id} from a 1:N csv in ``meta/``."""
        path = self.root / "meta" / filename
        if not path.is_file():
            raise MissingFilesError("IJB 1:N", self.root, [path])
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if not {"TEMPLATE_ID", "SUBJECT_ID"} <= set(reader.fieldnames or []):
                raise ValueError(f"{path}: expected TEMPLATE_ID and SUBJECT_ID columns, got {reader.fieldnames}")
            return {int(r["TEMPLATE_ID"]): int(r["SUBJECT_ID"]) for r in reader}


def load_ijb(root: str | os.PathLike, name: str = "ijbc", check_images: bool = True) -> IJB:
    """Load IJB-B (``name='ijbb'``) or IJB-C (``'ijbc'``) metadata; every missing file is listed.

    With ``check_images`` every image named in the landmark file must exist under ``loose_crop``.
    """
    if name not in ONE_TO_N:
        raise ValueError(f"load_ijb: name must be 'ijbb' or 'ijbc', got {name!r}")
    files = [
        f"meta/{name}_name_5pts_score.txt",
        f"meta/{name}_face_tid_mid.txt",
        f"meta/{name}_template_pair_label.txt",
        "loose_crop",
    ]
    root = require(name.upper(), root, files)
    lmk_rows = read_rows(root / files[0], (str,) + (float,) * 11)
    tid_rows = read_rows(root / files[1], (str, int, int))
    pair_rows = read_rows(root / files[2], (int, int, int))
    names = [r[0] for r in lmk_rows]
    if [r[0] for r in tid_rows] != names:
        raise ValueError(f"{root / files[1]}: image names differ from {files[0]} (must list the same images in order)")
    if check_images:
        missing = [root / "loose_crop" / n for n in names if not (root / "loose_crop" / n).is_file()]
        if missing:
            raise MissingFilesError(name.upper(), root, missing)
    lmk = np.array([r[1:11] for r in lmk_rows], np.float32).reshape(-1, 5, 2)
    return IJB(
        root,
        names,
        lmk,
        np.array([r[11] for r in lmk_rows], np.float32),
        np.array([r[1] for r in tid_rows], np.int64),
        np.array([r[2] for r in tid_rows], np.int64),
        np.array([r[:2] for r in pair_rows], np.int64).reshape(-1, 2),
        np.array([r[2] for r in pair_rows], np.int8),
    )
