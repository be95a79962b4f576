#include "mv/resample.h"

#include <algorithm>
#include <vector>

#include "mv/rasterise.h"
#include "mv/simd.h"

namespace edgeml::mv {

namespace {

// Model cell a spans output pixels [a*grid, (a+1)*grid) = [a*grid*in, (a+1)*grid*in) in units of 1/out native
// pixels, offset by `origin` native pixels; native cell c spans native pixels [c*grid, min((c+1)*grid, extent)).
FieldPool::Cells cell_weights(int a, int grid, int origin, int in, int out, int extent) {
  const int64_t lo = static_cast<int64_t>(a) * grid * in, hi = lo + static_cast<int64_t>(grid) * in;
  const int first_px = origin + static_cast<int>(lo / out), last_px = origin + static_cast<int>((hi - 1) / out);
  FieldPool::Cells cw{first_px / grid, {}};
  for (int c = first_px / grid; c <= last_px / grid; ++c) {
    const int64_t p0 = static_cast<int64_t>(c) * grid - origin, p1 = std::min((c + 1) * grid, extent) - origin;
    cw.w.push_back(overlap(lo, hi, p0 * out, p1 * out));
  }
  return cw;
}

}  // namespace

FieldPool::FieldPool(int height, int width, int grid, const Window& win)
    : height_(height), width_(width), grid_(grid), win_(win) {
  const int mo_h = win.out_h / grid, mo_w = win.out_w / grid;
  for (int a = 0; a < mo_h; ++a) rows_.push_back(cell_weights(a, grid, win.y0, win.hs, win.out_h, height));
  std::vector<Cells> cols;
  for (int b = 0; b < mo_w; ++b) cols.push_back(cell_weights(b, grid, win.x0, win.ws, win.out_w, width));
  if (mo_w > 0) {
    c_lo_ = cols.front().first;
    c_hi_ = cols.back().first + static_cast<int>(cols.back().w.size());
  }
  for (const Cells& c : cols) taps_ = std::max(taps_, static_cast<int>(c.w.size()));
  // every model column gets `taps_` taps: its own, then zero weights on the columns after them (the row sums carry
  // `taps_` zeros past the last column, so every read is in bounds and adds exactly nothing)
  col_first_.resize(mo_w);
  col_w_.assign(static_cast<size_t>(mo_w) * taps_, 0.0);
  for (int b = 0; b < mo_w; ++b) {
    col_first_[b] = cols[b].first - c_lo_;
    for (size_t c = 0; c < cols[b].w.size(); ++c) {
      col_w_[b * static_cast<size_t>(taps_) + c] = static_cast<double>(cols[b].w[c]);
    }
  }
  tx_.assign(c_hi_ - c_lo_ + taps_, 0.0);
  ty_.assign(c_hi_ - c_lo_ + taps_, 0.0);
  nx_.resize(mo_w);
  ny_.resize(mo_w);
}

// One model row a of FieldPool::run: the row-weighted sums of the native cell columns (each column sums its rows in
// order), the column taps of each model cell (in order, zero-weight padding last), then the scale. Plain loops over
// independent lanes that the compiler vectorises (no reassociation: every lane keeps the scalar order of operations);
// inlined into a baseline and an AVX2 copy.
__attribute__((always_inline)) inline void FieldPool::row(int a, const float* field, float* out) const {
  const int wo = cells(width_, grid_);
  const int64_t plane = static_cast<int64_t>(cells(height_, grid_)) * wo;
  const int mo_w = static_cast<int>(col_first_.size());
  const int64_t out_plane = static_cast<int64_t>(rows_.size()) * mo_w;
  const double den = static_cast<double>(grid_) * win_.hs * grid_ * win_.ws;
  const double sx = static_cast<double>(win_.out_w) / win_.ws, sy = static_cast<double>(win_.out_h) / win_.hs;
  double* __restrict tx = tx_.data();
  double* __restrict ty = ty_.data();
  const int nc = c_hi_ - c_lo_;
  const Cells& rows = rows_[a];
  for (int c = 0; c < nc; ++c) tx[c] = ty[c] = 0.0;
  for (size_t r = 0; r < rows.w.size(); ++r) {
    const double w = static_cast<double>(rows.w[r]);
    const float* __restrict fx = field + static_cast<int64_t>(rows.first + static_cast<int>(r)) * wo + c_lo_;
    const float* __restrict fy = fx + plane;
    for (int c = 0; c < nc; ++c) {
      tx[c] += w * fx[c];
      ty[c] += w * fy[c];
    }
  }
  const int k_n = taps_;
  const int32_t* first = col_first_.data();
  const double* cw = col_w_.data();
  double* __restrict nx = nx_.data();
  double* __restrict ny = ny_.data();
  for (int b = 0; b < mo_w; ++b) {
    double sum_x = 0, sum_y = 0;
    const double* wb = cw + static_cast<int64_t>(b) * k_n;
    const double* px = tx + first[b];
    const double* py = ty + first[b];
    for (int k = 0; k < k_n; ++k) {
      sum_x += wb[k] * px[k];
      sum_y += wb[k] * py[k];
    }
    nx[b] = sum_x;
    ny[b] = sum_y;
  }
  float* __restrict ox = out + static_cast<int64_t>(a) * mo_w;
  float* __restrict oy = ox + out_plane;
  for (int b = 0; b < mo_w; ++b) {
    ox[b] = static_cast<float>(nx[b] / den * sx);
    oy[b] = static_cast<float>(ny[b] / den * sy);
  }
}

namespace {

void pool_rows_base(const FieldPool& pool, int n, const float* field, float* out) {
  for (int a = 0; a < n; ++a) pool.row(a, field, out);
}

#if EDGEML_MV_AVX2
__attribute__((target("avx2"))) void pool_rows_avx2(const FieldPool& pool, int n, const float* field, float* out) {
  for (int a = 0; a < n; ++a) pool.row(a, field, out);
}
#endif

}  // namespace

void FieldPool::run(const float* field, float* out) const {
  // Separable: per model row, the row-weighted sums of the native cell columns the window touches, then the column
  // taps of each model cell. Every product and sum of whole-pixel vectors and integer weights is exact in double, so
  // the order of the sums does not change the result (the CUDA twin sums in this order too).
  const int n = static_cast<int>(rows_.size());
#if EDGEML_MV_AVX2
  if (simd_level() >= 2) {
    pool_rows_avx2(*this, n, field, out);
    return;
  }
#endif
  pool_rows_base(*this, n, field, out);
}

void pool_field(const float* field, int height, int width, int grid, const Window& win, float* out) {
  if (win.y0 == 0 && win.x0 == 0 && win.hs == height && win.ws == width && win.out_h == height &&
      win.out_w == width) {
    const int64_t n = 2 * static_cast<int64_t>(cells(height, grid)) * cells(width, grid);
    std::copy(field, field + n, out);  // the model's size is the video's: the field itself, bit for bit
    return;
  }
  FieldPool(height, width, grid, win).run(field, out);
}

}  // namespace edgeml::mv
