// pybind11 glue for csrc/mv (and its CUDA twins).
#include "bind_util.h"
#include "mv/rasterise.h"
#ifdef EDGEML_WITH_CUDA
#include "cuda/cuda_api.h"
#endif

namespace py = pybind11;
using edgeml::bind::require;
using edgeml::bind::require_positive;

namespace {

py::array_t<float> rasterise(const py::object& rows_obj, int height, int width, int grid, bool on_cuda) {
  auto rows = require<int32_t>(rows_obj, "rows", {-1, edgeml::mv::kRowCols});
  require_positive(height, "height");
  require_positive(width, "width");
  if (grid != 1 && grid != 2 && grid != 4 && grid != 8 && grid != 16) {
    throw py::value_error("grid must be one of 1, 2, 4, 8, 16, got " + std::to_string(grid));
  }
  const int ho = edgeml::mv::cells(height, grid), wo = edgeml::mv::cells(width, grid);
  py::array_t<float> out({2, ho, wo});
  const int32_t* rp = rows.data();
  float* op = out.mutable_data();
  const int64_t n = rows.shape(0);
  if (on_cuda) {
#ifdef EDGEML_WITH_CUDA
    edgeml::cuda::rasterise(rp, n, height, width, grid, op);
#else
    throw std::runtime_error("edgeml._C was built without CUDA (rebuild with EDGEML_CUDA=ON)");
#endif
  } else {
    py::gil_scoped_release release;
    edgeml::mv::rasterise(rp, n, height, width, grid, op);
  }
  return out;
}

}  // namespace

void bind_mv(py::module_& m) {
  m.def("rasterise_mvs", [](const py::object& rows, int height, int width, int grid) {
        return rasterise(rows, height, width, grid, false);
      },
      py::arg("rows"), py::arg("height"), py::arg("width"), py::arg("grid"),
      "Paint block vectors (dst - src) onto a grid.\n\n"
      "rows: int32 [N, 6] (w, h, src_x, src_y, dst_x, dst_y), dst = block centre.\n"
      "Returns float32 [2, ceil(H/grid), ceil(W/grid)]; last covering block wins, uncovered cells are 0.");
  m.def("rasterise_mvs_cuda", [](const py::object& rows, int height, int width, int grid) {
        return rasterise(rows, height, width, grid, true);
      },
      py::arg("rows"), py::arg("height"), py::arg("width"), py::arg("grid"),
      "CUDA twin of rasterise_mvs (host arrays in and out).");
}
