// Area down-sampling by exactly two in both directions: every output the mean of a 2 x 2 block. This
// is each step of an area cascade (112 -> 56 -> 28 -> 14 -> 7). The generic passes compute it as a
// 2-tap column pass followed by a 2-tap row gather; these functions read the same samples with
// contiguous loads and give the generic passes' results bit for bit (same products, same order).
//
// Every function maps 2 * out_h rows of 2 * out_w samples (src) to out_h rows of out_w (dst).
#pragma once

#include <cstdint>

#include "mrface/dtype_convert.h"

namespace mrface {

// Whether a tap table (idx, w: [out, taps]) maps `src` samples to `out` as the 2 x 1 box: out * 2 ==
// src, two taps per output at 2j and 2j + 1, both of weight 0.5.
bool is_box2_table(const int32_t* idx, const float* w, int64_t taps, int64_t src, int64_t out);

// float32 results: t = 0.5 a + 0.5 b down each column pair (a above b), then
// dst = (0 + 0.5 t_left) + 0.5 t_right. 16-bit float samples are widened (exactly) as they are read.
void box2_level(const float* src, int64_t out_h, int64_t out_w, float* dst);
void box2_level(const BFloat16* src, int64_t out_h, int64_t out_w, float* dst);
void box2_level(const Float16* src, int64_t out_h, int64_t out_w, float* dst);

// Q7 int16 samples (non-negative), Q15 weight 16384: t = ((a + 1) >> 1) + ((b + 1) >> 1) down each
// column pair, then dst = (t_left + t_right + 1) >> 1, the fixed-point column pass and row gather.
void box2_level(const int16_t* src, int64_t out_h, int64_t out_w, int16_t* dst);

// uint8 samples read as Q7 (v << 7): the same passes, which reduce to dst = (sum of the block) << 5.
void box2_level(const uint8_t* src, int64_t out_h, int64_t out_w, int16_t* dst);

}  // namespace mrface
