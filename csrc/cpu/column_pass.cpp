// AVX2 column passes for wide resize windows (see mrface/column_pass.h).
#include "mrface/column_pass.h"

#if defined(__GNUC__) && defined(__x86_64__)
#define MRFACE_COLUMN_AVX2 1
#include <immintrin.h>
#endif

namespace mrface {

#if defined(MRFACE_COLUMN_AVX2)
namespace {

// Outputs [j, j + 8 * Regs) of a float32 column row, accumulated in Regs registers.
template <int Regs>
__attribute__((target("avx2"), always_inline)) inline void column_block_f32(const float* src, int64_t width,
                                                                            const int32_t* idx, const float* w,
                                                                            int64_t taps, int64_t j, float* dst) {
  __m256 acc[Regs];
  for (int r = 0; r < Regs; ++r) acc[r] = _mm256_setzero_ps();
  for (int64_t t = 0; t < taps; ++t) {
    if (w[t] == 0.0f) continue;
    const __m256 weight = _mm256_set1_ps(w[t]);
    const float* s = src + static_cast<int64_t>(idx[t]) * width + j;
    for (int r = 0; r < Regs; ++r) acc[r] = _mm256_add_ps(acc[r], _mm256_mul_ps(weight, _mm256_loadu_ps(s + 8 * r)));
  }
  for (int r = 0; r < Regs; ++r) _mm256_storeu_ps(dst + j + 8 * r, acc[r]);
}

// Outputs [j, j + 16 * Regs) of a Q7 column row.
template <int Regs>
__attribute__((target("avx2"), always_inline)) inline void column_block_q15(const int16_t* src, int64_t width,
                                                                            const int32_t* idx, const int16_t* w,
                                                                            int64_t taps, int64_t j, int16_t* dst) {
  __m256i acc[Regs];
  for (int r = 0; r < Regs; ++r) acc[r] = _mm256_setzero_si256();
  for (int64_t t = 0; t < taps; ++t) {
    if (w[t] == 0) continue;
    const __m256i weight = _mm256_set1_epi16(w[t]);
    const int16_t* s = src + static_cast<int64_t>(idx[t]) * width + j;
    for (int r = 0; r < Regs; ++r) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + 16 * r));
      acc[r] = _mm256_add_epi16(acc[r], _mm256_mulhrs_epi16(v, weight));
    }
  }
  for (int r = 0; r < Regs; ++r) _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + j + 16 * r), acc[r]);
}

// Outputs [j, j + 8) of a Q7 column row in one 128-bit register.
__attribute__((target("avx2"), always_inline)) inline void column_half_q15(const int16_t* src, int64_t width,
                                                                           const int32_t* idx, const int16_t* w,
                                                                           int64_t taps, int64_t j, int16_t* dst) {
  __m128i acc = _mm_setzero_si128();
  for (int64_t t = 0; t < taps; ++t) {
    if (w[t] == 0) continue;
    const int16_t* s = src + static_cast<int64_t>(idx[t]) * width + j;
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s));
    acc = _mm_add_epi16(acc, _mm_mulhrs_epi16(v, _mm_set1_epi16(w[t])));
  }
  _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + j), acc);
}

// Q7 lanes -> rounded, saturated uint8 lanes, 16-bit all the way: the saturating add only changes
// values whose result saturates to 255 anyway.
__attribute__((target("avx2"), always_inline)) inline __m256i round_q7(__m256i v) {
  return _mm256_srai_epi16(_mm256_adds_epi16(v, _mm256_set1_epi16(64)), 7);
}

// 32 outputs: two registers of 16 rounded lanes packed to bytes in order.
__attribute__((target("avx2"), always_inline)) inline void store_u8x32(__m256i a, __m256i b, uint8_t* dst) {
  const __m256i packed = _mm256_packus_epi16(round_q7(a), round_q7(b));  // 128-bit lanes: a0 b0 | a1 b1
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), _mm256_permute4x64_epi64(packed, 0xD8));
}

__attribute__((target("avx2"), always_inline)) inline void store_u8x16(__m256i a, uint8_t* dst) {
  const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi16(round_q7(a), round_q7(a)), 0xD8);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm256_castsi256_si128(packed));
}

inline uint8_t narrow_q7(int32_t v) {
  v = (v + 64) >> 7;
  return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// Q7 outputs [j, j + 16 * Regs) of a column row, in registers.
template <int Regs>
__attribute__((target("avx2"), always_inline)) inline void column_acc_q15(const int16_t* src, int64_t width,
                                                                          const int32_t* idx, const int16_t* w,
                                                                          int64_t taps, int64_t j, __m256i* acc) {
  for (int r = 0; r < Regs; ++r) acc[r] = _mm256_setzero_si256();
  if (taps == 1 && w[0] == 32767) {  // weight 1.0: the sample itself
    for (int r = 0; r < Regs; ++r) {
      acc[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + static_cast<int64_t>(idx[0]) * width + j + 16 * r));
    }
    return;
  }
  for (int64_t t = 0; t < taps; ++t) {
    const __m256i weight = _mm256_set1_epi16(w[t]);
    const int16_t* s = src + static_cast<int64_t>(idx[t]) * width + j;
    for (int r = 0; r < Regs; ++r) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + 16 * r));
      acc[r] = _mm256_add_epi16(acc[r], _mm256_mulhrs_epi16(v, weight));
    }
  }
}

inline int16_t mul_q15(int16_t v, int16_t w) {
  return static_cast<int16_t>(((static_cast<int32_t>(v) * w >> 14) + 1) >> 1);
}

}  // namespace

__attribute__((target("avx2"))) void column_row_wide_f32(const float* src, int64_t width, const int32_t* idx,
                                                         const float* w, int64_t taps, float* dst) {
  int64_t j = 0;
  for (; j + 112 <= width; j += 112) column_block_f32<14>(src, width, idx, w, taps, j, dst);
  for (; j + 56 <= width; j += 56) column_block_f32<7>(src, width, idx, w, taps, j, dst);
  for (; j + 32 <= width; j += 32) column_block_f32<4>(src, width, idx, w, taps, j, dst);
  for (; j + 8 <= width; j += 8) column_block_f32<1>(src, width, idx, w, taps, j, dst);
  for (; j < width; ++j) {
    float acc = 0.0f;
    for (int64_t t = 0; t < taps; ++t) {
      if (w[t] != 0.0f) acc += w[t] * src[static_cast<int64_t>(idx[t]) * width + j];
    }
    dst[j] = acc;
  }
}

__attribute__((target("avx2"))) void column_row_wide_q15(const int16_t* src, int64_t width, const int32_t* idx,
                                                         const int16_t* w, int64_t taps, int16_t* dst) {
  int64_t j = 0;
  for (; j + 112 <= width; j += 112) column_block_q15<7>(src, width, idx, w, taps, j, dst);
  for (; j + 64 <= width; j += 64) column_block_q15<4>(src, width, idx, w, taps, j, dst);
  for (; j + 16 <= width; j += 16) column_block_q15<1>(src, width, idx, w, taps, j, dst);
  for (; j + 8 <= width; j += 8) column_half_q15(src, width, idx, w, taps, j, dst);
  for (; j < width; ++j) {
    int16_t acc = 0;
    for (int64_t t = 0; t < taps; ++t) {
      if (w[t] != 0) acc = static_cast<int16_t>(acc + mul_q15(src[static_cast<int64_t>(idx[t]) * width + j], w[t]));
    }
    dst[j] = acc;
  }
}

__attribute__((target("avx2"))) void narrow_q7_u8(const int16_t* src, int64_t n, uint8_t* dst) {
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    store_u8x32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i)),
                _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i + 16)), dst + i);
  }
  for (; i + 16 <= n; i += 16) store_u8x16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i)), dst + i);
  for (; i < n; ++i) dst[i] = narrow_q7(src[i]);
}

__attribute__((target("avx2"))) void column_row_narrow_q15(const int16_t* src, int64_t width, const int32_t* idx,
                                                           const int16_t* w, int64_t taps, uint8_t* dst) {
  int64_t j = 0;
  __m256i acc[2];
  for (; j + 32 <= width; j += 32) {
    column_acc_q15<2>(src, width, idx, w, taps, j, acc);
    store_u8x32(acc[0], acc[1], dst + j);
  }
  for (; j + 16 <= width; j += 16) {
    column_acc_q15<1>(src, width, idx, w, taps, j, acc);
    store_u8x16(acc[0], dst + j);
  }
  const bool identity = taps == 1 && w[0] == 32767;
  for (; j < width; ++j) {
    int16_t v = 0;
    if (identity) {
      v = src[static_cast<int64_t>(idx[0]) * width + j];
    } else {
      for (int64_t t = 0; t < taps; ++t) v = static_cast<int16_t>(v + mul_q15(src[static_cast<int64_t>(idx[t]) * width + j], w[t]));
    }
    dst[j] = narrow_q7(v);
  }
}
#else
void narrow_q7_u8(const int16_t*, int64_t, uint8_t*) {}
void column_row_narrow_q15(const int16_t*, int64_t, const int32_t*, const int16_t*, int64_t, uint8_t*) {}
void column_row_wide_f32(const float*, int64_t, const int32_t*, const float*, int64_t, float*) {}
void column_row_wide_q15(const int16_t*, int64_t, const int32_t*, const int16_t*, int64_t, int16_t*) {}
#endif

}  // namespace mrface
