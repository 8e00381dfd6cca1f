// The single pybind11 module mrface._C: every kernel family registers its functions here.
// Tensors arrive as data_ptr() integers plus sizes; the GIL is released around every kernel.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "mrface/common.h"

namespace py = pybind11;

void register_resize(py::module_& m);
void register_gumbel_fps(py::module_& m);

namespace {

py::dict build_info() {
  py::dict info;
#ifdef MRFACE_WITH_CUDA
  info["cuda"] = true;
  info["cuda_archs"] = std::string(MRFACE_CUDA_ARCHS);
  info["cuda_version"] = std::string(MRFACE_CUDA_VERSION);
#else
  info["cuda"] = false;
  info["cuda_archs"] = std::string();
  info["cuda_version"] = std::string();
#endif
#ifdef MRFACE_WITH_OPENMP
  info["openmp"] = true;
#else
  info["openmp"] = false;
#endif
  info["compiler"] = std::string(MRFACE_COMPILER);
  return info;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "mrface compiled kernels (C++ CPU and optional CUDA), framework-free";
  m.def("build_info", &build_info, "What this build of mrface._C contains: CUDA, archs, OpenMP, compiler.");
  register_resize(m);
  register_gumbel_fps(m);
}
