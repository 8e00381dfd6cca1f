// Area down-sampling by two with contiguous loads (see mrface/box_pass.h): AVX2 blocks where the CPU
// has it (chosen at run time), SSE2 blocks (baseline x86-64) for what is left of a row, then scalar.
#include "mrface/box_pass.h"

#include <type_traits>

#include "mrface/cpu_features.h"

#if defined(__GNUC__) && defined(__x86_64__)
#define MRFACE_BOX_AVX2 1
#include <immintrin.h>
#endif
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace mrface {

bool is_box2_table(const int32_t* idx, const float* w, int64_t taps, int64_t src, int64_t out) {
  if (taps != 2 || src != 2 * out) return false;
  for (int64_t j = 0; j < out; ++j) {
    const int32_t* i = idx + 2 * j;
    const float* v = w + 2 * j;
    if (i[0] != 2 * j || i[1] != 2 * j + 1 || v[0] != 0.5f || v[1] != 0.5f) return false;
  }
  return true;
}

namespace {

// ---- portable outputs [j, out_w) of one row; a, b: the row pair ----------------------------------

template <typename S>
void box2_tail(const S* a, const S* b, int64_t j, int64_t out_w, float* dst) {
  for (; j < out_w; ++j) {
    const float left = 0.5f * load_as_float(a, 2 * j) + 0.5f * load_as_float(b, 2 * j);
    const float right = 0.5f * load_as_float(a, 2 * j + 1) + 0.5f * load_as_float(b, 2 * j + 1);
    dst[j] = (0.0f + 0.5f * left) + 0.5f * right;
  }
}

inline int32_t half_up(int32_t v) { return (v + 1) >> 1; }

void box2_tail(const int16_t* a, const int16_t* b, int64_t j, int64_t out_w, int16_t* dst) {
  for (; j < out_w; ++j) {
    const int32_t left = half_up(a[2 * j]) + half_up(b[2 * j]);
    const int32_t right = half_up(a[2 * j + 1]) + half_up(b[2 * j + 1]);
    dst[j] = static_cast<int16_t>((left + right + 1) >> 1);
  }
}

void box2_tail(const uint8_t* a, const uint8_t* b, int64_t j, int64_t out_w, int16_t* dst) {
  for (; j < out_w; ++j) dst[j] = static_cast<int16_t>((a[2 * j] + a[2 * j + 1] + b[2 * j] + b[2 * j + 1]) << 5);
}

// ---- SSE2: 4 outputs per step (8 for uint8) -----------------------------------------------------

int64_t box2_sse2(const float* a, const float* b, int64_t j, int64_t out_w, float* dst) {
#if defined(__SSE2__)
  const __m128 half = _mm_set1_ps(0.5f), zero = _mm_setzero_ps();
  for (; j + 4 <= out_w; j += 4) {
    const __m128 t0 = _mm_add_ps(_mm_mul_ps(half, _mm_loadu_ps(a + 2 * j)), _mm_mul_ps(half, _mm_loadu_ps(b + 2 * j)));
    const __m128 t1 =
        _mm_add_ps(_mm_mul_ps(half, _mm_loadu_ps(a + 2 * j + 4)), _mm_mul_ps(half, _mm_loadu_ps(b + 2 * j + 4)));
    const __m128 left = _mm_shuffle_ps(t0, t1, _MM_SHUFFLE(2, 0, 2, 0));
    const __m128 right = _mm_shuffle_ps(t0, t1, _MM_SHUFFLE(3, 1, 3, 1));
    _mm_storeu_ps(dst + j, _mm_add_ps(_mm_add_ps(zero, _mm_mul_ps(half, left)), _mm_mul_ps(half, right)));
  }
#endif
  return j;
}

int64_t box2_sse2(const int16_t* a, const int16_t* b, int64_t j, int64_t out_w, int16_t* dst) {
#if defined(__SSE2__)
  const __m128i one16 = _mm_set1_epi16(1), one32 = _mm_set1_epi32(1);
  for (; j + 4 <= out_w; j += 4) {
    const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a + 2 * j));
    const __m128i y = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 2 * j));
    const __m128i column = _mm_add_epi16(_mm_srai_epi16(_mm_add_epi16(x, one16), 1),
                                         _mm_srai_epi16(_mm_add_epi16(y, one16), 1));
    const __m128i sum = _mm_srai_epi32(_mm_add_epi32(_mm_madd_epi16(column, one16), one32), 1);
    _mm_storel_epi64(reinterpret_cast<__m128i*>(dst + j), _mm_packs_epi32(sum, sum));
  }
#endif
  return j;
}

int64_t box2_sse2(const uint8_t* a, const uint8_t* b, int64_t j, int64_t out_w, int16_t* dst) {
#if defined(__SSE2__)
  const __m128i zero = _mm_setzero_si128(), one16 = _mm_set1_epi16(1);
  for (; j + 8 <= out_w; j += 8) {
    const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a + 2 * j));
    const __m128i y = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 2 * j));
    const __m128i lo = _mm_add_epi16(_mm_unpacklo_epi8(x, zero), _mm_unpacklo_epi8(y, zero));
    const __m128i hi = _mm_add_epi16(_mm_unpackhi_epi8(x, zero), _mm_unpackhi_epi8(y, zero));
    const __m128i sums = _mm_packs_epi32(_mm_madd_epi16(lo, one16), _mm_madd_epi16(hi, one16));  // <= 1020
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + j), _mm_slli_epi16(sums, 5));
  }
#endif
  return j;
}

template <typename S>
int64_t box2_sse2(const S*, const S*, int64_t j, int64_t, float*) {
  return j;  // 16-bit floats: only level 0 reads them, whose rows the AVX2 blocks cover
}

// ---- AVX2: 8 float outputs or 16 fixed-point outputs per step ------------------------------------
#if defined(MRFACE_BOX_AVX2)
__attribute__((target("avx2"), always_inline)) inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
__attribute__((target("avx2"), always_inline)) inline __m256 load8(const BFloat16* p) {
  const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}
__attribute__((target("avx2,f16c"), always_inline)) inline __m256 load8(const Float16* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// The column pairs of 16 samples, even and odd columns separated by a shuffle within each 128-bit
// lane, then put back in order across lanes. f16c only matters to the Float16 load.
template <typename S>
__attribute__((target("avx2,f16c"))) int64_t box2_avx2(const S* a, const S* b, int64_t out_w, float* dst) {
  const __m256 half = _mm256_set1_ps(0.5f), zero = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= out_w; j += 8) {
    const __m256 t0 = _mm256_add_ps(_mm256_mul_ps(half, load8(a + 2 * j)), _mm256_mul_ps(half, load8(b + 2 * j)));
    const __m256 t1 =
        _mm256_add_ps(_mm256_mul_ps(half, load8(a + 2 * j + 8)), _mm256_mul_ps(half, load8(b + 2 * j + 8)));
    const __m256 left = _mm256_shuffle_ps(t0, t1, _MM_SHUFFLE(2, 0, 2, 0));   // 0 2 8 10 | 4 6 12 14
    const __m256 right = _mm256_shuffle_ps(t0, t1, _MM_SHUFFLE(3, 1, 3, 1));  // 1 3 9 11 | 5 7 13 15
    const __m256 sum = _mm256_add_ps(_mm256_add_ps(zero, _mm256_mul_ps(half, left)), _mm256_mul_ps(half, right));
    _mm256_storeu_ps(dst + j, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(sum), _MM_SHUFFLE(3, 1, 2, 0))));
  }
  return j;
}

// ((a + 1) >> 1) + ((b + 1) >> 1) for the 16 columns from i.
__attribute__((target("avx2"), always_inline)) inline __m256i column_pair_q7(const int16_t* a, const int16_t* b,
                                                                            int64_t i) {
  const __m256i one = _mm256_set1_epi16(1);
  const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + i));
  const __m256i y = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + i));
  return _mm256_add_epi16(_mm256_srai_epi16(_mm256_add_epi16(x, one), 1), _mm256_srai_epi16(_mm256_add_epi16(y, one), 1));
}

// Each (even, odd) column pair summed into 32 bits by pmaddwd with ones (samples are at most 32640, so
// reading them as int16 is exact), rounded, packed back to 16 bits.
__attribute__((target("avx2"))) int64_t box2_avx2(const int16_t* a, const int16_t* b, int64_t out_w, int16_t* dst) {
  const __m256i one16 = _mm256_set1_epi16(1), one32 = _mm256_set1_epi32(1);
  int64_t j = 0;
  for (; j + 16 <= out_w; j += 16) {
    const __m256i left = _mm256_madd_epi16(column_pair_q7(a, b, 2 * j), one16);
    const __m256i right = _mm256_madd_epi16(column_pair_q7(a, b, 2 * j + 16), one16);
    const __m256i lo = _mm256_srai_epi32(_mm256_add_epi32(left, one32), 1);
    const __m256i hi = _mm256_srai_epi32(_mm256_add_epi32(right, one32), 1);
    const __m256i packed = _mm256_packs_epi32(lo, hi);  // 0-3 8-11 | 4-7 12-15
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + j), _mm256_permute4x64_epi64(packed, _MM_SHUFFLE(3, 1, 2, 0)));
  }
  return j;
}

// uint8: pmaddubsw with ones sums each horizontal pair (in order), the two rows are added, shifted to Q7.
__attribute__((target("avx2"))) int64_t box2_avx2(const uint8_t* a, const uint8_t* b, int64_t out_w, int16_t* dst) {
  const __m256i ones = _mm256_set1_epi8(1);
  int64_t j = 0;
  for (; j + 16 <= out_w; j += 16) {
    const __m256i x = _mm256_maddubs_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + 2 * j)), ones);
    const __m256i y = _mm256_maddubs_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 2 * j)), ones);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + j), _mm256_slli_epi16(_mm256_add_epi16(x, y), 5));
  }
  return j;
}
#endif

template <typename S>
bool avx2_for() {
  if constexpr (std::is_same_v<S, Float16>) return cpu_has_avx2() && cpu_has_f16c();
  return cpu_has_avx2();
}

template <typename S, typename D>
void box2_rows(const S* src, int64_t out_h, int64_t out_w, D* dst) {
  const int64_t src_w = 2 * out_w;
  const bool avx2 = avx2_for<S>();
  for (int64_t i = 0; i < out_h; ++i) {
    const S* a = src + 2 * i * src_w;
    const S* b = a + src_w;
    D* d = dst + i * out_w;
    int64_t j = 0;
#if defined(MRFACE_BOX_AVX2)
    if (avx2) j = box2_avx2(a, b, out_w, d);
#endif
    j = box2_sse2(a, b, j, out_w, d);
    box2_tail(a, b, j, out_w, d);
  }
  (void)avx2;
}

}  // namespace

void box2_level(const float* src, int64_t out_h, int64_t out_w, float* dst) { box2_rows(src, out_h, out_w, dst); }
void box2_level(const BFloat16* src, int64_t out_h, int64_t out_w, float* dst) { box2_rows(src, out_h, out_w, dst); }
void box2_level(const Float16* src, int64_t out_h, int64_t out_w, float* dst) { box2_rows(src, out_h, out_w, dst); }
void box2_level(const int16_t* src, int64_t out_h, int64_t out_w, int16_t* dst) { box2_rows(src, out_h, out_w, dst); }
void box2_level(const uint8_t* src, int64_t out_h, int64_t out_w, int16_t* dst) { box2_rows(src, out_h, out_w, dst); }

}  // namespace mrface
