// CPU degradation kernel: one pass over each input plane produces every down level (cascading
// from an earlier level where the level table says so) and every down-then-up image.
#include <algorithm>
#include <string>
#include <type_traits>
#include <vector>

#include "mrface/dtype_convert.h"
#include "mrface/resize.h"

#ifdef MRFACE_WITH_OPENMP
#include <omp.h>
#endif

#if defined(__linux__)
#include <sys/mman.h>
#endif
#if defined(__SSE2__)
#include <emmintrin.h>
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
  std::fill(dst, dst + width, 0.0f);
  for (int64_t t = 0; t < taps; ++t) {
    const float weight = w[t];
    if (weight == 0.0f) continue;
    const float* __restrict__ s = src + static_cast<int64_t>(idx[t]) * width;
    for (int64_t j = 0; j < width; ++j) dst[j] += weight * s[j];
  }
}

// Resize rows: dst[r, j] = sum_t w[j, t] * src[r, idx[j, t]] for r < rows. The gather above is scalar
// (each output its own index list); with three or more taps it costs more than transposing the block,
// running the taps as contiguous column passes over all rows at once (vectorised) and transposing back.
// Each output sums its taps in the same order either way.
void resize_rows(const float* src, int64_t rows, int64_t src_w, const int32_t* idx, const float* w, int64_t taps,
                 int64_t out_w, float* dst) {
  if (taps < 3 || rows < 8) return resize_rows_gather(src, rows, src_w, idx, w, taps, out_w, dst);
  thread_local std::vector<float> t_in, t_out;
  t_in.resize(static_cast<size_t>(rows * src_w));
  t_out.resize(static_cast<size_t>(rows * out_w));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t x = 0; x < src_w; ++x) t_in[x * rows + r] = src[r * src_w + x];
  }
  for (int64_t j = 0; j < out_w; ++j) {
    resize_column_row(t_in.data(), rows, idx + j * taps, w + j * taps, taps, t_out.data() + j * rows);
  }
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < out_w; ++j) dst[r * out_w + j] = t_out[j * rows + r];
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
#ifdef MRFACE_WITH_OPENMP
#pragma omp parallel num_threads(threads) if (parallel)
#endif
  {
    std::vector<float> plane(std::is_same_v<T, float> ? 0 : static_cast<size_t>(hw));
    std::vector<float> levels(static_cast<size_t>(a.buffer_floats));
    std::vector<float> tmp;
    std::vector<float> row(static_cast<size_t>(a.w));
#ifdef MRFACE_WITH_OPENMP
#pragma omp for schedule(static)
#endif
    for (int64_t p = 0; p < planes; ++p) {
      const int64_t image = p / a.c;
      const int32_t* desc = a.levels + (a.per_image ? image * a.num_levels * kLevelFields : 0);
      const float* source_plane = plane.data();
      if constexpr (std::is_same_v<T, float>) {
        source_plane = input + p * hw;  // float32 input is read in place
      } else {
        widen_row(input + p * hw, hw, plane.data());
      }

      for (int k = 0; k < a.num_levels; ++k) {
        const int32_t* L = desc + k * kLevelFields;
        const int64_t out_h = L[kOutH], out_w = L[kOutW], src_h = L[kSrcH], src_w = L[kSrcW];
        const float* src = L[kSource] < 0 ? source_plane : levels.data() + desc[L[kSource] * kLevelFields + kBufOff];
        float* level = levels.data() + L[kBufOff];

        tmp.resize(static_cast<size_t>(std::max({src_h * out_w, out_h * src_w, out_h * a.w})));
        if (out_h < src_h) {
          // Fewer output rows: reduce the rows first (contiguous, vectorised, wide windows included),
          // so the gathering pass along x runs over out_h rows instead of src_h.
          for (int64_t i = 0; i < out_h; ++i) {
            resize_column_row(src, src_w, a.tap_index + L[kYOff] + i * L[kYTaps],
                              a.tap_weight + L[kYOff] + i * L[kYTaps], L[kYTaps], tmp.data() + i * src_w);
          }
          resize_rows(tmp.data(), out_h, src_w, a.tap_index + L[kXOff], a.tap_weight + L[kXOff], L[kXTaps], out_w,
                      level);
        } else {
          resize_rows(src, src_h, src_w, a.tap_index + L[kXOff], a.tap_weight + L[kXOff], L[kXTaps], out_w,
                      tmp.data());
          for (int64_t i = 0; i < out_h; ++i) {
            resize_column_row(tmp.data(), out_w, a.tap_index + L[kYOff] + i * L[kYTaps],
                              a.tap_weight + L[kYOff] + i * L[kYTaps], L[kYTaps], level + i * out_w);
          }
        }
        if (a.out.down[k] != nullptr) {
          narrow_row(level, out_h * out_w, static_cast<T*>(a.out.down[k]) + p * out_h * out_w);
        }
        if (a.out.up[k] != nullptr && L[kUpYTaps] > 0) {
          T* up = static_cast<T*>(a.out.up[k]) + p * hw;
          resize_rows(level, out_h, out_w, a.tap_index + L[kUpXOff], a.tap_weight + L[kUpXOff], L[kUpXTaps], a.w,
                      tmp.data());
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
    default:
      throw std::invalid_argument(std::string("degrade_cpu: dtype ") + dtype_name(args.dtype) +
                                  " is not supported by the C++ CPU kernel (float32, uint8)");
  }
}

}  // namespace mrface
