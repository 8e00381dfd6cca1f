// CUDA degradation kernel: one block per (image, channel) plane. Every down level is kept in shared
// memory, so a cascade (area 56 -> 28 -> 14 -> 7) reads the input plane from global memory once and
// the down-then-up images are computed from shared memory.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "mrface/resize.h"

namespace mrface {
namespace {

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_float(uint8_t v) { return static_cast<float>(v); }

template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <> __device__ __forceinline__ uint8_t from_float<uint8_t>(float v) {
  return static_cast<uint8_t>(fminf(fmaxf(floorf(v + 0.5f), 0.0f), 255.0f));
}

// Offset of the scratch after the level planes, rounded up to 4 floats.
__host__ __device__ constexpr int64_t scratch_offset(int64_t buffer_floats) { return (buffer_floats + 3) & ~int64_t{3}; }

// Store four consecutive outputs with one vector store (dst aligned to 4 elements).
template <typename T>
struct alignas(4 * sizeof(T)) Vec4 {
  T v[4];
};
template <typename T>
__device__ __forceinline__ void store4(T* dst, float4 a) {
  Vec4<T> packed;
  packed.v[0] = from_float<T>(a.x);
  packed.v[1] = from_float<T>(a.y);
  packed.v[2] = from_float<T>(a.z);
  packed.v[3] = from_float<T>(a.w);
  *reinterpret_cast<Vec4<T>*>(dst) = packed;
}

// Sum over a 2-D tap window: sum_a wy[a] * sum_b wx[b] * src[iy[a] * stride + ix[b]].
template <typename Src>
__device__ __forceinline__ float window_sum(const Src* src, int stride, const int32_t* iy, const float* wy, int ny,
                                            const int32_t* ix, const float* wx, int nx) {
  float acc = 0.0f;
  for (int a = 0; a < ny; ++a) {
    const Src* row = src + iy[a] * stride;
    float racc = 0.0f;
    for (int b = 0; b < nx; ++b) racc += wx[b] * to_float(row[ix[b]]);
    acc += wy[a] * racc;
  }
  return acc;
}

// Work is spread as rows over warps and columns over lanes: no integer division per element.
// Down levels whose y_taps * x_taps <= kDirectTaps (area with integer factors, bilinear, bicubic,
// nearest) are computed straight from their 2-D window; wider antialiasing windows go through the
// separable path and the `tmp` scratch, as does every up pass (sized by the host, see degrade.py).
template <typename T>
__global__ void degrade_kernel(const T* __restrict__ input, int c, int h, int w, const int32_t* __restrict__ level_table,
                               int num_levels, int per_image, const int32_t* __restrict__ tap_index,
                               const float* __restrict__ tap_weight, LevelPointers out, int64_t buffer_floats) {
  extern __shared__ float shared[];
  float* levels = shared;
  float* tmp = shared + scratch_offset(buffer_floats);  // 16-byte aligned for float4 access

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const int64_t plane = blockIdx.x;
  const int64_t image = plane / c;
  const T* in = input + plane * static_cast<int64_t>(h) * w;
  const int32_t* desc = level_table + (per_image ? image * num_levels * kLevelFields : 0);

  for (int k = 0; k < num_levels; ++k) {
    const int32_t* L = desc + k * kLevelFields;
    const int out_h = L[kOutH], out_w = L[kOutW], src_h = L[kSrcH], src_w = L[kSrcW];
    const int source = L[kSource];
    const float* src_level = source < 0 ? nullptr : levels + desc[source * kLevelFields + kBufOff];
    float* level = levels + L[kBufOff];
    const int x_taps = L[kXTaps], y_taps = L[kYTaps];
    const int32_t* xi = tap_index + L[kXOff];
    const float* xw = tap_weight + L[kXOff];
    const int32_t* yi = tap_index + L[kYOff];
    const float* yw = tap_weight + L[kYOff];
    T* down = out.down[k] == nullptr ? nullptr : static_cast<T*>(out.down[k]) + plane * out_h * out_w;

    if (x_taps * y_taps <= kDirectTaps) {
      for (int i = warp; i < out_h; i += warps) {
        for (int j = lane; j < out_w; j += 32) {
          const float acc =
              src_level == nullptr
                  ? window_sum(in, w, yi + i * y_taps, yw + i * y_taps, y_taps, xi + j * x_taps, xw + j * x_taps, x_taps)
                  : window_sum(src_level, src_w, yi + i * y_taps, yw + i * y_taps, y_taps, xi + j * x_taps,
                               xw + j * x_taps, x_taps);
          level[i * out_w + j] = acc;
          if (down != nullptr) down[i * out_w + j] = from_float<T>(acc);
        }
      }
    } else {
      for (int r = warp; r < src_h; r += warps) {  // horizontal: tmp[r, j] over source rows
        for (int j = lane; j < out_w; j += 32) {
          const float* wx = xw + j * x_taps;
          const int32_t* ix = xi + j * x_taps;
          float acc = 0.0f;
          if (src_level == nullptr) {
            for (int t = 0; t < x_taps; ++t) acc += wx[t] * to_float(in[r * w + ix[t]]);
          } else {
            for (int t = 0; t < x_taps; ++t) acc += wx[t] * src_level[r * src_w + ix[t]];
          }
          tmp[r * out_w + j] = acc;
        }
      }
      __syncthreads();
      for (int i = warp; i < out_h; i += warps) {  // vertical
        for (int j = lane; j < out_w; j += 32) {
          float acc = 0.0f;
          for (int t = 0; t < y_taps; ++t) acc += yw[i * y_taps + t] * tmp[yi[i * y_taps + t] * out_w + j];
          level[i * out_w + j] = acc;
          if (down != nullptr) down[i * out_w + j] = from_float<T>(acc);
        }
      }
    }
    __syncthreads();

    const int uy_taps = L[kUpYTaps], ux_taps = L[kUpXTaps];
    if (out.up[k] != nullptr && uy_taps > 0) {
      // Up, separable: horizontal into tmp (out_h x W), then vertical straight to global memory.
      const int32_t* uxi = tap_index + L[kUpXOff];
      const float* uxw = tap_weight + L[kUpXOff];
      for (int r = warp; r < out_h; r += warps) {
        for (int x = lane; x < w; x += 32) {
          float acc = 0.0f;
          for (int b = 0; b < ux_taps; ++b) acc += uxw[x * ux_taps + b] * level[r * out_w + uxi[x * ux_taps + b]];
          tmp[r * w + x] = acc;
        }
      }
      __syncthreads();
      T* up = static_cast<T*>(out.up[k]) + plane * static_cast<int64_t>(h) * w;
      const int32_t* uyi = tap_index + L[kUpYOff];
      const float* uyw = tap_weight + L[kUpYOff];
      if ((w & 3) == 0) {
        // Four columns per thread: one load of the row taps and one vector store serve four outputs.
        const int quads = w >> 2;
        for (int y = warp; y < h; y += warps) {
          for (int q = lane; q < quads; q += 32) {
            float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
            for (int a = 0; a < uy_taps; ++a) {
              const float weight = uyw[y * uy_taps + a];
              const float4 v = reinterpret_cast<const float4*>(tmp + uyi[y * uy_taps + a] * w)[q];
              acc.x += weight * v.x; acc.y += weight * v.y; acc.z += weight * v.z; acc.w += weight * v.w;
            }
            store4(up + y * w + 4 * q, acc);
          }
        }
      } else {
        for (int y = warp; y < h; y += warps) {
          for (int x = lane; x < w; x += 32) {
            float acc = 0.0f;
            for (int a = 0; a < uy_taps; ++a) acc += uyw[y * uy_taps + a] * tmp[uyi[y * uy_taps + a] * w + x];
            up[y * w + x] = from_float<T>(acc);
          }
        }
      }
      __syncthreads();  // the next level overwrites tmp
    }
  }
}

void check_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string("degrade_cuda: ") + what + ": " + cudaGetErrorString(status));
  }
}

template <typename T>
void launch(const DegradeArgs& a, cudaStream_t stream) {
  const size_t shared_bytes = static_cast<size_t>(scratch_offset(a.buffer_floats) + a.tmp_floats) * sizeof(float);
  auto kernel = degrade_kernel<T>;
  if (shared_bytes > 48 * 1024) {
    check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared_bytes)),
               "requesting dynamic shared memory (input too large for one block per plane)");
  }
  const int64_t planes = a.n * a.c;
  if (planes == 0) return;
  kernel<<<static_cast<unsigned>(planes), 256, shared_bytes, stream>>>(
      static_cast<const T*>(a.input), static_cast<int>(a.c), static_cast<int>(a.h), static_cast<int>(a.w), a.levels,
      a.num_levels, a.per_image ? 1 : 0, a.tap_index, a.tap_weight, a.out, a.buffer_floats);
  check_cuda(cudaGetLastError(), "kernel launch");
}

}  // namespace

void degrade_cuda(const DegradeArgs& args, void* stream) {
  check_arg(args.num_levels >= 1 && args.num_levels <= kMaxLevels,
            "degrade_cuda: num_levels must be in [1, " + std::to_string(kMaxLevels) + "]");
  auto s = static_cast<cudaStream_t>(stream);
  switch (args.dtype) {
    case DType::Float32: launch<float>(args, s); break;
    case DType::Float16: launch<__half>(args, s); break;
    case DType::BFloat16: launch<__nv_bfloat16>(args, s); break;
    case DType::UInt8: launch<uint8_t>(args, s); break;
  }
}

}  // namespace mrface
