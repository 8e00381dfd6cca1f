// pybind11 bindings of the resize family: tap tables and the degradation kernels.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "mrface/resize.h"

namespace py = pybind11;
using namespace mrface;

namespace {

py::tuple taps(int64_t in_size, int64_t out_size, int filter) {
  ResizeTaps t = resize_taps(in_size, out_size, static_cast<ResizeFilter>(filter));
  const std::vector<py::ssize_t> shape{static_cast<py::ssize_t>(out_size), static_cast<py::ssize_t>(t.taps)};
  py::array_t<int32_t> index(shape);
  py::array_t<float> weight(shape);
  std::copy(t.index.begin(), t.index.end(), index.mutable_data());
  std::copy(t.weight.begin(), t.weight.end(), weight.mutable_data());
  return py::make_tuple(index, weight);
}

DegradeArgs make_args(uintptr_t input, int dtype, int64_t n, int64_t c, int64_t h, int64_t w, uintptr_t levels,
                      int num_levels, bool per_image, uintptr_t tap_index, uintptr_t tap_weight,
                      const std::vector<uintptr_t>& down, const std::vector<uintptr_t>& up, int64_t buffer_floats,
                      int64_t tmp_floats) {
  check_arg(dtype >= 0 && dtype <= 3, "degrade: dtype tag must be 0..3, got " + std::to_string(dtype));
  check_arg(num_levels >= 1 && num_levels <= kMaxLevels, "degrade: num_levels must be in [1, 8]");
  check_arg(down.size() == static_cast<size_t>(num_levels) && up.size() == static_cast<size_t>(num_levels),
            "degrade: need one down and one up pointer (0 for none) per level");
  DegradeArgs a{};
  a.input = reinterpret_cast<const void*>(input);
  a.dtype = static_cast<DType>(dtype);
  a.n = n; a.c = c; a.h = h; a.w = w;
  a.levels = reinterpret_cast<const int32_t*>(levels);
  a.num_levels = num_levels;
  a.per_image = per_image;
  a.tap_index = reinterpret_cast<const int32_t*>(tap_index);
  a.tap_weight = reinterpret_cast<const float*>(tap_weight);
  for (int k = 0; k < kMaxLevels; ++k) {
    a.out.down[k] = k < num_levels ? reinterpret_cast<void*>(down[k]) : nullptr;
    a.out.up[k] = k < num_levels ? reinterpret_cast<void*>(up[k]) : nullptr;
  }
  a.buffer_floats = buffer_floats;
  a.tmp_floats = tmp_floats;
  return a;
}

}  // namespace

void register_resize(py::module_& m) {
  m.def("resize_taps", &taps, py::arg("in_size"), py::arg("out_size"), py::arg("filter"),
        "Tap table (index int32 [out, taps], weight float32 [out, taps]) resizing one axis.");
  m.def(
      "degrade_cpu",
      [](uintptr_t input, int dtype, int64_t n, int64_t c, int64_t h, int64_t w, uintptr_t levels, int num_levels,
         bool per_image, uintptr_t tap_index, uintptr_t tap_weight, const std::vector<uintptr_t>& down,
         const std::vector<uintptr_t>& up, int64_t buffer_floats, int64_t tmp_floats, int num_threads) {
        DegradeArgs a = make_args(input, dtype, n, c, h, w, levels, num_levels, per_image, tap_index, tap_weight, down,
                                  up, buffer_floats, tmp_floats);
        a.num_threads = num_threads;
        py::gil_scoped_release release;
        degrade_cpu(a);
      },
      "Run the CPU degradation kernel on raw host pointers (see mrface/ops/degrade.py).");
#ifdef MRFACE_WITH_CUDA
  m.def(
      "degrade_cuda",
      [](uintptr_t input, int dtype, int64_t n, int64_t c, int64_t h, int64_t w, uintptr_t levels, int num_levels,
         bool per_image, uintptr_t tap_index, uintptr_t tap_weight, const std::vector<uintptr_t>& down,
         const std::vector<uintptr_t>& up, int64_t buffer_floats, int64_t tmp_floats, uintptr_t stream) {
        DegradeArgs a = make_args(input, dtype, n, c, h, w, levels, num_levels, per_image, tap_index, tap_weight, down,
                                  up, buffer_floats, tmp_floats);
        py::gil_scoped_release release;
        degrade_cuda(a, reinterpret_cast<void*>(stream));
      },
      "Launch the CUDA degradation kernel on raw device pointers on the given stream.");
#endif
}
