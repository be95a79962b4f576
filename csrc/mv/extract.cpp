#include "mv/extract.h"

#include <cstring>

#include "mv/accumulate.h"
#include "mv/rasterise.h"

namespace edgeml::mv {

Extractor::Extractor(int height, int width, int grid, bool accumulate, const Window& win, int channels)
    : height_(height), width_(width), grid_(grid), channels_(channels), accumulate_(accumulate), win_(win) {
  identity_ = win.y0 == 0 && win.x0 == 0 && win.hs == height && win.ws == width && win.out_h == height &&
              win.out_w == width;
  const size_t cells_n = 2 * static_cast<size_t>(cells(height, grid)) * cells(width, grid);
  field_.assign(cells_n, 0.0f);
  acc_.assign(cells_n, 0.0f);
  own_.resize(channels);
  ref_.resize(channels);
  if (!identity_) pool_ = std::make_unique<FieldPool>(height, width, grid, win);
}

void Extractor::keep(const Plane* planes) {
  for (int c = 0; c < channels_; ++c) {
    const Plane& p = planes[c];
    std::vector<uint8_t>& buf = own_[c];
    if (!identity_) {  // the fused kernel reads padded full-resolution planes: widened once per reference
      buf.resize(padded_size(height_, width_));
      ref_[c] = widen_padded(p, height_, width_, buf.data());
      continue;
    }
    // residual() reads any layout: a compact copy keeping the plane's own subsampling
    const int h = (height_ + (1 << p.shift_y) - 1) >> p.shift_y, w = (width_ + (1 << p.shift_x) - 1) >> p.shift_x;
    buf.resize(static_cast<size_t>(h) * w);
    for (int y = 0; y < h; ++y) {
      const uint8_t* src = p.data + y * p.row_stride;
      uint8_t* dst = buf.data() + static_cast<size_t>(y) * w;
      if (p.col_stride == 1) {
        std::memcpy(dst, src, static_cast<size_t>(w));
      } else {
        for (int x = 0; x < w; ++x) dst[x] = src[x * p.col_stride];
      }
    }
    ref_[c] = {buf.data(), w, 1, p.shift_y, p.shift_x};
  }
}

void Extractor::reset(const Plane* planes) {
  keep(planes);
  ready_ = true;
  chained_ = false;
}

void Extractor::step(const int32_t* rows, int64_t n, const Plane* cur, int16_t* residual, float* mv) {
  float* f = field_.data();
  rasterise(rows, n, height_, width_, grid_, f);
  if (accumulate_ && chained_) accumulate(f, acc_.data(), height_, width_, grid_, f);
  if (pool_) {
    pool_->run(f, mv);
  } else {
    pool_field(f, height_, width_, grid_, win_, mv);  // the identity: a copy
  }
  if (identity_) {
    mv::residual(cur, ref_.data(), channels_, f, height_, width_, grid_, residual);
  } else {
    residual_pooled_padded(cur, ref_.data(), channels_, f, height_, width_, grid_, win_, residual);
  }
  if (accumulate_) {
    field_.swap(acc_);  // the next step chains onto this field (rasterise overwrites the other buffer)
    chained_ = true;
  } else {
    keep(cur);  // the next step's reference is this frame
  }
}

}  // namespace edgeml::mv
