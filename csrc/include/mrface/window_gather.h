// Vectorised row resize by in-register gathers (x86-64 AVX2, chosen at run time).
//
// A row resize dst[j] = sum_t w[j, t] * src[idx[j, t]] is a gather: every output has its own index
// list, so compilers leave it scalar. Outputs that are neighbours read neighbouring samples, though:
// for a block of outputs and a tap, the samples lie in a short window of the source row. One
// unaligned load of that window and one byte shuffle then fetch the block's samples at once. A plan
// holds, per block and tap group, the window start, the shuffle masks and the weights; it is built
// once per tap table and serves every row resized with it.
#pragma once

#include <cstdint>
#include <vector>

namespace mrface {

// What both plans share: output blocks, per (tap group, block) the start of its window in the row.
struct RowWindowLayout {
  int64_t src_w = 0, out_w = 0;
  int64_t blocks = 0;           // output blocks
  int window = 0;               // samples per window: 8 or 16; 0 = the table does not fit (use another path)
  bool padded = false;          // src_w < window: each row is copied into a zero-padded window first
  std::vector<int32_t> start;   // [groups][blocks] window start in the source row

  bool usable() const { return window > 0; }
};

// Q7 samples (int16), Q15 weights (int16), int32 sums: blocks of 4 outputs per 128-bit lane (their
// count rounded up to even, two per AVX2 register), taps in pairs (pmaddwd; an odd tap count gains a
// zero-weight tap), each pair's samples inside a window of 8 or 16 int16 per block. Groups = pairs.
struct RowWindowPlanQ15 : RowWindowLayout {
  int64_t pairs = 0;
  std::vector<uint8_t> mask_lo;  // [pairs][blocks][16] pshufb masks on the window's first 8 int16
  std::vector<uint8_t> mask_hi;  // [pairs][blocks][16] on its second 8 (window 16 only)
  std::vector<int16_t> weight;   // [pairs][blocks][8] (w[j, 2p], w[j, 2p + 1]) for the block's outputs
};

// Plan for the tap table (idx, w: [out_w, taps]) over rows of src_w samples. Not usable when AVX2 is
// absent, when a block's taps span more than 16 samples, or when a weight is negative.
RowWindowPlanQ15 plan_row_window_q15(const int32_t* idx, const int16_t* w, int64_t taps, int64_t src_w,
                                     int64_t out_w);

// dst[r, j] = (2^14 + sum_t w[j, t] * src[r, idx[j, t]]) >> 15 for r < rows (rows of src_w and out_w
// int16): the scalar fixed-point gather's result, bit for bit. Requires plan.usable().
void gather_rows_window_q15(const RowWindowPlanQ15& plan, const int16_t* src, int64_t rows, int16_t* dst);

// float32: blocks of 8 outputs per AVX2 register, one tap at a time (vpermps), each tap's samples
// inside a window of 8 or 16 floats per block. Groups = taps.
struct RowWindowPlanF32 : RowWindowLayout {
  int64_t taps = 0;
  std::vector<int32_t> lane;    // [taps][blocks][8] sample position in the window (0..window-1)
  std::vector<float> weight;    // [taps][blocks][8]
};

RowWindowPlanF32 plan_row_window_f32(const int32_t* idx, const float* w, int64_t taps, int64_t src_w, int64_t out_w);

// dst[r, j] = ((0 + w[j, 0] s0) + w[j, 1] s1) + ... in tap order, without FMA: the scalar gather's
// result, bit for bit. Requires plan.usable().
void gather_rows_window_f32(const RowWindowPlanF32& plan, const float* src, int64_t rows, float* dst);

}  // namespace mrface
