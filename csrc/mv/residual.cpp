#include "mv/residual.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "mv/rasterise.h"

namespace edgeml::mv {

namespace {

inline uint8_t sample(const Plane& p, int y, int x) {
  return p.data[(y >> p.shift_y) * p.row_stride + (x >> p.shift_x) * p.col_stride];
}

// Source pixel of every destination pixel: one pass over the field, shared by all channels.
void source_map(const float* field, int height, int width, int grid, std::vector<int32_t>& sy,
                std::vector<int32_t>& sx) {
  const int wo = cells(width, grid);
  const int64_t plane = static_cast<int64_t>(cells(height, grid)) * wo;
  sy.resize(static_cast<size_t>(height) * width);
  sx.resize(sy.size());
  for (int y = 0; y < height; ++y) {
    const float* fx = field ? field + static_cast<int64_t>(y / grid) * wo : nullptr;
    for (int x = 0; x < width; ++x) {
      const size_t k = static_cast<size_t>(y) * width + x;
      if (fx == nullptr) {
        sy[k] = y;
        sx[k] = x;
        continue;
      }
      const float vx = fx[x / grid], vy = fx[x / grid + plane];
      sx[k] = std::clamp(static_cast<int>(std::floor(x - vx)), 0, width - 1);
      sy[k] = std::clamp(static_cast<int>(std::floor(y - vy)), 0, height - 1);
    }
  }
}

}  // namespace

void residual(const Plane* cur, const Plane* ref, int channels, const float* field, int height, int width, int grid,
              int16_t* out) {
  std::vector<int32_t> sy, sx;
  source_map(field, height, width, grid, sy, sx);
  const int64_t hw = static_cast<int64_t>(height) * width;
  for (int c = 0; c < channels; ++c) {
    const Plane& a = cur[c];
    const Plane& b = ref[c];
    int16_t* o = out + c * hw;
    for (int y = 0; y < height; ++y) {
      const size_t row = static_cast<size_t>(y) * width;
      for (int x = 0; x < width; ++x) {
        o[row + x] = static_cast<int16_t>(static_cast<int>(sample(a, y, x)) -
                                          static_cast<int>(sample(b, sy[row + x], sx[row + x])));
      }
    }
  }
}

void warp(const Plane* ref, int channels, const float* field, int height, int width, int grid, uint8_t* out) {
  std::vector<int32_t> sy, sx;
  source_map(field, height, width, grid, sy, sx);
  const int64_t hw = static_cast<int64_t>(height) * width;
  for (int c = 0; c < channels; ++c) {
    for (int64_t k = 0; k < hw; ++k) out[c * hw + k] = sample(ref[c], sy[k], sx[k]);
  }
}

}  // namespace edgeml::mv
