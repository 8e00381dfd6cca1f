"""Training tests: the shared set-up modules of this folder (``helpers``, ``stage_helpers``) import by their bare
names from the subfolders too (``stages/``), so this folder goes on ``sys.path``."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
