"""``mrface.ops.degrade_resolution``: batched cross-resolution degradation (112 -> 56/28/14/7 and back).

One call produces the down images for every target size and, optionally, each one resized back to
the input size (the "down-then-up" images BTNet trains its trunk on), from one pass over the input:
the C++ and CUDA kernels keep every level of a plane in a scratch buffer, so ``area`` with integer
factors cascades (56 -> 28 -> 14 -> 7 from one read) and the up images never leave the kernel.

Filters (REFERENCE.md §7): ``area`` (cv2 INTER_AREA, box for integer factors), ``bilinear_aa``
(PIL BILINEAR = interpolate(antialias=True)), ``bilinear`` (cv2 INTER_LINEAR, no antialias),
``bicubic_aa`` (PIL BICUBIC), ``bicubic`` (torch/cv2 a=-0.75, no antialias), ``nearest``,
``lanczos`` (cv2 INTER_LANCZOS4, 8 taps, no antialias).
Up filters: ``bilinear``, ``bicubic`` (align_corners=False), ``nearest`` or ``lanczos``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from mrface.ops.backend import backend_runs_on, choose_backend, compiled_extension, forced_backend
from mrface.ops.reference.degrade import (
    degrade_per_sample_reference,
    degrade_reference,
    per_sample_width,
    resize_matrix,
    up_filter_for,
)

DEGRADE_FILTERS = ("area", "bilinear", "bilinear_aa", "bicubic_aa", "bicubic", "nearest", "lanczos")
UP_FILTERS = ("bilinear", "bicubic", "nearest", "lanczos")
#: AdaFace's low-resolution augmentation (dataset/augmenter.py) draws the down and the up interpolation
#: independently from cv2 INTER_NEAREST, INTER_LINEAR, INTER_AREA, INTER_CUBIC, INTER_LANCZOS4.
ADAFACE_FILTERS = ("nearest", "bilinear", "area", "bicubic", "lanczos")
_FILTER_IDS = {"nearest": 0, "bilinear": 1, "bicubic": 2, "area": 3, "bilinear_aa": 4, "bicubic_aa": 5, "lanczos": 6}
_DTYPE_TAGS = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.uint8: 3}
_CPP_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.uint8)
_MAX_LEVELS = 8
# Level-table fields read here: indices of csrc/include/mrface/resize.h's LevelField (rows from _level_row).
F_OUT_H, F_OUT_W, F_SRC_H, F_Y_TAPS, F_X_TAPS, F_UP_Y_TAPS = 1, 2, 3, 6, 8, 10


class DegradedBatch(NamedTuple):
    """Result of :func:`degrade_resolution`: ``down[k]`` (N, C, h_k, w_k); ``up[k]`` (N, C, H, W) or None."""

    down: list[torch.Tensor]
    up: list[torch.Tensor] | None


# ----------------------------------------------------------------------------------------- plans
class _TapBank:
    """Flat tap arrays shared by all levels of a plan; each (in, out, filter) table is stored once."""

    def __init__(self) -> None:
        self._offsets: dict[tuple[int, int, str], tuple[int, int]] = {}
        self._index: list[np.ndarray] = []
        self._weight: list[np.ndarray] = []
        self._size = 0

    def add(self, in_size: int, out_size: int, filter: str) -> tuple[int, int]:
        key = (in_size, out_size, filter)
        if key not in self._offsets:
            index, weight = compiled_extension().resize_taps(in_size, out_size, _FILTER_IDS[filter])
            self._offsets[key] = (self._size, index.shape[1])
            self._index.append(index.reshape(-1))
            self._weight.append(weight.reshape(-1))
            self._size += index.size
        return self._offsets[key]

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(np.concatenate(self._index)), torch.from_numpy(np.concatenate(self._weight))


@dataclass(frozen=True, eq=False)
class _Plan:
    levels: torch.Tensor  # int32 (sets, num_levels, 14): one _level_row per level
    tap_index: torch.Tensor  # int32 flat
    tap_weight: torch.Tensor  # float32 flat
    buffer_floats: int  # per-plane scratch holding every level
    tmp_floats: int  # CUDA per-plane scratch of levels computed separably (see _separable_scratch)

    def to(self, device: torch.device) -> _Plan:
        return _Plan(
            self.levels.to(device),
            self.tap_index.to(device),
            self.tap_weight.to(device),
            self.buffer_floats,
            self.tmp_floats,
        )


def _cascade_source(k: int, sizes: tuple[tuple[int, int], ...], height: int, width: int, filter: str) -> int:
    """Level k reads level k-1 when box averages compose exactly (integer factors all the way)."""
    if filter != "area" or k == 0:
        return -1
    (ph, pw), (h, w) = sizes[k - 1], sizes[k]
    exact_previous = height % ph == 0 and width % pw == 0
    return k - 1 if exact_previous and ph % h == 0 and pw % w == 0 else -1


def _level_row(
    bank: _TapBank,
    source: int,
    src: tuple[int, int],
    out: tuple[int, int],
    full: tuple[int, int],
    filter: str,
    up: str | None,
    buf_off: int,
) -> list[int]:
    y_off, y_taps = bank.add(src[0], out[0], filter)
    x_off, x_taps = bank.add(src[1], out[1], filter)
    up_rows = [*bank.add(out[0], full[0], up), *bank.add(out[1], full[1], up)] if up else [0, 0, 0, 0]
    return [source, out[0], out[1], src[0], src[1], y_off, y_taps, x_off, x_taps, *up_rows, buf_off]


_DIRECT_TAPS = 16  # csrc/include/mrface/resize.h kDirectTaps


def _separable_scratch(row: list[int], width: int) -> int:
    """Scratch floats the CUDA kernel needs for a level: src_h * out_w when its down window is wide
    (separable path), out_h * W when it goes back up."""
    down = 0 if row[F_Y_TAPS] * row[F_X_TAPS] <= _DIRECT_TAPS else row[F_SRC_H] * row[F_OUT_W]
    return max(down, row[F_OUT_H] * width if row[F_UP_Y_TAPS] > 0 else 0)


@functools.lru_cache(maxsize=128)
def _batched_plan(height: int, width: int, sizes: tuple[tuple[int, int], ...], filter: str, up: str | None) -> _Plan:
    bank, rows, buffer_floats, tmp_floats = _TapBank(), [], 0, 0
    for k, out in enumerate(sizes):
        source = _cascade_source(k, sizes, height, width, filter)
        src = (height, width) if source < 0 else sizes[source]
        rows.append(_level_row(bank, source, src, out, (height, width), filter, up, buffer_floats))
        buffer_floats += out[0] * out[1]
        tmp_floats = max(tmp_floats, _separable_scratch(rows[-1], width))
    index, weight = bank.tensors()
    return _Plan(torch.tensor([rows], dtype=torch.int32), index, weight, buffer_floats, tmp_floats)


@functools.lru_cache(maxsize=16)
def _per_sample_bank(height: int, width: int, filters: tuple[str, ...], up: str) -> _Plan:
    """One single-level row per (side, filter), side in 1..height; row (side-1)*len(filters)+f."""
    bank, rows, buffer_floats, tmp_floats = _TapBank(), [], 0, 0
    for side in range(1, height + 1):
        out = (side, per_sample_width(height, width, side))
        for f in filters:
            rows.append(_level_row(bank, -1, (height, width), out, (height, width), f, up_filter_for(f, up), 0))
        buffer_floats = max(buffer_floats, out[0] * out[1])
        tmp_floats = max([tmp_floats] + [_separable_scratch(row, width) for row in rows[-len(filters) :]])
    index, weight = bank.tensors()
    return _Plan(torch.tensor(rows, dtype=torch.int32)[:, None, :], index, weight, buffer_floats, tmp_floats)


@functools.lru_cache(maxsize=64)
def _plan_on(device: torch.device, plan: _Plan) -> _Plan:
    return plan.to(device)


# -------------------------------------------------------------------------------------- backends
@functools.cache
def _shared_memory_limit(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).shared_memory_per_block_optin


def _cuda_fits(x: torch.Tensor, plan: _Plan) -> bool:
    # The kernel aligns its scratch to 4 floats after the level planes.
    return (plan.buffer_floats + 3 + plan.tmp_floats) * 4 <= _shared_memory_limit(x.device)


def _pick_backend(op: str, x: torch.Tensor, plan: _Plan) -> str:
    backend = choose_backend(op, x.device)
    if backend == "cuda" and not _cuda_fits(x, plan):
        if forced_backend() == "cuda":
            raise RuntimeError(f"{op}: input {tuple(x.shape)} needs more shared memory than one CUDA block has")
        backend = "triton" if backend_runs_on("triton", "cuda") else "reference"
    return backend


def _run_kernel(
    backend: str,
    x: torch.Tensor,
    plan: _Plan,
    levels: torch.Tensor,
    per_image: bool,
    downs: list[torch.Tensor | None],
    ups: list[torch.Tensor | None],
) -> None:
    """Fill ``downs``/``ups`` (None entries are not computed) with the C++, CUDA or Triton kernel."""
    if backend == "triton":
        from mrface.kernels.degrade import degrade_triton

        degrade_triton(x, levels, plan.tap_index, plan.tap_weight, plan.buffer_floats, per_image, downs, ups)
        return
    n, c, h, w = x.shape
    ext = compiled_extension()
    args = (
        x.data_ptr(),
        _DTYPE_TAGS[x.dtype],
        n,
        c,
        h,
        w,
        levels.data_ptr(),
        levels.shape[1],
        per_image,
        plan.tap_index.data_ptr(),
        plan.tap_weight.data_ptr(),
        [0 if t is None else t.data_ptr() for t in downs],
        [0 if t is None else t.data_ptr() for t in ups],
        plan.buffer_floats,
        plan.tmp_floats,
    )
    if backend == "cuda":
        ext.degrade_cuda(*args, torch.cuda.current_stream(x.device).cuda_stream)
    else:
        ext.degrade_cpu(*args, torch.get_num_threads())


def _compute_dtype(backend: str, dtype: torch.dtype) -> torch.dtype:
    """Dtype the kernel is handed: x's own for every dtype in ``_CPP_DTYPES`` (all four; the C++
    kernel widens fp16/bf16 planes to float32, computes in float32 and rounds each stored value to
    nearest even, so its outputs equal the float32 route's cast back), float32 for any other."""
    return dtype if backend != "cpp" or dtype in _CPP_DTYPES else torch.float32


# ---------------------------------------------------------------------------------- batched op
def _pairs(flat: list[int]) -> tuple[tuple[int, int], ...]:
    return tuple((int(flat[i]), int(flat[i + 1])) for i in range(0, len(flat), 2))


def _degrade_into(
    x: torch.Tensor, sizes: list[int], filter: str, up: str, out: list[torch.Tensor] | None
) -> list[torch.Tensor]:
    """Every down level, then every up level (when ``up`` is not "none"); written into ``out`` (the same
    list of x's dtype, checked by the caller) when given, which the kernel fills in place where its
    compute dtype is x's and the buffer is contiguous."""
    pairs = _pairs(sizes)
    up_filter = None if up == "none" else up
    n, c, height, width = x.shape
    plan = _batched_plan(height, width, pairs, filter, up_filter)
    backend = _pick_backend("degrade_resolution", x, plan)
    if backend == "reference":
        downs, ups = degrade_reference(x, list(pairs), filter, up_filter)
        results = downs + ups
        return results if out is None else [o.copy_(r) for o, r in zip(out, results, strict=True)]
    work = x.contiguous().to(_compute_dtype(backend, x.dtype))
    shapes = _result_shapes(x.shape, pairs, up_filter is not None)
    given = out if out is not None else [None] * len(shapes)
    targets = [
        o if o is not None and o.dtype == work.dtype and o.is_contiguous() else work.new_empty(shape)
        for o, shape in zip(given, shapes, strict=True)
    ]
    k = len(pairs)
    device_plan = _plan_on(x.device, plan)
    ups = targets[k:] if up_filter else [None] * k
    _run_kernel(backend, work, device_plan, device_plan.levels, False, targets[:k], ups)
    if out is None:
        return [t.to(x.dtype) for t in targets]
    return [o if o is t else o.copy_(t) for o, t in zip(out, targets, strict=True)]


@torch.library.custom_op("mrface::degrade_resolution", mutates_args=())
def _degrade_op(x: torch.Tensor, sizes: list[int], filter: str, up: str) -> list[torch.Tensor]:
    return _degrade_into(x, sizes, filter, up, None)


@torch.library.custom_op("mrface::degrade_resolution_out", mutates_args=("out",))
def _degrade_out_op(x: torch.Tensor, sizes: list[int], filter: str, up: str, out: list[torch.Tensor]) -> None:
    """Into a caller's buffers (down levels, then up levels): reused across batches, they skip the page
    faults of fresh outputs."""
    _degrade_into(x, sizes, filter, up, out)


@_degrade_out_op.register_fake
def _(x, sizes, filter, up, out):
    return None


@_degrade_op.register_fake
def _(x: torch.Tensor, sizes: list[int], filter: str, up: str) -> list[torch.Tensor]:
    n, c, height, width = x.shape
    pairs = _pairs(sizes)
    downs = [x.new_empty(n, c, h, w) for h, w in pairs]
    return downs + ([x.new_empty(n, c, height, width) for _ in pairs] if up != "none" else [])


def _matrix(in_size: int, out_size: int, filter: str, device: torch.device) -> torch.Tensor:
    return resize_matrix(in_size, out_size, filter).to(device=device, dtype=torch.float32)


def _degrade_setup_context(ctx, inputs, output) -> None:
    x, sizes, filter, up = inputs
    ctx.shape, ctx.dtype = list(x.shape), x.dtype
    ctx.sizes, ctx.filter, ctx.up = sizes, filter, up


@torch.library.custom_op("mrface::degrade_resolution_backward", mutates_args=())
def _degrade_backward_op(
    grads: list[torch.Tensor | None], shape: list[int], dtype: torch.dtype, sizes: list[int], filter: str, up: str
) -> torch.Tensor:
    """The op is linear: d x = sum_k My_k^T g_k Mx_k (+ the same through the up matrices)."""
    _, _, height, width = shape
    device = next(g.device for g in grads if g is not None)
    grad = torch.zeros(shape, dtype=torch.float32, device=device)
    pairs = _pairs(sizes)
    for k, (h, w) in enumerate(pairs):
        my, mx = _matrix(height, h, filter, device), _matrix(width, w, filter, device)
        if grads[k] is not None:
            grad = grad + my.T @ grads[k].float() @ mx
        if up != "none" and grads[len(pairs) + k] is not None:
            uy = _matrix(h, height, up, device) @ my
            ux = _matrix(w, width, up, device) @ mx
            grad = grad + uy.T @ grads[len(pairs) + k].float() @ ux
    return grad.to(dtype)


@_degrade_backward_op.register_fake
def _(grads, shape, dtype, sizes, filter, up):
    device = next(g.device for g in grads if g is not None)
    return torch.empty(shape, dtype=dtype, device=device)


def _degrade_backward(ctx, grads):
    grad = _degrade_backward_op(list(grads), ctx.shape, ctx.dtype, ctx.sizes, ctx.filter, ctx.up)
    return grad, None, None, None


_degrade_op.register_autograd(_degrade_backward, setup_context=_degrade_setup_context)


# -------------------------------------------------------------------------------- per-sample op
def _per_sample_into(
    x: torch.Tensor,
    sides: torch.Tensor,
    filter_ids: torch.Tensor,
    filters: list[str],
    up: str,
    out: torch.Tensor | None,
) -> torch.Tensor:
    """Degrade every image; write into ``out`` (same shape and dtype as x, contiguous) when given."""
    n, c, height, width = x.shape
    bank = _per_sample_bank(height, width, tuple(filters), up)
    backend = _pick_backend("degrade_per_sample", x, bank)
    if backend == "reference":
        result = degrade_per_sample_reference(x, sides, [filters[int(i)] for i in filter_ids], up)
        return result if out is None else out.copy_(result)
    device_bank = _plan_on(x.device, bank)
    rows = ((sides.to(x.device) - 1) * len(filters) + filter_ids.to(x.device)).long()
    levels = device_bank.levels.index_select(0, rows).contiguous()
    work = x.contiguous().to(_compute_dtype(backend, x.dtype))
    direct = out is not None and out.dtype == work.dtype and out.is_contiguous()
    target = out if direct else torch.empty_like(work)
    _run_kernel(backend, work, device_bank, levels, True, [None], [target])
    if out is None:
        return target.to(x.dtype)
    return out if direct else out.copy_(target)


@torch.library.custom_op("mrface::degrade_per_sample", mutates_args=())
def _degrade_per_sample_op(
    x: torch.Tensor, sides: torch.Tensor, filter_ids: torch.Tensor, filter_names: str, up: str
) -> torch.Tensor:
    """filter_names: comma-separated (custom ops take no list of strings)."""
    return _per_sample_into(x, sides, filter_ids, filter_names.split(","), up, None)


@torch.library.custom_op("mrface::degrade_per_sample_out", mutates_args=("out",))
def _degrade_per_sample_out_op(
    x: torch.Tensor, sides: torch.Tensor, filter_ids: torch.Tensor, filter_names: str, up: str, out: torch.Tensor
) -> None:
    """Into a caller's buffer: a data loader reusing it skips the page faults of a fresh output."""
    _per_sample_into(x, sides, filter_ids, filter_names.split(","), up, out)


@_degrade_per_sample_op.register_fake
def _(x, sides, filter_ids, filter_names, up):
    return torch.empty_like(x)


@_degrade_per_sample_out_op.register_fake
def _(x, sides, filter_ids, filter_names, up, out):
    return None


def _per_sample_setup_context(ctx, inputs, output) -> None:
    x, sides, filter_ids, filter_names, up = inputs
    ctx.dtype = x.dtype
    ctx.save_for_backward(sides, filter_ids)
    ctx.filter_names, ctx.up = filter_names, up


@torch.library.custom_op("mrface::degrade_per_sample_backward", mutates_args=())
def _per_sample_backward_op(
    grad: torch.Tensor, sides: torch.Tensor, filter_ids: torch.Tensor, filter_names: str, up: str
) -> torch.Tensor:
    """d x_n = (Uy_n My_n)^T g_n (Ux_n Mx_n), one pair of combined matrices per (side, filter)."""
    filters = filter_names.split(",")
    height, width = grad.shape[-2:]
    cache: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
    my, mx = [], []
    for side, fid in zip(sides.tolist(), filter_ids.tolist(), strict=True):
        if (side, fid) not in cache:
            f, w = filters[fid], per_sample_width(height, width, side)
            u = up_filter_for(f, up)
            cache[side, fid] = (
                _matrix(side, height, u, grad.device) @ _matrix(height, side, f, grad.device),
                _matrix(w, width, u, grad.device) @ _matrix(width, w, f, grad.device),
            )
        my.append(cache[side, fid][0])
        mx.append(cache[side, fid][1])
    my_t, mx_t = torch.stack(my)[:, None], torch.stack(mx)[:, None]
    return (my_t.transpose(-1, -2) @ grad.float() @ mx_t).to(grad.dtype)


@_per_sample_backward_op.register_fake
def _(grad, sides, filter_ids, filter_names, up):
    return torch.empty_like(grad)


def _per_sample_backward(ctx, grad):
    sides, filter_ids = ctx.saved_tensors
    grad_x = _per_sample_backward_op(grad, sides, filter_ids, ctx.filter_names, ctx.up)
    return grad_x.to(ctx.dtype), None, None, None, None


_degrade_per_sample_op.register_autograd(_per_sample_backward, setup_context=_per_sample_setup_context)


# ---------------------------------------------------------------------------------- public API
def _check_image_batch(x: object, op: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{op}: x must be a torch.Tensor (N, C, H, W), got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{op}: x must have rank 4 (N, C, H, W), got shape {tuple(x.shape)}")
    if x.dtype not in _DTYPE_TAGS:
        raise TypeError(f"{op}: x.dtype must be one of float32, float16, bfloat16, uint8; got {x.dtype}")
    if x.dtype == torch.uint8 and x.requires_grad:
        raise TypeError(f"{op}: uint8 input cannot require grad")
    return x


def _normalise_sizes(sizes: object, height: int, width: int) -> tuple[tuple[int, int], ...]:
    if isinstance(sizes, int):
        sizes = [sizes]
    try:
        items = list(sizes)  # type: ignore[arg-type]
    except TypeError as err:
        raise TypeError(
            f"degrade_resolution: sizes must be an int or a list of ints/(h, w) pairs, got {sizes!r}"
        ) from err
    if not 1 <= len(items) <= _MAX_LEVELS:
        raise ValueError(f"degrade_resolution: sizes must hold 1..{_MAX_LEVELS} targets, got {len(items)}")
    pairs = []
    for item in items:
        h, w = (item, item) if not isinstance(item, (tuple, list)) or len(item) != 2 else item
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (h, w)):
            raise TypeError(f"degrade_resolution: every size must be an int or an (h, w) pair of ints, got {item!r}")
        if h <= 0 or w <= 0:
            raise ValueError(f"degrade_resolution: sizes must be positive, got {item!r}")
        if h > height or w > width:
            raise ValueError(
                f"degrade_resolution: target {item!r} is larger than the input {height}x{width}; only downsampling"
            )
        pairs.append((h, w))
    return tuple(pairs)


def _check_choice(value: str, allowed: tuple[str, ...], arg: str, op: str) -> str:
    if value not in allowed:
        raise ValueError(f"{op}: {arg}={value!r} is not one of {allowed}")
    return value


def degrade_resolution(
    x: torch.Tensor,
    sizes: int | list[int] | list[tuple[int, int]] = (56, 28, 14, 7),
    filter: str = "area",
    up: str | None = None,
    out: DegradedBatch | None = None,
) -> DegradedBatch:
    """Downsample a batch to every target size, optionally resizing each back up, in one pass.

    Args:
        x: (N, C, H, W) float32/float16/bfloat16, or uint8 (rounded half up, saturated). The C++ CPU
            backend takes all four natively (no converted copy): float16/bfloat16 planes are widened to
            float32 inside the kernel and every output rounded to nearest even, bit-identical to
            computing on ``x.float()`` and casting back. On the C++
            backend uint8 with nearest/bilinear/area/bilinear_aa (down and up) runs in fixed point
            (Q7 samples, Q15 weights): within one grey level of the float result rounded, equal to it
            unless that result lies within 0.1 of a half; other filters compute in float32.
        sizes: target sizes; an int s means s x s, a pair (h, w) a rectangle. At most 8, each <= input.
        filter: down filter, one of :data:`DEGRADE_FILTERS`.
        up: None, or one of :data:`UP_FILTERS` to also return each level resized back to (H, W).
        out: optional DegradedBatch of buffers shaped like the result (x's dtype and device; ``up`` None
            exactly when ``up`` is), written and returned (no autograd). Reusing one across batches
            skips page-faulting fresh outputs every call, most of the cost of ``up`` on a CPU.

    Returns:
        DegradedBatch(down=[(N, C, h_k, w_k)], up=[(N, C, H, W)] or None), dtype of x (``out`` when
        given). Differentiable with respect to float inputs.
    """
    op = "degrade_resolution"
    x = _check_image_batch(x, op)
    pairs = _normalise_sizes(sizes, x.shape[-2], x.shape[-1])
    _check_choice(filter, DEGRADE_FILTERS, "filter", op)
    if up is not None:
        _check_choice(up, UP_FILTERS, "up", op)
    flat_sizes = [v for p in pairs for v in p]
    if out is not None:
        buffers = _check_out_batch(out, x, pairs, up is not None, op)
        _degrade_out_op(x, flat_sizes, filter, up or "none", buffers)
        return out
    outputs = _degrade_op(x, flat_sizes, filter, up or "none")
    k = len(pairs)
    return DegradedBatch(list(outputs[:k]), list(outputs[k:]) if up else None)


def _result_shapes(
    shape: torch.Size, pairs: tuple[tuple[int, int], ...], with_up: bool
) -> list[tuple[int, int, int, int]]:
    """Shapes of degrade_resolution's outputs for an (N, C, H, W) input: every down level, then (with
    ``with_up``) one (N, C, H, W) image per level."""
    n, c, height, width = shape
    return [(n, c, h, w) for h, w in pairs] + ([(n, c, height, width)] * len(pairs) if with_up else [])


def _check_out_tensor(t: object, shape: tuple[int, ...], x: torch.Tensor, where: str, op: str) -> None:
    """One out= buffer: a tensor of ``shape`` with x's dtype and device, outside autograd, not
    overlapping x. ``where`` names it in the error."""
    if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(shape) or t.dtype != x.dtype or t.device != x.device:
        got = f"{tuple(t.shape)} {t.dtype} on {t.device}" if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{op}: {where} must be a tensor {tuple(shape)} {x.dtype} on {x.device}, got {got}")
    if torch.is_grad_enabled() and (x.requires_grad or t.requires_grad):
        raise ValueError(f"{op}: out= does not support autograd; call without out to differentiate")
    if _overlap(t, x):
        raise ValueError(f"{op}: {where} must not share memory with x")


def _check_out_batch(
    out: object, x: torch.Tensor, pairs: tuple[tuple[int, int], ...], with_up: bool, op: str
) -> list[torch.Tensor]:
    """The buffers of ``out`` (down levels, then up levels) after checking them against the result."""
    if not isinstance(out, DegradedBatch):
        raise TypeError(f"{op}: out must be a DegradedBatch, got {type(out).__name__}")
    if (out.up is not None) != with_up:
        raise ValueError(
            f"{op}: out.up must be {'a list' if with_up else 'None'} when up is {'set' if with_up else 'None'}"
        )
    shapes = _result_shapes(x.shape, pairs, with_up)
    buffers = list(out.down) + list(out.up or [])
    if len(buffers) != len(shapes):
        raise ValueError(
            f"{op}: out holds {len(out.down)} down and {len(out.up or [])} up buffers, expected {len(pairs)} each"
        )
    for i, (t, shape) in enumerate(zip(buffers, shapes, strict=True)):
        _check_out_tensor(t, shape, x, f"out.down[{i}]" if i < len(pairs) else f"out.up[{i - len(pairs)}]", op)
    for i, a in enumerate(buffers):
        if any(_overlap(a, b) for b in buffers[i + 1 :]):
            raise ValueError(f"{op}: out's buffers must not share memory with each other")
    return buffers


def _overlap(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether the byte ranges two tensors span intersect (views of one storage may sit side by side)."""

    def span(t: torch.Tensor) -> tuple[int, int]:
        last = sum((size - 1) * stride for size, stride in zip(t.shape, t.stride(), strict=True)) if t.numel() else -1
        return t.data_ptr(), t.data_ptr() + (last + 1) * t.element_size()

    (a0, a1), (b0, b1) = span(a), span(b)
    return a.device == b.device and a0 < b1 and b0 < a1


def degrade_per_sample(
    x: torch.Tensor,
    sides: torch.Tensor,
    filter_ids: torch.Tensor,
    filters: tuple[str, ...] = ADAFACE_FILTERS,
    up: str = "same",
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Resize image n down to height ``sides[n]`` with ``filters[filter_ids[n]]`` and back to (H, W).

    Args:
        x: (N, C, H, W); sides: (N,) int in [1, H]; filter_ids: (N,) int indexing ``filters``.
        up: an up filter, or ``same`` (nearest->nearest, bicubic->bicubic, area/bilinear->bilinear).
        out: optional (N, C, H, W) buffer of x's dtype and device, written and returned (no autograd);
            reusing one across batches avoids page-faulting a fresh output every call (the C++ kernel
            asks for huge pages on fresh outputs, which makes those faults cheaper, not free).
    Returns: (N, C, H, W), dtype of x (``out`` when given). The width keeps the aspect ratio.
    """
    op = "degrade_per_sample"
    x = _check_image_batch(x, op)
    for f in filters:
        _check_choice(f, DEGRADE_FILTERS, "filters", op)
    _check_choice(up, (*UP_FILTERS, "same"), "up", op)
    for name, t in (("sides", sides), ("filter_ids", filter_ids)):
        if not isinstance(t, torch.Tensor) or t.shape != (x.shape[0],) or t.dtype.is_floating_point:
            raise ValueError(f"{op}: {name} must be an integer tensor of shape ({x.shape[0]},)")
    if x.shape[0] and (int(sides.min()) < 1 or int(sides.max()) > x.shape[-2]):
        raise ValueError(f"{op}: sides must lie in [1, {x.shape[-2]}], got [{int(sides.min())}, {int(sides.max())}]")
    if x.shape[0] and (int(filter_ids.min()) < 0 or int(filter_ids.max()) >= len(filters)):
        raise ValueError(f"{op}: filter_ids must index filters (0..{len(filters) - 1})")
    if out is not None:
        _check_out_tensor(out, tuple(x.shape), x, "out", op)
        _degrade_per_sample_out_op(x, sides.long(), filter_ids.long(), ",".join(filters), up, out)
        return out
    return _degrade_per_sample_op(x, sides.long(), filter_ids.long(), ",".join(filters), up)


def degrade_resolution_random(
    x: torch.Tensor,
    min_size: int = 22,
    max_size: int | None = None,
    filters: tuple[str, ...] = ADAFACE_FILTERS,
    up: str = "same",
    generator: torch.Generator | None = None,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """AdaFace-style augmentation: each image gets its own side in [min_size, max_size] and filter.

    Sides and filters are drawn on the CPU from ``generator`` (reproducible for a seed, whatever the
    device). ``out``: optional reused output buffer (see :func:`degrade_per_sample`).
    Returns (images (N, C, H, W), sides (N,) int64, filter_ids (N,) int64).
    """
    x = _check_image_batch(x, "degrade_resolution_random")
    max_size = x.shape[-2] if max_size is None else max_size
    if not 1 <= min_size <= max_size <= x.shape[-2]:
        raise ValueError(
            f"degrade_resolution_random: need 1 <= min_size <= max_size <= {x.shape[-2]}, "
            f"got min_size={min_size}, max_size={max_size}"
        )
    n = x.shape[0]
    sides = torch.randint(min_size, max_size + 1, (n,), generator=generator)
    filter_ids = torch.randint(0, len(filters), (n,), generator=generator)
    return degrade_per_sample(x, sides, filter_ids, filters, up, out), sides, filter_ids
