"""``mrface.ops.margin_softmax_loss``: fused margin softmax cross-entropy that never holds (B, C) logits.

Split of the work (the margin pieces come from :mod:`mrface.losses.margins`):

1. Per row, in plain torch on (B,) / (B, D) tensors: embedding norms, unit rows ``emb_hat``, the
   target cosine (one gathered dot product per row, no gradient), then ``margin.rows`` once
   (target logit z_y with its autograd graph, the non-target constants, the EMA updates) and the
   derivative dz_y/dcos_y by autograd on that (B,)-sized graph.
2. The kernel op ``mrface::margin_softmax_fwd`` streams the local classes in tiles: cosine GEMM
   against the raw centres (their norms are computed on the fly, no normalised copy), the
   non-target transform, an online log-sum-exp over the non-target columns. It returns per-row
   statistics only: ``lse`` (B,) and the target cosine ``cos_y`` (B,).
3. Across ranks the per-row ``lse`` vectors are merged with two all-reduces (max, sum of exp).
   Loss per row: ``logaddexp(lse_nt, z_y) - z_y``.
4. Backward (``mrface::margin_softmax_bwd``) recomputes the cosines tile by tile with the global
   statistics and accumulates d emb_hat and d weight in float32; the target term enters the same
   tiles through the gradient of ``cos_y`` (z_y reaches it through a first-order link
   ``z_y + dz_y/dcos_y * (cos_y - cos_y.detach())``), so the centres get one dense gradient.

Backends (:func:`_pick_backend`): ``triton`` (kernels/margin_softmax.py) for float32 CUDA tensors, the
chunked torch path for CPU tensors and as the CUDA fallback (it takes the C++ slot of the backend
order: ``MRFACE_BACKEND=cpp`` forces it on any device), and ``reference`` (materialises (B, C)).

Tensor-core gate: the compiled Triton kernels run only their IEEE float32 (FMA) dots by default, the
path that passed the H100 accuracy tests; float16/bfloat16 CUDA weights take the chunked path and float32
ignores ``torch.backends.cuda.matmul.allow_tf32``. The float16 backward once failed that test at
257 x 10007 x 512; the likely cause (a software-pipelined inner loop feeding tensor-core results straight
to atomics) is fixed in kernels/margin_softmax.py, but no GPU has confirmed it yet, so the gate stays.
``MRFACE_MARGIN_TRITON_HALF=1`` (read at each call) lifts it: float16/bfloat16 CUDA weights go to Triton
and float32 uses TF32 when torch allows it; ``=0`` keeps it. The re-test on a GPU is part of
``mrface bench gpu`` (its ``gpu_tests`` and ``margin_half_check`` sections), or alone:
``MRFACE_MARGIN_TRITON_HALF=1 pytest -m gpu tests/ops/test_margin_softmax_triton.py``
(every margin at 257 x 10007 x 512 in float16/bfloat16 through Triton, and each autotune configuration
forced in turn at that shape in float16, bfloat16 and TF32). When all of it passes, lifting the default is
one line: :data:`TENSOR_CORES_DEFAULT` = True.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from mrface.ops.backend import forced_backend, triton_interpreted
from mrface.ops.reference.margin_softmax import (
    NORM_EPS,
    margin_softmax_bwd_reference,
    margin_softmax_fwd_reference,
)

if TYPE_CHECKING:  # mrface.losses imports this module (PartialFC's fused path): import it lazily
    from mrface.losses.margins import Margin, RowTransform

__all__ = ["MarginSoftmaxRows", "margin_softmax_loss", "margin_softmax_per_row"]

_CHUNK_ELEMENTS = 1 << 18  # (B, chunk) float32 tile of the CPU path: 1 MiB, stays in L2


# ------------------------------------------------------------------------------------ backends
def _triton_runs_on(device: torch.device) -> bool:
    if importlib.util.find_spec("triton") is None:
        return False
    return device.type == "cuda" or (device.type == "cpu" and triton_interpreted())


# Tensor-core (MMA) paths of the compiled Triton kernels are off by default. The float16 backward failed
# the H100 accuracy test at 257 x 10007 x 512 (d emb relative error 1.5 against 1.3e-3 for the reference)
# while float32 passed at every shape, but float32 ran with IEEE dots, which Triton lowers to FMA: the
# tensor-core lowering (float16/bfloat16 operands, or TF32 for float32) is the one path the float32 test
# never ran. The interpreter and a torch emulation of the kernel's float16 rounding both match the
# reference at that shape, so the failure is in the compiled schedule; its likely cause is fixed (see
# kernels/margin_softmax.py) but unconfirmed on a GPU. Flip TENSOR_CORES_DEFAULT to True once
# `mrface bench gpu` (gpu_tests, margin_half_check) passes; MRFACE_MARGIN_TRITON_HALF=1/0 overrides it.
TENSOR_CORES_DEFAULT = False
_TRITON_GPU_DTYPES = (torch.float32,)
_TRITON_GPU_DTYPES_UNGATED = (torch.float32, torch.float16, torch.bfloat16)
TENSOR_CORE_ENV = "MRFACE_MARGIN_TRITON_HALF"


def triton_tensor_cores_enabled() -> bool:
    """Whether the Triton tensor-core paths run: ``MRFACE_MARGIN_TRITON_HALF`` (1/0) when set, else
    :data:`TENSOR_CORES_DEFAULT`."""
    value = os.environ.get(TENSOR_CORE_ENV)
    return TENSOR_CORES_DEFAULT if value is None else value == "1"


def _triton_gpu_dtypes() -> tuple[torch.dtype, ...]:
    return _TRITON_GPU_DTYPES_UNGATED if triton_tensor_cores_enabled() else _TRITON_GPU_DTYPES


def _pick_backend(device: torch.device, dtype: torch.dtype = torch.float32) -> str:
    """``triton``, ``chunked`` or ``reference`` for ``dtype`` weights on ``device`` (see module docstring)."""
    forced = forced_backend()
    if forced == "reference":
        return "reference"
    if forced == "cpp":
        return "chunked"
    if forced == "triton":
        if not _triton_runs_on(device):
            raise RuntimeError(
                f"margin_softmax: backend 'triton' was forced but cannot run on {device.type} "
                "tensors here (needs triton and CUDA, or TRITON_INTERPRET=1 on CPU)"
            )
        if device.type == "cuda" and dtype not in _triton_gpu_dtypes():
            raise RuntimeError(
                f"margin_softmax: backend 'triton' was forced for {dtype} weights on CUDA; the "
                f"compiled kernels are enabled for {_TRITON_GPU_DTYPES} only (half precision failed "
                f"the GPU accuracy test; {TENSOR_CORE_ENV}=1 lifts this gate for testing); use the "
                "default (chunked) path"
            )
        return "triton"
    if forced == "cuda":
        raise RuntimeError(
            "margin_softmax: backend 'cuda' was forced but this op has no CUDA-extension "
            "kernel; available: triton, cpp (chunked torch path), reference"
        )
    usable = device.type == "cuda" and dtype in _triton_gpu_dtypes() and _triton_runs_on(device)
    return "triton" if usable else "chunked"


def default_chunk(batch: int, num_classes: int) -> int:
    """Classes per tile of the chunked path: about 256 Ki logits per tile, at least 64 columns."""
    return max(1, min(num_classes, max(64, _CHUNK_ELEMENTS // max(batch, 1))))


# ------------------------------------------------------------------------ chunked torch path
def chunked_cpu_threads(requested: int | None = None) -> int:
    """Intra-op threads for the chunked CPU path's tile loop (each tile is a GEMM plus ~10 short passes).

    Every pass over a 1 MiB tile is its own parallel region; when other processes already keep the
    cores busy, a preempted worker stalls each region's barrier and the loop collapses (measured on 2
    busy cores: 4.5x slower than one thread). So: ``MRFACE_CHUNKED_THREADS`` when set; else one thread
    when the 1-minute load average minus this process's own threads reaches the core count (the
    machine is oversubscribed), else ``torch.get_num_threads()``. The choice is per call; a run that
    must be bitwise reproducible across machines pins it with the variable.
    """
    threads = torch.get_num_threads() if requested is None else requested
    pinned = os.environ.get("MRFACE_CHUNKED_THREADS")
    if pinned:
        if not pinned.isdigit() or int(pinned) < 1:
            raise ValueError(f"MRFACE_CHUNKED_THREADS must be a positive integer, got {pinned!r}")
        return int(pinned)
    if threads <= 1:
        return 1
    try:
        others = os.getloadavg()[0] - threads
    except OSError:  # no load average on this platform
        return threads
    return 1 if others >= (os.cpu_count() or 1) else threads


@contextlib.contextmanager
def _tile_threads(device: torch.device) -> Iterator[None]:
    """Run the tile loop with :func:`chunked_cpu_threads` threads (CPU tensors only), then restore."""
    before = torch.get_num_threads()
    wanted = chunked_cpu_threads(before) if device.type == "cpu" else before
    if wanted == before:
        yield
        return
    torch.set_num_threads(wanted)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# Per tile of k classes the work is one GEMM into a (B, k) buffer plus a few in-place passes over it;
# the centre norms, the row scale s_i and the clamp bounds are folded into the (k, D) / (B, D)
# operands and (B, 1) bounds, and sum_i G_ij cos_ij (the normalisation term of d w_j) is computed as
# w_hat_j . (G^T e)_j, so no pass over the tile is spent on them.
def _unit_centres(w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(w_hat (k, D), 1 / max(||w||, eps) (k,), ||w|| >= eps (k,)) of float32 centres w (k, D)."""
    norm = w.norm(dim=1)
    inv = 1.0 / norm.clamp_min(NORM_EPS)
    return w * inv[:, None], inv, norm >= NORM_EPS


def _targets_in(target: Tensor, c0: int, c1: int) -> tuple[Tensor, Tensor]:
    """Rows whose target column lies in [c0, c1) and that column relative to c0."""
    rows = ((target >= c0) & (target < c1)).nonzero()[:, 0]
    return rows, target[rows] - c0


def _raw_target_cosine(e: Tensor, weight: Tensor, target: Tensor) -> Tensor:
    """(B,) unclamped cosine with the target centre (0 without one), one gathered dot per row."""
    w = weight[target.clamp_min(0)].float()
    cos = (e * w).sum(dim=1) / w.norm(dim=1).clamp_min(NORM_EPS)
    return torch.where(target >= 0, cos, 0.0)


class _Tiles:
    """Shared set-up of the chunked forward and backward: scaled rows and per-row clamp bounds."""

    def __init__(
        self, emb_hat: Tensor, weight: Tensor, row_scale: Tensor, hard_threshold: Tensor, cos_lo: float, cos_hi: float
    ) -> None:
        self.e = emb_hat.float()
        self.lo, self.hi = max(cos_lo, -1.0), min(cos_hi, 1.0)
        self.hard = bool(torch.isfinite(hard_threshold).any())
        self.scale = row_scale.float()[:, None]
        # Without the hard transform z = clamp(s * cos, s * lo, s * hi) straight from the GEMM (s >= 0).
        self.lhs = self.e if self.hard else self.e * self.scale
        self.lo_s, self.hi_s = self.scale * self.lo, self.scale * self.hi
        self.chunk = default_chunk(self.e.shape[0], weight.shape[0])

    def raw(self, w_hat: Tensor) -> Tensor:
        """(B, k) cosines (hard transform) or s * cosines (otherwise), before any clamp."""
        return torch.mm(self.lhs, w_hat.T)

    def outside(self, raw: Tensor) -> Tensor | None:
        """Bool (B, k) of entries the clamp cuts (no gradient there), None when there are none."""
        lo, hi = (self.lo, self.hi) if self.hard else (self.lo_s, self.hi_s)
        low, high = torch.aminmax(raw, dim=1)
        lo_v = lo if isinstance(lo, float) else lo[:, 0]
        hi_v = hi if isinstance(hi, float) else hi[:, 0]
        if not bool(((low < lo_v) | (high > hi_v)).any()):
            return None
        return (raw < lo) | (raw > hi)

    def clamp_(self, raw: Tensor) -> Tensor:
        return raw.clamp_(self.lo, self.hi) if self.hard else raw.clamp_(min=self.lo_s, max=self.hi_s)


def _fwd_chunked(
    emb_hat: Tensor,
    weight: Tensor,
    target: Tensor,
    row_scale: Tensor,
    hard_threshold: Tensor,
    hard_t: Tensor,
    cos_lo: float,
    cos_hi: float,
) -> tuple[Tensor, Tensor]:
    tiles = _Tiles(emb_hat, weight, row_scale, hard_threshold, cos_lo, cos_hi)
    b, c = emb_hat.shape[0], weight.shape[0]
    run_max = torch.full((b,), -torch.inf, device=tiles.e.device)
    run_sum = torch.zeros(b, device=tiles.e.device)
    for c0 in range(0, c, tiles.chunk):
        c1 = min(c, c0 + tiles.chunk)
        w_hat, _, _ = _unit_centres(weight[c0:c1].float())
        z = tiles.clamp_(tiles.raw(w_hat))
        if tiles.hard:
            z = torch.where(z > hard_threshold[:, None], z * (hard_t + z), z).mul_(tiles.scale)
        rows, cols = _targets_in(target, c0, c1)
        z[rows, cols] = -torch.inf
        new_max = torch.maximum(run_max, z.amax(dim=1))
        shift = torch.where(torch.isfinite(new_max), new_max, 0.0)
        run_sum = run_sum * torch.exp(run_max - shift) + z.sub_(shift[:, None]).exp_().sum(dim=1)
        run_max = new_max
    shift = torch.where(torch.isfinite(run_max), run_max, 0.0)
    lse = torch.where(run_sum > 0, shift + torch.log(run_sum), -torch.inf)
    return lse, _raw_target_cosine(tiles.e, weight, target).clamp(-1.0, 1.0)


def _bwd_chunked(
    grad_lse: Tensor,
    grad_cos_y: Tensor,
    emb_hat: Tensor,
    weight: Tensor,
    target: Tensor,
    row_scale: Tensor,
    hard_threshold: Tensor,
    hard_t: Tensor,
    lse: Tensor,
    cos_lo: float,
    cos_hi: float,
) -> tuple[Tensor, Tensor]:
    tiles = _Tiles(emb_hat, weight, row_scale, hard_threshold, cos_lo, cos_hi)
    c = weight.shape[0]
    e = tiles.e
    lse_safe = torch.where(torch.isfinite(lse), lse, 0.0)[:, None]
    # Non-hard tiles hold z = s * c, so d lse / d c = s * exp(z - lse): fold s into the row factor.
    row_factor = grad_lse.float()[:, None] * (1.0 if tiles.hard else tiles.scale)
    target_grad = grad_cos_y.float() * (_raw_target_cosine(e, weight, target).abs() <= 1.0)
    d_e = torch.zeros_like(e)
    d_w = torch.empty(weight.shape, dtype=torch.float32, device=e.device)
    for c0 in range(0, c, tiles.chunk):
        c1 = min(c, c0 + tiles.chunk)
        w_hat, inv, full_norm = _unit_centres(weight[c0:c1].float())
        raw = tiles.raw(w_hat)
        outside = tiles.outside(raw)
        z = tiles.clamp_(raw)
        if tiles.hard:
            is_hard = z > hard_threshold[:, None]
            dz_dc = torch.where(is_hard, hard_t + 2 * z, 1.0).mul_(tiles.scale)
            z = torch.where(is_hard, z * (hard_t + z), z).mul_(tiles.scale)
        grad = z.sub_(lse_safe).exp_().mul_(row_factor)
        if tiles.hard:
            grad.mul_(dz_dc)
        if outside is not None:
            grad.masked_fill_(outside, 0.0)
        rows, cols = _targets_in(target, c0, c1)
        grad[rows, cols] = target_grad[rows]
        acc = torch.mm(grad.T, e)  # sum_i G_ij e_i
        col_dot = (acc * w_hat).sum(dim=1) * full_norm  # sum_i G_ij cos_ij
        d_w[c0:c1] = acc.sub_(w_hat * col_dot[:, None]).mul_(inv[:, None])
        d_e.addmm_(grad, w_hat)
    return d_e, d_w


# ---------------------------------------------------------------------------------- the ops
def _run_fwd(*args) -> tuple[Tensor, Tensor]:
    backend = _pick_backend(args[0].device, args[1].dtype)
    if backend == "reference":
        return margin_softmax_fwd_reference(*args)
    if backend == "triton":
        from mrface.kernels.margin_softmax import margin_softmax_fwd_triton

        return margin_softmax_fwd_triton(*args)
    with _tile_threads(args[0].device):
        return _fwd_chunked(*args)


def _run_bwd(*args) -> tuple[Tensor, Tensor]:
    backend = _pick_backend(args[2].device, args[3].dtype)
    if backend == "reference":
        return margin_softmax_bwd_reference(*args)
    if backend == "triton":
        from mrface.kernels.margin_softmax import margin_softmax_bwd_triton

        return margin_softmax_bwd_triton(*args)
    with _tile_threads(args[2].device):
        return _bwd_chunked(*args)


@torch.library.custom_op("mrface::margin_softmax_fwd", mutates_args=())
def _fwd_op(
    emb_hat: Tensor,
    weight: Tensor,
    target: Tensor,
    row_scale: Tensor,
    hard_threshold: Tensor,
    hard_t: Tensor,
    cos_lo: float,
    cos_hi: float,
) -> tuple[Tensor, Tensor]:
    """(lse (B,), cos_y (B,)) float32 per-row statistics of the local shard (see module docstring)."""
    return _run_fwd(emb_hat, weight, target, row_scale, hard_threshold, hard_t, cos_lo, cos_hi)


@_fwd_op.register_fake
def _(emb_hat, weight, target, row_scale, hard_threshold, hard_t, cos_lo, cos_hi):
    b = emb_hat.shape[0]
    return emb_hat.new_empty(b, dtype=torch.float32), emb_hat.new_empty(b, dtype=torch.float32)


@torch.library.custom_op("mrface::margin_softmax_bwd", mutates_args=())
def _bwd_op(
    grad_lse: Tensor,
    grad_cos_y: Tensor,
    emb_hat: Tensor,
    weight: Tensor,
    target: Tensor,
    row_scale: Tensor,
    hard_threshold: Tensor,
    hard_t: Tensor,
    lse: Tensor,
    cos_lo: float,
    cos_hi: float,
) -> tuple[Tensor, Tensor]:
    """(d emb_hat (B, D), d weight (C, D)) float32, recomputing the cosines tile by tile."""
    return _run_bwd(
        grad_lse, grad_cos_y, emb_hat, weight, target, row_scale, hard_threshold, hard_t, lse, cos_lo, cos_hi
    )


@_bwd_op.register_fake
def _(grad_lse, grad_cos_y, emb_hat, weight, target, row_scale, hard_threshold, hard_t, lse, cos_lo, cos_hi):
    return (emb_hat.new_empty(emb_hat.shape, dtype=torch.float32), weight.new_empty(weight.shape, dtype=torch.float32))


def _setup_context(ctx, inputs, output) -> None:
    emb_hat, weight, target, row_scale, hard_threshold, hard_t, cos_lo, cos_hi = inputs
    ctx.save_for_backward(emb_hat, weight, target, row_scale, hard_threshold, hard_t, output[0])
    ctx.cos_lo, ctx.cos_hi = cos_lo, cos_hi


def _backward(ctx, grad_lse, grad_cos_y):
    emb_hat, weight, target, row_scale, hard_threshold, hard_t, lse = ctx.saved_tensors
    grad_lse = torch.zeros_like(lse) if grad_lse is None else grad_lse
    grad_cos_y = torch.zeros_like(lse) if grad_cos_y is None else grad_cos_y
    d_e, d_w = _bwd_op(
        grad_lse, grad_cos_y, emb_hat, weight, target, row_scale, hard_threshold, hard_t, lse, ctx.cos_lo, ctx.cos_hi
    )
    return d_e.to(emb_hat.dtype), d_w.to(weight.dtype), None, None, None, None, None, None


_fwd_op.register_autograd(_backward, setup_context=_setup_context)


class _MergeLSE(torch.autograd.Function):
    """Per-row log-sum-exp over the ranks' shards: all-reduce max, then sum of exp (B,) vectors.
    Backward: d lse / d lse_r = exp(lse_r - lse), local, no communication."""

    @staticmethod
    def forward(ctx, lse_local: Tensor, group) -> Tensor:
        from mrface.losses import _dist

        top = _dist.all_reduce(lse_local.clone(), "max", group)
        shift = torch.where(torch.isfinite(top), top, 0.0)
        total = _dist.all_reduce(torch.exp(lse_local - shift), "sum", group)
        lse = torch.where(total > 0, shift + torch.log(total), -torch.inf)
        ctx.save_for_backward(lse_local, lse)
        return lse

    @staticmethod
    def backward(ctx, grad: Tensor):
        lse_local, lse = ctx.saved_tensors
        share = torch.exp(lse_local - torch.where(torch.isfinite(lse), lse, 0.0))
        return grad * share, None


# ---------------------------------------------------------------------------------- public API
class MarginSoftmaxRows(NamedTuple):
    """Per-row result of :func:`margin_softmax_per_row` for the N rows given.

    loss: (N,) float32 cross-entropy per row, 0 for rows that are not valid.
    rows: the margin's :class:`~mrface.losses.margins.RowTransform` (stats for logging).
    cos_y: (N,) float32 target cosine (global over the shards, detached).
    norms: (N,) float32 embedding norms (differentiable).
    valid: (N,) bool rows that take part in the loss.
    """

    loss: Tensor
    rows: RowTransform
    cos_y: Tensor
    norms: Tensor
    valid: Tensor


def _check_inputs(embeddings: object, weight: object, target: object, margin: object, valid: object) -> None:
    from mrface.losses.margins import Margin

    op = "margin_softmax_loss"
    if not isinstance(embeddings, Tensor) or embeddings.dim() != 2 or not embeddings.is_floating_point():
        raise ValueError(
            f"{op}: embeddings must be a floating-point (B, D) tensor, got "
            f"{getattr(embeddings, 'dtype', type(embeddings).__name__)} of shape "
            f"{tuple(getattr(embeddings, 'shape', ()))}"
        )
    b, d = embeddings.shape
    if not isinstance(weight, Tensor) or weight.dim() != 2 or not weight.is_floating_point() or weight.shape[1] != d:
        raise ValueError(
            f"{op}: weight must be a floating-point (C, D={d}) tensor, got shape {tuple(getattr(weight, 'shape', ()))}"
        )
    if weight.device != embeddings.device:
        raise ValueError(f"{op}: weight is on {weight.device} but embeddings on {embeddings.device}")
    if not isinstance(target, Tensor) or target.shape != (b,) or target.dtype not in (torch.int64, torch.int32):
        raise ValueError(
            f"{op}: labels must be an int64/int32 tensor of shape ({b},), got "
            f"{getattr(target, 'dtype', None)} of shape {tuple(getattr(target, 'shape', ()))}"
        )
    if b and (int(target.max()) >= weight.shape[0] or int(target.min()) < -1):
        raise ValueError(
            f"{op}: labels must be local columns in [0, {weight.shape[0]}) or -1, got range "
            f"[{int(target.min())}, {int(target.max())}]"
        )
    if not isinstance(margin, Margin):
        raise TypeError(f"{op}: margin must be a mrface.losses.margins.Margin, got {type(margin).__name__}")
    if valid is not None and (not isinstance(valid, Tensor) or valid.shape != (b,) or valid.dtype != torch.bool):
        raise ValueError(f"{op}: valid must be a bool tensor of shape ({b},) or None")


def _target_cosine(e_hat: Tensor, weight: Tensor, target: Tensor) -> Tensor:
    """(N,) clamped cosine of each row with its local target centre, 0 without one (no gradient)."""
    w = weight[target.clamp_min(0)].float()
    cos = (e_hat * w).sum(dim=1) / w.norm(dim=1).clamp_min(NORM_EPS)
    return torch.where(target >= 0, cos.clamp(-1.0, 1.0), 0.0)


def margin_softmax_per_row(
    embeddings: Tensor,
    weight: Tensor,
    labels: Tensor,
    margin: Margin,
    *,
    valid: Tensor | None = None,
    process_group=None,
) -> MarginSoftmaxRows:
    """Fused margin cross-entropy per row against a class shard (see the module docstring).

    Args:
        embeddings: (N, D) un-normalised, any float dtype; the same N rows on every rank of the group.
        weight: (C_local, D) centres of this rank's shard (or its sampled rows), any float dtype.
        labels: (N,) int local column of each row's class, -1 when it is not in this shard.
        margin: the margin; ``margin.rows`` runs once (EMAs update once per call in training mode).
        valid: (N,) bool rows taking part; default: rows whose class is in some rank's shard.
        process_group: the group the classes are sharded over; None: the default group when
            torch.distributed is initialised, else one process.

    Returns:
        :class:`MarginSoftmaxRows`; ``loss`` is identical on every rank. Each rank's gradients are
        those of its own shard's share: centres exact, embeddings to be summed over the ranks.
    """
    from mrface.losses import _dist

    _check_inputs(embeddings, weight, labels, margin, valid)
    target = labels.long()
    group = process_group
    distributed = _dist.world_size(group) > 1
    with torch.autocast(embeddings.device.type, enabled=False):
        e = embeddings.float()
        norms = e.norm(dim=1)
        e_hat = F.normalize(e, dim=1)
        with torch.no_grad():
            cos_y = _target_cosine(e_hat, weight, target)
            if distributed:
                cos_y = _dist.all_reduce(cos_y, "sum", group)
            if valid is None:
                has = (target >= 0).to(torch.int32)
                valid = (_dist.all_reduce(has, "sum", group) if distributed else has) > 0
        need_grad = torch.is_grad_enabled() and (embeddings.requires_grad or weight.requires_grad)
        margin_norms = norms if margin.needs_norms else None
        if need_grad:
            cy = cos_y.clone().requires_grad_(True)
            rows = margin.rows(cy, valid, margin_norms)
            (dz_dc,) = torch.autograd.grad(
                rows.target_logit, cy, torch.ones_like(cy), retain_graph=True, allow_unused=True, materialize_grads=True
            )
        else:
            rows = margin.rows(cos_y, valid, margin_norms)
        lse_local, cos_y_op = _fwd_op(
            e_hat,
            weight,
            target,
            rows.row_scale.detach().float().contiguous(),
            rows.hard_threshold.detach().float().contiguous(),
            rows.hard_t.detach().float(),
            float(rows.cos_lo),
            float(rows.cos_hi),
        )
        z = rows.target_logit.float()
        if need_grad:
            # Every rank computes the same z_y; only the rank owning the target passes its gradient on.
            z = torch.where(target >= 0, z, z.detach()) + dz_dc.detach() * (cos_y_op - cos_y_op.detach())
        lse_nt = _MergeLSE.apply(lse_local, group) if distributed else lse_local
        loss = torch.where(valid, torch.logaddexp(lse_nt, z) - z, 0.0)
    return MarginSoftmaxRows(loss, rows, cos_y, norms, valid)


def margin_softmax_loss(
    embeddings: Tensor,
    weight: Tensor,
    labels: Tensor,
    margin: Margin,
    *,
    valid: Tensor | None = None,
    process_group=None,
    reduction: str = "mean",
) -> Tensor:
    """Margin softmax cross-entropy (ArcFace, CosFace, CurricularFace, AdaFace, MagFace, QGFace, ...)
    without materialising the (B, C) logits. The scale s and the margins come from ``margin``.

    Args: as :func:`margin_softmax_per_row`; ``reduction``: ``"mean"`` over the valid rows (a ()
    float32 tensor; 0 with none), ``"sum"`` or ``"none"`` ((N,) float32, 0 for invalid rows).
    MagFace's norm regulariser is not included (``margin.regularizer(norms)``; PartialFC adds it).
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"margin_softmax_loss: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    out = margin_softmax_per_row(embeddings, weight, labels, margin, valid=valid, process_group=process_group)
    if reduction == "none":
        return out.loss
    if reduction == "sum":
        return out.loss.sum()
    return out.loss.sum() / out.valid.sum().clamp_min(1)
