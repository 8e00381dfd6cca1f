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
                        uint64_t seed, bool mask_picked, float logit_scale, uintptr_t indices, uintptr_t scratch) {
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
  return a;
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
         bool mask_picked, float logit_scale, uintptr_t indices) {
        GumbelFpsArgs a = make_args(features, dtype, norms, dim, starts, lengths, sets, max_len, k, gamma,
                                    stochastic, seed, mask_picked, logit_scale, indices, 0);
        py::gil_scoped_release release;
        gumbel_fps_cpu(a);
      },
      "Gumbel farthest point sampling on raw host pointers; writes int64 indices [sets, k].");
#ifdef MRFACE_WITH_CUDA
  m.def("gumbel_fps_cuda_shared_bytes", &gumbel_fps_cuda_shared_bytes, py::arg("max_len"), py::arg("dim"),
        "Dynamic shared memory one block needs when no scratch buffer is given.");
  m.def(
      "gumbel_fps_cuda",
      [](uintptr_t features, int dtype, uintptr_t norms, int64_t dim, uintptr_t starts, uintptr_t lengths,
         int64_t sets, int64_t max_len, int64_t k, uintptr_t gamma, bool stochastic, uint64_t seed,
         bool mask_picked, float logit_scale, uintptr_t indices, uintptr_t scratch, uintptr_t stream) {
        GumbelFpsArgs a = make_args(features, dtype, norms, dim, starts, lengths, sets, max_len, k, gamma,
                                    stochastic, seed, mask_picked, logit_scale, indices, scratch);
        py::gil_scoped_release release;
        gumbel_fps_cuda(a, reinterpret_cast<void*>(stream));
      },
      "Launch Gumbel farthest point sampling on raw device pointers on the given stream.");
#endif
}
