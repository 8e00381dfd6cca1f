"""``mrface data synth|inspect|pack`` end to end on tiny data."""

from __future__ import annotations

import cv2
import numpy as np

from mrface.cli import main
from mrface.data.bins import load_bin
from mrface.data.insightface import InsightFaceRecord
from mrface.data.synthface import SynthFace


def test_synth_writes_rec_and_bins(tmp_path, capsys):
    out = tmp_path / "syn"
    rc = main(
        ["data", "synth", "--identities", "4", "--images", "3", "--pairs", "6", "--resolutions", "112,14", str(out)]
    )
    assert rc == 0
    rec = InsightFaceRecord(out / "train.rec")
    assert len(rec) == 12 and rec.num_classes == 4 and rec.has_header
    assert [rec.read(i)[0].class_label for i in range(12)] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    # the stored JPEG is the SynthFace image (identity 1, image 2) up to JPEG loss
    img = cv2.imdecode(np.frombuffer(rec.read(5)[1], np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    ref = SynthFace(0).render([1], [2])[0]
    assert np.abs(img.astype(int) - ref).mean() < 3
    hi, lo = load_bin(out / "val_112.bin"), load_bin(out / "val_14.bin")
    assert hi.images.shape == (12, 112, 112, 3) and lo.images.shape == (12, 14, 14, 3)
    assert hi.issame.tolist() == [True, False] * 3 and lo.issame.tolist() == hi.issame.tolist()
    rc = main(["data", "inspect", str(out / "train.rec"), "--samples", "4"])
    text = capsys.readouterr().out
    assert rc == 0 and "images: 12" in text and "identities (labels seen): 4" in text
    grid = cv2.imread(str(out / "train_grid.png"))
    assert grid.shape == (112, 112 * 8, 3)


def test_pack_then_inspect_with_corruption(tmp_path, capsys):
    rng = np.random.default_rng(0)
    images = {}
    for ident in ("b", "a"):
        (tmp_path / "dir" / ident).mkdir(parents=True)
        for j in range(2):
            im = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
            cv2.imwrite(str(tmp_path / "dir" / ident / f"{j}.png"), im)
            images[ident, j] = im
    out = tmp_path / "packed" / "out.rec"
    assert main(["data", "pack", str(tmp_path / "dir"), str(out)]) == 0
    rec = InsightFaceRecord(out)
    assert [rec.read(i)[0].class_label for i in range(4)] == [0, 0, 1, 1]
    dec = cv2.imdecode(np.frombuffer(rec.read(2)[1], np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(dec, images["b", 0])  # labels follow sorted folder names; PNG kept
    # corrupt image record 2 (key 2): framing stays valid, the image bytes are garbage
    data = bytearray(out.read_bytes())
    offset = rec.reader.offset(2)
    data[offset + 8 + 24 : offset + 8 + 40] = b"\xff" * 16
    out.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["data", "inspect", str(out)]) == 2
    assert f"record key 2 at byte offset {offset}" in capsys.readouterr().err
    assert main(["data", "inspect", str(out), "--skip-corrupt"]) == 0
    text = capsys.readouterr().out
    assert "undecodable images skipped: 1" in text and f"record key 2 at byte offset {offset}" in text
    # bad magic -> framing error, skipped and counted
    data[offset : offset + 4] = b"XXXX"
    out.write_bytes(bytes(data))
    assert main(["data", "inspect", str(out), "--skip-corrupt"]) == 0
    text = capsys.readouterr().out
    assert "corrupt records skipped: 1" in text and f"key 2 at byte {offset}: bad magic" in text


def test_pack_missing_dir(tmp_path, capsys):
    assert main(["data", "pack", str(tmp_path / "nope"), str(tmp_path / "o.rec")]) == 2
    assert "image folder not found" in capsys.readouterr().err


def _folder(root, identities):
    rng = np.random.default_rng(len(identities))
    for ident in identities:
        (root / ident).mkdir(parents=True)
        cv2.imwrite(str(root / ident / "0.png"), rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))


def test_pack_never_overwrites_another_datasets_metadata(tmp_path, capsys):
    _folder(tmp_path / "big", [f"id{i}" for i in range(8)])
    _folder(tmp_path / "small", ["a", "b"])
    data = tmp_path / "data"
    assert main(["data", "pack", str(tmp_path / "big"), str(data / "train.rec")]) == 0
    assert (data / "property").read_text() == "8,112,112\n"
    assert main(["data", "pack", str(tmp_path / "small"), str(data / "extra.rec")]) == 0
    assert (data / "property").read_text() == "8,112,112\n"  # the first dataset's metadata is untouched
    assert (data / "extra.property").read_text() == "2,112,112\n"
    assert "metadata in " + str(data / "extra.property") in capsys.readouterr().out
    assert InsightFaceRecord(data / "train.rec").num_classes == 8
    assert InsightFaceRecord(data / "extra.rec").num_classes == 2


def test_inspect_flags_bad_labels_and_never_claims_an_unwritten_grid(tmp_path, capsys):
    import struct

    _folder(tmp_path / "dir", ["a", "b", "c", "d"])
    rec_path = tmp_path / "out.rec"
    assert main(["data", "pack", str(tmp_path / "dir"), str(rec_path)]) == 0
    rec = InsightFaceRecord(rec_path)
    data = bytearray(rec_path.read_bytes())
    for index, value in ((0, float("nan")), (1, 200.0), (2, -1.0)):  # header label field of image records
        offset = rec.reader.offset(rec.image_keys[index])
        data[offset + 8 + 4 : offset + 8 + 8] = struct.pack("<f", value)
    rec_path.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["data", "inspect", str(rec_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mrface data: error: {rec_path}: record key 1 at byte offset") and "label nan" in err
    assert main(["data", "inspect", str(rec_path), "--skip-corrupt"]) == 0
    out = capsys.readouterr().out
    assert "bad labels skipped (non-finite, fractional or outside [0, num_classes)): 3" in out
    assert "label 200 outside [0, 4)" in out and "label -1 outside [0, 4)" in out and "images: 1" in out

    missing = tmp_path / "missing_dir" / "g.png"
    assert main(["data", "inspect", str(rec_path), "--skip-corrupt", "--grid", str(missing)]) == 2
    captured = capsys.readouterr()
    assert "grid:" not in captured.out and f"--grid {missing}: folder" in captured.err and not missing.exists()
