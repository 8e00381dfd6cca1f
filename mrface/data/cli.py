"""``mrface data {inspect,pack,synth}``: look into RecordIO files, pack image folders, write SynthFace sets.

Bad input raises :class:`mrface.errors.UserError` (or a ValueError naming the file/record); the
``mrface`` entry point prints it as one ``mrface data: error: ...`` line with exit code 2.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

import numpy as np

from mrface.data.recordio import RecordIOError
from mrface.errors import UserError
from mrface.io import write_bytes


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="inspect/pack RecordIO files, generate SynthFace data")
    sub = parser.add_subparsers(dest="data_command", required=True)

    p = sub.add_parser("inspect", help="counts of a .rec and a sample grid PNG")
    p.add_argument("rec", type=Path, help="FILE.rec (with FILE.idx beside it)")
    p.add_argument("--grid", type=Path, default=None, help="PNG to write (default FILE_grid.png)")
    p.add_argument("--samples", type=int, default=64, help="images in the grid")
    p.add_argument(
        "--skip-corrupt", action="store_true", help="count and report corrupt records and bad labels instead of failing"
    )
    p.add_argument("--no-decode", action="store_true", help="do not decode every image (faster, checks framing only)")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("pack", help="pack DIR/<identity>/*.jpg into an InsightFace-layout .rec")
    p.add_argument("dir", type=Path)
    p.add_argument("out", type=Path, help="out.rec (out.idx and property are written beside it)")
    p.add_argument("--size", type=int, default=None, help="resize to SIZE x SIZE and re-encode (default: keep bytes)")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality when re-encoding")
    p.set_defaults(func=_cmd_pack)

    p = sub.add_parser("synth", help="write a SynthFace training .rec and verification .bin files")
    p.add_argument("out", type=Path)
    p.add_argument("--identities", type=int, default=1000)
    p.add_argument("--images", type=int, default=20, help="images per identity")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pairs", type=int, default=1000, help="verification pairs per .bin")
    p.add_argument("--resolutions", type=str, default="112,28,14,7", help="comma-separated .bin image sizes")
    p.set_defaults(func=_cmd_synth)


def _grid(images: list[np.ndarray], cols: int = 8) -> np.ndarray:
    from mrface.data.images import resize_image

    h, w = images[0].shape[:2]
    tiles = [resize_image(im, (h, w)) for im in images]
    tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % cols)
    rows = [np.concatenate(tiles[i : i + cols], 1) for i in range(0, len(tiles), cols)]
    return np.concatenate(rows, 0)


def _cmd_inspect(args: argparse.Namespace) -> int:
    import cv2

    from mrface.data.images import decode_image
    from mrface.data.insightface import InsightFaceRecord, label_problem

    grid_path = args.grid or args.rec.with_name(args.rec.stem + "_grid.png")
    if not grid_path.parent.is_dir():
        raise UserError(
            f"--grid {grid_path}",
            f"folder {grid_path.parent} does not exist; expected a PNG path in an existing folder",
        )
    rec = InsightFaceRecord(args.rec, skip_corrupt=args.skip_corrupt)
    num_classes = rec.property[0] if rec.property else (len(rec.identity_ranges) or None)
    labels: Counter[int] = Counter()
    shapes: Counter[tuple[int, ...]] = Counter()
    samples, bad_images, bad_labels = [], [], []
    step = max(1, len(rec) // max(1, args.samples))
    for i in range(len(rec)):
        key = rec.image_keys[i]
        try:
            header, data = rec.read(i)
        except RecordIOError as err:
            if not args.skip_corrupt:
                raise
            rec.skipped.append((key, err.offset, err.reason))
            continue
        problem = label_problem(header, num_classes)
        if problem is not None:
            msg = f"{rec.path}: record key {key} at byte offset {rec.reader.offset(key)}: {problem}"
            if not args.skip_corrupt:
                raise UserError(msg, "expected an integer label in [0, num_classes) (use --skip-corrupt to list all)")
            bad_labels.append(msg)
            continue
        labels[header.class_label] += 1
        if args.no_decode and i % step:
            continue
        try:
            im = decode_image(data, "BGR")
        except ValueError as err:
            msg = f"{rec.path}: record key {key} at byte offset {rec.reader.offset(key)}: {err}"
            if not args.skip_corrupt:
                raise ValueError(msg) from None
            bad_images.append(msg)
            continue
        shapes[im.shape] += 1
        if i % step == 0 and len(samples) < args.samples:
            samples.append(im)
    print(f"file: {rec.path}")
    print(f"layout: {'InsightFace (header record)' if rec.has_header else 'header-less (every key is an image)'}")
    print(f"records in index: {len(rec.reader)}")
    print(f"images: {sum(labels.values())}")
    print(f"identities (labels seen): {len(labels)}")
    print(f"num_classes: {rec.num_classes}" + (f" ({rec.property_file.name} file)" if rec.property else ""))
    if labels:
        counts = np.array(list(labels.values()))
        print(f"images per identity: min {counts.min()}, median {int(np.median(counts))}, max {counts.max()}")
    for shape, n in shapes.most_common(5):
        print(f"image shape {shape}: {n}")
    print(f"corrupt records skipped: {len(rec.skipped)}")
    for key, offset, reason in rec.skipped[:20]:
        print(f"  key {key} at byte {offset}: {reason}")
    print(f"undecodable images skipped: {len(bad_images)}")
    for msg in bad_images[:20]:
        print(f"  {msg}")
    print(f"bad labels skipped (non-finite, fractional or outside [0, num_classes)): {len(bad_labels)}")
    for msg in bad_labels[:20]:
        print(f"  {msg}")
    if samples:
        try:
            written, encoded = cv2.imencode(grid_path.suffix, _grid(samples))
            if written:
                write_bytes(grid_path, encoded.tobytes())
        except (cv2.error, OSError):
            written = False
        if not written:
            raise UserError(f"--grid {grid_path}", "could not be written (expected a writable .png path)")
        print(f"grid: {grid_path} ({len(samples)} images)")
    return 0


def _cmd_pack(args: argparse.Namespace) -> int:
    from mrface.data.datasets import scan_image_folder
    from mrface.data.images import decode_image, encode_image, resize_image
    from mrface.data.insightface import write_insightface

    samples, classes = scan_image_folder(args.dir)

    def payloads():
        for path, label in samples:
            data = path.read_bytes()
            try:
                im = decode_image(data, "RGB")
            except ValueError as err:
                raise ValueError(f"{path}: {err}") from None
            if args.size:
                data = encode_image(resize_image(im, args.size), ".jpg", args.quality)
            yield label, data

    size = (args.size, args.size) if args.size else (112, 112)
    from mrface.data.insightface import property_path

    prop = property_path(args.out, for_writing=True)
    n = write_insightface(args.out, payloads(), len(classes), size)
    print(f"packed {n} images of {len(classes)} identities into {args.out} (metadata in {prop})")
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from mrface.data.synth_writer import write_synth

    try:
        resolutions = tuple(int(v) for v in args.resolutions.split(","))
    except ValueError:
        raise UserError("--resolutions", f"expected comma-separated integers, got {args.resolutions!r}") from None
    start = time.perf_counter()
    summary = write_synth(args.out, args.identities, args.images, args.seed, args.pairs, resolutions)
    dt = time.perf_counter() - start
    print(f"wrote {summary.train_images} images of {summary.num_classes} identities to {summary.rec}")
    for s, path in summary.bins.items():
        print(f"wrote {args.pairs} pairs at {s}x{s} to {path}")
    print(f"took {dt:.1f} s ({summary.train_images / dt:.0f} training images/s)")
    return 0
