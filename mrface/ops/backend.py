"""Backend choice for every mrface op.

For CUDA tensors the order is CUDA extension -> Triton -> reference; for CPU tensors C++ ->
reference. Ops with a pure-PyTorch tiled path (mrface/ops/chunked/) also offer ``chunked``, which runs on
any device. ``MRFACE_BACKEND`` (environment) or :func:`use_backend` force one backend, e.g. for tests
and benchmarks; forcing a backend that cannot run raises instead of silently falling back.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
from collections.abc import Iterator
from types import ModuleType

import torch

BACKENDS = ("cuda", "triton", "cpp", "chunked", "reference")
KERNEL_BACKENDS = ("cuda", "triton", "cpp", "reference")  # what an op without a chunked path supports
_DEFAULT_ORDER = {"cuda": ("cuda", "triton", "reference"), "cpu": ("cpp", "reference")}
_forced: str | None = None


@functools.cache
def compiled_extension() -> ModuleType | None:
    """The compiled module ``mrface._C`` or None when it is not built."""
    try:
        from mrface import _C
    except ImportError:
        return None
    return _C


def build_info() -> dict:
    """What ``mrface._C`` was compiled with (CUDA, archs, OpenMP, compiler); empty when missing."""
    ext = compiled_extension()
    return dict(ext.build_info()) if ext is not None else {}


def triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.cache
def _triton_importable() -> bool:
    return importlib.util.find_spec("triton") is not None


def backend_runs_on(backend: str, device_type: str) -> bool:
    """Whether ``backend`` can run an op on tensors of ``device_type`` on this machine."""
    ext = compiled_extension()
    if backend in ("reference", "chunked"):
        return True
    if backend == "cpp":
        return device_type == "cpu" and ext is not None
    if backend == "cuda":
        return device_type == "cuda" and ext is not None and bool(build_info().get("cuda"))
    if backend == "triton":
        # Triton kernels read their tap tables etc. from the C++ helpers, so they need _C too.
        if not (_triton_importable() and ext is not None):
            return False
        return device_type == "cuda" or (device_type == "cpu" and triton_interpreted())
    raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")


def available_backends() -> list[str]:
    """Backends usable on this machine for some device (``cuda`` needs a visible GPU)."""
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return [b for b in BACKENDS if any(backend_runs_on(b, d) for d in devices)]


def forced_backend() -> str | None:
    name = _forced or os.environ.get("MRFACE_BACKEND") or None
    if name is not None and name not in BACKENDS:
        raise ValueError(f"MRFACE_BACKEND / use_backend got {name!r}; expected one of {BACKENDS}")
    return name


@contextlib.contextmanager
def use_backend(name: str | None) -> Iterator[None]:
    """Force ``name`` (one of :data:`BACKENDS`, or None for automatic) inside the ``with`` block."""
    global _forced
    if name is not None and name not in BACKENDS:
        raise ValueError(f"use_backend: unknown backend {name!r}; expected one of {BACKENDS}")
    previous, _forced = _forced, name
    try:
        yield
    finally:
        _forced = previous


def choose_backend(op: str, device: torch.device, supported: tuple[str, ...] = KERNEL_BACKENDS) -> str:
    """The backend that runs ``op`` on ``device``: the forced one, else the first usable by default order."""
    forced = forced_backend()
    if forced is not None:
        if forced not in supported or not backend_runs_on(forced, device.type):
            raise RuntimeError(
                f"{op}: backend {forced!r} was forced but cannot run on {device.type} tensors here "
                f"(available for {device.type}: {[b for b in supported if backend_runs_on(b, device.type)]})"
            )
        return forced
    for backend in _DEFAULT_ORDER.get(device.type, ("reference",)):
        if backend in supported and backend_runs_on(backend, device.type):
            return backend
    return "reference"
