"""Build mrface: setuptools drives CMake to compile the pybind11 module ``mrface._C`` from ``csrc/``.

Switches (environment variables):
  MRFACE_CUDA=auto|0|1   compile the CUDA kernels (auto: when a CUDA toolkit is found; 1: fail without one)
  MRFACE_CUDA_ARCHS      CMake CUDA architectures (default "80-real;86-real;89-real;90-real;90-virtual")
  MRFACE_BUILD_TYPE      CMake build type (default Release)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
DEFAULT_CUDA_ARCHS = "80-real;86-real;89-real;90-real;90-virtual"


# Top-level folders installed into the mrface namespace (DESIGN.md §2).
PACKAGE_DIRS = {
    "mrface": "mrface",
    "mrface.kernels": "kernels",
    "mrface.training": "training",
    "mrface.eval": "eval",
}


def discover_packages():
    """Every folder with an ``__init__.py`` under the mapped roots, named in the mrface namespace."""
    for package, folder in PACKAGE_DIRS.items():
        for init in sorted((ROOT / folder).rglob("__init__.py")):
            relative = init.parent.relative_to(ROOT / folder)
            yield ".".join([package, *relative.parts]) if relative.parts else package


class CMakeExtension(Extension):
    def __init__(self, name: str, source_dir: Path) -> None:
        super().__init__(name, sources=[])
        self.source_dir = str(source_dir)


def find_cuda_compiler() -> str | None:
    """The real nvcc of a CUDA toolkit: CUDA_HOME/CUDA_PATH, then /usr/local/cuda, then nvcc on PATH.

    A wrapper script on PATH (as on our CI machines) is resolved to the toolkit it execs, because
    CMake locates the toolkit's headers and libraries relative to the compiler it is given.
    """
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    for home in candidates:
        if home and (Path(home) / "bin" / "nvcc").is_file():
            return str(Path(home) / "bin" / "nvcc")
    on_path = shutil.which("nvcc")
    if on_path is None:
        return None
    try:
        head = Path(on_path).read_text(errors="ignore")[:4096]
    except OSError:
        return on_path
    for token in head.split():
        if token.endswith("/nvcc") and Path(token).is_file() and token != on_path:
            return token
    return str(Path(on_path).resolve())


def require_tool(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"mrface build: '{name}' not found on PATH. {hint}")
    return path


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        assert isinstance(ext, CMakeExtension)
        cmake = require_tool("cmake", "Install CMake >= 3.18 (e.g. `pip install cmake` or your OS package).")
        try:
            import pybind11
        except ImportError as err:
            raise RuntimeError("mrface build: pybind11 is missing; `pip install pybind11>=2.12`.") from err

        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_type = os.environ.get("MRFACE_BUILD_TYPE", "Release")
        build_temp = Path(self.build_temp).resolve() / ext.name
        build_temp.mkdir(parents=True, exist_ok=True)

        args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            f"-DCMAKE_BUILD_TYPE={build_type}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            # Pin the interpreter: pyenv shims otherwise lead pybind11 to another Python.
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-DPYTHON_EXECUTABLE={sys.executable}",
            "-DPYBIND11_FINDPYTHON=ON",
        ]
        if shutil.which("ninja"):
            args.append("-GNinja")

        mode = os.environ.get("MRFACE_CUDA", "auto").lower()
        if mode not in {"auto", "0", "1"}:
            raise RuntimeError(f"mrface build: MRFACE_CUDA must be auto, 0 or 1, got {mode!r}")
        nvcc = find_cuda_compiler() if mode != "0" else None
        if mode == "1" and nvcc is None:
            raise RuntimeError(
                "mrface build: MRFACE_CUDA=1 but no CUDA compiler was found. Set CUDA_HOME to the "
                "toolkit (the folder holding bin/nvcc) or use MRFACE_CUDA=0 for a CPU-only build."
            )
        if nvcc is not None:
            archs = os.environ.get("MRFACE_CUDA_ARCHS", DEFAULT_CUDA_ARCHS)
            args += ["-DMRFACE_CUDA=ON", f"-DCMAKE_CUDA_COMPILER={nvcc}", f"-DCMAKE_CUDA_ARCHITECTURES={archs}"]
            print(f"mrface build: CUDA kernels ON (nvcc {nvcc}, archs {archs})")
        else:
            args.append("-DMRFACE_CUDA=OFF")
            print("mrface build: CUDA kernels OFF (no CUDA compiler found or MRFACE_CUDA=0)")

        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
        try:
            subprocess.run([cmake, "-S", ext.source_dir, "-B", str(build_temp), *args], check=True)
            subprocess.run([cmake, "--build", str(build_temp), "--parallel", jobs], check=True)
        except subprocess.CalledProcessError as err:
            raise RuntimeError(
                f"mrface build: CMake failed ({err}). Check that a C++17 compiler is installed; for CUDA "
                "errors, retry with MRFACE_CUDA=0 to build the CPU kernels only."
            ) from err


setup(
    packages=list(discover_packages()),
    package_dir=PACKAGE_DIRS,
    package_data={"mrface.training": ["recipes/*.yaml"]},
    ext_modules=[CMakeExtension("mrface._C", ROOT)],
    cmdclass={"build_ext": CMakeBuild},
    zip_safe=False,
)
