// Gumbel-softmax farthest point sampling (FaceCoresetNet coreset selection, REFERENCE.md §6).
//
// For each set of n items (features f_i of dimension D, norms ||f_i|| > 0) pick min(k, n) items: the
// first maximises s * norm_i + g_0i, pick t >= 1 maximises s * m_i + g_ti over the eligible items,
// where m_i = min over earlier picks c of norm_i^gamma * (1 - cos(f_i, c)) / 2 (the running minimum),
// s is logit_scale (the product is rounded before the noise is added) and g are Gumbel(0, 1) draws
// (stochastic mode) or 0 (deterministic mode). Eligible: the unpicked items (mask_picked, so picks are
// distinct) or every item (the public FaceCoresetNet code). Ties go to the lowest index. Only the indices are computed here; the straight-through weights and their gradients are
// built in Python from them (mrface/ops/gumbel_fps.py).
//
// The noise comes from a counter-based hash of (seed, set, step, item), shared verbatim by the C++,
// CUDA and Python (mrface/ops/reference/gumbel_fps.py) implementations, so every backend draws the
// same noise for the same seed.
#pragma once

#include <cmath>
#include <cstdint>

#include "mrface/common.h"

#if defined(__CUDACC__)
#define MRFACE_HD __host__ __device__ __forceinline__
#else
#define MRFACE_HD inline
#endif

namespace mrface {

MRFACE_HD uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// Hash prefix of one (seed, set, step): items then cost one splitmix64 each.
MRFACE_HD uint64_t gumbel_fps_stream(uint64_t seed, uint64_t set, uint64_t step) {
  return splitmix64(splitmix64(splitmix64(seed) ^ set) ^ step);
}

// Uniform in (0, 1) from the top 24 bits: exactly representable in float32, never 0 or 1.
MRFACE_HD float gumbel_fps_uniform(uint64_t stream, uint64_t item) {
  return (static_cast<float>(splitmix64(stream ^ item) >> 40) + 0.5f) * (1.0f / 16777216.0f);
}

// The cosine's norms are clamped at this value (as F.normalize does).
constexpr float kGumbelFpsEps = 1e-12f;

struct GumbelFpsArgs {
  const void* features;    // rows of `dim` elements, row r at features + r * dim
  DType dtype;             // of features (CPU: float32; CUDA: float32, float16, bfloat16)
  const float* norms;      // one per row, > 0
  int64_t dim;
  const int64_t* starts;   // [sets] first row of each set
  const int64_t* lengths;  // [sets] items per set, >= 1
  int64_t sets;
  int64_t max_len;         // >= every length
  int64_t k;               // picks per set; slots past a set's length get -1
  const float* gamma;      // one float: the norm exponent
  bool stochastic;         // add Gumbel noise from (seed, set, step, item)
  uint64_t seed;
  bool mask_picked;        // earlier picks are not eligible
  float logit_scale;       // logits are multiplied by it before the noise is added
  int64_t* indices;        // [sets, k] out: picks as indices inside the set, -1 for unused slots
  float* scratch;          // CUDA only: nullptr, or [sets, 3 * max_len] floats when shared memory is too small
};

// CPU: OpenMP over sets, one set per thread. Host pointers.
void gumbel_fps_cpu(const GumbelFpsArgs& args);

#ifdef MRFACE_WITH_CUDA
// CUDA: one block per set; running minimum, inverse lengths and norm powers in shared memory (or
// `scratch`), block arg-max per step. Device pointers; `stream` is a cudaStream_t.
void gumbel_fps_cuda(const GumbelFpsArgs& args, void* stream);
// Bytes of dynamic shared memory the kernel needs for sets of up to max_len items.
int64_t gumbel_fps_cuda_shared_bytes(int64_t max_len, int64_t dim);
#endif

}  // namespace mrface
