"""Triton kernels of the fused margin softmax (maths: mrface/ops/margin_softmax.py, mrface/losses/margin_softmax.py).

Forward: a program owns BLOCK_B rows and every ``num_splits``-th tile of BLOCK_C classes; per tile it
computes the cosine tile (dot over D in BLOCK_D slices, the centre norms accumulated on the way,
so no normalised weight copy exists), applies the non-target transform and folds the tile into an
online log-sum-exp. It writes per-(split, row) partial max / sum / target cosine; the host merges
the splits with a few (B,)-sized torch ops.

Backward: the same grid recomputes each tile, forms G = d loss / d cos (non-targets from the
statistics, the target from grad_cos_y) and adds G @ (W / ||W||) into d emb_hat and the centre
gradient (with its normalisation term) into d weight with float32 atomics. Both kernels share the
per-row prologue (:func:`_row_block`) and the non-target transform (:func:`_nontarget_logits`).

GEMM operands: float32 inputs use the dot precision the caller passes (``precision``: "ieee" float32 dots,
or "tf32"; the ops front picks it, see the tensor-core gate in mrface/ops/margin_softmax.py).
float16/bfloat16 weights use that dtype for both operands (emb_hat rounded to it) with float32
accumulation; for float16 the backward scales each row of
G / ||w|| and each column of G by a power of two before rounding them to float16 (and the GEMM results
back), since with s = 64, a 1/B mean and 10^4 classes most of G lies below float16's normal range
(about 97% of it at 257 x 10007) and a loss scaler can push the target entries past 65504. All
statistics are float32. Autotuned on GPU; under the interpreter (``interpreted=True``, the caller's
reading of TRITON_INTERPRET=1) one small configuration runs (tests on CPU tensors); tests can force any
configuration through ``_FORCED_CONFIG``.
Only APIs common to Triton 3.6-3.9 are used.

The backward's inner loop over D slices is not software-pipelined (``BWD_INNER_STAGES`` = 1): each
iteration issues two MMAs with loop-invariant register operands whose results go straight to atomics,
not to a loop-carried accumulator as in the forward. Compiled pipelined, the float16 backward gave
wrong d embeddings on an H100 at 257 x 10007 x 512 (8 D slices; no failure was reported at 33 x 1003 x 64, one slice),
while its arithmetic, run exactly by the interpreter and emulated in torch, is right there: the likely
cause, unconfirmed on a GPU until benchmarks/check_margin_half.py (in ``mrface bench gpu``) compares
both schedules (benchmarks/notes.md, margin_softmax, has the analysis). The loads it would overlap are a
small part of a backward bound by its GEMMs.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

NORM_EPS = 1e-12
_INTERPRETER_BLOCKS = {"BLOCK_B": 16, "BLOCK_C": 16, "BLOCK_D": 16}
_CONFIGS = [
    triton.Config({"BLOCK_B": 64, "BLOCK_C": 128, "BLOCK_D": 64}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_B": 128, "BLOCK_C": 128, "BLOCK_D": 64}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_B": 64, "BLOCK_C": 64, "BLOCK_D": 64}, num_warps=4, num_stages=4),
    triton.Config({"BLOCK_B": 128, "BLOCK_C": 64, "BLOCK_D": 32}, num_warps=4, num_stages=4),
]
_KEY = ["B", "C", "D", "HARD"]
# Tests only: a triton.Config to run instead of autotuning on GPU or _INTERPRETER_BLOCKS under the interpreter.
_FORCED_CONFIG: triton.Config | None = None
# Software-pipelining stages of the backward's inner loop over D slices: 1 = not pipelined (the fix of the
# float16 failure, see the module docstring); benchmarks/check_margin_half.py sets None (the config's
# num_stages, as before) on a GPU to show the difference.
BWD_INNER_STAGES: int | None = 1


@triton.jit
def _cosine_tile(
    e_ptr,
    w_ptr,
    rows,
    cols,
    row_mask,
    col_mask,
    D,
    stride_e,
    stride_w,
    PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """(cos (BLOCK_B, BLOCK_C) raw cosines, inv (BLOCK_C,) 1/||w||, norm (BLOCK_C,) ||w||)."""
    acc = tl.zeros([BLOCK_B, BLOCK_C], dtype=tl.float32)
    wsq = tl.zeros([BLOCK_C], dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        dk = d0 + tl.arange(0, BLOCK_D)
        d_mask = dk < D
        e = tl.load(
            e_ptr + rows[:, None].to(tl.int64) * stride_e + dk[None, :],
            mask=row_mask[:, None] & d_mask[None, :],
            other=0.0,
        )
        w = tl.load(
            w_ptr + cols[:, None].to(tl.int64) * stride_w + dk[None, :],
            mask=col_mask[:, None] & d_mask[None, :],
            other=0.0,
        )
        wf = w.to(tl.float32)
        wsq += tl.sum(wf * wf, axis=1)
        acc += tl.dot(e, tl.trans(w), input_precision=PRECISION)
    norm = tl.sqrt(wsq)
    inv = 1.0 / tl.maximum(norm, 1e-12)
    return acc * inv[None, :], inv, norm


@triton.jit
def _row_block(target_ptr, scale_ptr, thr_ptr, B, BLOCK_B: tl.constexpr):
    """This program's BLOCK_B rows and their per-row margin quantities (forward and backward):
    (rows, row_mask, target (-1 outside B), scale s_i (0 outside), hard threshold (inf outside))."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    row_mask = rows < B
    target = tl.load(target_ptr + rows, mask=row_mask, other=-1)
    scale = tl.load(scale_ptr + rows, mask=row_mask, other=0.0)
    thr = tl.load(thr_ptr + rows, mask=row_mask, other=float("inf"))
    return rows, row_mask, target, scale, thr


@triton.jit
def _nontarget_logits(cos, cols, live, target, scale, thr, hard_t, cos_lo, cos_hi, HARD: tl.constexpr):
    """(z, dz/dc, is_target) of a (BLOCK_B, BLOCK_C) cosine tile: z = s_i * c' with c' the clamped
    cosine after the hard-negative transform; z = -inf on the target column and outside ``live``."""
    is_target = cols[None, :] == target[:, None]
    c = tl.minimum(tl.maximum(cos, cos_lo), cos_hi)
    dz_dc = scale[:, None] + tl.zeros_like(cos)
    if HARD:
        is_hard = c > thr[:, None]
        dz_dc = tl.where(is_hard, (hard_t + 2.0 * c) * scale[:, None], dz_dc)
        c = tl.where(is_hard, c * (hard_t + c), c)
    z = tl.where(is_target | (live == 0), float("-inf"), c * scale[:, None])
    return z, dz_dc, is_target


@triton.jit
def _pow2_scale(m):
    """(r, 1 / r), powers of two with m * r in [2**14, 2**15) for normal m > 0, else (1, 1). Exact, so
    scaling a gradient tile by r before rounding it to float16 and the GEMM result by 1 / r afterwards
    keeps it clear of float16 underflow (subnormals below 6e-5, zero below 3e-8) and overflow."""
    expo = (m.to(tl.int32, bitcast=True) >> 23) & 0xFF
    biased = tl.where((expo > 0) & (expo < 255), tl.minimum(tl.maximum(268 - expo, 2), 253), 127)
    return (biased << 23).to(tl.float32, bitcast=True), ((254 - biased) << 23).to(tl.float32, bitcast=True)


@triton.jit
def _margin_fwd_kernel(
    e_ptr,
    w_ptr,
    target_ptr,
    scale_ptr,
    thr_ptr,
    hard_t,
    cos_lo,
    cos_hi,
    max_ptr,
    sum_ptr,
    cos_y_ptr,
    B,
    C,
    D,
    stride_e,
    stride_w,
    num_splits,
    HARD: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    split = tl.program_id(1)
    rows, row_mask, target, scale, thr = _row_block(target_ptr, scale_ptr, thr_ptr, B, BLOCK_B)
    run_max = tl.full([BLOCK_B], float("-inf"), tl.float32)
    run_sum = tl.zeros([BLOCK_B], dtype=tl.float32)
    cos_y = tl.zeros([BLOCK_B], dtype=tl.float32)
    for tile in range(split, tl.cdiv(C, BLOCK_C), num_splits):
        cols = tile * BLOCK_C + tl.arange(0, BLOCK_C)
        col_mask = cols < C
        cos, inv, norm = _cosine_tile(
            e_ptr, w_ptr, rows, cols, row_mask, col_mask, D, stride_e, stride_w, PRECISION, BLOCK_B, BLOCK_C, BLOCK_D
        )
        live = row_mask[:, None] & col_mask[None, :]
        z, _, is_target = _nontarget_logits(cos, cols, live, target, scale, thr, hard_t, cos_lo, cos_hi, HARD)
        cos_y += tl.sum(tl.where(is_target, tl.minimum(tl.maximum(cos, -1.0), 1.0), 0.0), axis=1)
        new_max = tl.maximum(run_max, tl.max(z, axis=1))
        shift = tl.where(new_max > float("-inf"), new_max, 0.0)
        run_sum = run_sum * tl.exp(run_max - shift) + tl.sum(tl.exp(z - shift[:, None]), axis=1)
        run_max = new_max
    out = split * B + rows
    tl.store(max_ptr + out, run_max, mask=row_mask)
    tl.store(sum_ptr + out, run_sum, mask=row_mask)
    tl.store(cos_y_ptr + out, cos_y, mask=row_mask)


@triton.jit
def _margin_bwd_kernel(
    e_ptr,
    w_ptr,
    target_ptr,
    scale_ptr,
    thr_ptr,
    hard_t,
    cos_lo,
    cos_hi,
    lse_ptr,
    grad_lse_ptr,
    grad_cos_y_ptr,
    d_e_ptr,
    d_w_ptr,
    B,
    C,
    D,
    stride_e,
    stride_w,
    num_splits,
    HARD: tl.constexpr,
    PRECISION: tl.constexpr,
    RESCALE: tl.constexpr,
    BWD_INNER_STAGES: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    split = tl.program_id(1)
    rows, row_mask, target, scale, thr = _row_block(target_ptr, scale_ptr, thr_ptr, B, BLOCK_B)
    lse = tl.load(lse_ptr + rows, mask=row_mask, other=0.0)
    lse = tl.where(lse > float("-inf"), lse, 0.0)
    grad_lse = tl.load(grad_lse_ptr + rows, mask=row_mask, other=0.0)
    grad_cos_y = tl.load(grad_cos_y_ptr + rows, mask=row_mask, other=0.0)
    for tile in range(split, tl.cdiv(C, BLOCK_C), num_splits):
        cols = tile * BLOCK_C + tl.arange(0, BLOCK_C)
        col_mask = cols < C
        cos, inv, norm = _cosine_tile(
            e_ptr, w_ptr, rows, cols, row_mask, col_mask, D, stride_e, stride_w, PRECISION, BLOCK_B, BLOCK_C, BLOCK_D
        )
        live = row_mask[:, None] & col_mask[None, :]
        z, dz_dc, is_target = _nontarget_logits(cos, cols, live, target, scale, thr, hard_t, cos_lo, cos_hi, HARD)
        grad = tl.exp(z - lse[:, None]) * grad_lse[:, None] * dz_dc
        grad = tl.where((cos >= cos_lo) & (cos <= cos_hi), grad, 0.0)
        grad = tl.where(is_target & (tl.abs(cos) <= 1.0), grad_cos_y[:, None], grad)
        grad = tl.where(live, grad, 0.0)
        col_dot = tl.sum(grad * cos, axis=0)
        norm_term = tl.where(norm >= 1e-12, col_dot * inv * inv, 0.0)
        grad_e = grad * inv[None, :]
        if RESCALE:  # float16 GEMM operands: rows of grad_e and columns of grad scaled into float16 range
            row_up, row_down = _pow2_scale(tl.max(tl.abs(grad_e), axis=1))
            col_up, col_down = _pow2_scale(tl.max(tl.abs(grad), axis=0))
            grad_e = grad_e * row_up[:, None]
            grad_w = tl.trans(grad * col_up[None, :]).to(e_ptr.dtype.element_ty)
        else:
            row_down = tl.full([BLOCK_B], 1.0, tl.float32)
            col_down = tl.full([BLOCK_C], 1.0, tl.float32)
            grad_w = tl.trans(grad).to(e_ptr.dtype.element_ty)
        grad_e = grad_e.to(w_ptr.dtype.element_ty)
        w_scale = inv * col_down
        # Not software-pipelined (see the module docstring): each slice's two GEMM results go straight to
        # atomics, with loop-invariant register operands; only IEEE float32 (no tensor cores) passed pipelined.
        for d0 in tl.range(0, D, BLOCK_D, num_stages=BWD_INNER_STAGES):
            dk = d0 + tl.arange(0, BLOCK_D)
            d_mask = dk < D
            e_mask = row_mask[:, None] & d_mask[None, :]
            w_mask = col_mask[:, None] & d_mask[None, :]
            e_offs = rows[:, None].to(tl.int64) * stride_e + dk[None, :]
            w_offs = cols[:, None].to(tl.int64) * stride_w + dk[None, :]
            e = tl.load(e_ptr + e_offs, mask=e_mask, other=0.0)
            w = tl.load(w_ptr + w_offs, mask=w_mask, other=0.0)
            d_e = tl.dot(grad_e, w, input_precision=PRECISION) * row_down[:, None]
            tl.atomic_add(d_e_ptr + rows[:, None].to(tl.int64) * D + dk[None, :], d_e, mask=e_mask)
            d_w = tl.dot(grad_w, e, input_precision=PRECISION) * w_scale[:, None]
            d_w -= w.to(tl.float32) * norm_term[:, None]
            tl.atomic_add(d_w_ptr + cols[:, None].to(tl.int64) * D + dk[None, :], d_w, mask=w_mask)


@functools.cache
def _tuned(kernel, reset: tuple[str, ...] = ()):
    return triton.autotune(configs=_CONFIGS, key=_KEY, reset_to_zero=list(reset) or None)(kernel)


def _num_splits(batch: int, num_classes: int, device: torch.device) -> int:
    """Class splits per row block: enough programs to fill the GPU (4 per SM at 64-row blocks)."""
    if device.type != "cuda":
        return 2
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(triton.cdiv(num_classes, 64), 4 * sms // triton.cdiv(batch, 64)))


def _operands(emb_hat: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return emb_hat.to(weight.dtype).contiguous(), weight.contiguous()


def _scalars(hard_t, cos_lo: float, cos_hi: float) -> tuple[float, float, float]:
    """hard_t, and the clamp range intersected with [-1, 1] as in the reference and the chunked path."""
    return float(hard_t), max(float(cos_lo), -1.0), min(float(cos_hi), 1.0)


def _meta(hard_threshold: torch.Tensor, precision: str) -> dict:
    if precision not in ("ieee", "tf32"):
        raise ValueError(f"margin_softmax triton: precision must be 'ieee' or 'tf32', got {precision!r}")
    return {"HARD": bool(torch.isfinite(hard_threshold).any()), "PRECISION": precision}


def _rescale(weight: torch.Tensor) -> bool:
    """Whether the backward scales its float16 gradient operands by powers of two (see module docstring)."""
    return weight.dtype == torch.float16


def _launch(kernel, reset: tuple[str, ...], args: tuple, b: int, splits: int, meta: dict, interpreted: bool) -> None:
    config = _FORCED_CONFIG
    if config is None and interpreted:
        config = triton.Config(_INTERPRETER_BLOCKS)
    if config is not None:
        kernel[(triton.cdiv(b, config.kwargs["BLOCK_B"]), splits)](
            *args, **meta, **config.kwargs, num_warps=config.num_warps, num_stages=config.num_stages
        )
    else:
        _tuned(kernel, reset)[lambda m: (triton.cdiv(b, m["BLOCK_B"]), splits)](*args, **meta)


def margin_softmax_fwd_triton(
    emb_hat, weight, target, row_scale, hard_threshold, hard_t, cos_lo, cos_hi, *, precision: str, interpreted: bool
):
    """Same contract as :func:`mrface.ops.reference.margin_softmax.margin_softmax_fwd_reference`.

    precision: "ieee" or "tf32" dots for float32 weights (ignored for float16/bfloat16); interpreted: the
    kernels run under the Triton interpreter (TRITON_INTERPRET=1): one small block configuration.
    """
    e, w = _operands(emb_hat, weight)
    b, d = e.shape
    c = w.shape[0]
    splits = _num_splits(b, c, e.device)
    part_max = torch.empty(splits, b, device=e.device, dtype=torch.float32)
    part_sum, part_cos = torch.empty_like(part_max), torch.empty_like(part_max)
    args = (
        e,
        w,
        target.contiguous(),
        row_scale.float().contiguous(),
        hard_threshold.float().contiguous(),
        *_scalars(hard_t, cos_lo, cos_hi),
        part_max,
        part_sum,
        part_cos,
        b,
        c,
        d,
        e.stride(0),
        w.stride(0),
        splits,
    )
    if b:
        _launch(_margin_fwd_kernel, (), args, b, splits, _meta(hard_threshold, precision), interpreted)
    top = part_max.amax(dim=0)
    shift = torch.where(torch.isfinite(top), top, 0.0)
    total = (part_sum * torch.exp(part_max - shift)).sum(dim=0)
    lse = torch.where(total > 0, shift + torch.log(total), -torch.inf)
    return lse, part_cos.sum(dim=0)


def margin_softmax_bwd_triton(
    grad_lse,
    grad_cos_y,
    emb_hat,
    weight,
    target,
    row_scale,
    hard_threshold,
    hard_t,
    lse,
    cos_lo,
    cos_hi,
    *,
    precision: str,
    interpreted: bool,
):
    """Same contract as :func:`mrface.ops.reference.margin_softmax.margin_softmax_bwd_reference`; precision and
    interpreted as in :func:`margin_softmax_fwd_triton`."""
    e, w = _operands(emb_hat, weight)
    b, d = e.shape
    c = w.shape[0]
    d_e = torch.zeros(b, d, device=e.device, dtype=torch.float32)
    d_w = torch.zeros(c, d, device=e.device, dtype=torch.float32)
    splits = _num_splits(b, c, e.device)
    args = (
        e,
        w,
        target.contiguous(),
        row_scale.float().contiguous(),
        hard_threshold.float().contiguous(),
        *_scalars(hard_t, cos_lo, cos_hi),
        lse.float().contiguous(),
        grad_lse.float().contiguous(),
        grad_cos_y.float().contiguous(),
        d_e,
        d_w,
        b,
        c,
        d,
        e.stride(0),
        w.stride(0),
        splits,
    )
    if b and c:
        _launch(
            _margin_bwd_kernel,
            ("d_e_ptr", "d_w_ptr"),
            args,
            b,
            splits,
            {**_meta(hard_threshold, precision), "RESCALE": _rescale(weight), "BWD_INNER_STAGES": BWD_INNER_STAGES},
            interpreted,
        )
    return d_e, d_w
