"""Triton degradation kernel: the GPU fallback when the CUDA extension is not built.

One generic kernel resizes every plane of a batch through the tap tables of a level table row
(csrc/include/mrface/resize.h); it is launched once per level for the down pass and once per level
for the up pass, reading the float32 scratch of the down pass. Runs under TRITON_INTERPRET=1 on
CPU tensors. Only APIs common to Triton 3.6-3.9 are used and nothing is autotuned.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 256
# Level table fields (resize.h): see mrface/ops/degrade.py for the full list.
_OUT_H, _OUT_W, _SRC_W, _Y_OFF, _Y_TAPS, _X_OFF, _X_TAPS = 1, 2, 4, 5, 6, 7, 8
_UP_Y_OFF, _UP_Y_TAPS, _UP_X_OFF, _UP_X_TAPS, _BUF_OFF, _FIELDS = 9, 10, 11, 12, 13, 14


@triton.jit
def _resize_planes_kernel(
    src_ptr,
    src_plane_stride,
    dst_ptr,
    dst_plane_stride,
    scratch_ptr,
    scratch_plane_stride,
    level_ptr,
    level_set_stride,
    channels,
    full_h,
    full_w,
    tap_index_ptr,
    tap_weight_ptr,
    UP: tl.constexpr,
    WRITE_DST: tl.constexpr,
    WRITE_SCRATCH: tl.constexpr,
    ROUND_U8: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
):
    plane = tl.program_id(0)
    block = tl.program_id(1)
    row = level_ptr + (plane // channels) * level_set_stride
    if UP:
        out_h = full_h
        out_w = full_w
        src_w = tl.load(row + 2)
        y_off = tl.load(row + 9)
        y_taps = tl.load(row + 10)
        x_off = tl.load(row + 11)
        x_taps = tl.load(row + 12)
    else:
        out_h = tl.load(row + 1)
        out_w = tl.load(row + 2)
        src_w = tl.load(row + 4)
        y_off = tl.load(row + 5)
        y_taps = tl.load(row + 6)
        x_off = tl.load(row + 7)
        x_taps = tl.load(row + 8)

    offs = block * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offs < out_h * out_w
    i = offs // out_w
    j = offs - i * out_w
    src = src_ptr + plane.to(tl.int64) * src_plane_stride
    acc = tl.zeros([BLOCK_SIZE], dtype=tl.float32)
    for a in range(0, y_taps):
        y_index = tl.load(tap_index_ptr + y_off + i * y_taps + a, mask=mask, other=0)
        y_weight = tl.load(tap_weight_ptr + y_off + i * y_taps + a, mask=mask, other=0.0)
        partial = tl.zeros([BLOCK_SIZE], dtype=tl.float32)
        for b in range(0, x_taps):
            x_index = tl.load(tap_index_ptr + x_off + j * x_taps + b, mask=mask, other=0)
            x_weight = tl.load(tap_weight_ptr + x_off + j * x_taps + b, mask=mask, other=0.0)
            value = tl.load(src + y_index * src_w + x_index, mask=mask, other=0).to(tl.float32)
            partial += x_weight * value
        acc += y_weight * partial

    if WRITE_SCRATCH:
        tl.store(scratch_ptr + plane.to(tl.int64) * scratch_plane_stride + offs, acc, mask=mask)
    if WRITE_DST:
        result = acc
        if ROUND_U8:
            result = tl.minimum(tl.maximum(tl.floor(acc + 0.5), 0.0), 255.0)
        dst = dst_ptr + plane.to(tl.int64) * dst_plane_stride
        tl.store(dst + offs, result.to(dst_ptr.dtype.element_ty), mask=mask)


def degrade_triton(
    x: torch.Tensor,
    levels: torch.Tensor,
    tap_index: torch.Tensor,
    tap_weight: torch.Tensor,
    buffer_floats: int,
    per_image: bool,
    downs: list[torch.Tensor | None],
    ups: list[torch.Tensor | None],
) -> None:
    """Fill ``downs``/``ups`` like the C++/CUDA kernels (see mrface/ops/degrade.py for the arguments).

    x: (N, C, H, W) contiguous; levels: int32 (sets, L, fields) on x's device. Cascaded levels read
    the float32 scratch of their source level.
    """
    n, c, height, width = x.shape
    planes = n * c
    if planes == 0:
        return
    host_levels = levels[0].cpu()  # sources, sizes and scratch offsets are shared by every set
    scratch = torch.empty(planes, buffer_floats, device=x.device, dtype=torch.float32)
    set_stride = levels.shape[1] * levels.shape[2] if per_image else 0
    round_u8 = x.dtype == torch.uint8
    max_down = int((levels[..., _OUT_H] * levels[..., _OUT_W]).max()) if per_image else 0
    for k in range(levels.shape[1]):
        source, out_h, out_w, buf_off = (int(host_levels[k, f]) for f in (0, _OUT_H, _OUT_W, _BUF_OFF))
        if source < 0:
            src, src_stride = x, height * width
        else:
            src, src_stride = scratch[:, int(host_levels[source, _BUF_OFF]) :], buffer_floats
        level_row = levels[:, k:]
        down_elems = max_down if per_image else out_h * out_w
        grid = (planes, triton.cdiv(down_elems, BLOCK))
        down = downs[k]
        _resize_planes_kernel[grid](
            src,
            src_stride,
            down if down is not None else scratch,
            out_h * out_w,
            scratch[:, buf_off:],
            buffer_floats,
            level_row,
            set_stride,
            c,
            height,
            width,
            tap_index,
            tap_weight,
            UP=False,
            WRITE_DST=down is not None,
            WRITE_SCRATCH=True,
            ROUND_U8=round_u8,
            BLOCK_SIZE=BLOCK,
        )
        if ups[k] is not None:
            grid = (planes, triton.cdiv(height * width, BLOCK))
            _resize_planes_kernel[grid](
                scratch[:, buf_off:],
                buffer_floats,
                ups[k],
                height * width,
                scratch,
                buffer_floats,
                level_row,
                set_stride,
                c,
                height,
                width,
                tap_index,
                tap_weight,
                UP=True,
                WRITE_DST=True,
                WRITE_SCRATCH=False,
                ROUND_U8=round_u8,
                BLOCK_SIZE=BLOCK,
            )
