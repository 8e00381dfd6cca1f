"""MXNet/InsightFace RecordIO (``.rec`` + ``.idx``) without mxnet: framing, memory-mapped reader, writer.

Byte layout (REFERENCE.md §8, dmlc-core ``recordio.h``): every chunk is
``[uint32 magic 0xced7230a][uint32 lrecord][payload][zero pad to 4 bytes]`` little-endian, with
``cflag = lrecord >> 29`` and ``length = lrecord & (2**29 - 1)``. A payload that contains the magic
at a 4-byte aligned position is split there: the magic is dropped and the pieces are written as
chunks with cflag 1 (first), 2 (middle) and 3 (last); the reader puts the magic back between pieces.
The ``.idx`` file is text, one ``key\\toffset`` line per record (offset of its first chunk).

This module only knows records as bytes; the InsightFace payload header and dataset layout are in
:mod:`mrface.data.insightface`.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterator
from pathlib import Path

from mrface.io import publish, temporary_sibling

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)
MAX_LENGTH = (1 << 29) - 1
_CHUNK = struct.Struct("<II")


class RecordIOError(ValueError):
    """A corrupt or inconsistent record; ``path``, ``key`` (None if unknown) and ``offset`` say where."""

    def __init__(self, path: str | os.PathLike, key: int | None, offset: int, reason: str) -> None:
        self.path, self.key, self.offset, self.reason = str(path), key, offset, reason
        where = f"record key {key}" if key is not None else "record"
        super().__init__(f"{self.path}: {where} at byte offset {offset}: {reason}")


def idx_path_for(rec_path: str | os.PathLike) -> Path:
    """``foo.rec`` -> ``foo.idx``."""
    return Path(rec_path).with_suffix(".idx")


def encode_chunks(payload: bytes) -> bytes:
    """Frame one record exactly as dmlc ``RecordIOWriter::WriteRecord`` does (split at aligned magics)."""
    if len(payload) > MAX_LENGTH:
        raise ValueError(f"RecordIO payload of {len(payload)} bytes exceeds the 2**29 - 1 byte limit")
    view = memoryview(payload)
    parts = []
    start = 0
    pos = payload.find(MAGIC_BYTES)
    while pos != -1 and pos + 4 <= len(payload):
        if pos % 4 == 0:
            cflag = 1 if start == 0 else 2
            parts.append(_CHUNK.pack(MAGIC, (cflag << 29) | (pos - start)) + view[start:pos])
            start = pos + 4
            pos = payload.find(MAGIC_BYTES, start)
        else:
            pos = payload.find(MAGIC_BYTES, pos + 1)
    tail = len(payload) - start
    parts.append(_CHUNK.pack(MAGIC, ((3 if start else 0) << 29) | tail) + view[start:])
    parts.append(b"\0" * (-tail % 4))
    return b"".join(parts)


def read_idx(idx_path: str | os.PathLike) -> tuple[list[int], list[int]]:
    """Parse a ``.idx`` file into (keys, offsets), in file order. Errors name the file and line."""
    keys, offsets = [], []
    with open(idx_path, encoding="ascii", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            fields = line.split("\t")
            try:
                if len(fields) != 2:
                    raise ValueError
                key, offset = int(fields[0]), int(fields[1])
            except ValueError:
                msg = f"{idx_path}: line {lineno}: expected 'key<TAB>offset' integers, got {line!r}"
                raise ValueError(msg) from None
            if offset < 0:
                raise ValueError(f"{idx_path}: line {lineno}: negative offset {offset}")
            keys.append(key)
            offsets.append(offset)
    return keys, offsets


class RecordIOReader:
    """Random access to the records of a ``.rec`` file through its ``.idx`` (or a scan without one).

    The file is memory-mapped lazily on first read in each process, so a reader can be handed to
    DataLoader workers (pickling drops the map; each worker opens its own).

    Args:
        path: the ``.rec`` file.
        idx_path: its index; default ``path`` with suffix ``.idx``. If the index file does not exist
            the records are found by a sequential scan and numbered 0, 1, 2, ...
    """

    def __init__(self, path: str | os.PathLike, idx_path: str | os.PathLike | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"RecordIO file not found: {self.path}")
        self.size = self.path.stat().st_size
        idx = Path(idx_path) if idx_path is not None else idx_path_for(self.path)
        self._map: mmap.mmap | None = None
        self._pid = -1
        if idx.is_file():
            self.idx_path: Path | None = idx
            keys, offsets = read_idx(idx)
        else:
            if idx_path is not None:
                raise FileNotFoundError(f"RecordIO index not found: {idx}")
            self.idx_path = None
            offsets = self.scan_offsets()
            keys = list(range(len(offsets)))
        self.keys = keys
        self._offsets = dict(zip(keys, offsets, strict=True))
        if len(self._offsets) != len(keys):
            raise ValueError(f"{idx}: duplicate keys in the index")

    # -- mapping ------------------------------------------------------------------------------
    def _buffer(self) -> mmap.mmap | bytes:
        if self._map is None or self._pid != os.getpid():
            if self.size == 0:
                return b""
            with open(self.path, "rb") as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            self._pid = os.getpid()
        return self._map

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_map"], state["_pid"] = None, -1
        return state

    def close(self) -> None:
        if self._map is not None and self._pid == os.getpid():
            self._map.close()
        self._map = None

    def __enter__(self) -> RecordIOReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- records ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, key: int) -> bool:
        return key in self._offsets

    def offset(self, key: int) -> int:
        try:
            return self._offsets[key]
        except KeyError:
            raise KeyError(f"{self.path}: no record with key {key} in the index") from None

    def read(self, key: int) -> bytes:
        """The payload of record ``key`` (split chunks reassembled). Raises :class:`RecordIOError`."""
        payload, _ = self._read_at(self.offset(key), key)
        return payload

    def _read_at(self, offset: int, key: int | None) -> tuple[bytes, int]:
        buf = self._buffer()
        size = self.size
        if offset >= size:
            raise RecordIOError(self.path, key, offset, f"offset beyond the end of the file ({size} bytes)")
        if offset % 4:
            raise RecordIOError(self.path, key, offset, "offset is not 4-byte aligned")
        pieces = []
        pos = offset
        first = True
        while True:
            if pos + 8 > size:
                raise RecordIOError(self.path, key, pos, f"truncated chunk header ({size - pos} bytes left)")
            magic, lrec = _CHUNK.unpack_from(buf, pos)
            if magic != MAGIC:
                raise RecordIOError(self.path, key, pos, f"bad magic 0x{magic:08x}, expected 0x{MAGIC:08x}")
            cflag, length = lrec >> 29, lrec & MAX_LENGTH
            if cflag > 3 or (first and cflag not in (0, 1)) or (not first and cflag not in (2, 3)):
                expected = "0 or 1 (record start)" if first else "2 or 3 (continuation)"
                raise RecordIOError(self.path, key, pos, f"chunk flag {cflag}, expected {expected}")
            end = pos + 8 + length
            if end > size:
                left = size - pos - 8
                raise RecordIOError(self.path, key, pos, f"truncated payload: chunk needs {length} bytes, {left} left")
            pieces.append(buf[pos + 8 : end])
            pos = end + (-length % 4)
            if cflag in (0, 3):
                return MAGIC_BYTES.join(pieces), min(pos, size)
            first = False

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        """(key, payload) in index order."""
        for key in self.keys:
            yield key, self.read(key)

    def scan_offsets(self) -> list[int]:
        """Offsets of every record found by walking the file from byte 0 (raises on corruption)."""
        offsets = []
        pos = 0
        while pos < self.size:
            offsets.append(pos)
            _, pos = self._read_at(pos, len(offsets) - 1)
        return offsets


class RecordIOWriter:
    """Write records to ``path`` and its ``.idx``; both appear only on a successful :meth:`close`.

    Data go to temporary files in the same directory, renamed into place at close (atomic on
    POSIX). Leaving a ``with`` block through an exception discards them.
    """

    def __init__(self, path: str | os.PathLike, idx_path: str | os.PathLike | None = None) -> None:
        self.path = Path(path)
        self.idx_path = Path(idx_path) if idx_path is not None else idx_path_for(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._rec = open(temporary_sibling(self.path), "w+b")  # closed by close() or abort()
        self._idx = open(temporary_sibling(self.idx_path), "w", encoding="ascii")
        self._keys: set[int] = set()
        self.closed = False

    def tell(self) -> int:
        return self._rec.tell()

    def write(self, key: int, payload: bytes) -> int:
        """Append record ``key``; returns its byte offset."""
        if self.closed:
            raise ValueError(f"{self.path}: writer is closed")
        if key in self._keys:
            raise ValueError(f"{self.path}: duplicate record key {key}")
        self._keys.add(key)
        offset = self._rec.tell()
        self._rec.write(encode_chunks(bytes(payload)))
        self._idx.write(f"{key}\t{offset}\n")
        return offset

    def overwrite(self, offset: int, payload: bytes) -> None:
        """Replace the record at ``offset`` by one of exactly the same framed size (header patching)."""
        framed = encode_chunks(bytes(payload))
        end = self._rec.tell()
        self._rec.seek(offset)
        old = self._rec.read(len(framed))
        if len(old) != len(framed) or struct.unpack_from("<I", old)[0] != MAGIC:
            raise ValueError(f"{self.path}: cannot overwrite the record at byte {offset} with a different size")
        self._rec.seek(offset)
        self._rec.write(framed)
        self._rec.seek(end)

    def close(self) -> None:
        """Flush, fsync and rename both files into place."""
        if self.closed:
            return
        for f in (self._rec, self._idx):
            f.close()
        publish(self._rec.name, self.path)
        publish(self._idx.name, self.idx_path)
        self.closed = True

    def abort(self) -> None:
        """Discard everything written."""
        if self.closed:
            return
        for f in (self._rec, self._idx):
            f.close()
            Path(f.name).unlink(missing_ok=True)
        self.closed = True

    def __enter__(self) -> RecordIOWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
