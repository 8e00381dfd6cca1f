"""TensorRT INT8 calibrators over mrface calibration batches (implicit quantisation, TensorRT 10).

:class:`CalibratorFeed` is the TensorRT-independent half of a calibrator: it copies the next batch
of :class:`~mrface.export.calibration.CalibrationBatches` into a device buffer the caller allocated
(a torch tensor) and returns its address, and reads and writes the calibration cache file.
:func:`make_calibrator` wraps it in TensorRT's calibrator classes (needs TensorRT).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mrface.export.calibration import CalibrationBatches
from mrface.export.errors import ExportError
from mrface.io import write_bytes


class CalibratorFeed:
    """Batches -> device buffer pointers, plus the calibration cache (see module docstring)."""

    def __init__(self, batches: CalibrationBatches, buffer: torch.Tensor, cache_file: str | Path | None) -> None:
        expected = (tuple(batches.shape), torch.from_numpy(np.empty(0, batches.dtype)).dtype)
        if (tuple(buffer.shape), buffer.dtype) != expected:
            raise ExportError(f"calibration buffer {tuple(buffer.shape)} {buffer.dtype}: expected {expected}")
        self.batches, self.buffer = batches, buffer
        self.cache_file = Path(cache_file) if cache_file else None
        self._iter: Iterator[np.ndarray] = iter(batches)
        self.served = 0

    def batch_size(self) -> int:
        return self.batches.batch_size

    def next_pointers(self) -> list[int] | None:
        """Copy the next batch into the buffer and return ``[address]``; None when exhausted."""
        batch = next(self._iter, None)
        if batch is None:
            return None
        self.buffer.copy_(torch.from_numpy(batch))
        self.served += 1
        return [int(self.buffer.data_ptr())]

    def read_cache(self) -> bytes | None:
        """Cached calibration table, if a cache file exists (TensorRT then skips calibration)."""
        if self.cache_file is not None and self.cache_file.is_file():
            return self.cache_file.read_bytes()
        return None

    def write_cache(self, data: bytes) -> None:
        if self.cache_file is not None:
            write_bytes(self.cache_file, bytes(data))


def make_calibrator(trt: Any, feed: CalibratorFeed, kind: str) -> Any:
    """A TensorRT 10 INT8 calibrator (entropy: IInt8EntropyCalibrator2, minmax: IInt8MinMaxCalibrator)."""
    base = trt.IInt8EntropyCalibrator2 if kind == "entropy" else trt.IInt8MinMaxCalibrator

    class Calibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self.feed = feed

        def get_batch_size(self) -> int:
            return self.feed.batch_size()

        def get_batch(self, names: list[str]) -> list[int] | None:
            return self.feed.next_pointers()

        def read_calibration_cache(self) -> bytes | None:
            return self.feed.read_cache()

        def write_calibration_cache(self, cache: Any) -> None:
            self.feed.write_cache(bytes(cache))

    return Calibrator()
