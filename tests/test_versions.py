"""versions(): installed versions as importlib.metadata and platform report them."""

from __future__ import annotations

import platform

import numpy as np
import torch

from mrface.versions import package_version, versions


def test_versions_match_the_imported_modules():
    got = versions(("torch", "numpy"))
    assert got == {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}


def test_missing_packages_get_the_callers_marker():
    name = "no-such-package-mrface-test"
    assert package_version(name) == "not installed"
    assert versions((name,), missing=None, python=False) == {name: None}
