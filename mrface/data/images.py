"""Image encode/decode/resize at the I/O edge: uint8 (H, W, 3) arrays in RGB or BGR order (OpenCV)."""

from __future__ import annotations

import cv2
import numpy as np

COLORS = ("RGB", "BGR")
_INTERP = {
    "area": cv2.INTER_AREA,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "nearest": cv2.INTER_NEAREST,
    "lanczos": cv2.INTER_LANCZOS4,
}

cv2.setNumThreads(1)  # data workers parallelise across processes; OpenCV threads only oversubscribe


def _check_color(color: str) -> None:
    if color not in COLORS:
        raise ValueError(f"color must be one of {COLORS}, got {color!r}")


def decode_image(data: bytes | np.ndarray, color: str = "RGB") -> np.ndarray:
    """Encoded JPEG/PNG/... bytes -> (H, W, 3) uint8 in ``color`` order. Grey images are expanded."""
    _check_color(color)
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    if buf.size == 0:
        raise ValueError("empty image data")
    im = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if im is None:
        head = bytes(buf[:8]).hex()
        raise ValueError(f"cannot decode image ({buf.size} bytes, starting {head}); expected JPEG/PNG/BMP data")
    return cv2.cvtColor(im, cv2.COLOR_BGR2RGB) if color == "RGB" else im


def encode_image(image: np.ndarray, ext: str = ".jpg", quality: int = 95, color: str = "RGB") -> bytes:
    """(H, W, 3) uint8 in ``color`` order -> encoded bytes (``.jpg`` with ``quality``, or ``.png``)."""
    _check_color(color)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"encode_image: expected (H, W, 3) uint8, got {image.dtype} {image.shape}")
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if color == "RGB" else image
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext.lower() in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, bgr, params)
    if not ok:
        raise ValueError(f"encode_image: OpenCV could not encode as {ext}")
    return buf.tobytes()


def resize_image(image: np.ndarray, size: int | tuple[int, int], interpolation: str = "area") -> np.ndarray:
    """Resize (H, W, C) to (size, size) or (h, w) with an OpenCV interpolation name."""
    if interpolation not in _INTERP:
        raise ValueError(f"interpolation must be one of {sorted(_INTERP)}, got {interpolation!r}")
    h, w = (size, size) if isinstance(size, int) else size
    if image.shape[:2] == (h, w):
        return image
    return cv2.resize(image, (w, h), interpolation=_INTERP[interpolation])
