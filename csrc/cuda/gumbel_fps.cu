// CUDA Gumbel farthest point sampling and its backward: one block per set. A warp computes one item's dot product
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

// ------------------------------------------------------------------------------------- backward
// One block per set, the replay state in global scratch (gumbel_fps_backward_cuda_scratch_floats per
// set). Dot products over D: a warp per item (lanes stride over D); sums over the items: block
// reductions; the centre gradient sum_i coef_i f_i: threads stride over D (coalesced rows).

__host__ __device__ __forceinline__ int64_t backward_scratch_floats(int64_t max_len, int64_t k, int64_t dim) {
  return (9 + 4 * k) * max_len + (k + 1) * dim + 2 * k;
}

__device__ float block_reduce(float v, bool take_max, float* red) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float o = __shfl_down_sync(0xffffffffu, v, offset);
    v = take_max ? fmaxf(v, o) : v + o;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) red[warp] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    float total = red[0];
    for (int w = 1; w < kWarps; ++w) total = take_max ? fmaxf(total, red[w]) : total + red[w];
    red[kWarps] = total;
  }
  __syncthreads();
  const float total = red[kWarps];
  __syncthreads();  // red is reused by the next call
  return total;
}

__device__ __forceinline__ bool eligible(const int64_t* idx, int64_t t, int64_t i, bool mask_picked) {
  if (!mask_picked) return true;
  for (int64_t s = 0; s < t; ++s) {
    if (idx[s] == i) return false;
  }
  return true;
}

__global__ void __launch_bounds__(kThreads) gumbel_fps_backward_kernel(GumbelFpsBackwardArgs b) {
  __shared__ float red[kWarps + 1];
  const GumbelFpsArgs& a = b.fwd;
  const int64_t set = blockIdx.x, dim = a.dim, k = a.k, start = a.starts[set], n = a.lengths[set];
  const int64_t picks = n < k ? n : k;
  const float* f = static_cast<const float*>(a.features) + start * dim;
  const float* norms = a.norms + start;
  const int64_t* idx = a.indices + set * k;
  const float gamma = *a.gamma, g_scale = a.logit_scale / b.tau;
  const float* gw = b.grad_weights + set * b.gw_set_stride + start * b.gw_start_stride;
  const float* gc = b.grad_coreset + set * k * dim;
  float* grad_f = b.grad_features + start * dim;
  float* grad_n = b.grad_norms + start;
  const int64_t m = a.max_len;
  float* base = a.scratch + set * backward_scratch_floats(m, k, dim);
  float *length = base, *radius = base + m, *log_norm = base + 2 * m, *npow = base + 3 * m;
  float *running = base + 4 * m, *g_weight = base + 5 * m, *grad_min = base + 6 * m, *grad_power = base + 7 * m;
  float *beta = base + 8 * m, *soft = base + 9 * m, *cos = soft + k * m, *tie = cos + k * m, *coef = tie + k * m;
  float *g_centres = coef + k * m, *g_next = g_centres + k * dim, *rho = g_next + dim, *rho_raw = rho + k;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  for (int64_t i = warp; i < n; i += kWarps) {
    float sq = 0.0f;
    for (int64_t j = lane; j < dim; j += 32) sq += f[i * dim + j] * f[i * dim + j];
    sq = warp_sum(sq);
    if (lane == 0) {
      length[i] = sqrtf(sq);
      radius[i] = fmaxf(length[i], kGumbelFpsEps);
      log_norm[i] = logf(norms[i]);
      npow[i] = expf(gamma * log_norm[i]);
      grad_min[i] = grad_power[i] = beta[i] = 0.0f;
    }
  }
  __syncthreads();
  // ---- replay the forward for the known picks
  for (int64_t t = 0; t < picks; ++t) {
    const float* logits = norms;
    if (t > 0) {
      const float* c = f + idx[t - 1] * dim;
      float cc = 0.0f;
      for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) cc += c[j] * c[j];
      cc = block_reduce(cc, false, red);
      const float rr = sqrtf(cc), rh = fmaxf(rr, kGumbelFpsEps);
      if (threadIdx.x == 0) {
        rho_raw[t] = rr;
        rho[t] = rh;
      }
      for (int64_t i = warp; i < n; i += kWarps) {
        float d = 0.0f;
        for (int64_t j = lane; j < dim; j += 32) d += f[i * dim + j] * c[j];
        d = warp_sum(d);
        if (lane == 0) {
          const float cs = d / (radius[i] * rh);
          const float dist = npow[i] * (1.0f - cs) / 2.0f;
          cos[t * m + i] = cs;
          if (t == 1) {
            tie[t * m + i] = 1.0f;
            running[i] = dist;
          } else {
            tie[t * m + i] = dist < running[i] ? 1.0f : (dist == running[i] ? 0.5f : 0.0f);
            running[i] = fminf(running[i], dist);
          }
        }
      }
      __syncthreads();
      logits = running;
    }
    const uint64_t stream = gumbel_fps_stream(a.seed, static_cast<uint64_t>(set), static_cast<uint64_t>(t));
    float* z = soft + t * m;
    float top = -INFINITY;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      float v = __fmul_rn(logits[i], a.logit_scale);
      if (a.stochastic) v = __fadd_rn(v, -logf(-logf(gumbel_fps_uniform(stream, static_cast<uint64_t>(i)))));
      z[i] = eligible(idx, t, i, a.mask_picked) ? v / b.tau : -INFINITY;
      top = fmaxf(top, z[i]);
    }
    top = block_reduce(top, true, red);
    float total = 0.0f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      z[i] = z[i] == -INFINITY ? 0.0f : expf(z[i] - top);
      total += z[i];
    }
    total = block_reduce(total, false, red);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) z[i] /= total;
    __syncthreads();
  }
  // ---- walk the steps backwards
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) g_next[j] = 0.0f;
  __syncthreads();
  for (int64_t t = picks - 1; t >= 0; --t) {
    float* g_centre = g_centres + t * dim;
    for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) g_centre[j] = gc[t * dim + j] + g_next[j];
    __syncthreads();
    const float* sf = soft + t * m;
    for (int64_t i = warp; i < n; i += kWarps) {
      float d = 0.0f;
      for (int64_t j = lane; j < dim; j += 32) d += f[i * dim + j] * g_centre[j];
      d = warp_sum(d);
      if (lane == 0) g_weight[i] = gw[t * b.gw_step_stride + i] + d;
    }
    __syncthreads();
    float part = 0.0f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) part += sf[i] * g_weight[i];
    const float mean = block_reduce(part, false, red);
    if (t == 0) {
      for (int64_t i = threadIdx.x; i < n; i += blockDim.x) grad_n[i] = sf[i] * (g_weight[i] - mean) * g_scale;
      break;
    }
    const float rh = rho[t];
    float rho_part = 0.0f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      const float gm = grad_min[i] + sf[i] * (g_weight[i] - mean) * g_scale;
      const float g_dist = gm * tie[t * m + i];
      grad_min[i] = gm - g_dist;
      const float cs = cos[t * m + i];
      grad_power[i] += g_dist * (1.0f - cs) / 2.0f;
      const float g_cos = -g_dist * npow[i] / 2.0f;
      coef[t * m + i] = g_cos / (radius[i] * rh);
      if (length[i] > kGumbelFpsEps) beta[i] += -g_cos * cs / radius[i] / length[i];
      rho_part += g_cos * cs;
    }
    const float rho_sum = block_reduce(rho_part, false, red);  // also orders the coef writes before the reads
    const float g_rho = rho_raw[t] > kGumbelFpsEps ? -rho_sum / rh : 0.0f;
    const float* c = f + idx[t - 1] * dim;
    for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) {
      float acc = 0.0f;
      for (int64_t i = 0; i < n; ++i) acc += coef[t * m + i] * f[i * dim + j];
      g_next[j] = acc + (g_rho / rh) * c[j];
    }
    __syncthreads();
  }
  __syncthreads();
  // ---- gradients of the features, norms and gamma
  float g_gamma = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const float gp = grad_power[i] * npow[i];
    g_gamma += gp * log_norm[i];
    grad_n[i] += gp * gamma / norms[i];
  }
  g_gamma = block_reduce(g_gamma, false, red);
  if (threadIdx.x == 0) b.grad_gamma_per_set[set] = g_gamma;
  for (int64_t e = threadIdx.x; e < n * dim; e += blockDim.x) {
    const int64_t i = e / dim, j = e % dim;
    float v = beta[i] * f[e];
    for (int64_t t = 1; t < picks; ++t) v += coef[t * m + i] * f[idx[t - 1] * dim + j];
    for (int64_t t = 0; t < picks; ++t) {
      if (idx[t] == i) v += g_centres[t * dim + j];
    }
    grad_f[e] = v;
  }
  if (b.zero_padding_rows) {
    for (int64_t e = n * dim + threadIdx.x; e < m * dim; e += blockDim.x) grad_f[e] = 0.0f;
    for (int64_t i = n + threadIdx.x; i < m; i += blockDim.x) grad_n[i] = 0.0f;
  }
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

int64_t gumbel_fps_backward_cuda_scratch_floats(int64_t max_len, int64_t k, int64_t dim) {
  return backward_scratch_floats(max_len, k, dim);
}

void gumbel_fps_backward_cuda(const GumbelFpsBackwardArgs& args, void* stream) {
  const GumbelFpsArgs& a = args.fwd;
  check_arg(a.dtype == DType::Float32, "gumbel_fps_backward_cuda: features must be float32");
  check_arg(a.dim >= 1 && a.k >= 1 && a.sets >= 0 && args.tau > 0.0f && a.scratch != nullptr,
            "gumbel_fps_backward_cuda: need dim >= 1, k >= 1, sets >= 0, tau > 0 and a scratch buffer");
  check_arg(a.sets <= INT_MAX, "gumbel_fps_backward_cuda: too many sets for one launch");
  if (a.sets == 0) return;
  gumbel_fps_backward_kernel<<<static_cast<unsigned>(a.sets), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(args);
  check_cuda(cudaGetLastError(), "backward kernel launch");
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
