"""Verification ``.bin`` files (LFW, CFP, AgeDB, ... as InsightFace ships them): safe loader and writer.

Format (REFERENCE.md §8): a pickle of ``(images, issame)`` where ``images`` is a list of 2P encoded
images (bytes, or numpy uint8 arrays of the bytes in files written through mxnet) and ``issame`` a
list of P booleans; pair i is images 2i and 2i+1. Old files are Python-2 pickles, read with
``encoding='bytes'``.

Loading never runs arbitrary pickle code: :class:`RestrictedUnpickler` resolves only the globals the
format needs (numpy array reconstruction and a few builtins) and names any other global it refuses.
"""

from __future__ import annotations

import io
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mrface.data.images import decode_image, encode_image, resize_image
from mrface.io import atomic_write

# (module, name) pairs a verification .bin may reference. numpy's array pickles call
# _reconstruct/scalar and build dtypes; Python-2 pickles of lists/tuples need nothing else.
ALLOWED_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("builtins", "bytearray"),
        ("__builtin__", "bytearray"),
        ("builtins", "bool"),
        ("__builtin__", "bool"),
        ("_codecs", "encode"),
    }
)


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """Stand-in for ``_codecs.encode`` (how protocol-2 pickles store bytes): only latin-1 is allowed."""
    if encoding.lower().replace("-", "").replace("_", "") not in ("latin1", "iso88591"):
        raise UnsafePickleError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin-1")


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle references a global outside :data:`ALLOWED_GLOBALS`."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that refuses every global not in :data:`ALLOWED_GLOBALS` (and all persistent ids)."""

    def __init__(self, file: io.BufferedIOBase, source: str = "<pickle>", **kwargs: object) -> None:
        super().__init__(file, **kwargs)
        self.source = source

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in ALLOWED_GLOBALS:
            allowed = sorted(f"{m}.{n}" for m, n in ALLOWED_GLOBALS)
            raise UnsafePickleError(
                f"{self.source}: refusing to load global '{module}.{name}'; "
                f"a verification .bin may only reference {allowed}"
            )
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        return super().find_class(module, name)

    def persistent_load(self, pid: object) -> object:
        raise UnsafePickleError(f"{self.source}: refusing persistent id {pid!r}")


def safe_load_pickle(data: bytes, source: str = "<pickle>") -> object:
    """Unpickle with the allow-list; Python-2 str objects come back as bytes (``encoding='bytes'``).

    A truncated or non-pickle file raises ValueError naming ``source``."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), source=source, encoding="bytes").load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, AttributeError) as err:
        raise ValueError(f"{source}: not a readable verification .bin (truncated or another format?): {err}") from None


@dataclass
class VerificationPairs:
    """Decoded verification set. ``images``: (2P, H, W, 3) uint8 in ``color`` order; ``issame``: (P,) bool."""

    images: np.ndarray
    issame: np.ndarray
    color: str = "RGB"
    skipped: list[str] = field(default_factory=list)  # pairs dropped by load_bin(skip_corrupt=True), described

    @property
    def num_pairs(self) -> int:
        return len(self.issame)


def read_bin_raw(path: str | os.PathLike) -> tuple[list[bytes], np.ndarray]:
    """(list of 2P encoded images, (P,) bool) from a ``.bin``, validated, without decoding."""
    path = Path(path)
    obj = safe_load_pickle(path.read_bytes(), str(path))
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
        raise ValueError(f"{path}: expected a pickled (images, issame) pair, got {type(obj).__name__}")
    images, issame = obj
    if not isinstance(images, (list, tuple)):
        raise ValueError(f"{path}: images must be a list of encoded images, got {type(images).__name__}")
    flags = np.asarray(issame)
    if flags.ndim != 1 or flags.dtype.kind not in "biu":
        raise ValueError(f"{path}: issame must be a 1-D list of booleans, got {flags.dtype} {flags.shape}")
    if len(images) != 2 * len(flags):
        raise ValueError(f"{path}: {len(images)} images for {len(flags)} pairs; expected {2 * len(flags)}")
    raw = []
    for i, im in enumerate(images):
        if isinstance(im, np.ndarray) and im.dtype == np.uint8:
            im = im.tobytes()
        if not isinstance(im, (bytes, bytearray)):
            raise ValueError(f"{path}: image {i} is a {type(im).__name__}, expected encoded bytes")
        raw.append(bytes(im))
    return raw, flags.astype(bool)


def load_bin(
    path: str | os.PathLike,
    size: int | tuple[int, int] | None = None,
    color: str = "RGB",
    interpolation: str = "area",
    skip_corrupt: bool = False,
) -> VerificationPairs:
    """Load and decode a verification ``.bin``.

    Args:
        path: the file.
        size: decode then resize every image to (size, size) or (h, w); None keeps the stored size
            (all images must then share it).
        color: ``RGB`` or ``BGR`` channel order of the returned array.
        interpolation: OpenCV interpolation for ``size`` (``area``, ``linear``, ``cubic``, ``nearest``).
        skip_corrupt: drop a pair whose image cannot be decoded (listed in ``skipped``) instead of raising.
    Returns:
        :class:`VerificationPairs` with images (2P, H, W, 3) uint8.
    """
    raw, issame = read_bin_raw(path)
    decoded, skipped, bad_pairs = [], [], set()
    for i, data in enumerate(raw):
        try:
            decode_image(data, color)
        except ValueError as err:
            if not skip_corrupt:
                raise ValueError(f"{path}: image {i} (pair {i // 2}): {err}") from None
            skipped.append(f"{path}: image {i} (pair {i // 2}): {err}")
            bad_pairs.add(i // 2)
    keep = [p for p in range(len(issame)) if p not in bad_pairs]
    raw = [raw[2 * p + k] for p in keep for k in (0, 1)]
    issame = issame[keep]
    for i, data in enumerate(raw):
        im = decode_image(data, color)
        if size is not None:
            im = resize_image(im, size, interpolation)
        if decoded and im.shape != decoded[0].shape:
            raise ValueError(f"{path}: image {i} has shape {im.shape}, image 0 {decoded[0].shape}; pass size=")
        decoded.append(im)
    images = np.stack(decoded) if decoded else np.zeros((0, 112, 112, 3), np.uint8)
    return VerificationPairs(images, issame, color, skipped)


def write_bin(
    path: str | os.PathLike,
    images: np.ndarray | list[bytes],
    issame: np.ndarray | list[bool],
    color: str = "RGB",
    ext: str = ".jpg",
    quality: int = 95,
) -> None:
    """Write a ``.bin`` atomically (pickle protocol 2, readable by InsightFace's loader).

    Args:
        images: (2P, H, W, 3) uint8 in ``color`` order, or a list of 2P already encoded images.
        issame: (P,) booleans.
        ext: encoding of array images, ``.jpg`` or ``.png``.
    """
    path = Path(path)
    flags = [bool(v) for v in np.asarray(issame).reshape(-1)]
    if len(images) != 2 * len(flags):
        raise ValueError(f"write_bin: {len(images)} images for {len(flags)} pairs; expected {2 * len(flags)}")
    if isinstance(images, np.ndarray):
        encoded = [encode_image(im, ext, quality, color) for im in images]
    else:
        encoded = [bytes(im) for im in images]
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as f:
        pickle.dump((encoded, flags), f, protocol=2)
