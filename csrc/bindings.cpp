// edgeml._C: the compiled core. Each area binds itself in its own bind_*.cpp.
#include <pybind11/pybind11.h>
#ifdef EDGEML_WITH_CUDA
#include "cuda/cuda_api.h"
#endif

namespace py = pybind11;

void bind_mv(py::module_& m);
void bind_lls(py::module_& m);

PYBIND11_MODULE(_C, m) {
  m.doc() = "edgeml compiled core: C++17 kernels over numpy buffers (CUDA twins when built with nvcc)";
#ifdef EDGEML_WITH_CUDA
  m.attr("cuda_built") = true;
  m.def("cuda_device_count", &edgeml::cuda::device_count, "Number of visible CUDA devices (0 if none).");
#else
  m.attr("cuda_built") = false;
  m.def("cuda_device_count", []() { return 0; }, "Number of visible CUDA devices (0: built without CUDA).");
#endif
  bind_mv(m);
  bind_lls(m);
}
