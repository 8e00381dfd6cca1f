// pybind11 bindings of Gumbel farthest point sampling (see mrface/ops/gumbel_fps.py).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "mrface/gumbel_fps.h"

namespace py = pybind11;
using namespace mrface;

namespace {

GumbelFpsArgs make_args(uintptr_t features, int dtype, uintptr_t norms, int64_t dim, uintptr_t starts,
                        uintptr_t lengths, int64_t sets, int64_t max_len, int64_t k, uintptr_t gamma, bool stochastic,
                        uint64_t seed, bool mask_picked, float logit_scale, uintptr_t indices, uintptr_t scratch,
                        int num_threads) {
  check_arg(dtype >= 0 && dtype <= 2, "gumbel_fps: dtype tag must be 0..2, got " + std::to_string(dtype));
  check_arg(dim >= 1, "gumbel_fps: dim must be >= 1, got " + std::to_string(dim));
  check_arg(k >= 1, "gumbel_fps: k must be >= 1, got " + std::to_string(k));
  check_arg(sets >= 0 && max_len >= 1, "gumbel_fps: need sets >= 0 and max_len >= 1");
  GumbelFpsArgs a{};
  a.features = reinterpret_cast<const void*>(features);
  a.dtype = static_cast<DType>(dtype);
  a.norms = reinterpret_cast<const float*>(norms);
  a.dim = dim;
  a.starts = reinterpret_cast<const int64_t*>(starts);
  a.lengths = reinterpret_cast<const int64_t*>(lengths);
  a.sets = sets;
  a.max_len = max_len;
  a.k = k;
  a.gamma = reinterpret_cast<const float*>(gamma);
  a.stochastic = stochastic;
  a.seed = seed;
  a.mask_picked = mask_picked;
  a.logit_scale = logit_scale;
  a.indices = reinterpret_cast<int64_t*>(indices);
  a.scratch = reinterpret_cast<float*>(scratch);
  a.num_threads = num_threads;
  return a;
}

void fill_backward(GumbelFpsBackwardArgs& b, float tau, uintptr_t grad_weights, int64_t gw_set_stride,
                   int64_t gw_start_stride, int64_t gw_step_stride, uintptr_t grad_coreset, uintptr_t grad_features,
                   bool zero_padding_rows, uintptr_t grad_norms, uintptr_t grad_gamma_per_set, int num_threads) {
  check_arg(tau > 0.0f, "gumbel_fps_backward: tau must be > 0");
  b.tau = tau;
  b.grad_weights = reinterpret_cast<const float*>(grad_weights);
  b.gw_set_stride = gw_set_stride;
  b.gw_start_stride = gw_start_stride;
  b.gw_step_stride = gw_step_stride;
  b.grad_coreset = reinterpret_cast<const float*>(grad_coreset);
  b.grad_features = reinterpret_cast<float*>(grad_features);
  b.zero_padding_rows = zero_padding_rows;
  b.grad_norms = reinterpret_cast<float*>(grad_norms);
  b.grad_gamma_per_set = reinterpret_cast<float*>(grad_gamma_per_set);
  b.num_threads = num_threads;
}

py::array_t<float> uniform(uint64_t seed, uint64_t set, uint64_t step, int64_t count) {
  check_arg(count >= 0, "gumbel_fps_uniform: count must be >= 0");
  py::array_t<float> out(static_cast<py::ssize_t>(count));
  const uint64_t stream = gumbel_fps_stream(seed, set, step);
  float* p = out.mutable_data();
  for (int64_t i = 0; i < count; ++i) p[i] = gumbel_fps_uniform(stream, static_cast<uint64_t>(i));
  return out;
}

}  // namespace

void register_gumbel_fps(py::module_& m) {
  m.def("gumbel_fps_uniform", &uniform, py::arg("seed"), py::arg("set"), py::arg("step"), py::arg("count"),
        "The counter-based uniforms in (0, 1) of items 0..count-1 for one (seed, set, step), float32.");
  m.def(
      "gumbel_fps_cpu",
      [](uintptr_t features, int dtype, uintptr_t norms, int64_t dim, uintptr_t starts, uintptr_t lengths,
         int64_t sets, int64_t max_len, int64_t k, uintptr_t gamma, bool stochastic, uint64_t seed,
         bool mask_picked, float logit_scale, uintptr_t indices, int num_threads, uintptr_t coreset,
         uintptr_t weights, int64_t w_set_stride, int64_t w_start_stride, int64_t w_step_stride,
         uintptr_t nonfinite) {
        GumbelFpsArgs a = make_args(features, dtype, norms, dim, starts, lengths, sets, max_len, k, gamma,
                                    stochastic, seed, mask_picked, logit_scale, indices, 0, num_threads);
        a.coreset = reinterpret_cast<float*>(coreset);
        a.weights = reinterpret_cast<float*>(weights);
        a.w_set_stride = w_set_stride;
        a.w_start_stride = w_start_stride;
        a.w_step_stride = w_step_stride;
        a.nonfinite = reinterpret_cast<int32_t*>(nonfinite);
        py::gil_scoped_release release;
        gumbel_fps_cpu(a);
      },
      "Gumbel farthest point sampling on raw host pointers; writes int64 indices [sets, k] and, where the "
      "pointers are not 0, the float32 coreset, the one-hot weights and per-set non-finite flags.");
  m.def(
      "gumbel_fps_backward_cpu",
      [](uintptr_t features, uintptr_t norms, int64_t dim, uintptr_t starts, uintptr_t lengths, int64_t sets,
         int64_t max_len, int64_t k, uintptr_t gamma, bool stochastic, uint64_t seed, bool mask_picked,
         float logit_scale, uintptr_t indices, float tau, uintptr_t grad_weights, int64_t gw_set_stride,
         int64_t gw_start_stride, int64_t gw_step_stride, uintptr_t grad_coreset, uintptr_t grad_features,
         bool zero_padding_rows, uintptr_t grad_norms, uintptr_t grad_gamma_per_set, int num_threads) {
        GumbelFpsBackwardArgs b{};
        b.fwd = make_args(features, 0, norms, dim, starts, lengths, sets, max_len, k, gamma, stochastic, seed,
                          mask_picked, logit_scale, indices, 0, num_threads);
        fill_backward(b, tau, grad_weights, gw_set_stride, gw_start_stride, gw_step_stride, grad_coreset,
                      grad_features, zero_padding_rows, grad_norms, grad_gamma_per_set, num_threads);
        py::gil_scoped_release release;
        gumbel_fps_backward_cpu(b);
      },
      "Backward of Gumbel farthest point sampling on raw host pointers (float32); see gumbel_fps.h.");
#ifdef MRFACE_WITH_CUDA
  m.def("gumbel_fps_cuda_shared_bytes", &gumbel_fps_cuda_shared_bytes, py::arg("max_len"), py::arg("dim"),
        "Dynamic shared memory one block needs when no scratch buffer is given.");
  m.def(
      "gumbel_fps_cuda",
      [](uintptr_t features, int dtype, uintptr_t norms, int64_t dim, uintptr_t starts, uintptr_t lengths,
         int64_t sets, int64_t max_len, int64_t k, uintptr_t gamma, bool stochastic, uint64_t seed,
         bool mask_picked, float logit_scale, uintptr_t indices, uintptr_t scratch, uintptr_t stream) {
        GumbelFpsArgs a = make_args(features, dtype, norms, dim, starts, lengths, sets, max_len, k, gamma,
                                    stochastic, seed, mask_picked, logit_scale, indices, scratch, 0);
        py::gil_scoped_release release;
        gumbel_fps_cuda(a, reinterpret_cast<void*>(stream));
      },
      "Launch Gumbel farthest point sampling on raw device pointers on the given stream.");
  m.def("gumbel_fps_backward_cuda_scratch_floats", &gumbel_fps_backward_cuda_scratch_floats, py::arg("max_len"),
        py::arg("k"), py::arg("dim"), "Floats of global scratch one set needs in the CUDA backward.");
  m.def(
      "gumbel_fps_backward_cuda",
      [](uintptr_t features, int dtype, uintptr_t norms, int64_t dim, uintptr_t starts, uintptr_t lengths,
         int64_t sets, int64_t max_len, int64_t k, uintptr_t gamma, bool stochastic, uint64_t seed, bool mask_picked,
         float logit_scale, uintptr_t indices, float tau, uintptr_t grad_weights, int64_t gw_set_stride,
         int64_t gw_start_stride, int64_t gw_step_stride, uintptr_t grad_coreset, uintptr_t grad_features,
         bool zero_padding_rows, uintptr_t grad_norms, uintptr_t grad_gamma_per_set, uintptr_t scratch,
         uintptr_t stream) {
        GumbelFpsBackwardArgs b{};
        b.fwd = make_args(features, dtype, norms, dim, starts, lengths, sets, max_len, k, gamma, stochastic, seed,
                          mask_picked, logit_scale, indices, scratch, 0);
        fill_backward(b, tau, grad_weights, gw_set_stride, gw_start_stride, gw_step_stride, grad_coreset,
                      grad_features, zero_padding_rows, grad_norms, grad_gamma_per_set, 0);
        py::gil_scoped_release release;
        gumbel_fps_backward_cuda(b, reinterpret_cast<void*>(stream));
      },
      "Launch the backward of Gumbel farthest point sampling on raw device pointers (float32 gradients).");
#endif
}
