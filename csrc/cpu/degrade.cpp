// CPU degradation kernel: one pass over each input plane produces every down level (cascading
// from an earlier level where the level table says so) and every down-then-up image.
#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "mrface/box_pass.h"
#include "mrface/column_pass.h"
#include "mrface/cpu_features.h"
#include "mrface/dtype_convert.h"
#include "mrface/resize.h"
#include "mrface/window_gather.h"

#ifdef MRFACE_WITH_OPENMP
#include <omp.h>
#endif

#if defined(__linux__)
#include <sys/mman.h>
#endif
#if defined(__SSE2__)
#include <emmintrin.h>
#include <xmmintrin.h>
#endif
#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define MRFACE_F16C_DISPATCH 1
#endif

// The wide row loops get an AVX2 clone picked at load time (the package is built for baseline x86-64,
// whose SSE2 handles 4 floats per instruction). No FMA: results stay those of the baseline build.
// Clones need glibc (ifunc); elsewhere the baseline code runs.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && defined(__GLIBC__)
#define MRFACE_ROW_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define MRFACE_ROW_CLONES
#endif

namespace mrface {
namespace {

// resize_rows with the tap count known at compile time: the tap loop unrolls.
template <int Taps>
void resize_rows_fixed(const float* src, int64_t rows, int64_t src_w, const int32_t* idx, const float* w,
                       int64_t out_w, float* dst) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* s = src + r * src_w;
    float* d = dst + r * out_w;
    for (int64_t j = 0; j < out_w; ++j) {
      float acc = 0.0f;
      for (int t = 0; t < Taps; ++t) acc += w[j * Taps + t] * s[idx[j * Taps + t]];
      d[j] = acc;
    }
  }
}

// Resize rows by gathering: dst[r, j] = sum_t w[j, t] * src[r, idx[j, t]] for r < rows.
void resize_rows_gather(const float* src, int64_t rows, int64_t src_w, const int32_t* idx, const float* w,
                 int64_t taps, int64_t out_w, float* dst) {
  switch (taps) {
    case 1: return resize_rows_fixed<1>(src, rows, src_w, idx, w, out_w, dst);
    case 2: return resize_rows_fixed<2>(src, rows, src_w, idx, w, out_w, dst);
    case 3: return resize_rows_fixed<3>(src, rows, src_w, idx, w, out_w, dst);
    case 4: return resize_rows_fixed<4>(src, rows, src_w, idx, w, out_w, dst);
    case 8: return resize_rows_fixed<8>(src, rows, src_w, idx, w, out_w, dst);
    default: break;
  }
  for (int64_t r = 0; r < rows; ++r) {
    const float* s = src + r * src_w;
    float* d = dst + r * out_w;
    for (int64_t j = 0; j < out_w; ++j) {
      float acc = 0.0f;
      for (int64_t t = 0; t < taps; ++t) acc += w[j * taps + t] * s[idx[j * taps + t]];
      d[j] = acc;
    }
  }
}

// Element type conversions of whole rows. The pointers are restrict-qualified and the count is a local:
// a uint8_t store may alias anything, so without that the compiler reloads every bound after each
// store and the loops stay scalar (uint8 ran at a quarter of float32's speed).
MRFACE_ROW_CLONES void widen_row(const uint8_t* __restrict__ src, int64_t n, float* __restrict__ dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}

void narrow_row(const float* __restrict__ src, int64_t n, float* __restrict__ dst) { std::copy(src, src + n, dst); }

// bfloat16 <-> float32 (dtype_convert.h): a shift one way, round to nearest even the other; integer
// lane operations only, so both vectorise (8 lanes in the AVX2 clone).
MRFACE_ROW_CLONES void widen_row(const BFloat16* __restrict__ src, int64_t n, float* __restrict__ dst) {
  const uint16_t* __restrict__ bits = &src->bits;
  for (int64_t i = 0; i < n; ++i) dst[i] = bfloat16_to_float(bits[i]);
}

#if defined(MRFACE_F16C_DISPATCH)
// float_to_bfloat16 on 16 lanes at a time (the compiler leaves its NaN select scalar).
__attribute__((target("avx2"))) int64_t narrow_bf16_avx2(const float* __restrict__ src, int64_t n,
                                                         uint16_t* __restrict__ dst) {
  const __m256i bias = _mm256_set1_epi32(0x7fff), one = _mm256_set1_epi32(1), quiet = _mm256_set1_epi32(0x40);
  const __m256i magnitude = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
  auto convert = [&](const float* p) __attribute__((target("avx2"))) {
    const __m256i u = _mm256_castps_si256(_mm256_loadu_ps(p));
    const __m256i top = _mm256_srli_epi32(u, 16);
    const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, bias), _mm256_and_si256(top, one)), 16);
    const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, magnitude), inf);
    return _mm256_blendv_epi8(rounded, _mm256_or_si256(top, quiet), nan);
  };
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i packed = _mm256_packus_epi32(convert(src + i), convert(src + i + 8));  // 0-3 8-11 | 4-7 12-15
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), _mm256_permute4x64_epi64(packed, 0xD8));
  }
  return i;
}
#endif

void narrow_row(const float* __restrict__ src, int64_t n, BFloat16* __restrict__ dst) {
  uint16_t* __restrict__ bits = &dst->bits;
  int64_t i = 0;
#if defined(MRFACE_F16C_DISPATCH)
  if (cpu_has_avx2()) i = narrow_bf16_avx2(src, n, bits);
#endif
  for (; i < n; ++i) bits[i] = float_to_bfloat16(src[i]);
}

// float16 <-> float32: F16C's conversion instructions (round to nearest even) where the CPU has them,
// chosen at run time; the scalar conversions of dtype_convert.h (bit-identical) elsewhere and for tails.
#if defined(MRFACE_F16C_DISPATCH)
__attribute__((target("avx,f16c"))) void widen_row_f16c(const uint16_t* __restrict__ src, int64_t n,
                                                         float* __restrict__ dst) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  }
  for (; i < n; ++i) dst[i] = float16_to_float(src[i]);
}

__attribute__((target("avx,f16c"))) void narrow_row_f16c(const float* __restrict__ src, int64_t n,
                                                         uint16_t* __restrict__ dst) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), h);
  }
  for (; i < n; ++i) dst[i] = float_to_float16(src[i]);
}

#endif

void widen_row(const Float16* __restrict__ src, int64_t n, float* __restrict__ dst) {
  const uint16_t* __restrict__ bits = &src->bits;
#if defined(MRFACE_F16C_DISPATCH)
  if (cpu_has_f16c()) return widen_row_f16c(bits, n, dst);
#endif
  for (int64_t i = 0; i < n; ++i) dst[i] = float16_to_float(bits[i]);
}

void narrow_row(const float* __restrict__ src, int64_t n, Float16* __restrict__ dst) {
  uint16_t* __restrict__ bits = &dst->bits;
#if defined(MRFACE_F16C_DISPATCH)
  if (cpu_has_f16c()) return narrow_row_f16c(src, n, bits);
#endif
  for (int64_t i = 0; i < n; ++i) bits[i] = float_to_float16(src[i]);
}

// Round half up and saturate, as store_from_float (dtype_convert.h): clamp to [0, 255] (NaN -> 0), then
// truncate v + 0.5. The compiler does not vectorise a float clamp that keeps NaN semantics, so x86-64
// spells it with SSE2 (in every x86-64 CPU): maxps/minps return their second operand on NaN.
void narrow_row(const float* __restrict__ src, int64_t n, uint8_t* __restrict__ dst) {
  int64_t i = 0;
#if defined(__SSE2__)
  const __m128 lo = _mm_setzero_ps(), hi = _mm_set1_ps(255.0f), half = _mm_set1_ps(0.5f);
  for (; i + 16 <= n; i += 16) {
    __m128i q[4];
    for (int k = 0; k < 4; ++k) {
      const __m128 v = _mm_min_ps(_mm_max_ps(_mm_loadu_ps(src + i + 4 * k), lo), hi);
      q[k] = _mm_cvttps_epi32(_mm_add_ps(v, half));
    }
    const __m128i words = _mm_packs_epi32(q[0], q[1]), words2 = _mm_packs_epi32(q[2], q[3]);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), _mm_packus_epi16(words, words2));
  }
#endif
  for (; i < n; ++i) store_from_float(dst, i, src[i]);
}

// resize_column_row for a tap count known at compile time: every output sums its taps in registers
// (0 + w0 s0 + w1 s1 + ..., the order of the general loop) and is stored once.
template <int Taps>
inline void column_row_fixed(const float* src, int64_t width, const int32_t* idx, const float* w,
                             float* __restrict__ dst) {
  const float* rows[Taps];
  float weight[Taps];
  for (int t = 0; t < Taps; ++t) {
    rows[t] = src + static_cast<int64_t>(idx[t]) * width;
    weight[t] = w[t];
  }
  for (int64_t j = 0; j < width; ++j) {
    float acc = 0.0f;
    for (int t = 0; t < Taps; ++t) acc += weight[t] * rows[t][j];
    dst[j] = acc;
  }
}

// Resize columns of one output row: dst[j] = sum_t w[t] * src[idx[t], j]. Contiguous in j and
// written in one pass for the common tap counts, so the loops vectorise.
MRFACE_ROW_CLONES void resize_column_row(const float* src, int64_t width, const int32_t* idx, const float* w, int64_t taps,
                       float* __restrict__ dst) {
  if (taps == 1) {
    const float* __restrict__ s0 = src + static_cast<int64_t>(idx[0]) * width;
    for (int64_t j = 0; j < width; ++j) dst[j] = w[0] * s0[j];
    return;
  }
  if (taps == 2) {
    const float* __restrict__ s0 = src + static_cast<int64_t>(idx[0]) * width;
    const float* __restrict__ s1 = src + static_cast<int64_t>(idx[1]) * width;
    const float w0 = w[0], w1 = w[1];
    for (int64_t j = 0; j < width; ++j) dst[j] = w0 * s0[j] + w1 * s1[j];
    return;
  }
  switch (taps) {
    case 3: return column_row_fixed<3>(src, width, idx, w, dst);
    case 4: return column_row_fixed<4>(src, width, idx, w, dst);
    case 5: return column_row_fixed<5>(src, width, idx, w, dst);
    case 6: return column_row_fixed<6>(src, width, idx, w, dst);
    case 8: return column_row_fixed<8>(src, width, idx, w, dst);
    case 9: return column_row_fixed<9>(src, width, idx, w, dst);
    default: break;
  }
  // Wide windows (antialiased filters at large factors): blocks of outputs stay in registers across all
  // taps instead of being loaded and stored once per tap (explicitly on AVX2, column_pass.h; here the
  // compiler's version of the same loop).
  if (cpu_has_avx2()) return column_row_wide_f32(src, width, idx, w, taps, dst);
  constexpr int64_t kBlock = 32;
  int64_t j0 = 0;
  for (; j0 + kBlock <= width; j0 += kBlock) {
    float acc[kBlock] = {};
    for (int64_t t = 0; t < taps; ++t) {
      const float weight = w[t];
      if (weight == 0.0f) continue;
      const float* __restrict__ s = src + static_cast<int64_t>(idx[t]) * width + j0;
      for (int64_t j = 0; j < kBlock; ++j) acc[j] += weight * s[j];
    }
    for (int64_t j = 0; j < kBlock; ++j) dst[j0 + j] = acc[j];
  }
  std::fill(dst + j0, dst + width, 0.0f);
  for (int64_t t = 0; t < taps; ++t) {
    const float weight = w[t];
    if (weight == 0.0f) continue;
    const float* __restrict__ s = src + static_cast<int64_t>(idx[t]) * width;
    for (int64_t j = j0; j < width; ++j) dst[j] += weight * s[j];
  }
}

// dst[x * dst_stride + r] = src[r * src_stride + x]: a (rows, cols) block transposed, 4 x 4 tiles through SSE2.
void transpose_block(const float* __restrict__ src, int64_t rows, int64_t cols, int64_t src_stride, float* __restrict__ dst,
                     int64_t dst_stride) {
  int64_t r = 0;
#if defined(__SSE2__)
  for (; r + 4 <= rows; r += 4) {
    int64_t x = 0;
    for (; x + 4 <= cols; x += 4) {
      __m128 a = _mm_loadu_ps(src + r * src_stride + x), b = _mm_loadu_ps(src + (r + 1) * src_stride + x);
      __m128 c = _mm_loadu_ps(src + (r + 2) * src_stride + x), d = _mm_loadu_ps(src + (r + 3) * src_stride + x);
      _MM_TRANSPOSE4_PS(a, b, c, d);
      _mm_storeu_ps(dst + x * dst_stride + r, a);
      _mm_storeu_ps(dst + (x + 1) * dst_stride + r, b);
      _mm_storeu_ps(dst + (x + 2) * dst_stride + r, c);
      _mm_storeu_ps(dst + (x + 3) * dst_stride + r, d);
    }
    for (; x < cols; ++x) {
      for (int64_t k = 0; k < 4; ++k) dst[x * dst_stride + r + k] = src[(r + k) * src_stride + x];
    }
  }
#endif
  for (; r < rows; ++r) {
    for (int64_t x = 0; x < cols; ++x) dst[x * dst_stride + r] = src[r * src_stride + x];
  }
}

// Resize rows: dst[r, j] = sum_t w[j, t] * src[r, idx[j, t]] for r < rows. With a usable window plan
// (AVX2, every block's taps within 16 samples) the windowed gather runs; otherwise the gather above is
// scalar (each output its own index list), and with three or more taps it costs more than transposing
// the block, running the taps as contiguous column passes over all rows at once (vectorised) and
// transposing back. Each output sums its taps in the same order on every route.
void resize_rows(const float* src, int64_t rows, int64_t src_w, const int32_t* idx, const float* w, int64_t taps,
                 int64_t out_w, float* dst, const RowWindowPlanF32* window = nullptr) {
  if (window != nullptr && window->usable()) return gather_rows_window_f32(*window, src, rows, dst);
  if (taps < 3 || rows < 8) return resize_rows_gather(src, rows, src_w, idx, w, taps, out_w, dst);
  // Transposed rows are padded with zeros to a multiple of 8 samples, so the column passes run whole
  // vector blocks (no scalar tails on the 7-, 14- and 28-row blocks of a 112 -> 7/14/28 level); the
  // padding's outputs are dropped.
  const int64_t padded = (rows + 7) / 8 * 8;
  thread_local std::vector<float> t_in, t_out;
  t_in.resize(static_cast<size_t>(padded * src_w));
  t_out.resize(static_cast<size_t>(padded * out_w));
  transpose_block(src, rows, src_w, src_w, t_in.data(), padded);
  for (int64_t x = 0; x < src_w && padded > rows; ++x) std::fill_n(t_in.data() + x * padded + rows, padded - rows, 0.0f);
  for (int64_t j = 0; j < out_w; ++j) {
    resize_column_row(t_in.data(), padded, idx + j * taps, w + j * taps, taps, t_out.data() + j * padded);
  }
  transpose_block(t_out.data(), out_w, rows, padded, dst, out_w);
}

// ---- uint8 fixed point --------------------------------------------------------------------------
// uint8 planes with non-negative tap weights (nearest, bilinear, area, the antialiased bilinear) run in
// int16 arithmetic: samples and levels are Q7 (grey level * 128, at most 32640), weights Q15
// (round(w * 32768), 1.0 saturating to 32767). Column passes round each tap's product to Q7 as
// pmulhrsw does ((v * w >> 14) + 1) >> 1: 16 lanes per AVX2 instruction where float32 has 8. Row
// passes whose windows fit 16 samples (the windowed gathers on AVX2, the scalar gathers elsewhere)
// accumulate exact products in int32 and round once per output; wider windows go through a transpose
// and the column passes, rounding per tap. The result is stored rounding half up, saturated. Error:
// half a Q7 step (1/256 grey level) per rounded tap and per stored level, plus the Q15 weight
// rounding: every output is within one grey
// level of the float result rounded and equals it unless that result lies within 0.1 of a half
// (measured: within 0.05 for 112 -> 7 bilinear_aa, 33 taps; tests/ops/test_degrade_uint8_fixed.py).
// Not more accurate than that. Filters with negative lobes (bicubic, lanczos) overshoot [0, 255]
// and keep the float32 path, chosen per image where filters are drawn per image.
using q16 = int16_t;
constexpr int kQ = 7;  // fractional bits of the samples

inline q16 mul_q15(q16 v, q16 w) { return static_cast<q16>(((static_cast<int32_t>(v) * w >> 14) + 1) >> 1); }

template <int Taps>
inline void column_row_fixed_q(const q16* src, int64_t width, const int32_t* idx, const q16* w, q16* __restrict__ dst) {
  const q16* rows[Taps];
  q16 weight[Taps];
  for (int t = 0; t < Taps; ++t) {
    rows[t] = src + static_cast<int64_t>(idx[t]) * width;
    weight[t] = w[t];
  }
  for (int64_t j = 0; j < width; ++j) {
    q16 acc = 0;
    for (int t = 0; t < Taps; ++t) acc = static_cast<q16>(acc + mul_q15(rows[t][j], weight[t]));
    dst[j] = acc;
  }
}

// resize_column_row in Q7/Q15: dst[j] = sum_t w[t] * src[idx[t], j].
MRFACE_ROW_CLONES void resize_column_row_q(const q16* src, int64_t width, const int32_t* idx, const q16* w,
                                           int64_t taps, q16* __restrict__ dst) {
  if (taps == 1) {
    const q16* __restrict__ s0 = src + static_cast<int64_t>(idx[0]) * width;
    const q16 w0 = w[0];
    if (w0 == 32767) {
      std::copy(s0, s0 + width, dst);  // weight 1: the sample itself
      return;
    }
    for (int64_t j = 0; j < width; ++j) dst[j] = mul_q15(s0[j], w0);
    return;
  }
  if (taps == 2) {
    const q16* __restrict__ s0 = src + static_cast<int64_t>(idx[0]) * width;
    const q16* __restrict__ s1 = src + static_cast<int64_t>(idx[1]) * width;
    const q16 w0 = w[0], w1 = w[1];
    for (int64_t j = 0; j < width; ++j) dst[j] = static_cast<q16>(mul_q15(s0[j], w0) + mul_q15(s1[j], w1));
    return;
  }
  switch (taps) {
    case 3: return column_row_fixed_q<3>(src, width, idx, w, dst);
    case 4: return column_row_fixed_q<4>(src, width, idx, w, dst);
    case 5: return column_row_fixed_q<5>(src, width, idx, w, dst);
    case 6: return column_row_fixed_q<6>(src, width, idx, w, dst);
    case 7: return column_row_fixed_q<7>(src, width, idx, w, dst);
    case 8: return column_row_fixed_q<8>(src, width, idx, w, dst);
    case 9: return column_row_fixed_q<9>(src, width, idx, w, dst);
    default: break;
  }
  if (cpu_has_avx2()) return column_row_wide_q15(src, width, idx, w, taps, dst);  // registers
  std::fill(dst, dst + width, q16{0});
  for (int64_t t = 0; t < taps; ++t) {
    const q16 weight = w[t];
    if (weight == 0) continue;
    const q16* __restrict__ s = src + static_cast<int64_t>(idx[t]) * width;
    for (int64_t j = 0; j < width; ++j) dst[j] = static_cast<q16>(dst[j] + mul_q15(s[j], weight));
  }
}

// Gathering row resize in Q7/Q15 (Taps 0: tap count given at run time). One rounding per output: scalar
// code gains nothing from 16-bit products.
constexpr int64_t kTransposeTapsQ = 3;  // as resize_rows: measured, two-tap transposes cost more than they save

template <int Taps>
void gather_rows_q(const q16* src, int64_t rows, int64_t src_w, const int32_t* idx, const q16* w, int64_t out_w,
                   q16* dst, int64_t taps = Taps) {
  for (int64_t r = 0; r < rows; ++r) {
    const q16* s = src + r * src_w;
    q16* d = dst + r * out_w;
    for (int64_t j = 0; j < out_w; ++j) {
      int32_t acc = 1 << 14;
      if constexpr (Taps > 0) {
        for (int t = 0; t < Taps; ++t) acc += static_cast<int32_t>(s[idx[j * Taps + t]]) * w[j * Taps + t];
      } else {
        for (int64_t t = 0; t < taps; ++t) acc += static_cast<int32_t>(s[idx[j * taps + t]]) * w[j * taps + t];
      }
      d[j] = static_cast<q16>(acc >> 15);
    }
  }
}

// dst[x * dst_stride + r] = src[r * src_stride + x] for int16: 8 x 8 tiles through SSE2 unpacks.
void transpose_block_q(const q16* __restrict__ src, int64_t rows, int64_t cols, int64_t src_stride, q16* __restrict__ dst,
                       int64_t dst_stride) {
  int64_t r = 0;
#if defined(__SSE2__)
  for (; r + 8 <= rows; r += 8) {
    int64_t x = 0;
    for (; x + 8 <= cols; x += 8) {
      __m128i v[8];
      for (int k = 0; k < 8; ++k) v[k] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + (r + k) * src_stride + x));
      __m128i a[8], b[8];
      for (int k = 0; k < 4; ++k) {
        a[2 * k] = _mm_unpacklo_epi16(v[2 * k], v[2 * k + 1]);
        a[2 * k + 1] = _mm_unpackhi_epi16(v[2 * k], v[2 * k + 1]);
      }
      for (int h = 0; h < 2; ++h) {  // rows 0-3 (h = 0) and 4-7 (h = 1)
        const __m128i* ah = a + 4 * h;
        b[4 * h + 0] = _mm_unpacklo_epi32(ah[0], ah[2]);  // columns 0, 1
        b[4 * h + 1] = _mm_unpackhi_epi32(ah[0], ah[2]);  // columns 2, 3
        b[4 * h + 2] = _mm_unpacklo_epi32(ah[1], ah[3]);  // columns 4, 5
        b[4 * h + 3] = _mm_unpackhi_epi32(ah[1], ah[3]);  // columns 6, 7
      }
      for (int k = 0; k < 4; ++k) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + (x + 2 * k) * dst_stride + r), _mm_unpacklo_epi64(b[k], b[4 + k]));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + (x + 2 * k + 1) * dst_stride + r),
                         _mm_unpackhi_epi64(b[k], b[4 + k]));
      }
    }
    for (; x < cols; ++x) {
      for (int64_t k = 0; k < 8; ++k) dst[x * dst_stride + r + k] = src[(r + k) * src_stride + x];
    }
  }
#endif
  for (; r < rows; ++r) {
    for (int64_t x = 0; x < cols; ++x) dst[x * dst_stride + r] = src[r * src_stride + x];
  }
}

// resize_rows in Q7/Q15: the windowed gather when its plan fits, else scalar gathers for one or two taps
// (or fewer than 8 rows), else through a transpose (see resize_rows).
void resize_rows_q(const q16* src, int64_t rows, int64_t src_w, const int32_t* idx, const q16* w, int64_t taps,
                   int64_t out_w, q16* dst, const RowWindowPlanQ15* window = nullptr) {
  if (window != nullptr && window->usable()) return gather_rows_window_q15(*window, src, rows, dst);
  if (taps < kTransposeTapsQ || rows < 8) {
    switch (taps) {
      case 1: return gather_rows_q<1>(src, rows, src_w, idx, w, out_w, dst);
      case 2: return gather_rows_q<2>(src, rows, src_w, idx, w, out_w, dst);
      case 3: return gather_rows_q<3>(src, rows, src_w, idx, w, out_w, dst);
      case 4: return gather_rows_q<4>(src, rows, src_w, idx, w, out_w, dst);
      default: return gather_rows_q<0>(src, rows, src_w, idx, w, out_w, dst, taps);
    }
  }
  const int64_t padded = (rows + 7) / 8 * 8;  // as resize_rows: whole vector blocks, padding dropped
  thread_local std::vector<q16> t_in, t_out;
  t_in.resize(static_cast<size_t>(padded * src_w));
  t_out.resize(static_cast<size_t>(padded * out_w));
  transpose_block_q(src, rows, src_w, src_w, t_in.data(), padded);
  for (int64_t x = 0; x < src_w && padded > rows; ++x) std::fill_n(t_in.data() + x * padded + rows, padded - rows, q16{0});
  for (int64_t j = 0; j < out_w; ++j) {
    resize_column_row_q(t_in.data(), padded, idx + j * taps, w + j * taps, taps, t_out.data() + j * padded);
  }
  transpose_block_q(t_out.data(), out_w, rows, padded, dst, out_w);
}

MRFACE_ROW_CLONES void widen_row_q(const uint8_t* __restrict__ src, int64_t n, q16* __restrict__ dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<q16>(src[i] << kQ);
}

// Q7 -> uint8, rounding half up and saturating (negative sums cannot occur with non-negative weights;
// the clamp keeps the store defined anyway). AVX2 CPUs take narrow_q7_u8, so the loop needs no clone.
void narrow_row_q(const q16* __restrict__ src, int64_t n, uint8_t* __restrict__ dst) {
  if (cpu_has_avx2()) return narrow_q7_u8(src, n, dst);  // 16-bit lanes throughout
  for (int64_t i = 0; i < n; ++i) {
    const int32_t v = (static_cast<int32_t>(src[i]) + (1 << (kQ - 1))) >> kQ;
    dst[i] = static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
  }
}

// Whether every tap weight a level table set uses is non-negative (the fixed-point path's condition).
bool non_negative_taps(const DegradeArgs& a, const int32_t* desc) {
  auto ok = [&](int32_t off, int64_t count) {
    const float* w = a.tap_weight + off;
    bool good = true;
    for (int64_t i = 0; i < count; ++i) good &= w[i] >= 0.0f;
    return good;
  };
  for (int k = 0; k < a.num_levels; ++k) {
    const int32_t* L = desc + k * kLevelFields;
    if (!ok(L[kYOff], int64_t{L[kOutH]} * L[kYTaps]) || !ok(L[kXOff], int64_t{L[kOutW]} * L[kXTaps])) return false;
    if (L[kUpYTaps] > 0 && (!ok(L[kUpYOff], a.h * L[kUpYTaps]) || !ok(L[kUpXOff], a.w * L[kUpXTaps]))) return false;
  }
  return true;
}

// Every tap weight in Q15. The table is small (under 10^5 entries for the per-image bank).
std::vector<q16> q15_weights(const DegradeArgs& a) {
  int64_t size = 0;
  const int64_t sets = a.per_image ? a.n : 1;
  for (int64_t s = 0; s < sets; ++s) {
    for (int k = 0; k < a.num_levels; ++k) {
      const int32_t* L = a.levels + (s * a.num_levels + k) * kLevelFields;
      size = std::max({size, int64_t{L[kYOff]} + int64_t{L[kOutH]} * L[kYTaps],
                       int64_t{L[kXOff]} + int64_t{L[kOutW]} * L[kXTaps]});
      if (L[kUpYTaps] > 0) {
        size = std::max({size, int64_t{L[kUpYOff]} + a.h * L[kUpYTaps], int64_t{L[kUpXOff]} + a.w * L[kUpXTaps]});
      }
    }
  }
  std::vector<q16> q(static_cast<size_t>(size));
  for (int64_t i = 0; i < size; ++i) {
    const float v = std::nearbyint(a.tap_weight[i] * 32768.0f);
    q[i] = static_cast<q16>(std::clamp(v, -32768.0f, 32767.0f));
  }
  return q;
}

// Windowed-gather plans of a level table set's x passes, one per level and direction; a plan that is not
// usable leaves its pass to the transpose or scalar path. box2[k]: level k is the 2 x 2 box (box_pass.h).
template <typename Plan>
struct LevelWindows {
  std::vector<Plan> down, up;
  std::vector<char> box2;
  std::vector<char> is_source;  // a later level reads level k (cascade)
  bool reads_plane = false;     // some level other than a 2 x 2 box reads the input plane
};

template <typename Plan, typename Weight>
LevelWindows<Plan> level_windows(const DegradeArgs& a, const int32_t* desc, const Weight* w,
                                 Plan (*make)(const int32_t*, const Weight*, int64_t, int64_t, int64_t)) {
  LevelWindows<Plan> windows;
  windows.down.resize(static_cast<size_t>(a.num_levels));
  windows.up.resize(static_cast<size_t>(a.num_levels));
  windows.box2.resize(static_cast<size_t>(a.num_levels));
  windows.is_source.resize(static_cast<size_t>(a.num_levels));
  for (int k = 0; k < a.num_levels; ++k) {
    const int32_t* L = desc + k * kLevelFields;
    if (L[kSource] >= 0) windows.is_source[L[kSource]] = 1;
    windows.box2[k] = is_box2_table(a.tap_index + L[kYOff], a.tap_weight + L[kYOff], L[kYTaps], L[kSrcH], L[kOutH]) &&
                      is_box2_table(a.tap_index + L[kXOff], a.tap_weight + L[kXOff], L[kXTaps], L[kSrcW], L[kOutW]);
    windows.reads_plane |= L[kSource] < 0 && !windows.box2[k];
    windows.down[k] = make(a.tap_index + L[kXOff], w + L[kXOff], L[kXTaps], L[kSrcW], L[kOutW]);
    if (L[kUpYTaps] > 0) windows.up[k] = make(a.tap_index + L[kUpXOff], w + L[kUpXOff], L[kUpXTaps], L[kOutW], a.w);
  }
  return windows;
}

// One uint8 plane through every level in Q7 (the fixed-point twin of degrade_typed's loop body).
struct FixedScratch {
  std::vector<q16> plane, levels, tmp, row;
};

void degrade_plane_fixed(const DegradeArgs& a, const int32_t* desc, const q16* wq,
                         const LevelWindows<RowWindowPlanQ15>& windows, int64_t p, FixedScratch& s) {
  const int64_t hw = a.h * a.w;
  s.plane.resize(static_cast<size_t>(hw));
  s.levels.resize(static_cast<size_t>(a.buffer_floats));
  const uint8_t* input = static_cast<const uint8_t*>(a.input) + p * hw;
  if (windows.reads_plane) widen_row_q(input, hw, s.plane.data());
  for (int k = 0; k < a.num_levels; ++k) {
    const int32_t* L = desc + k * kLevelFields;
    const int64_t out_h = L[kOutH], out_w = L[kOutW], src_h = L[kSrcH], src_w = L[kSrcW];
    const q16* src = L[kSource] < 0 ? s.plane.data() : s.levels.data() + desc[L[kSource] * kLevelFields + kBufOff];
    q16* level = s.levels.data() + L[kBufOff];
    s.tmp.resize(static_cast<size_t>(std::max({src_h * out_w, out_h * src_w, out_h * a.w})));
    if (windows.box2[k] && L[kSource] < 0) {
      box2_level(input, out_h, out_w, level);  // straight from the uint8 plane
    } else if (windows.box2[k]) {
      box2_level(src, out_h, out_w, level);
    } else if (out_h < src_h) {
      for (int64_t i = 0; i < out_h; ++i) {
        resize_column_row_q(src, src_w, a.tap_index + L[kYOff] + i * L[kYTaps], wq + L[kYOff] + i * L[kYTaps],
                            L[kYTaps], s.tmp.data() + i * src_w);
      }
      resize_rows_q(s.tmp.data(), out_h, src_w, a.tap_index + L[kXOff], wq + L[kXOff], L[kXTaps], out_w, level,
                    &windows.down[k]);
    } else {
      resize_rows_q(src, src_h, src_w, a.tap_index + L[kXOff], wq + L[kXOff], L[kXTaps], out_w, s.tmp.data(),
                    &windows.down[k]);
      for (int64_t i = 0; i < out_h; ++i) {
        resize_column_row_q(s.tmp.data(), out_w, a.tap_index + L[kYOff] + i * L[kYTaps],
                            wq + L[kYOff] + i * L[kYTaps], L[kYTaps], level + i * out_w);
      }
    }
    if (a.out.down[k] != nullptr) {
      narrow_row_q(level, out_h * out_w, static_cast<uint8_t*>(a.out.down[k]) + p * out_h * out_w);
    }
    if (a.out.up[k] != nullptr && L[kUpYTaps] > 0) {
      uint8_t* up = static_cast<uint8_t*>(a.out.up[k]) + p * hw;
      s.row.resize(static_cast<size_t>(a.w));
      resize_rows_q(level, out_h, out_w, a.tap_index + L[kUpXOff], wq + L[kUpXOff], L[kUpXTaps], a.w, s.tmp.data(),
                    &windows.up[k]);
      for (int64_t y = 0; y < a.h; ++y) {
        const int32_t* idx = a.tap_index + L[kUpYOff] + y * L[kUpYTaps];
        const q16* w = wq + L[kUpYOff] + y * L[kUpYTaps];
        if (cpu_has_avx2()) {  // the column row narrowed in registers, straight to the output
          column_row_narrow_q15(s.tmp.data(), a.w, idx, w, L[kUpYTaps], up + y * a.w);
        } else {
          resize_column_row_q(s.tmp.data(), a.w, idx, w, L[kUpYTaps], s.row.data());
          narrow_row_q(s.row.data(), a.w, up + y * a.w);
        }
      }
    }
  }
}

// Ask the kernel for transparent huge pages on the 2 MiB-aligned interior of an output about to be
// written. A fresh torch output of a few hundred MiB is untouched mmap memory: with 4 KiB pages the
// first writes take one page fault per 4 KiB, which cost several times the resize itself; a huge page
// takes one fault per 2 MiB. On pages already present (a reused out= buffer) the advice changes
// nothing measurable. Advice only: failures (no THP, "never" policy) are ignored.
void advise_huge_pages(void* data, int64_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t{1} << 21;
  if (data == nullptr || bytes < 2 * static_cast<int64_t>(kHuge)) return;
  const auto start = reinterpret_cast<uintptr_t>(data);
  const uintptr_t begin = (start + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (start + static_cast<uintptr_t>(bytes)) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#endif
}

template <typename T>
void advise_outputs(const DegradeArgs& a) {
  const int64_t planes = a.n * a.c;
  for (int k = 0; k < a.num_levels; ++k) {
    // Per-image tables have one level whose down output is absent; the up output is always H x W.
    const int32_t* L = a.levels + k * kLevelFields;
    if (!a.per_image) advise_huge_pages(a.out.down[k], planes * L[kOutH] * L[kOutW] * int64_t{sizeof(T)});
    advise_huge_pages(a.out.up[k], planes * a.h * a.w * int64_t{sizeof(T)});
  }
}

template <typename T>
void degrade_typed(const DegradeArgs& a) {
  const int64_t planes = a.n * a.c;
  const int64_t hw = a.h * a.w;
  const T* input = static_cast<const T*>(a.input);
  advise_outputs<T>(a);

  // Small batches stay on one thread: starting a parallel region costs more than they take.
  const bool parallel = planes > 1 && planes * hw >= (1 << 16);
  const int threads = a.num_threads > 0 ? a.num_threads : 1;
  constexpr bool kUInt8 = std::is_same_v<T, uint8_t>;
  const std::vector<q16> weight_q15 = kUInt8 ? q15_weights(a) : std::vector<q16>{};
  const bool batched_fixed = kUInt8 && !a.per_image && non_negative_taps(a, a.levels);
  // One level table for the whole batch: its gather plans are built once and shared by the threads.
  const LevelWindows<RowWindowPlanQ15> batch_windows_q =
      batched_fixed ? level_windows(a, a.levels, weight_q15.data(), plan_row_window_q15)
                    : LevelWindows<RowWindowPlanQ15>{};
  const LevelWindows<RowWindowPlanF32> batch_windows =
      !a.per_image && !batched_fixed ? level_windows(a, a.levels, a.tap_weight, plan_row_window_f32)
                                     : LevelWindows<RowWindowPlanF32>{};
#ifdef MRFACE_WITH_OPENMP
#pragma omp parallel num_threads(threads) if (parallel)
#endif
  {
    std::vector<float> plane(std::is_same_v<T, float> ? 0 : static_cast<size_t>(hw));
    std::vector<float> levels(static_cast<size_t>(a.buffer_floats));
    std::vector<float> tmp;
    std::vector<float> row(static_cast<size_t>(a.w));
    FixedScratch fixed;
    int64_t checked_image = -1;
    bool image_fixed = false;
    LevelWindows<RowWindowPlanQ15> image_windows_q;  // per-image tables: the current image's plans
    LevelWindows<RowWindowPlanF32> image_windows;
#ifdef MRFACE_WITH_OPENMP
#pragma omp for schedule(static)
#endif
    for (int64_t p = 0; p < planes; ++p) {
      const int64_t image = p / a.c;
      const int32_t* desc = a.levels + (a.per_image ? image * a.num_levels * kLevelFields : 0);
      if (a.per_image && image != checked_image) {
        checked_image = image;
        image_fixed = kUInt8 && non_negative_taps(a, desc);
        if (image_fixed) {
          image_windows_q = level_windows(a, desc, weight_q15.data(), plan_row_window_q15);
        } else {
          image_windows = level_windows(a, desc, a.tap_weight, plan_row_window_f32);
        }
      }
      if constexpr (kUInt8) {
        if (a.per_image ? image_fixed : batched_fixed) {
          degrade_plane_fixed(a, desc, weight_q15.data(), a.per_image ? image_windows_q : batch_windows_q, p, fixed);
          continue;
        }
      }
      const LevelWindows<RowWindowPlanF32>& windows = a.per_image ? image_windows : batch_windows;
      const float* source_plane = plane.data();
      if constexpr (std::is_same_v<T, float>) {
        source_plane = input + p * hw;  // float32 input is read in place
      } else if (kUInt8 || windows.reads_plane) {  // uint8 here (filters with negative lobes) reads the plane
        widen_row(input + p * hw, hw, plane.data());
      }

      for (int k = 0; k < a.num_levels; ++k) {
        const int32_t* L = desc + k * kLevelFields;
        const int64_t out_h = L[kOutH], out_w = L[kOutW], src_h = L[kSrcH], src_w = L[kSrcW];
        const float* src = L[kSource] < 0 ? source_plane : levels.data() + desc[L[kSource] * kLevelFields + kBufOff];
        // float32 levels no other level reads are computed in their output (no copy); the up pass reads
        // them there.
        const bool in_output = std::is_same_v<T, float> && a.out.down[k] != nullptr && !windows.is_source[k];
        float* level = levels.data() + L[kBufOff];
        if constexpr (std::is_same_v<T, float>) {
          if (in_output) level = static_cast<float*>(a.out.down[k]) + p * out_h * out_w;
        }

        tmp.resize(static_cast<size_t>(std::max({src_h * out_w, out_h * src_w, out_h * a.w})));
        if (windows.box2[k]) {
          if constexpr (kUInt8) {
            box2_level(src, out_h, out_w, level);
          } else if (L[kSource] < 0) {
            box2_level(input + p * hw, out_h, out_w, level);  // 16-bit floats widened as they are read
          } else {
            box2_level(src, out_h, out_w, level);
          }
        } else if (out_h < src_h) {
          // Fewer output rows: reduce the rows first (contiguous, vectorised, wide windows included),
          // so the gathering pass along x runs over out_h rows instead of src_h.
          for (int64_t i = 0; i < out_h; ++i) {
            resize_column_row(src, src_w, a.tap_index + L[kYOff] + i * L[kYTaps],
                              a.tap_weight + L[kYOff] + i * L[kYTaps], L[kYTaps], tmp.data() + i * src_w);
          }
          resize_rows(tmp.data(), out_h, src_w, a.tap_index + L[kXOff], a.tap_weight + L[kXOff], L[kXTaps], out_w,
                      level, &windows.down[k]);
        } else {
          resize_rows(src, src_h, src_w, a.tap_index + L[kXOff], a.tap_weight + L[kXOff], L[kXTaps], out_w,
                      tmp.data(), &windows.down[k]);
          for (int64_t i = 0; i < out_h; ++i) {
            resize_column_row(tmp.data(), out_w, a.tap_index + L[kYOff] + i * L[kYTaps],
                              a.tap_weight + L[kYOff] + i * L[kYTaps], L[kYTaps], level + i * out_w);
          }
        }
        if (a.out.down[k] != nullptr && !in_output) {
          narrow_row(level, out_h * out_w, static_cast<T*>(a.out.down[k]) + p * out_h * out_w);
        }
        if (a.out.up[k] != nullptr && L[kUpYTaps] > 0) {
          T* up = static_cast<T*>(a.out.up[k]) + p * hw;
          resize_rows(level, out_h, out_w, a.tap_index + L[kUpXOff], a.tap_weight + L[kUpXOff], L[kUpXTaps], a.w,
                      tmp.data(), &windows.up[k]);
          for (int64_t y = 0; y < a.h; ++y) {
            const int32_t* idx = a.tap_index + L[kUpYOff] + y * L[kUpYTaps];
            const float* w = a.tap_weight + L[kUpYOff] + y * L[kUpYTaps];
            if constexpr (std::is_same_v<T, float>) {
              resize_column_row(tmp.data(), a.w, idx, w, L[kUpYTaps], up + y * a.w);  // straight into the output
            } else {
              resize_column_row(tmp.data(), a.w, idx, w, L[kUpYTaps], row.data());
              narrow_row(row.data(), a.w, up + y * a.w);
            }
          }
        }
      }
    }
  }
}

}  // namespace

void degrade_cpu(const DegradeArgs& args) {
  check_arg(args.num_levels >= 1 && args.num_levels <= kMaxLevels,
            "degrade_cpu: num_levels must be in [1, " + std::to_string(kMaxLevels) + "]");
  switch (args.dtype) {
    case DType::Float32: degrade_typed<float>(args); break;
    case DType::UInt8: degrade_typed<uint8_t>(args); break;
    case DType::BFloat16: degrade_typed<BFloat16>(args); break;
    case DType::Float16: degrade_typed<Float16>(args); break;
    default:
      throw std::invalid_argument(std::string("degrade_cpu: dtype ") + dtype_name(args.dtype) +
                                  " is not supported by the C++ CPU kernel (float32, float16, bfloat16, uint8)");
  }
}

}  // namespace mrface
