// Cross-resolution degradation: separable resampling driven by precomputed tap tables.
//
// A resize of one axis from `in` to `out` samples is a table of `taps` (index, weight) pairs per
// output sample: out[i] = sum_t weight[i, t] * in[index[i, t]]. A 2-D resize applies the x table to
// every row, then the y table to every column. Every filter mrface offers is such a table, so one
// kernel serves them all; the tables are built once on the host (resize_taps) and cached by Python.
#pragma once

#include <cstdint>
#include <vector>

#include "mrface/common.h"

namespace mrface {

// Numbers are part of the Python binding's contract (mrface/ops/degrade.py FILTERS).
enum class ResizeFilter : int {
  Nearest = 0,     // cv2 INTER_NEAREST / torch 'nearest': index floor(i * in / out)
  Bilinear = 1,    // cv2 INTER_LINEAR / torch 'bilinear' (align_corners=False, no antialias)
  Bicubic = 2,     // torch 'bicubic' (align_corners=False, a = -0.75, no antialias)
  Area = 3,        // cv2 INTER_AREA: fractional pixel-area coverage (downsampling only)
  BilinearAA = 4,  // PIL BILINEAR / torch 'bilinear' antialias=True: triangle widened by the scale
  BicubicAA = 5,   // PIL BICUBIC / torch 'bicubic' antialias=True: a = -0.5 kernel widened by the scale
  Lanczos = 6,     // cv2 INTER_LANCZOS4: 8 taps sinc(d) sinc(d / 4), normalised, no antialias, edge replicated
};

struct ResizeTaps {
  int64_t taps = 0;              // entries per output sample
  std::vector<int32_t> index;    // [out, taps], always a valid input index
  std::vector<float> weight;     // [out, taps], unused entries have weight 0
};

// Tap table resizing one axis from in_size to out_size samples. Throws std::invalid_argument on
// non-positive sizes or on Area asked to upsample.
ResizeTaps resize_taps(int64_t in_size, int64_t out_size, ResizeFilter filter);

// One output level of the degradation op, as int32 fields of the level table.
// source: -1 reads the input image; k >= 0 reads down level k of the same image (cascade, k < this
// level). Tap offsets index the flat tap arrays; the y/x tables resize source -> (out_h, out_w),
// the up tables resize (out_h, out_w) -> (H, W) (up_y_taps == 0: no up image). buf_off is where the
// level's float plane lives in the per-plane scratch buffer.
enum LevelField : int {
  kSource = 0, kOutH, kOutW, kSrcH, kSrcW,
  kYOff, kYTaps, kXOff, kXTaps,
  kUpYOff, kUpYTaps, kUpXOff, kUpXTaps,
  kBufOff,
  kLevelFields
};

constexpr int kMaxLevels = 8;
// CUDA: a down level whose y_taps * x_taps is at most this is computed from its 2-D window directly,
// otherwise separably through a scratch of src_h * out_w floats; an up pass needs out_h * W floats
// (mrface/ops/degrade.py sizes the scratch).
constexpr int kDirectTaps = 16;

// Output pointers per level (nullptr: not written). Down level k is (planes, out_h, out_w), up
// level k is (planes, H, W), planes = N * C, contiguous.
struct LevelPointers {
  void* down[kMaxLevels];
  void* up[kMaxLevels];
};

struct DegradeArgs {
  const void* input;          // (N, C, H, W) contiguous
  DType dtype;                // of input and every output
  int64_t n, c, h, w;
  const int32_t* levels;      // [sets, num_levels, kLevelFields]; sets = n if per_image else 1
  int num_levels;
  bool per_image;
  const int32_t* tap_index;   // flat tap arrays referenced by the level table
  const float* tap_weight;
  LevelPointers out;
  int64_t buffer_floats;      // per-plane scratch: sum of level planes (kBufOff + out_h * out_w)
  int num_threads;            // CPU only: OpenMP threads (callers pass torch.get_num_threads())
  int64_t tmp_floats;         // CUDA per-plane scratch (see kDirectTaps)
};

// CPU: OpenMP over planes. Pointers are host pointers.
void degrade_cpu(const DegradeArgs& args);

#ifdef MRFACE_WITH_CUDA
// CUDA: one block per plane, levels kept in shared memory (cascades and up passes read it there).
// Pointers are device pointers; `stream` is a cudaStream_t. Throws std::runtime_error on CUDA errors.
void degrade_cuda(const DegradeArgs& args, void* stream);
#endif

}  // namespace mrface
