// Windowed in-register gathers for row resizes (see mrface/window_gather.h).
#include "mrface/window_gather.h"

#include <algorithm>
#include <cstring>

#include "mrface/cpu_features.h"

#if defined(__GNUC__) && defined(__x86_64__)
#define MRFACE_WINDOW_AVX2 1
#include <immintrin.h>
#endif

namespace mrface {
namespace {

// Window width (8 or 16 samples) holding every span, or 0 when one is wider.
int window_for(int64_t widest) { return widest <= 8 ? 8 : (widest <= 16 ? 16 : 0); }

// Fill the shared fields from each (group, block)'s lowest sample and the widest span; false when a span
// is wider than 16. A window starts at its lowest sample, moved left so that it stays inside the row.
bool lay_out(RowWindowLayout& plan, int64_t src_w, int64_t out_w, int64_t blocks, int64_t widest,
             const std::vector<int32_t>& lowest) {
  const int window = window_for(widest);
  if (window == 0) return false;
  plan.src_w = src_w;
  plan.out_w = out_w;
  plan.blocks = blocks;
  plan.window = window;
  plan.padded = src_w < window;
  plan.start.resize(lowest.size());
  for (size_t o = 0; o < lowest.size(); ++o) {
    plan.start[o] = plan.padded ? 0 : static_cast<int32_t>(std::min<int64_t>(lowest[o], src_w - window));
  }
  return true;
}

}  // namespace

RowWindowPlanQ15 plan_row_window_q15(const int32_t* idx, const int16_t* w, int64_t taps, int64_t src_w,
                                     int64_t out_w) {
  RowWindowPlanQ15 plan;
  if (!cpu_has_avx2() || taps < 1 || src_w < 1 || out_w < 1) return plan;
  for (int64_t i = 0; i < out_w * taps; ++i) {
    if (w[i] < 0) return plan;  // pmaddwd sums could then leave the int16 range the scalar path wraps in
  }
  const int64_t pairs = (taps + 1) / 2, blocks = ((out_w + 3) / 4 + 1) / 2 * 2;
  // Tap t of output j; padding outputs and taps have weight 0 and no sample of their own.
  auto tap = [&](int64_t j, int64_t t, int32_t* index) -> int16_t {
    if (j >= out_w || t >= taps) return 0;
    *index = idx[j * taps + t];
    return w[j * taps + t];
  };
  std::vector<int32_t> lowest(static_cast<size_t>(pairs * blocks), 0);
  int64_t widest = 1;
  for (int64_t p = 0; p < pairs; ++p) {
    for (int64_t b = 0; b < blocks; ++b) {
      int64_t lo = -1, hi = -1;
      for (int64_t k = 0; k < 8; ++k) {
        int32_t i = 0;
        if (tap(4 * b + k / 2, 2 * p + k % 2, &i) == 0) continue;  // zero weight: any sample will do
        lo = lo < 0 ? i : std::min<int64_t>(lo, i);
        hi = std::max<int64_t>(hi, i);
      }
      lowest[p * blocks + b] = static_cast<int32_t>(std::max<int64_t>(lo, 0));
      widest = std::max(widest, hi - lo + 1);
    }
  }
  if (!lay_out(plan, src_w, out_w, blocks, widest, lowest)) return plan;
  plan.pairs = pairs;
  plan.mask_lo.assign(static_cast<size_t>(pairs * blocks * 16), 0x80);
  plan.mask_hi.assign(static_cast<size_t>(pairs * blocks * 16), 0x80);
  plan.weight.assign(static_cast<size_t>(pairs * blocks * 8), 0);
  for (int64_t o = 0; o < pairs * blocks; ++o) {
    const int64_t p = o / blocks, b = o % blocks;
    const int32_t start = plan.start[o];
    for (int64_t k = 0; k < 8; ++k) {  // int16 lane k = output 4b + k / 2, tap 2p + k % 2
      int32_t i = start;
      const int16_t weight = tap(4 * b + k / 2, 2 * p + k % 2, &i);
      const int64_t e = weight == 0 ? 0 : i - start;
      plan.weight[o * 8 + k] = weight;
      uint8_t* mask = e < 8 ? plan.mask_lo.data() : plan.mask_hi.data();
      mask[o * 16 + 2 * k] = static_cast<uint8_t>(2 * (e % 8));
      mask[o * 16 + 2 * k + 1] = static_cast<uint8_t>(2 * (e % 8) + 1);
    }
  }
  return plan;
}

RowWindowPlanF32 plan_row_window_f32(const int32_t* idx, const float* w, int64_t taps, int64_t src_w, int64_t out_w) {
  RowWindowPlanF32 plan;
  if (!cpu_has_avx2() || taps < 1 || src_w < 1 || out_w < 1) return plan;
  const int64_t blocks = (out_w + 7) / 8;
  // Every tap's sample counts, weight 0 included: 0 * inf is NaN in the scalar sum too. Padding
  // outputs repeat the last output's taps.
  auto index = [&](int64_t j, int64_t t) { return idx[std::min(j, out_w - 1) * taps + t]; };
  std::vector<int32_t> lowest(static_cast<size_t>(taps * blocks));
  int64_t widest = 1;
  for (int64_t t = 0; t < taps; ++t) {
    for (int64_t b = 0; b < blocks; ++b) {
      int64_t lo = index(8 * b, t), hi = lo;
      for (int64_t k = 1; k < 8; ++k) {
        lo = std::min<int64_t>(lo, index(8 * b + k, t));
        hi = std::max<int64_t>(hi, index(8 * b + k, t));
      }
      lowest[t * blocks + b] = static_cast<int32_t>(lo);
      widest = std::max(widest, hi - lo + 1);
    }
  }
  if (!lay_out(plan, src_w, out_w, blocks, widest, lowest)) return plan;
  plan.taps = taps;
  plan.lane.resize(static_cast<size_t>(taps * blocks * 8));
  plan.weight.resize(static_cast<size_t>(taps * blocks * 8));
  for (int64_t o = 0; o < taps * blocks; ++o) {
    const int64_t t = o / blocks, b = o % blocks;
    const int32_t start = plan.start[o];
    for (int64_t k = 0; k < 8; ++k) {
      const int64_t j = 8 * b + k;
      plan.lane[o * 8 + k] = index(j, t) - start;
      plan.weight[o * 8 + k] = j < out_w ? w[j * taps + t] : 0.0f;
    }
  }
  return plan;
}

#if defined(MRFACE_WINDOW_AVX2)
namespace {

__attribute__((target("avx2"))) void gather_q15_avx2(const RowWindowPlanQ15& plan, const int16_t* src, int64_t rows,
                                                     int16_t* dst) {
  const int64_t src_w = plan.src_w, out_w = plan.out_w, blocks = plan.blocks, pairs = plan.pairs;
  const bool wide = plan.window == 16;
  const __m256i round = _mm256_set1_epi32(1 << 14);
  alignas(32) int16_t padded[16];
  alignas(16) int16_t tail[8];
  for (int64_t r = 0; r < rows; ++r) {
    const int16_t* s = src + r * src_w;
    if (plan.padded) {
      std::memset(padded, 0, sizeof(padded));
      std::memcpy(padded, s, static_cast<size_t>(src_w) * sizeof(int16_t));
      s = padded;
    }
    int16_t* d = dst + r * out_w;
    for (int64_t b = 0; b < blocks; b += 2) {  // outputs 4b .. 4b + 7: block b in the low lane, b + 1 high
      __m256i acc = _mm256_setzero_si256();
      for (int64_t p = 0; p < pairs; ++p) {
        const int64_t o = p * blocks + b;
        const int16_t* w0 = s + plan.start[o];
        const int16_t* w1 = s + plan.start[o + 1];
        const __m256i lo = _mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(w1), reinterpret_cast<const __m128i*>(w0));
        __m256i v = _mm256_shuffle_epi8(lo, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(&plan.mask_lo[o * 16])));
        if (wide) {
          const __m256i hi = _mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(w1 + 8),
                                                 reinterpret_cast<const __m128i*>(w0 + 8));
          v = _mm256_or_si256(
              v, _mm256_shuffle_epi8(hi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(&plan.mask_hi[o * 16]))));
        }
        acc = _mm256_add_epi32(
            acc, _mm256_madd_epi16(v, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(&plan.weight[o * 8]))));
      }
      acc = _mm256_srai_epi32(_mm256_add_epi32(acc, round), 15);
      const __m128i out = _mm_packs_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
      const int64_t j = 4 * b;
      if (j + 8 <= out_w) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(d + j), out);
      } else {
        _mm_store_si128(reinterpret_cast<__m128i*>(tail), out);
        std::memcpy(d + j, tail, static_cast<size_t>(out_w - j) * sizeof(int16_t));
      }
    }
  }
}

__attribute__((target("avx2"))) void gather_f32_avx2(const RowWindowPlanF32& plan, const float* src, int64_t rows,
                                                    float* dst) {
  const int64_t src_w = plan.src_w, out_w = plan.out_w, blocks = plan.blocks, taps = plan.taps;
  const bool wide = plan.window == 16;
  const __m256i seven = _mm256_set1_epi32(7);
  alignas(32) float padded[16];
  alignas(32) float tail[8];
  for (int64_t r = 0; r < rows; ++r) {
    const float* s = src + r * src_w;
    if (plan.padded) {
      std::fill(padded, padded + 16, 0.0f);
      std::memcpy(padded, s, static_cast<size_t>(src_w) * sizeof(float));
      s = padded;
    }
    float* d = dst + r * out_w;
    for (int64_t b = 0; b < blocks; ++b) {
      __m256 acc = _mm256_setzero_ps();
      for (int64_t t = 0; t < taps; ++t) {
        const int64_t o = t * blocks + b;
        const float* window = s + plan.start[o];
        const __m256i lane = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(&plan.lane[o * 8]));
        __m256 v = _mm256_permutevar8x32_ps(_mm256_loadu_ps(window), lane);
        if (wide) {
          const __m256 high = _mm256_permutevar8x32_ps(_mm256_loadu_ps(window + 8), lane);
          v = _mm256_blendv_ps(v, high, _mm256_castsi256_ps(_mm256_cmpgt_epi32(lane, seven)));
        }
        acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_loadu_ps(&plan.weight[o * 8]), v));
      }
      const int64_t j = 8 * b;
      if (j + 8 <= out_w) {
        _mm256_storeu_ps(d + j, acc);
      } else {
        _mm256_store_ps(tail, acc);
        std::memcpy(d + j, tail, static_cast<size_t>(out_w - j) * sizeof(float));
      }
    }
  }
}

}  // namespace
#endif

void gather_rows_window_q15(const RowWindowPlanQ15& plan, const int16_t* src, int64_t rows, int16_t* dst) {
#if defined(MRFACE_WINDOW_AVX2)
  gather_q15_avx2(plan, src, rows, dst);
#endif
}

void gather_rows_window_f32(const RowWindowPlanF32& plan, const float* src, int64_t rows, float* dst) {
#if defined(MRFACE_WINDOW_AVX2)
  gather_f32_avx2(plan, src, rows, dst);
#endif
}

}  // namespace mrface
