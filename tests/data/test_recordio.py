"""RecordIO framing, reader, writer and InsightFace layout, checked against an independent writer.

The helpers ``_frame`` / ``_payload`` below re-implement the byte layout of REFERENCE.md §8 (dmlc
RecordIOWriter::WriteRecord and mxnet recordio.pack) directly with struct, independent of mrface.
"""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from mrface.data.insightface import InsightFaceRecord, pack_payload, unpack_payload, write_insightface
from mrface.data.recordio import MAGIC, RecordIOError, RecordIOReader, RecordIOWriter, encode_chunks

MAGIC_LE = b"\x0a\x23\xd7\xce"


def _frame(payload: bytes) -> bytes:
    """Independent dmlc framing: split at 4-aligned magics, magic dropped, cflag 1/2/3."""
    out = b""
    dptr = 0
    for i in range(0, len(payload) // 4 * 4, 4):
        if payload[i : i + 4] == MAGIC_LE:
            cflag = 1 if dptr == 0 else 2
            out += MAGIC_LE + struct.pack("<I", (cflag << 29) | (i - dptr)) + payload[dptr:i]
            dptr = i + 4
    cflag = 3 if dptr else 0
    out += MAGIC_LE + struct.pack("<I", (cflag << 29) | (len(payload) - dptr)) + payload[dptr:]
    return out + b"\0" * ((4 - len(payload) % 4) % 4)


def _payload(label, image: bytes, id_: int = 0, id2: int = 0) -> bytes:
    if isinstance(label, (int, float)):
        return struct.pack("<IfQQ", 0, float(label), id_, id2) + image
    return struct.pack("<IfQQ", len(label), 0.0, id_, id2) + struct.pack(f"<{len(label)}f", *label) + image


def _write_independent(path: Path, records: dict[int, bytes]) -> None:
    data, idx = b"", ""
    for key, payload in records.items():
        idx += f"{key}\t{len(data)}\n"
        data += _frame(payload)
    path.write_bytes(data)
    path.with_suffix(".idx").write_text(idx)


def _jpeg(seed: int, size: int = 16) -> bytes:
    im = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return cv2.imencode(".png", im)[1].tobytes()


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"abc",
        b"abcd" * 3,
        MAGIC_LE,
        MAGIC_LE * 3,
        b"ab" + MAGIC_LE + b"cd",  # unaligned magic: no split
        b"abcd" + MAGIC_LE + b"xyz",
        b"abcd" + MAGIC_LE + b"efgh" + MAGIC_LE,
        MAGIC_LE + b"1234" + MAGIC_LE + b"q",
    ],
)
def test_framing_matches_independent_writer_and_round_trips(tmp_path, payload):
    assert encode_chunks(payload) == _frame(payload)
    path = tmp_path / "a.rec"
    with RecordIOWriter(path) as w:
        w.write(0, b"first")
        w.write(7, payload)
        w.write(3, b"last!")
    r = RecordIOReader(path)
    assert r.keys == [0, 7, 3]
    assert r.read(7) == payload and r.read(0) == b"first" and r.read(3) == b"last!"


def test_split_record_uses_cflags_1_2_3(tmp_path):
    payload = b"abcd" + MAGIC_LE + b"efgh" + MAGIC_LE + b"ij"
    data = encode_chunks(payload)
    flags = []
    pos = 0
    while pos < len(data):
        magic, lrec = struct.unpack_from("<II", data, pos)
        assert magic == MAGIC
        flags.append(lrec >> 29)
        length = lrec & ((1 << 29) - 1)
        pos += 8 + length + (-length % 4)
    assert flags == [1, 2, 3]


def test_reader_reads_independently_written_file_and_scans_without_idx(tmp_path):
    records = {k: _payload(float(k % 3), _jpeg(k)) for k in range(5)}
    records[9] = _payload(2.0, b"abcd" + MAGIC_LE + b"zz")
    path = tmp_path / "ind.rec"
    _write_independent(path, records)
    r = RecordIOReader(path)
    assert {k: r.read(k) for k in r.keys} == records
    path.with_suffix(".idx").unlink()
    scanned = RecordIOReader(path)
    assert [scanned.read(k) for k in scanned.keys] == list(records.values())


def test_writer_output_is_byte_identical_to_independent_writer(tmp_path):
    records = {0: _payload([5.0, 9.0], b""), 1: _payload(0.0, _jpeg(1), 1), 2: _payload(1.0, MAGIC_LE * 2, 2)}
    ours, theirs = tmp_path / "ours.rec", tmp_path / "theirs.rec"
    with RecordIOWriter(ours) as w:
        for k, p in records.items():
            w.write(k, p)
    _write_independent(theirs, records)
    assert ours.read_bytes() == theirs.read_bytes()
    assert ours.with_suffix(".idx").read_text() == theirs.with_suffix(".idx").read_text()


def test_payload_header_single_and_multi_label():
    single = pack_payload(3, b"IMG", 11, 12)
    assert single == _payload(3.0, b"IMG", 11, 12)
    header, image = unpack_payload(single)
    assert (header.flag, header.label, header.id, header.id2, header.class_label, image) == (0, 3.0, 11, 12, 3, b"IMG")
    multi = pack_payload([7.0, 0.25, -1.5], b"IMG")
    assert multi == _payload([7.0, 0.25, -1.5], b"IMG")
    header, image = unpack_payload(multi)
    assert header.flag == 3 and header.labels.tolist() == [7.0, 0.25, -1.5] and header.class_label == 7
    assert image == b"IMG"


def test_insightface_layout_round_trip_and_independent_structure(tmp_path):
    labels = [0, 0, 0, 1, 2, 2]
    images = [_jpeg(i) for i in range(len(labels))]
    path = tmp_path / "train.rec"
    assert write_insightface(path, zip(labels, images, strict=True)) == 6
    assert (tmp_path / "property").read_text().strip() == "3,112,112"
    # structure checked with the independent parser: header, image records, identity records
    r = RecordIOReader(path)
    head = r.read(0)
    flag, _, _, _ = struct.unpack_from("<IfQQ", head)
    assert flag == 2 and struct.unpack_from("<2f", head, 24) == (7.0, 10.0)
    for key in range(1, 7):
        flag, label, id_, _ = struct.unpack_from("<IfQQ", r.read(key))
        assert (flag, label, id_) == (0, labels[key - 1], key) and r.read(key)[24:] == images[key - 1]
    ranges = [struct.unpack_from("<2f", r.read(k), 24) for k in (7, 8, 9)]
    assert ranges == [(1.0, 4.0), (4.0, 5.0), (5.0, 7.0)]
    rec = InsightFaceRecord(path)
    assert rec.has_header and rec.image_keys == [1, 2, 3, 4, 5, 6] and rec.num_classes == 3
    assert rec.identity_ranges == {0: (1, 4), 1: (4, 5), 2: (5, 7)}
    assert [rec.read(i)[0].class_label for i in range(6)] == labels
    assert [rec.read(i)[1] for i in range(6)] == images
    assert not list(tmp_path.glob(".*")), "temporary files left behind"


def test_insightface_reader_on_independent_header_file_and_headerless_file(tmp_path):
    # InsightFace file written with the independent writer (no property file)
    recs = {0: _payload([3.0, 5.0], b"")}
    recs.update(
        {1: _payload(0.0, b"a"), 2: _payload(1.0, b"b"), 3: _payload([1.0, 2.0], b""), 4: _payload([2.0, 3.0], b"")}
    )
    _write_independent(tmp_path / "h.rec", recs)
    rec = InsightFaceRecord(tmp_path / "h.rec")
    assert rec.has_header and rec.image_keys == [1, 2] and rec.num_classes == 2
    # header-less (im2rec-style), arbitrary keys, multi-label records
    sub = tmp_path / "plain"
    sub.mkdir()
    _write_independent(sub / "p.rec", {10: _payload([4.0, 0.5], b"x"), 20: _payload(1.0, b"y")})
    rec = InsightFaceRecord(sub / "p.rec")
    assert not rec.has_header and rec.image_keys == [10, 20] and rec.num_classes == 5
    assert rec.read(0)[1] == b"x" and rec.read(0)[0].labels.tolist() == [4.0, 0.5]


def test_insightface_writer_rejects_unsorted_labels_and_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="label 0 after 1"):
        write_insightface(tmp_path / "t.rec", [(0, b"a"), (1, b"b"), (0, b"c")])
    assert list(tmp_path.iterdir()) == []


def _records_file(tmp_path: Path) -> tuple[Path, list[int]]:
    path = tmp_path / "c.rec"
    records = {k: _payload(float(k), bytes(range(40))) for k in range(4)}
    _write_independent(path, records)
    offsets = [int(line.split("\t")[1]) for line in path.with_suffix(".idx").read_text().splitlines()]
    return path, offsets


def test_bad_magic_names_file_key_offset(tmp_path):
    path, offsets = _records_file(tmp_path)
    data = bytearray(path.read_bytes())
    data[offsets[2] : offsets[2] + 4] = b"XXXX"
    path.write_bytes(bytes(data))
    r = RecordIOReader(path)
    with pytest.raises(RecordIOError, match=rf"c\.rec: record key 2 at byte offset {offsets[2]}: bad magic") as e:
        r.read(2)
    assert (e.value.key, e.value.offset) == (2, offsets[2])
    assert r.read(3) == _payload(3.0, bytes(range(40)))


def test_truncated_payload_and_offset_beyond_eof(tmp_path):
    path, offsets = _records_file(tmp_path)
    path.write_bytes(path.read_bytes()[: offsets[3] + 20])
    r = RecordIOReader(path)
    with pytest.raises(RecordIOError, match=rf"key 3 at byte offset {offsets[3]}: truncated payload"):
        r.read(3)
    idx = path.with_suffix(".idx")
    idx.write_text(idx.read_text() + "9\t100000\n")
    with pytest.raises(RecordIOError, match="key 9 at byte offset 100000: offset beyond the end"):
        RecordIOReader(path).read(9)


def test_skip_corrupt_counts_and_reports(tmp_path):
    path, offsets = _records_file(tmp_path)
    data = bytearray(path.read_bytes())
    data[offsets[1] : offsets[1] + 4] = b"XXXX"
    path.write_bytes(bytes(data))
    with pytest.raises(RecordIOError, match="key 1"):
        InsightFaceRecord(path, skip_corrupt=False).read(1)
    rec = InsightFaceRecord(path, skip_corrupt=True)
    assert rec.image_keys == [0, 2, 3]
    assert [(k, o) for k, o, _ in rec.skipped] == [(1, offsets[1])]
    assert "bad magic" in rec.skipped[0][2]


def test_short_payload_header_error(tmp_path):
    path = tmp_path / "s.rec"
    _write_independent(path, {0: b"short", 1: struct.pack("<IfQQ", 5, 0, 0, 0) + b"\0" * 8})
    r = RecordIOReader(path)
    with pytest.raises(RecordIOError, match="key 0 .* shorter than the 24-byte header"):
        unpack_payload(r.read(0), path, 0, r.offset(0))
    with pytest.raises(RecordIOError, match="header says 5 labels"):
        unpack_payload(r.read(1), path, 1, r.offset(1))


def test_bad_idx_line_is_reported(tmp_path):
    path, _ = _records_file(tmp_path)
    path.with_suffix(".idx").write_text("0\t0\nnot a line\n")
    with pytest.raises(ValueError, match=r"c\.idx: line 2: expected 'key<TAB>offset'"):
        RecordIOReader(path)


def test_writer_aborts_on_exception(tmp_path):
    with pytest.raises(RuntimeError):
        with RecordIOWriter(tmp_path / "x.rec") as w:
            w.write(0, b"data")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
