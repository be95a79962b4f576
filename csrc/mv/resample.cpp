#include "mv/resample.h"

#include <algorithm>
#include <vector>

#include "mv/rasterise.h"

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
  for (int b = 0; b < mo_w; ++b) cols_.push_back(cell_weights(b, grid, win.x0, win.ws, win.out_w, width));
  if (mo_w > 0) {
    c_lo_ = cols_.front().first;
    c_hi_ = cols_.back().first + static_cast<int>(cols_.back().w.size());
  }
  tx_.resize(c_hi_ - c_lo_);
  ty_.resize(c_hi_ - c_lo_);
}

void FieldPool::run(const float* field, float* out) const {
  // Separable: per model row, the row-weighted sums of the native cell columns the window touches, then the column
  // taps of each model cell. Every product and sum of whole-pixel vectors and integer weights is exact in double, so
  // the order of the sums does not change the result (the CUDA twin sums in this order too).
  const int wo = cells(width_, grid_);
  const int64_t plane = static_cast<int64_t>(cells(height_, grid_)) * wo;
  const int mo_w = static_cast<int>(cols_.size());
  const int64_t out_plane = static_cast<int64_t>(rows_.size()) * mo_w;
  const double den = static_cast<double>(grid_) * win_.hs * grid_ * win_.ws;
  const double sx = static_cast<double>(win_.out_w) / win_.ws, sy = static_cast<double>(win_.out_h) / win_.hs;
  double* tx = tx_.data();
  double* ty = ty_.data();
  const int nc = c_hi_ - c_lo_;
  for (size_t a = 0; a < rows_.size(); ++a) {
    const Cells& rows = rows_[a];
    std::fill(tx, tx + nc, 0.0);
    std::fill(ty, ty + nc, 0.0);
    for (size_t r = 0; r < rows.w.size(); ++r) {
      const double w = static_cast<double>(rows.w[r]);
      const float* fx = field + static_cast<int64_t>(rows.first + static_cast<int>(r)) * wo + c_lo_;
      const float* fy = fx + plane;
      for (int c = 0; c < nc; ++c) {
        tx[c] += w * fx[c];
        ty[c] += w * fy[c];
      }
    }
    for (int b = 0; b < mo_w; ++b) {
      const Cells& cw = cols_[b];
      double nx = 0, ny = 0;
      for (size_t c = 0; c < cw.w.size(); ++c) {
        nx += static_cast<double>(cw.w[c]) * tx[cw.first - c_lo_ + static_cast<int>(c)];
        ny += static_cast<double>(cw.w[c]) * ty[cw.first - c_lo_ + static_cast<int>(c)];
      }
      out[static_cast<int64_t>(a) * mo_w + b] = static_cast<float>(nx / den * sx);
      out[static_cast<int64_t>(a) * mo_w + b + out_plane] = static_cast<float>(ny / den * sy);
    }
  }
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
