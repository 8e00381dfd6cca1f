// CUDA Gumbel farthest point sampling: one block per set. A warp computes one item's dot product
// with the newest centre (lanes stride over D, so rows are read coalesced); the running minimum, the
// inverse lengths and norm^gamma live in shared memory (global scratch for sets too large for it);
// each pick is a block arg-max over (value, index) with ties going to the lowest index.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <climits>
#include <stdexcept>
#include <string>

#include "mrface/gumbel_fps.h"

namespace mrface {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

__device__ __forceinline__ bool better(float v, long long i, float best_v, long long best_i) {
  return v > best_v || (v == best_v && i < best_i);
}

// Arg-max of score[i] + noise(step, i) over items with score > -inf; every thread gets the index.
// The score is scaled with an explicitly rounded product (no fused multiply-add), as on the host.
__device__ long long block_argmax(const float* score, long long n, bool stochastic, uint64_t stream, float scale,
                                  float* red_value, long long* red_index) {
  float best_v = -INFINITY;
  long long best_i = LLONG_MAX;
  for (long long i = threadIdx.x; i < n; i += blockDim.x) {
    const float s = score[i];
    if (s == -INFINITY) continue;
    const float scaled = __fmul_rn(s, scale);
    const float v =
        stochastic ? __fadd_rn(scaled, -logf(-logf(gumbel_fps_uniform(stream, static_cast<uint64_t>(i))))) : scaled;
    if (better(v, i, best_v, best_i)) {
      best_v = v;
      best_i = i;
    }
  }
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float v = __shfl_down_sync(0xffffffffu, best_v, offset);
    const long long i = __shfl_down_sync(0xffffffffu, best_i, offset);
    if (better(v, i, best_v, best_i)) {
      best_v = v;
      best_i = i;
    }
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    red_value[warp] = best_v;
    red_index[warp] = best_i;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kWarps; ++w) {
      if (better(red_value[w], red_index[w], red_value[0], red_index[0])) {
        red_value[0] = red_value[w];
        red_index[0] = red_index[w];
      }
    }
  }
  __syncthreads();
  const long long pick = red_index[0];
  __syncthreads();  // red_* are reused by the next call
  return pick;
}

template <typename T>
__global__ void __launch_bounds__(kThreads) gumbel_fps_kernel(
    const T* __restrict__ features, const float* __restrict__ norms, int64_t dim, const int64_t* __restrict__ starts,
    const int64_t* __restrict__ lengths, int64_t max_len, int64_t k, const float* __restrict__ gamma_ptr,
    bool stochastic, uint64_t seed, bool mask_picked, float logit_scale, int64_t* __restrict__ indices,
    float* __restrict__ scratch) {
  extern __shared__ float shared[];
  __shared__ float red_value[kWarps];
  __shared__ long long red_index[kWarps];

  const int64_t set = blockIdx.x;
  const int64_t n = lengths[set];
  const int64_t picks = n < k ? n : k;
  const T* f = features + starts[set] * dim;
  const float* nrm = norms + starts[set];
  int64_t* out = indices + set * k;
  float* center = shared;
  float* work = scratch == nullptr ? shared + dim : scratch + set * 3 * max_len;
  float* mind = work;
  float* inv = work + max_len;
  float* wpow = work + 2 * max_len;
  const float gamma = *gamma_ptr;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  long long pick =
      block_argmax(nrm, n, stochastic, gumbel_fps_stream(seed, set, 0), logit_scale, red_value, red_index);
  if (threadIdx.x == 0) out[0] = pick;
  for (int64_t step = 1; step < picks; ++step) {
    for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) center[j] = to_float(f[pick * dim + j]);
    __syncthreads();
    float cc = 0.0f;
    for (int64_t j = lane; j < dim; j += 32) cc += center[j] * center[j];
    const float inv_c = 1.0f / fmaxf(sqrtf(__shfl_sync(0xffffffffu, warp_sum(cc), 0)), kGumbelFpsEps);
    for (int64_t i = warp; i < n; i += kWarps) {
      const T* row = f + i * dim;
      float dot = 0.0f, sq = 0.0f;
      for (int64_t j = lane; j < dim; j += 32) {
        const float x = to_float(row[j]);
        dot += x * center[j];
        sq += x * x;
      }
      dot = warp_sum(dot);
      sq = warp_sum(sq);
      if (lane == 0) {
        if (step == 1) {
          inv[i] = 1.0f / fmaxf(sqrtf(sq), kGumbelFpsEps);
          wpow[i] = expf(gamma * logf(nrm[i]));
        }
        const float d = wpow[i] * (1.0f - dot * inv[i] * inv_c) * 0.5f;
        mind[i] = step == 1 ? d : fminf(mind[i], d);
      }
    }
    __syncthreads();
    if (mask_picked && threadIdx.x == 0) mind[pick] = -INFINITY;  // earlier picks stay -inf through fminf
    __syncthreads();
    pick = block_argmax(mind, n, stochastic, gumbel_fps_stream(seed, set, step), logit_scale, red_value, red_index);
    if (threadIdx.x == 0) out[step] = pick;
  }
  for (int64_t step = picks + threadIdx.x; step < k; step += blockDim.x) out[step] = -1;
}

void check_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string("gumbel_fps_cuda: ") + what + ": " + cudaGetErrorString(status));
  }
}

template <typename T>
void launch(const GumbelFpsArgs& a, cudaStream_t stream) {
  const int64_t bytes = a.scratch == nullptr ? gumbel_fps_cuda_shared_bytes(a.max_len, a.dim)
                                             : static_cast<int64_t>(a.dim) * static_cast<int64_t>(sizeof(float));
  auto kernel = gumbel_fps_kernel<T>;
  if (bytes > 48 * 1024) {
    check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)),
               "requesting dynamic shared memory (pass a scratch buffer for sets this large)");
  }
  if (a.sets == 0) return;
  kernel<<<static_cast<unsigned>(a.sets), kThreads, static_cast<size_t>(bytes), stream>>>(
      static_cast<const T*>(a.features), a.norms, a.dim, a.starts, a.lengths, a.max_len, a.k, a.gamma, a.stochastic,
      a.seed, a.mask_picked, a.logit_scale, a.indices, a.scratch);
  check_cuda(cudaGetLastError(), "kernel launch");
}

}  // namespace

int64_t gumbel_fps_cuda_shared_bytes(int64_t max_len, int64_t dim) {
  return (3 * max_len + dim) * static_cast<int64_t>(sizeof(float));
}

void gumbel_fps_cuda(const GumbelFpsArgs& args, void* stream) {
  check_arg(args.dim >= 1 && args.k >= 1 && args.sets >= 0, "gumbel_fps_cuda: need dim >= 1, k >= 1, sets >= 0");
  check_arg(args.sets <= INT_MAX, "gumbel_fps_cuda: too many sets for one launch");
  auto s = static_cast<cudaStream_t>(stream);
  switch (args.dtype) {
    case DType::Float32: launch<float>(args, s); break;
    case DType::Float16: launch<__half>(args, s); break;
    case DType::BFloat16: launch<__nv_bfloat16>(args, s); break;
    default:
      throw std::invalid_argument(std::string("gumbel_fps_cuda: features dtype ") + dtype_name(args.dtype) +
                                  " is not supported (float32, float16, bfloat16)");
  }
}

}  // namespace mrface
