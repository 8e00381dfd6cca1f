"""Verification .bin: round trip, Python-2 pickles, and refusal of malicious pickles."""

from __future__ import annotations

import os
import pickle
import struct

import cv2
import numpy as np
import pytest

from mrface.data.bins import UnsafePickleError, load_bin, read_bin_raw, write_bin


def _images(n: int, size: int = 24) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_round_trip_png_exact(tmp_path):
    images, issame = _images(6), [True, False, True]
    write_bin(tmp_path / "v.bin", images, issame, ext=".png")
    pairs = load_bin(tmp_path / "v.bin")
    assert pairs.num_pairs == 3 and pairs.issame.tolist() == issame
    np.testing.assert_array_equal(pairs.images, images)
    bgr = load_bin(tmp_path / "v.bin", color="BGR")
    np.testing.assert_array_equal(bgr.images, images[..., ::-1])
    small = load_bin(tmp_path / "v.bin", size=12)
    expected = np.stack([cv2.resize(im, (12, 12), interpolation=cv2.INTER_AREA) for im in images])
    np.testing.assert_array_equal(small.images, expected)
    assert not list(tmp_path.glob(".*"))


def test_file_readable_by_plain_pickle_like_insightface(tmp_path):
    images = _images(4)
    write_bin(tmp_path / "v.bin", images, [True, False], ext=".png")
    with open(tmp_path / "v.bin", "rb") as f:
        bins, issame = pickle.load(f, encoding="bytes")  # what InsightFace's loader does (trusted file)
    assert issame == [True, False] and len(bins) == 4
    dec = cv2.cvtColor(cv2.imdecode(np.frombuffer(bins[1], np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(dec, images[1])


def _py2_pickle(blobs: list[bytes], flags: list[bool]) -> bytes:
    """Hand-assembled protocol-2 pickle as Python 2 writes it: str objects as BINSTRING opcodes."""
    out = b"\x80\x02]("
    for b in blobs:
        out += b"T" + struct.pack("<i", len(b)) + b
    out += b"e](" + b"".join(b"\x88" if f else b"\x89" for f in flags) + b"e\x86."
    return out


def test_python2_pickle(tmp_path):
    images = _images(2)
    blobs = [cv2.imencode(".png", im[..., ::-1])[1].tobytes() for im in images]
    (tmp_path / "py2.bin").write_bytes(_py2_pickle(blobs, [True]))
    raw, issame = read_bin_raw(tmp_path / "py2.bin")
    assert raw == blobs and issame.tolist() == [True]
    np.testing.assert_array_equal(load_bin(tmp_path / "py2.bin").images, images)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_malicious_pickle_is_refused(tmp_path):
    (tmp_path / "evil.bin").write_bytes(pickle.dumps(([_Evil(), b"x"], [True]), protocol=2))
    with pytest.raises(UnsafePickleError, match=r"evil\.bin: refusing to load global '(posix|os)\.system'"):
        read_bin_raw(tmp_path / "evil.bin")


def test_numpy_array_images_are_allowed(tmp_path):
    images = _images(2)
    blobs = [np.frombuffer(cv2.imencode(".png", im[..., ::-1])[1].tobytes(), np.uint8) for im in images]
    (tmp_path / "np.bin").write_bytes(pickle.dumps((blobs, [False]), protocol=2))
    np.testing.assert_array_equal(load_bin(tmp_path / "np.bin").images, images)


def test_codecs_encode_only_latin1(tmp_path):
    payload = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13\x86R."
    (tmp_path / "c.bin").write_bytes(payload)
    with pytest.raises(UnsafePickleError, match="rot13"):
        read_bin_raw(tmp_path / "c.bin")


def test_structure_errors(tmp_path):
    (tmp_path / "a.bin").write_bytes(pickle.dumps(([b"x"] * 3, [True]), protocol=2))
    with pytest.raises(ValueError, match=r"a\.bin: 3 images for 1 pairs; expected 2"):
        read_bin_raw(tmp_path / "a.bin")
    (tmp_path / "b.bin").write_bytes(pickle.dumps(([b"notanimage", b"x"], [True]), protocol=2))
    with pytest.raises(ValueError, match=r"b\.bin: image 0 \(pair 0\): cannot decode"):
        load_bin(tmp_path / "b.bin")


def test_load_bin_skips_pairs_with_a_corrupt_image_only_when_asked(tmp_path):
    from mrface.data.images import encode_image

    good = encode_image(np.full((8, 8, 3), 7, np.uint8), ".png")
    path = tmp_path / "v.bin"
    write_bin(path, [good, good, good, b"\xff" * 20, good, good], [True, False, True])
    with pytest.raises(ValueError, match=rf"{path}: image 3 \(pair 1\): cannot decode image"):
        load_bin(path)
    pairs = load_bin(path, skip_corrupt=True)
    assert pairs.issame.tolist() == [True, True] and pairs.images.shape == (4, 8, 8, 3)
    assert len(pairs.skipped) == 1 and pairs.skipped[0].startswith(f"{path}: image 3 (pair 1)")
