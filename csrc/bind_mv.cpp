// pybind11 glue for csrc/mv (and its CUDA twins).
#include <string>
#include <utility>
#include <vector>

#include "bind_util.h"
#include "mv/accumulate.h"
#include "mv/rasterise.h"
#include "mv/residual.h"
#ifdef EDGEML_WITH_CUDA
#include "cuda/cuda_api.h"
#endif

namespace py = pybind11;
using edgeml::bind::require;
using edgeml::bind::require_positive;

namespace {

void check_grid(int grid) {
  if (grid != 1 && grid != 2 && grid != 4 && grid != 8 && grid != 16) {
    throw py::value_error("grid must be one of 1, 2, 4, 8, 16, got " + std::to_string(grid));
  }
}

py::array_t<float> rasterise(const py::object& rows_obj, int height, int width, int grid, bool on_cuda) {
  auto rows = require<int32_t>(rows_obj, "rows", {-1, edgeml::mv::kRowCols});
  require_positive(height, "height");
  require_positive(width, "width");
  check_grid(grid);
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

[[noreturn]] void no_cuda() {
  throw std::runtime_error("edgeml._C was built without CUDA (rebuild with EDGEML_CUDA=ON)");
}

py::array_t<float> accumulate(const py::object& field_obj, const py::object& prev_obj, int height, int width,
                              int grid, bool on_cuda) {
  require_positive(height, "height");
  require_positive(width, "width");
  check_grid(grid);
  const py::ssize_t ho = edgeml::mv::cells(height, grid), wo = edgeml::mv::cells(width, grid);
  auto field = require<float>(field_obj, "field", {2, ho, wo});
  py::array_t<float> prev;
  if (!prev_obj.is_none()) prev = require<float>(prev_obj, "prev", {2, ho, wo});
  py::array_t<float> out({static_cast<py::ssize_t>(2), ho, wo});
  const float* pp = prev_obj.is_none() ? nullptr : prev.data();
  if (on_cuda) {
#ifdef EDGEML_WITH_CUDA
    edgeml::cuda::accumulate(field.data(), pp, height, width, grid, out.mutable_data());
#else
    no_cuda();
#endif
  } else {
    py::gil_scoped_release release;
    edgeml::mv::accumulate(field.data(), pp, height, width, grid, out.mutable_data());
  }
  return out;
}

// A sequence of 2-D uint8 arrays (any positive strides) -> Plane views; the first one is full resolution and
// sets (height, width); the others must be that size or subsampled by 2 per axis (rounded up).
std::vector<edgeml::mv::Plane> planes_of(const py::sequence& seq, const char* name, int& height, int& width,
                                         std::vector<py::array>& keep) {
  if (seq.size() == 0 || seq.size() > 4) {
    throw py::value_error(std::string(name) + ": expected 1 to 4 planes, got " + std::to_string(seq.size()));
  }
  std::vector<edgeml::mv::Plane> out;
  for (size_t c = 0; c < seq.size(); ++c) {
    py::object o = seq[c];
    auto what = [&] { return std::string(name) + "[" + std::to_string(c) + "]"; };  // only built for errors
    if (!py::isinstance<py::array>(o)) throw py::type_error(what() + ": expected a numpy array");
    py::array a = py::reinterpret_borrow<py::array>(o);
    if (!a.dtype().equal(py::dtype::of<uint8_t>())) {
      throw py::type_error(what() + ": expected dtype uint8, got " + std::string(py::str(a.dtype())));
    }
    if (a.ndim() != 2) {
      throw py::value_error(what() + ": expected a 2-D plane, got shape " + edgeml::bind::shape_str(a));
    }
    if (a.strides(0) <= 0 || a.strides(1) <= 0) throw py::value_error(what() + ": strides must be positive");
    const int h = static_cast<int>(a.shape(0)), w = static_cast<int>(a.shape(1));
    if (c == 0) {
      height = h;
      width = w;
      require_positive(h, "plane height");
      require_positive(w, "plane width");
    }
    auto shift = [&](int got, int full, const char* axis) {
      if (got == full) return 0;
      if (got == (full + 1) / 2) return 1;
      throw py::value_error(what() + ": " + axis + " " + std::to_string(got) + " is neither " +
                            std::to_string(full) + " nor half of it");
    };
    const int sy = shift(h, height, "height"), sx = shift(w, width, "width");
    keep.push_back(a);
    out.push_back({static_cast<const uint8_t*>(a.data()), a.strides(0), a.strides(1), sy, sx});
  }
  return out;
}

const float* field_of(const py::object& obj, int height, int width, int grid, py::array_t<float>& keep) {
  if (obj.is_none()) return nullptr;
  keep = require<float>(obj, "field", {2, edgeml::mv::cells(height, grid), edgeml::mv::cells(width, grid)});
  return keep.data();
}

// cur and ref planes, checked to match: (cur, ref) with (height, width) of the first plane.
std::pair<std::vector<edgeml::mv::Plane>, std::vector<edgeml::mv::Plane>> plane_pair(
    const py::sequence& cur_seq, const py::sequence& ref_seq, int& h, int& w, std::vector<py::array>& keep) {
  int h2 = 0, w2 = 0;
  auto cur = planes_of(cur_seq, "cur", h, w, keep);
  auto ref = planes_of(ref_seq, "ref", h2, w2, keep);
  if (cur.size() != ref.size() || h != h2 || w != w2) {
    throw py::value_error("cur and ref must have the same number of planes and the same size");
  }
  for (size_t c = 0; c < cur.size(); ++c) {
    if (cur[c].shift_y != ref[c].shift_y || cur[c].shift_x != ref[c].shift_x) {
      throw py::value_error("cur and ref planes " + std::to_string(c) + " differ in subsampling");
    }
  }
  return {std::move(cur), std::move(ref)};
}

// The residual of parsed planes into a fresh array or the caller's `out` (C-contiguous int16 [C, H, W]).
py::array_t<int16_t> residual_of(const std::vector<edgeml::mv::Plane>& cur, const std::vector<edgeml::mv::Plane>& ref,
                                 int h, int w, const float* f, int grid, bool on_cuda, const py::object& out_obj) {
  const int channels = static_cast<int>(cur.size());
  py::array_t<int16_t> out;
  if (out_obj.is_none()) {
    out = py::array_t<int16_t>({static_cast<py::ssize_t>(channels), static_cast<py::ssize_t>(h),
                                static_cast<py::ssize_t>(w)});
  } else {  // write into the caller's buffer (e.g. one slice of a preallocated [N, C, H, W] array): no copy later
    out = require<int16_t>(out_obj, "out", {channels, h, w});
    if (!out.writeable()) throw py::value_error("out: array is read-only");
  }
  if (on_cuda) {
#ifdef EDGEML_WITH_CUDA
    edgeml::cuda::residual(cur.data(), ref.data(), channels, f, h, w, grid, out.mutable_data());
#else
    no_cuda();
#endif
  } else {
    py::gil_scoped_release release;
    edgeml::mv::residual(cur.data(), ref.data(), channels, f, h, w, grid, out.mutable_data());
  }
  return out;
}

py::array_t<int16_t> residual(const py::sequence& cur_seq, const py::sequence& ref_seq, const py::object& field_obj,
                              int grid, bool on_cuda, const py::object& out_obj = py::none()) {
  check_grid(grid);
  std::vector<py::array> keep;
  int h = 0, w = 0;
  auto [cur, ref] = plane_pair(cur_seq, ref_seq, h, w, keep);
  py::array_t<float> fkeep;
  const float* f = field_of(field_obj, h, w, grid, fkeep);
  return residual_of(cur, ref, h, w, f, grid, on_cuda, out_obj);
}

py::array_t<uint8_t> warp(const py::sequence& ref_seq, const py::object& field_obj, int grid, bool on_cuda) {
  check_grid(grid);
  std::vector<py::array> keep;
  int h = 0, w = 0;
  auto ref = planes_of(ref_seq, "ref", h, w, keep);
  py::array_t<float> fkeep;
  const float* f = field_of(field_obj, h, w, grid, fkeep);
  const int channels = static_cast<int>(ref.size());
  py::array_t<uint8_t> out({static_cast<py::ssize_t>(channels), static_cast<py::ssize_t>(h),
                            static_cast<py::ssize_t>(w)});
  if (on_cuda) {
#ifdef EDGEML_WITH_CUDA
    edgeml::cuda::warp(ref.data(), channels, f, h, w, grid, out.mutable_data());
#else
    no_cuda();
#endif
  } else {
    py::gil_scoped_release release;
    edgeml::mv::warp(ref.data(), channels, f, h, w, grid, out.mutable_data());
  }
  return out;
}

// One P-frame in one call (the extraction fast path: per-call overhead matters at small frame sizes):
// rasterise its rows, optionally chain to the I-frame, then the residual against `ref`.
py::tuple p_step(const py::object& rows_obj, const py::sequence& cur_seq, const py::sequence& ref_seq,
                 const py::object& prev_obj, int grid, bool accumulate, const py::object& out_obj, bool on_cuda) {
  check_grid(grid);
  auto rows = require<int32_t>(rows_obj, "rows", {-1, edgeml::mv::kRowCols});
  std::vector<py::array> keep;
  int h = 0, w = 0;
  auto [cur, ref] = plane_pair(cur_seq, ref_seq, h, w, keep);
  const py::ssize_t ho = edgeml::mv::cells(h, grid), wo = edgeml::mv::cells(w, grid);
  py::array_t<float> field({static_cast<py::ssize_t>(2), ho, wo});
  py::array_t<float> prev;
  const bool chained = accumulate && !prev_obj.is_none();
  if (chained) prev = require<float>(prev_obj, "prev", {2, ho, wo});
  const int64_t n = rows.shape(0);
  if (on_cuda) {
#ifdef EDGEML_WITH_CUDA
    edgeml::cuda::rasterise(rows.data(), n, h, w, grid, field.mutable_data());
    if (chained) edgeml::cuda::accumulate(field.data(), prev.data(), h, w, grid, field.mutable_data());
#else
    no_cuda();
#endif
  } else {
    py::gil_scoped_release release;
    edgeml::mv::rasterise(rows.data(), n, h, w, grid, field.mutable_data());
    if (chained) edgeml::mv::accumulate(field.data(), prev.data(), h, w, grid, field.mutable_data());
  }
  auto res = residual_of(cur, ref, h, w, field.data(), grid, on_cuda, out_obj);
  return py::make_tuple(field, res);
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
  const char* acc_doc =
      "One accumulation step back to the I-frame.\n\n"
      "field, prev: float32 [2, ceil(H/grid), ceil(W/grid)] (prev None: the previous frame is the I-frame).\n"
      "out(p) = field(p) + prev(cell of clamp(p - field(p))); cell (i, j) stands for pixel (i*grid, j*grid).";
  m.def("accumulate_mvs", [](const py::object& f, const py::object& p, int h, int w, int g) {
        return accumulate(f, p, h, w, g, false);
      }, py::arg("field"), py::arg("prev"), py::arg("height"), py::arg("width"), py::arg("grid"), acc_doc);
  m.def("accumulate_mvs_cuda", [](const py::object& f, const py::object& p, int h, int w, int g) {
        return accumulate(f, p, h, w, g, true);
      }, py::arg("field"), py::arg("prev"), py::arg("height"), py::arg("width"), py::arg("grid"),
      "CUDA twin of accumulate_mvs (host arrays in and out).");
  const char* res_doc =
      "Residual of planar images: cur - ref warped by field (nearest, clamped at borders).\n\n"
      "cur, ref: sequences of 2-D uint8 planes (any strides; the first is full size H x W, others may be\n"
      "subsampled by 2, e.g. YUV 4:2:0, and are upsampled by repetition). field: float32\n"
      "[2, ceil(H/grid), ceil(W/grid)] or None (zero). Returns int16 [C, H, W] (written into `out` when given, a\n"
      "C-contiguous int16 [C, H, W] array); cur == out + warp(ref) exactly.";
  m.def("residual", [](const py::sequence& c, const py::sequence& r, const py::object& f, int g,
                        const py::object& out) { return residual(c, r, f, g, false, out); },
        py::arg("cur"), py::arg("ref"), py::arg("field"), py::arg("grid"), py::arg("out") = py::none(), res_doc);
  m.def("residual_cuda", [](const py::sequence& c, const py::sequence& r, const py::object& f, int g,
                             const py::object& out) { return residual(c, r, f, g, true, out); },
        py::arg("cur"), py::arg("ref"), py::arg("field"), py::arg("grid"), py::arg("out") = py::none(),
        "CUDA twin of residual.");
  const char* step_doc =
      "One P-frame: rasterise rows (int32 [N, 6]) on the grid, chain to the I-frame when accumulate (prev: the\n"
      "previous accumulated field, None on the GOP's first P-frame), residual of cur against ref (planes as in\n"
      "residual). Returns (field float32 [2, H/g, W/g], residual int16 [C, H, W]) == the three kernels in turn.";
  m.def("p_step", [](const py::object& rows, const py::sequence& cur, const py::sequence& ref, const py::object& prev,
                     int grid, bool accumulate, const py::object& out) {
        return p_step(rows, cur, ref, prev, grid, accumulate, out, false);
      }, py::arg("rows"), py::arg("cur"), py::arg("ref"), py::arg("prev"), py::arg("grid"), py::arg("accumulate"),
      py::arg("out") = py::none(), step_doc);
  m.def("p_step_cuda", [](const py::object& rows, const py::sequence& cur, const py::sequence& ref,
                          const py::object& prev, int grid, bool accumulate, const py::object& out) {
        return p_step(rows, cur, ref, prev, grid, accumulate, out, true);
      }, py::arg("rows"), py::arg("cur"), py::arg("ref"), py::arg("prev"), py::arg("grid"), py::arg("accumulate"),
      py::arg("out") = py::none(), "CUDA twin of p_step.");
  m.def("warp", [](const py::sequence& r, const py::object& f, int g) { return warp(r, f, g, false); },
        py::arg("ref"), py::arg("field"), py::arg("grid"),
        "ref planes warped by field (nearest, clamped) -> uint8 [C, H, W] at full resolution.");
  m.def("warp_cuda", [](const py::sequence& r, const py::object& f, int g) { return warp(r, f, g, true); },
        py::arg("ref"), py::arg("field"), py::arg("grid"), "CUDA twin of warp.");
}
