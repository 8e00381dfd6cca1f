// Gumbel-softmax farthest point sampling (FaceCoresetNet coreset selection, REFERENCE.md §6).
//
// For each set of n items (features f_i of dimension D, norms ||f_i|| > 0) pick min(k, n) items: the
// first maximises s * norm_i + g_0i, pick t >= 1 maximises s * m_i + g_ti over the eligible items,
// where m_i = min over earlier picks c of norm_i^gamma * (1 - cos(f_i, c)) / 2 (the running minimum),
// s is logit_scale (the product is rounded before the noise is added) and g are Gumbel(0, 1) draws
// (stochastic mode) or 0 (deterministic mode). Eligible: the unpicked items (mask_picked, so picks are
// distinct) or every item (the public FaceCoresetNet code). Ties go to the lowest index. The forward
// computes only the indices (the straight-through weights, one-hot in value, and the coreset are
// gathered from them in mrface/ops/gumbel_fps.py); the backward kernels below recompute the rest.
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
  int num_threads;         // CPU only: OpenMP threads at most (<= 0: one), never more than sets
  // CPU only, each optional (nullptr: not written):
  float* coreset;          // [sets, k, dim] out: the picked rows, zeros past a set's length
  float* weights;          // out, one-hot rows: element (set, step, item) at set * w_set_stride + starts[set] *
  int64_t w_set_stride;    //   w_start_stride + step * w_step_stride + item (padded [B, k, N]: k N, 0, N, the
  int64_t w_start_stride;  //   whole row written; packed [k, T]: 0, 1, T, the set's n columns written)
  int64_t w_step_stride;
  int32_t* nonfinite;      // [sets] out: 1 where a row of the set holds NaN or an infinity, else 0
};

// Backward of the straight-through selection: gradients of <grad_weights, W> + <grad_coreset, C> with
// respect to features, norms and gamma, for the picks `fwd.indices` made by the forward (read, not
// written). The forward saves nothing but its inputs and the indices [sets, k]; per set the kernel
// replays the selection for those picks (soft probabilities [k, n], cosines and running-minimum tie
// weights [k - 1, n], recomputed from features, norms and the noise hash), then walks the k steps
// backwards (softmax, running minimum, cosine distance, norm power, centres) in O(k n D) per set.
// Float32 throughout; the reductions over D use eight partial sums.
struct GumbelFpsBackwardArgs {
  GumbelFpsArgs fwd;           // features must be float32; fwd.indices is read
  float tau;                   // softmax temperature
  const float* grad_weights;   // element (set, step, item) at set * gw_set_stride + starts[set] * gw_start_stride
  int64_t gw_set_stride;       //   + step * gw_step_stride + item (padded [B, k, N]: k N, 0, N;
  int64_t gw_start_stride;     //   packed [k, T]: 0, 1, T)
  int64_t gw_step_stride;
  const float* grad_coreset;   // [sets, k, dim]
  float* grad_features;        // out, rows like features; rows in [start + n, start + max_len) of a set are
  bool zero_padding_rows;      //   zeroed when this is set (padded layout)
  float* grad_norms;           // out, one per row (padding rows zeroed with the features' rows)
  float* grad_gamma_per_set;   // out [sets]; the caller sums them in a fixed order
  int num_threads;             // OpenMP threads at most (<= 0: one)
};

// CPU: OpenMP over sets, one set per thread (at most num_threads, never more than sets). Host pointers.
void gumbel_fps_cpu(const GumbelFpsArgs& args);
void gumbel_fps_backward_cpu(const GumbelFpsBackwardArgs& args);

#ifdef MRFACE_WITH_CUDA
// CUDA: one block per set; running minimum, inverse lengths and norm powers in shared memory (or
// `scratch`), block arg-max per step. Device pointers; `stream` is a cudaStream_t.
void gumbel_fps_cuda(const GumbelFpsArgs& args, void* stream);
// CUDA backward: one block per set, the per-set replay state in global scratch of
// gumbel_fps_backward_cuda_scratch_floats(max_len, k, dim) floats per set (`fwd.scratch`).
void gumbel_fps_backward_cuda(const GumbelFpsBackwardArgs& args, void* stream);
int64_t gumbel_fps_backward_cuda_scratch_floats(int64_t max_len, int64_t k, int64_t dim);
// Bytes of dynamic shared memory the kernel needs for sets of up to max_len items.
int64_t gumbel_fps_cuda_shared_bytes(int64_t max_len, int64_t dim);
#endif

}  // namespace mrface
