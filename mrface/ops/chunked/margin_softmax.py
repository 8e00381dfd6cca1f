"""Chunked pure-PyTorch path of the margin-softmax op (backend ``chunked``): CPU tensors, and the CUDA
fallback for weights the Triton kernels do not take (float16/bfloat16 while the tensor-core gate is on).

Same contract as :func:`mrface.ops.reference.margin_softmax.margin_softmax_fwd_reference` and
:func:`~mrface.ops.reference.margin_softmax.margin_softmax_bwd_reference`, without a (B, C) tensor: the
classes are streamed in tiles of :func:`default_chunk` columns; the forward keeps an online
log-sum-exp per row, the backward recomputes each tile's logits from the forward's ``lse`` and
accumulates d emb_hat and d weight in float32.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
from torch import Tensor

from mrface.ops.reference.margin_softmax import NORM_EPS

__all__ = ["chunked_cpu_threads", "default_chunk", "margin_softmax_bwd_chunked", "margin_softmax_fwd_chunked"]

_CHUNK_ELEMENTS = 1 << 18  # (B, chunk) float32 tile of the CPU path: 1 MiB, stays in L2


def default_chunk(batch: int, num_classes: int) -> int:
    """Classes per tile of the chunked path: about 256 Ki logits per tile, at least 64 columns."""
    return max(1, min(num_classes, max(64, _CHUNK_ELEMENTS // max(batch, 1))))


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


def margin_softmax_fwd_chunked(
    emb_hat: Tensor,
    weight: Tensor,
    target: Tensor,
    row_scale: Tensor,
    hard_threshold: Tensor,
    hard_t: Tensor,
    cos_lo: float,
    cos_hi: float,
) -> tuple[Tensor, Tensor]:
    """(lse (B,), cos_y (B,)) float32, tile by tile on :func:`chunked_cpu_threads` threads (CPU tensors)."""
    with _tile_threads(emb_hat.device):
        return _fwd_chunked(emb_hat, weight, target, row_scale, hard_threshold, hard_t, cos_lo, cos_hi)


def margin_softmax_bwd_chunked(
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
    """(d emb_hat (B, D), d weight (C, D)) float32, recomputing the logits tile by tile."""
    with _tile_threads(emb_hat.device):
        return _bwd_chunked(
            grad_lse, grad_cos_y, emb_hat, weight, target, row_scale, hard_threshold, hard_t, lse, cos_lo, cos_hi
        )
