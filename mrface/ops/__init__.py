"""Python front of every mrface kernel: ``torch.library`` custom ops with fake and autograd support.

Each op picks a backend per call (see :mod:`mrface.ops.backend`); every backend is tested against
the plain-PyTorch reference in :mod:`mrface.ops.reference`.
"""

from mrface.ops.backend import BACKENDS, available_backends, build_info, use_backend
from mrface.ops.degrade import (
    DEGRADE_FILTERS,
    UP_FILTERS,
    DegradedBatch,
    degrade_per_sample,
    degrade_resolution,
    degrade_resolution_random,
)
from mrface.ops.gumbel_fps import CoresetSelection, gumbel_fps
from mrface.ops.margin_softmax import margin_softmax_stats

__all__ = [
    "BACKENDS",
    "CoresetSelection",
    "DEGRADE_FILTERS",
    "UP_FILTERS",
    "DegradedBatch",
    "available_backends",
    "build_info",
    "degrade_per_sample",
    "degrade_resolution",
    "degrade_resolution_random",
    "gumbel_fps",
    "margin_softmax_stats",
    "use_backend",
]
