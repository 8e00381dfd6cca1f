// Column passes of the separable resize with wide windows, and the uint8 stores of the fixed-point path,
// written for AVX2 (callers check cpu_has_avx2(), cpu_features.h).
//
// dst[j] = sum_t w[t] * src[idx[t] * width + j]: one output row from `taps` rows of a plane, contiguous
// in j. Blocks of outputs stay in registers across all taps; taps of weight 0 are skipped. Sums run
// in tap order, as the portable loops do, so results are bit for bit theirs.
#pragma once

#include <cstdint>

namespace mrface {

// float32 samples and weights, ((0 + w0 s0) + w1 s1) + ... without FMA. Requires AVX2.
void column_row_wide_f32(const float* src, int64_t width, const int32_t* idx, const float* w, int64_t taps,
                         float* dst);

// Q7 int16 samples, Q15 weights: acc = (acc + pmulhrsw(s, w)) mod 2^16 per tap. Requires AVX2.
void column_row_wide_q15(const int16_t* src, int64_t width, const int32_t* idx, const int16_t* w, int64_t taps,
                         int16_t* dst);

// Q7 -> uint8: (v + 64) >> 7 clamped to [0, 255] (round half up, saturate), in 16-bit lanes. Requires AVX2.
void narrow_q7_u8(const int16_t* src, int64_t n, uint8_t* dst);

// A column row as column_row_wide_q15 (every tap, weight 0 included: the portable loop's sum) narrowed
// straight to uint8 as narrow_q7_u8, without storing the Q7 row. One tap of weight 32767 (1.0) is the
// sample itself, as in the portable path. Requires AVX2.
void column_row_narrow_q15(const int16_t* src, int64_t width, const int32_t* idx, const int16_t* w, int64_t taps,
                           uint8_t* dst);

}  // namespace mrface
