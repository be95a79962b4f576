// pybind11 glue for csrc/mv (and its CUDA twins).
#include <cstring>
#include <memory>
#include <tuple>
#include <string>
#include <utility>
#include <vector>

#include "bind_util.h"
#include "mv/accumulate.h"
#include "mv/extract.h"
#include "mv/rasterise.h"
#include "mv/resample.h"
#include "mv/residual.h"
#include "mv/simd.h"
#ifdef EDGEML_WITH_CUDA
#include "cuda/cuda_api.h"
#endif

namespace py = pybind11;
using edgeml::bind::require;
using edgeml::bind::require_positive;

namespace {

[[noreturn]] void no_cuda() {
  throw std::runtime_error("edgeml._C was built without CUDA (rebuild with EDGEML_CUDA=ON)");
}

// The CUDA-or-CPU choice of every binding: `gpu()` when on_cuda (host arrays in and out), else `cpu()` with the GIL
// released.
template <class Gpu, class Cpu>
void on_device(bool on_cuda, Gpu&& gpu, Cpu&& cpu) {
  if (on_cuda) {
    gpu();
  } else {
    py::gil_scoped_release release;
    cpu();
  }
}

// edgeml::cuda::fn(args...) when on_cuda (no_cuda() in a build without CUDA), else edgeml::mv::fn(args...).
#ifdef EDGEML_WITH_CUDA
#define EDGEML_MV_CALL(on_cuda, fn, ...) \
  on_device((on_cuda), [&] { edgeml::cuda::fn(__VA_ARGS__); }, [&] { edgeml::mv::fn(__VA_ARGS__); })
#else
#define EDGEML_MV_CALL(on_cuda, fn, ...) on_device((on_cuda), [] { no_cuda(); }, [&] { edgeml::mv::fn(__VA_ARGS__); })
#endif

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
  EDGEML_MV_CALL(on_cuda, rasterise, rp, n, height, width, grid, op);
  return out;
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
  EDGEML_MV_CALL(on_cuda, accumulate, field.data(), pp, height, width, grid, out.mutable_data());
  return out;
}

// Where the planes' memory is held during a call: numpy arrays, or buffer views of other objects (av.VideoPlane).
struct Keep {
  std::vector<py::array> arrays;
  std::vector<std::unique_ptr<py::buffer_info>> buffers;
};

// A sequence of planes -> Plane views; each is a 2-D uint8 numpy array (any positive strides) or an object with the
// buffer protocol and `width`, `height`, `line_size` attributes (an av.VideoPlane: the decoder's own memory, no
// copy). The first one is full resolution and sets (height, width); the others must be that size or subsampled by
// 2 per axis (rounded up).
std::vector<edgeml::mv::Plane> planes_of(const py::sequence& seq, const char* name, int& height, int& width,
                                         Keep& keep) {
  if (seq.size() == 0 || seq.size() > 4) {
    throw py::value_error(std::string(name) + ": expected 1 to 4 planes, got " + std::to_string(seq.size()));
  }
  std::vector<edgeml::mv::Plane> out;
  for (size_t c = 0; c < seq.size(); ++c) {
    py::object o = seq[c];
    auto what = [&] { return std::string(name) + "[" + std::to_string(c) + "]"; };  // only built for errors
    const uint8_t* data = nullptr;
    int64_t row_stride = 0, col_stride = 1;
    int h = 0, w = 0;
    if (py::isinstance<py::array>(o)) {
      py::array a = py::reinterpret_borrow<py::array>(o);
      if (!a.dtype().equal(py::dtype::of<uint8_t>())) {
        throw py::type_error(what() + ": expected dtype uint8, got " + std::string(py::str(a.dtype())));
      }
      if (a.ndim() != 2) {
        throw py::value_error(what() + ": expected a 2-D plane, got shape " + edgeml::bind::shape_str(a));
      }
      if (a.strides(0) <= 0 || a.strides(1) <= 0) throw py::value_error(what() + ": strides must be positive");
      h = static_cast<int>(a.shape(0));
      w = static_cast<int>(a.shape(1));
      data = static_cast<const uint8_t*>(a.data());
      row_stride = a.strides(0);
      col_stride = a.strides(1);
      keep.arrays.push_back(a);
    } else if (PyObject_CheckBuffer(o.ptr()) && py::hasattr(o, "line_size")) {
      h = o.attr("height").cast<int>();
      w = o.attr("width").cast<int>();
      row_stride = o.attr("line_size").cast<int64_t>();
      keep.buffers.push_back(std::make_unique<py::buffer_info>(py::reinterpret_borrow<py::buffer>(o).request()));
      const py::buffer_info& info = *keep.buffers.back();
      if (h <= 0 || w <= 0 || row_stride < w || info.size * info.itemsize < (h - 1) * row_stride + w) {
        throw py::value_error(what() + ": its buffer is smaller than height x line_size");
      }
      data = static_cast<const uint8_t*>(info.ptr);
    } else {
      throw py::type_error(what() + ": expected a numpy array or a video plane (buffer with width/height/line_size)");
    }
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
    out.push_back({data, row_stride, col_stride, sy, sx});
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
    const py::sequence& cur_seq, const py::sequence& ref_seq, int& h, int& w, Keep& keep) {
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

// A fresh int16 [C, H, W] array, or the caller's `out` checked to be one (e.g. one slice of a preallocated
// [N, C, H, W] array: no copy later).
py::array_t<int16_t> checked_out16(const py::object& out_obj, int channels, int h, int w) {
  if (out_obj.is_none()) {
    return py::array_t<int16_t>({static_cast<py::ssize_t>(channels), static_cast<py::ssize_t>(h),
                                 static_cast<py::ssize_t>(w)});
  }
  auto out = require<int16_t>(out_obj, "out", {channels, h, w});
  if (!out.writeable()) throw py::value_error("out: array is read-only");
  return out;
}

// The inputs of the residual bindings, parsed and checked: matching cur/ref planes (memory held by keep), their
// (h, w) and the field (nullptr for none).
struct ResidualInputs {
  Keep keep;
  std::vector<edgeml::mv::Plane> cur, ref;
  int h = 0, w = 0;
  py::array_t<float> fkeep;
  const float* f = nullptr;
};

void residual_inputs(const py::sequence& cur_seq, const py::sequence& ref_seq, const py::object& field_obj, int grid,
                     ResidualInputs& in) {
  check_grid(grid);
  std::tie(in.cur, in.ref) = plane_pair(cur_seq, ref_seq, in.h, in.w, in.keep);
  in.f = field_of(field_obj, in.h, in.w, grid, in.fkeep);
}

// The residual of parsed planes into a fresh array or the caller's `out` (C-contiguous int16 [C, H, W]).
py::array_t<int16_t> residual_of(const std::vector<edgeml::mv::Plane>& cur, const std::vector<edgeml::mv::Plane>& ref,
                                 int h, int w, const float* f, int grid, bool on_cuda, const py::object& out_obj) {
  const int channels = static_cast<int>(cur.size());
  auto out = checked_out16(out_obj, channels, h, w);
  EDGEML_MV_CALL(on_cuda, residual, cur.data(), ref.data(), channels, f, h, w, grid, out.mutable_data());
  return out;
}

py::array_t<int16_t> residual(const py::sequence& cur_seq, const py::sequence& ref_seq, const py::object& field_obj,
                              int grid, bool on_cuda, const py::object& out_obj = py::none()) {
  ResidualInputs in;
  residual_inputs(cur_seq, ref_seq, field_obj, grid, in);
  return residual_of(in.cur, in.ref, in.h, in.w, in.f, grid, on_cuda, out_obj);
}

py::array_t<uint8_t> warp(const py::sequence& ref_seq, const py::object& field_obj, int grid, bool on_cuda) {
  check_grid(grid);
  Keep keep;
  int h = 0, w = 0;
  auto ref = planes_of(ref_seq, "ref", h, w, keep);
  py::array_t<float> fkeep;
  const float* f = field_of(field_obj, h, w, grid, fkeep);
  const int channels = static_cast<int>(ref.size());
  py::array_t<uint8_t> out({static_cast<py::ssize_t>(channels), static_cast<py::ssize_t>(h),
                            static_cast<py::ssize_t>(w)});
  EDGEML_MV_CALL(on_cuda, warp, ref.data(), channels, f, h, w, grid, out.mutable_data());
  return out;
}

// One P-frame in one call (the extraction fast path: per-call overhead matters at small frame sizes):
// rasterise its rows, optionally chain to the I-frame, then the residual against `ref`.
py::tuple p_step(const py::object& rows_obj, const py::sequence& cur_seq, const py::sequence& ref_seq,
                 const py::object& prev_obj, int grid, bool accumulate, const py::object& out_obj, bool on_cuda) {
  check_grid(grid);
  auto rows = require<int32_t>(rows_obj, "rows", {-1, edgeml::mv::kRowCols});
  Keep keep;
  int h = 0, w = 0;
  auto [cur, ref] = plane_pair(cur_seq, ref_seq, h, w, keep);
  const py::ssize_t ho = edgeml::mv::cells(h, grid), wo = edgeml::mv::cells(w, grid);
  py::array_t<float> field({static_cast<py::ssize_t>(2), ho, wo});
  py::array_t<float> prev;
  const bool chained = accumulate && !prev_obj.is_none();
  if (chained) prev = require<float>(prev_obj, "prev", {2, ho, wo});
  const int64_t n = rows.shape(0);
  EDGEML_MV_CALL(on_cuda, rasterise, rows.data(), n, h, w, grid, field.mutable_data());
  if (chained) EDGEML_MV_CALL(on_cuda, accumulate, field.data(), prev.data(), h, w, grid, field.mutable_data());
  auto res = residual_of(cur, ref, h, w, field.data(), grid, on_cuda, out_obj);
  return py::make_tuple(field, res);
}

// (y0, x0, hs, ws) of a native height x width frame and the output size (H, W) -> a checked Window.
edgeml::mv::Window window_of(const py::object& window, const py::object& size, int height, int width) {
  auto ints = [](const py::object& o) {
    std::vector<int> v;
    if (!py::isinstance<py::sequence>(o) || py::isinstance<py::str>(o)) return v;
    for (const py::handle item : py::reinterpret_borrow<py::sequence>(o)) v.push_back(item.cast<int>());
    return v;
  };
  const auto win = ints(window), out = ints(size);
  if (win.size() != 4 || out.size() != 2) throw py::value_error("window must be (y0, x0, hs, ws) and size (H, W)");
  const edgeml::mv::Window w{win[0], win[1], win[2], win[3], out[0], out[1]};
  if (w.y0 < 0 || w.x0 < 0 || w.hs < 1 || w.ws < 1 || w.y0 + w.hs > height || w.x0 + w.ws > width) {
    throw py::value_error("window (" + std::to_string(w.y0) + ", " + std::to_string(w.x0) + ", " +
                          std::to_string(w.hs) + ", " + std::to_string(w.ws) + ") is not inside the " +
                          std::to_string(height) + "x" + std::to_string(width) + " frame");
  }
  if (w.out_h < 1 || w.out_w < 1 || w.out_h > w.hs || w.out_w > w.ws) {
    throw py::value_error("size " + std::to_string(w.out_h) + "x" + std::to_string(w.out_w) +
                          " must be positive and at most the window " + std::to_string(w.hs) + "x" +
                          std::to_string(w.ws) + " (outputs are area means, never upsampled)");
  }
  return w;
}

bool is_identity(const edgeml::mv::Window& w, int height, int width) {
  return w.y0 == 0 && w.x0 == 0 && w.hs == height && w.ws == width && w.out_h == height && w.out_w == width;
}

// The model grid's shape: the native field's own for an identity window, else (H/g, W/g) with g dividing H and W.
std::pair<py::ssize_t, py::ssize_t> model_cells(const edgeml::mv::Window& w, int height, int width, int grid) {
  if (is_identity(w, height, width)) return {edgeml::mv::cells(height, grid), edgeml::mv::cells(width, grid)};
  if (w.out_h % grid || w.out_w % grid) {
    throw py::value_error("grid " + std::to_string(grid) + " must divide the size " + std::to_string(w.out_h) + "x" +
                          std::to_string(w.out_w));
  }
  return {w.out_h / grid, w.out_w / grid};
}

py::array_t<int16_t> residual_pooled(const py::sequence& cur_seq, const py::sequence& ref_seq,
                                     const py::object& field_obj, int grid, const py::object& window,
                                     const py::object& size, bool on_cuda, const py::object& out_obj) {
  ResidualInputs in;
  residual_inputs(cur_seq, ref_seq, field_obj, grid, in);
  const auto win = window_of(window, size, in.h, in.w);
  const int channels = static_cast<int>(in.cur.size());
  auto out = checked_out16(out_obj, channels, win.out_h, win.out_w);
  EDGEML_MV_CALL(on_cuda, residual_pooled, in.cur.data(), in.ref.data(), channels, in.f, in.h, in.w, grid, win,
                 out.mutable_data());
  return out;
}

py::array_t<float> pool_field(const py::object& field_obj, int height, int width, int grid, const py::object& window,
                              const py::object& size, bool on_cuda) {
  require_positive(height, "height");
  require_positive(width, "width");
  check_grid(grid);
  auto field = require<float>(field_obj, "field", {2, edgeml::mv::cells(height, grid),
                                                   edgeml::mv::cells(width, grid)});
  const auto win = window_of(window, size, height, width);
  const auto [mh, mw] = model_cells(win, height, width, grid);
  py::array_t<float> out({static_cast<py::ssize_t>(2), mh, mw});
  EDGEML_MV_CALL(on_cuda, pool_field, field.data(), height, width, grid, win, out.mutable_data());
  return out;
}

// libavcodec's AVMotionVector (libavutil/motion_vector.h), as MOTION_VECTORS side data lays it out.
constexpr size_t kAVMotionVectorBytes = 40;

// Motion vectors -> int32 [n, 6] rows predicted from an earlier frame (source < 0): from rows already in that form
// (a numpy int32 [N, 6] array) or straight from the side data's bytes (anything with the buffer protocol, 40 bytes
// per AVMotionVector), so no per-frame numpy conversion is needed.
struct Rows {
  py::array_t<int32_t> array;
  std::unique_ptr<py::buffer_info> raw;
  std::vector<int32_t> parsed;
  const int32_t* data = nullptr;
  int64_t n = 0;
};

// storage: where parsed side data goes (a caller's buffer kept across frames: no allocation per frame), else rows.parsed.
void rows_of(const py::object& obj, Rows& rows, std::vector<int32_t>* storage = nullptr) {
  if (obj.is_none()) return;
  if (py::isinstance<py::array>(obj) && py::reinterpret_borrow<py::array>(obj).dtype().equal(py::dtype::of<int32_t>())) {
    rows.array = require<int32_t>(obj, "mvs", {-1, edgeml::mv::kRowCols});
    rows.data = rows.array.data();
    rows.n = rows.array.shape(0);
    return;
  }
  if (!PyObject_CheckBuffer(obj.ptr())) {
    throw py::type_error("mvs: expected int32 [N, 6] rows, MOTION_VECTORS side data or None");
  }
  rows.raw = std::make_unique<py::buffer_info>(py::reinterpret_borrow<py::buffer>(obj).request());
  const size_t bytes = static_cast<size_t>(rows.raw->size * rows.raw->itemsize);
  if (bytes % kAVMotionVectorBytes) {
    throw py::value_error("mvs: " + std::to_string(bytes) + " bytes is not a whole number of AVMotionVector rows (40 B)");
  }
  const auto* p = static_cast<const uint8_t*>(rows.raw->ptr);
  const size_t n = bytes / kAVMotionVectorBytes;
  std::vector<int32_t>& parsed = storage ? *storage : rows.parsed;
  parsed.resize(n * edgeml::mv::kRowCols);  // sized once, written through a pointer (no per-row insert)
  int32_t* out = parsed.data();
  for (size_t k = 0; k < n; ++k, p += kAVMotionVectorBytes) {
    int32_t source;
    int16_t xy[4];
    std::memcpy(&source, p, 4);
    std::memcpy(xy, p + 6, 8);  // src_x, src_y, dst_x, dst_y
    if (source >= 0) continue;  // predicted from a later frame (B-frames): not this chain's reference
    out[0] = p[4], out[1] = p[5], out[2] = xy[0], out[3] = xy[1], out[4] = xy[2], out[5] = xy[3];
    out += edgeml::mv::kRowCols;
  }
  rows.data = parsed.data();
  rows.n = static_cast<int64_t>((out - parsed.data()) / edgeml::mv::kRowCols);
}

// One P-frame of model-resolution extraction in one call: rasterise its vectors at native resolution, chain them
// to the I-frame (accumulate, prev = the previous native field or None), pool the field to the model grid into
// mv_out and the residual against ref into residual_out (fused, never at full resolution). Returns the native field
// (the next step's prev).
py::array_t<float> extract_step(const py::object& mvs, const py::sequence& cur_seq, const py::sequence& ref_seq,
                                const py::object& prev_obj, int grid, bool accumulate, const py::object& window,
                                const py::object& size, const py::object& residual_out, const py::object& mv_out,
                                bool on_cuda) {
  check_grid(grid);
  Keep keep;
  int h = 0, w = 0;
  auto [cur, ref] = plane_pair(cur_seq, ref_seq, h, w, keep);
  const auto win = window_of(window, size, h, w);
  const auto [mh, mw] = model_cells(win, h, w, grid);
  const int channels = static_cast<int>(cur.size());
  auto res = require<int16_t>(residual_out, "residual_out", {channels, win.out_h, win.out_w});
  auto mvo = require<float>(mv_out, "mv_out", {2, mh, mw});
  if (!res.writeable() || !mvo.writeable()) throw py::value_error("residual_out and mv_out must be writeable");
  const py::ssize_t ho = edgeml::mv::cells(h, grid), wo = edgeml::mv::cells(w, grid);
  py::array_t<float> field({static_cast<py::ssize_t>(2), ho, wo});
  py::array_t<float> prev;
  const bool chained = accumulate && !prev_obj.is_none();
  if (chained) prev = require<float>(prev_obj, "prev", {2, ho, wo});
  Rows rows;
  rows_of(mvs, rows);
  float* fp = field.mutable_data();
  EDGEML_MV_CALL(on_cuda, rasterise, rows.data, rows.n, h, w, grid, fp);
  if (chained) EDGEML_MV_CALL(on_cuda, accumulate, fp, prev.data(), h, w, grid, fp);
  EDGEML_MV_CALL(on_cuda, pool_field, fp, h, w, grid, win, mvo.mutable_data());
  EDGEML_MV_CALL(on_cuda, residual_pooled, cur.data(), ref.data(), channels, fp, h, w, grid, win, res.mutable_data());
  return field;
}


// The stateful CPU chain (edgeml::mv::Extractor) behind edgeml._C.Extractor: planes checked as extract_step checks them.
class PyExtractor {
 public:
  PyExtractor(int height, int width, int grid, bool accumulate, const py::object& window, const py::object& size,
              int channels)
      : height_(height), width_(width), grid_(grid), channels_(channels) {
    require_positive(height, "height");
    require_positive(width, "width");
    check_grid(grid);
    if (channels < 1 || channels > 4) throw py::value_error("channels must be 1 to 4, got " + std::to_string(channels));
    win_ = window_of(window, size, height, width);
    std::tie(mh_, mw_) = model_cells(win_, height, width, grid);
    impl_ = std::make_unique<edgeml::mv::Extractor>(height, width, grid, accumulate, win_, channels);
  }

  void reset(const py::sequence& planes_seq) {
    Keep keep;
    auto planes = checked(planes_seq, "planes", keep);
    py::gil_scoped_release release;
    impl_->reset(planes.data());
  }

  void step(const py::object& mvs, const py::sequence& cur_seq, const py::object& residual_out,
            const py::object& mv_out) {
    if (!impl_->ready()) throw py::value_error("step() before reset(): the chain has no reference frame yet");
    Keep keep;
    auto cur = checked(cur_seq, "cur", keep);
    auto res = require<int16_t>(residual_out, "residual_out", {channels_, win_.out_h, win_.out_w});
    auto mvo = require<float>(mv_out, "mv_out", {2, mh_, mw_});
    if (!res.writeable() || !mvo.writeable()) throw py::value_error("residual_out and mv_out must be writeable");
    Rows rows;
    rows_of(mvs, rows, &parsed_);
    int16_t* rp = res.mutable_data();
    float* mp = mvo.mutable_data();
    py::gil_scoped_release release;
    impl_->step(rows.data, rows.n, cur.data(), rp, mp);
  }

  py::array_t<float> field() const {
    const auto& f = impl_->field();
    py::array_t<float> out({static_cast<py::ssize_t>(2), static_cast<py::ssize_t>(edgeml::mv::cells(height_, grid_)),
                            static_cast<py::ssize_t>(edgeml::mv::cells(width_, grid_))});
    std::copy(f.begin(), f.end(), out.mutable_data());
    return out;
  }

 private:
  std::vector<edgeml::mv::Plane> checked(const py::sequence& seq, const char* name, Keep& keep) const {
    int h = 0, w = 0;
    auto planes = planes_of(seq, name, h, w, keep);
    if (static_cast<int>(planes.size()) != channels_ || h != height_ || w != width_) {
      throw py::value_error(std::string(name) + ": expected " + std::to_string(channels_) + " planes of a " +
                            std::to_string(height_) + "x" + std::to_string(width_) + " frame, got " +
                            std::to_string(planes.size()) + " of " + std::to_string(h) + "x" + std::to_string(w));
    }
    return planes;
  }

  int height_, width_, grid_, channels_;
  py::ssize_t mh_ = 0, mw_ = 0;
  edgeml::mv::Window win_{};
  std::unique_ptr<edgeml::mv::Extractor> impl_;
  std::vector<int32_t> parsed_;  // the side data's rows, reused frame after frame
};

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
  const char* pooled_doc =
      "The residual at model resolution, fused: area mean of (cur - ref warped by field) over each output pixel's\n"
      "part of window = (y0, x0, hs, ws) of the native frame, size = (H, W) <= (hs, ws); exact integer weights,\n"
      "rounded half away from zero; the full-resolution residual is never written. Planes as in residual (or\n"
      "av.VideoPlane objects). Returns int16 [C, H, W] (into `out` when given). An identity window == residual.";
  m.def("residual_pooled", [](const py::sequence& c, const py::sequence& r, const py::object& f, int g,
                               const py::object& win, const py::object& size, const py::object& out) {
        return residual_pooled(c, r, f, g, win, size, false, out);
      }, py::arg("cur"), py::arg("ref"), py::arg("field"), py::arg("grid"), py::arg("window"), py::arg("size"),
      py::arg("out") = py::none(), pooled_doc);
  m.def("residual_pooled_cuda", [](const py::sequence& c, const py::sequence& r, const py::object& f, int g,
                                    const py::object& win, const py::object& size, const py::object& out) {
        return residual_pooled(c, r, f, g, win, size, true, out);
      }, py::arg("cur"), py::arg("ref"), py::arg("field"), py::arg("grid"), py::arg("window"), py::arg("size"),
      py::arg("out") = py::none(), "CUDA twin of residual_pooled (the same numbers).");
  const char* pool_doc =
      "A native field float32 [2, ceil(height/g), ceil(width/g)] -> the model grid [2, H/g, W/g]: area mean over\n"
      "each model cell's part of window = (y0, x0, hs, ws), vectors scaled by (W/ws, H/hs). An identity window\n"
      "returns the field unchanged.";
  m.def("pool_field", [](const py::object& f, int height, int width, int g, const py::object& win,
                          const py::object& size) { return pool_field(f, height, width, g, win, size, false); },
        py::arg("field"), py::arg("height"), py::arg("width"), py::arg("grid"), py::arg("window"), py::arg("size"),
        pool_doc);
  m.def("pool_field_cuda", [](const py::object& f, int height, int width, int g, const py::object& win,
                               const py::object& size) { return pool_field(f, height, width, g, win, size, true); },
        py::arg("field"), py::arg("height"), py::arg("width"), py::arg("grid"), py::arg("window"), py::arg("size"),
        "CUDA twin of pool_field (the same numbers).");
  const char* xstep_doc =
      "One P-frame of model-resolution extraction: rasterise mvs (MOTION_VECTORS side data, read as bytes, or int32\n"
      "[N, 6] rows; rows with source >= 0 are dropped) at native resolution, chain to prev when accumulate, pool the\n"
      "field into mv_out [2, H/g, W/g] and the fused residual of cur against ref into residual_out int16 [C, H, W].\n"
      "Returns the native field (the next step's prev). GIL released; planes may be av.VideoPlane objects.";
  m.def("extract_step", [](const py::object& mvs, const py::sequence& cur, const py::sequence& ref,
                           const py::object& prev, int grid, bool accumulate, const py::object& win,
                           const py::object& size, const py::object& res_out, const py::object& mv_out) {
        return extract_step(mvs, cur, ref, prev, grid, accumulate, win, size, res_out, mv_out, false);
      }, py::arg("mvs"), py::arg("cur"), py::arg("ref"), py::arg("prev"), py::arg("grid"), py::arg("accumulate"),
      py::arg("window"), py::arg("size"), py::arg("residual_out"), py::arg("mv_out"), xstep_doc);
  m.def("extract_step_cuda", [](const py::object& mvs, const py::sequence& cur, const py::sequence& ref,
                                const py::object& prev, int grid, bool accumulate, const py::object& win,
                                const py::object& size, const py::object& res_out, const py::object& mv_out) {
        return extract_step(mvs, cur, ref, prev, grid, accumulate, win, size, res_out, mv_out, true);
      }, py::arg("mvs"), py::arg("cur"), py::arg("ref"), py::arg("prev"), py::arg("grid"), py::arg("accumulate"),
      py::arg("window"), py::arg("size"), py::arg("residual_out"), py::arg("mv_out"), "CUDA twin of extract_step.");
  m.def("_mv_simd_cap", [](int level) { return edgeml::mv::set_simd_cap(level); }, py::arg("level"),
        "Cap the instruction set of the motion-vector kernels (2 = AVX2 where the CPU has it, 1 = SSE2) and return "
        "the previous cap; for tests, which run both paths (the numbers are the same).");
  m.def("_mv_simd_level", [] { return edgeml::mv::simd_level(); },
        "The instruction set the motion-vector kernels use now (2 = AVX2, 1 = SSE2).");
  py::class_<PyExtractor>(m, "Extractor",
      "Model-resolution extraction of one video as a stateful CPU chain (the hot path of edgeml.video.extract):\n"
      "reset(planes) at each I-frame copies its planes once as the reference (widened to full resolution for the\n"
      "fused kernel) and restarts the chain; step(mvs, cur, residual_out, mv_out) per P-frame rasterises mvs (side\n"
      "data bytes or int32 [N, 6] rows, as extract_step), chains the native field (accumulate), pools it into mv_out\n"
      "and writes the fused residual into residual_out. The same numbers as extract_step in turn; GIL released.")
      .def(py::init<int, int, int, bool, const py::object&, const py::object&, int>(), py::arg("height"),
           py::arg("width"), py::arg("grid"), py::arg("accumulate"), py::arg("window"), py::arg("size"),
           py::arg("channels") = 3)
      .def("reset", &PyExtractor::reset, py::arg("planes"))
      .def("step", &PyExtractor::step, py::arg("mvs"), py::arg("cur"), py::arg("residual_out"), py::arg("mv_out"))
      .def_property_readonly("field", &PyExtractor::field, "The last step's native field (a copy).");
}
