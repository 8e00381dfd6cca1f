"""InsightFace/MXNet record payloads and the InsightFace dataset layout on top of :mod:`.recordio`.

Payload (mxnet ``recordio.pack``): 24-byte little-endian header ``uint32 flag, float32 label,
uint64 id, uint64 id2``; when ``flag > 0`` the label field is unused and ``flag`` float32 labels
follow; then the encoded image.

InsightFace layout: record 0 is a header with ``flag=2`` and labels ``[first identity key, end]``;
image records are keys ``1 .. first-1``; identity records ``first .. end-1`` each carry the
``[start, end)`` range of that identity's image keys. A ``property`` text file beside the ``.rec``
holds ``num_classes,height,width``; a folder holding several datasets gives each further one its own
``<stem>.property`` (see :func:`property_path`), so writing one never changes another's. Files
from other tools (im2rec) have no header: every key is an image.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mrface.data.recordio import RecordIOError, RecordIOReader, RecordIOWriter
from mrface.io import write_text

_HEADER = struct.Struct("<IfQQ")
HEADER_SIZE = _HEADER.size  # 24
_MAX_EXACT_FLOAT = 1 << 24  # float32 holds integers exactly up to here


@dataclass
class RecordHeader:
    """Decoded payload header. ``labels`` is (flag,) float32 when flag > 0, else (1,) with ``label``."""

    flag: int
    label: float
    id: int
    id2: int
    labels: np.ndarray = field(repr=False)

    @property
    def class_label(self) -> int:
        """The identity label: ``label`` for flag 0, else the first of the label vector (arcface_torch).

        Raises ValueError for a NaN/inf or fractional label (a corrupt record)."""
        value = float(self.labels[0])
        if not np.isfinite(value) or value != int(value):
            raise ValueError(f"label {value:g} is not an integer class index")
        return int(value)


def label_problem(header: RecordHeader, num_classes: int | None) -> str | None:
    """Why ``header``'s identity label is unusable (non-finite, fractional, outside ``[0, num_classes)``), or None."""
    try:
        label = header.class_label
    except ValueError as err:
        return str(err)
    if label < 0 or (num_classes is not None and label >= num_classes):
        return f"label {label} outside [0, {num_classes if num_classes is not None else '...'})"
    return None


def property_path(rec_path: str | os.PathLike, for_writing: bool = False) -> Path:
    """The metadata file of dataset ``rec_path``: ``<stem>.property`` when present (or, for writing, when
    another ``.rec`` shares the folder), else the folder's InsightFace ``property``."""
    rec_path = Path(rec_path)
    own, shared = rec_path.with_suffix(".property"), rec_path.parent / "property"
    if own.is_file():
        return own
    if for_writing:
        others = [p for p in rec_path.parent.glob("*.rec") if p.resolve() != rec_path.resolve()]
        return own if others else shared
    return shared


def pack_payload(label: float | Iterable[float], image: bytes, id: int = 0, id2: int = 0) -> bytes:
    """mxnet ``recordio.pack``: a number gives flag 0; a sequence of k labels gives flag k."""
    if isinstance(label, (int, float, np.integer, np.floating)):
        return _HEADER.pack(0, float(label), id, id2) + bytes(image)
    labels = np.asarray(label, dtype="<f4").reshape(-1)
    return _HEADER.pack(labels.size, 0.0, id, id2) + labels.tobytes() + bytes(image)


def unpack_payload(
    payload: bytes, path: str | os.PathLike = "<bytes>", key: int | None = None, offset: int = 0
) -> tuple[RecordHeader, bytes]:
    """Split a payload into (header, image bytes); short payloads raise :class:`RecordIOError`."""
    if len(payload) < HEADER_SIZE:
        raise RecordIOError(
            path, key, offset, f"payload of {len(payload)} bytes is shorter than the {HEADER_SIZE}-byte header"
        )
    flag, label, id_, id2 = _HEADER.unpack_from(payload)
    if flag > 0:
        end = HEADER_SIZE + 4 * flag
        if len(payload) < end:
            raise RecordIOError(
                path,
                key,
                offset,
                f"header says {flag} labels ({4 * flag} bytes) but only "
                f"{len(payload) - HEADER_SIZE} bytes follow the header",
            )
        labels = np.frombuffer(payload, dtype="<f4", count=flag, offset=HEADER_SIZE).copy()
    else:
        end = HEADER_SIZE
        labels = np.array([label], dtype=np.float32)
    return RecordHeader(flag, label, id_, id2, labels), payload[end:]


def read_property(path: str | os.PathLike) -> tuple[int, int, int]:
    """``property`` file -> (num_classes, height, width)."""
    text = Path(path).read_text().strip()
    try:
        num_classes, height, width = (int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"{path}: expected 'num_classes,height,width', got {text!r}") from None
    return num_classes, height, width


def write_property(path: str | os.PathLike, num_classes: int, height: int = 112, width: int = 112) -> None:
    """Write a ``property`` file atomically."""
    write_text(path, f"{num_classes},{height},{width}\n")


class InsightFaceRecord:
    """An InsightFace or header-less RecordIO image set: image keys, labels, identity ranges.

    Args:
        path: the ``.rec`` file (``.idx`` and ``property`` beside it are used when present).
        skip_corrupt: drop image records whose frame or header is corrupt instead of raising;
            checks every image record once at open (header bytes only, images are not decoded) and
            lists the dropped ones in :attr:`skipped` as (key, offset, reason).

    Attributes:
        image_keys: record keys of the images, in order.
        identity_ranges: {label: (start_key, end_key)} from the identity records (empty if none).
        has_header: whether record 0 is an InsightFace header.
    """

    def __init__(self, path: str | os.PathLike, skip_corrupt: bool = False) -> None:
        self.reader = RecordIOReader(path)
        self.path = self.reader.path
        self.has_header = False
        self.identity_ranges: dict[int, tuple[int, int]] = {}
        self.skipped: list[tuple[int, int, str]] = []
        keys = self.reader.keys
        if 0 in self.reader:
            head, _ = self._header_at(0)
            if head.flag == 2 and head.labels[0] >= 1:
                self.has_header = True
                first, end = int(head.labels[0]), int(head.labels[1])
                self.image_keys = list(range(1, first))
                missing = [k for k in (*self.image_keys, *range(first, end)) if k not in self.reader]
                if missing:
                    raise ValueError(
                        f"{self.path}: header record says images 1..{first - 1} and identities "
                        f"{first}..{end - 1}, but {len(missing)} keys are missing from the index "
                        f"(first: {missing[:5]})"
                    )
                for label, key in enumerate(range(first, end)):
                    ident, _ = self._header_at(key)
                    self.identity_ranges[label] = (int(ident.labels[0]), int(ident.labels[1]))
        if not self.has_header:
            self.image_keys = list(keys)
        if skip_corrupt:
            self.image_keys = self._drop_corrupt(self.image_keys)
        prop = property_path(self.path)
        self.property_file = prop if prop.is_file() else None
        self.property = read_property(prop) if prop.is_file() else None

    def _header_at(self, key: int) -> tuple[RecordHeader, bytes]:
        return unpack_payload(self.reader.read(key), self.path, key, self.reader.offset(key))

    def _drop_corrupt(self, keys: list[int]) -> list[int]:
        good = []
        for key in keys:
            try:
                self._header_at(key)
            except RecordIOError as err:
                self.skipped.append((key, err.offset, err.reason))
                continue
            good.append(key)
        return good

    @property
    def num_classes(self) -> int:
        """From the ``property`` file, else the identity records, else by reading every label."""
        if self.property is not None:
            return self.property[0]
        if self.identity_ranges:
            return len(self.identity_ranges)
        labels = (self._header_at(k)[0].labels[0] for k in self.image_keys)
        return int(max((v for v in labels if np.isfinite(v)), default=-1)) + 1

    def __len__(self) -> int:
        return len(self.image_keys)

    def read(self, index: int) -> tuple[RecordHeader, bytes]:
        """(header, encoded image) of the ``index``-th image."""
        return self._header_at(self.image_keys[index])

    def label(self, key: int) -> int:
        return self._header_at(key)[0].class_label

    def close(self) -> None:
        self.reader.close()


def write_insightface(
    path: str | os.PathLike,
    samples: Iterable[tuple[int, bytes]],
    num_classes: int | None = None,
    image_size: tuple[int, int] = (112, 112),
) -> int:
    """Write an InsightFace-layout ``.rec``/``.idx``/``property`` from (label, encoded image) pairs.

    Labels must be integers ``0..C-1`` and the images of one identity must come together (sorted by
    label). Files appear atomically when the write completes. The metadata goes to ``property``, or to
    ``<stem>.property`` when another dataset shares the folder (:func:`property_path`). Returns the
    number of images.
    """
    path = Path(path)
    prop = property_path(path, for_writing=True)
    ranges: list[tuple[int, int]] = []
    with RecordIOWriter(path) as writer:
        head_offset = writer.write(0, pack_payload([0.0, 0.0], b"", 0, 0))
        key = 1
        current = -1
        for label, image in samples:
            label = int(label)
            if label != current:
                if label != current + 1:
                    raise ValueError(
                        f"write_insightface: labels must run 0, 1, 2, ... with each identity's images "
                        f"together; got label {label} after {current} (image {key - 1})"
                    )
                if ranges:
                    ranges[-1] = (ranges[-1][0], key)
                ranges.append((key, -1))
                current = label
            writer.write(key, pack_payload(float(label), image, key, 0))
            key += 1
        if ranges:
            ranges[-1] = (ranges[-1][0], key)
        first = key
        end = first + len(ranges)
        if end >= _MAX_EXACT_FLOAT:
            raise ValueError(f"write_insightface: {end} records exceed the float32 label range of the header")
        for i, (start, stop) in enumerate(ranges):
            writer.write(first + i, pack_payload([float(start), float(stop)], b"", first + i, 0))
        writer.overwrite(head_offset, pack_payload([float(first), float(end)], b"", 0, 0))
        classes = len(ranges) if num_classes is None else num_classes
        write_property(prop, classes, *image_size)
    return first - 1
