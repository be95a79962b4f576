#include "mv/rasterise.h"

#include <algorithm>

namespace edgeml::mv {

namespace {
// First cell index whose sample pixel (cell * grid) is >= pixel.
inline int first_cell(int pixel, int grid) {
  return pixel <= 0 ? 0 : (pixel + grid - 1) / grid;
}
}  // namespace

void rasterise(const int32_t* rows, int64_t n, int height, int width, int grid, float* out) {
  const int ho = cells(height, grid), wo = cells(width, grid);
  const int64_t plane = static_cast<int64_t>(ho) * wo;
  std::fill(out, out + 2 * plane, 0.0f);
  for (int64_t r = 0; r < n; ++r) {
    const int32_t* row = rows + r * kRowCols;
    const int w = row[0], h = row[1];
    const float vx = static_cast<float>(row[4] - row[2]);
    const float vy = static_cast<float>(row[5] - row[3]);
    const int x0 = row[4] - w / 2, y0 = row[5] - h / 2;
    const int j0 = first_cell(x0, grid), j1 = std::min(wo, first_cell(x0 + w, grid));
    const int i0 = first_cell(y0, grid), i1 = std::min(ho, first_cell(y0 + h, grid));
    for (int i = i0; i < i1; ++i) {
      float* ox = out + static_cast<int64_t>(i) * wo;
      float* oy = ox + plane;
      for (int j = j0; j < j1; ++j) {
        ox[j] = vx;
        oy[j] = vy;
      }
    }
  }
}

}  // namespace edgeml::mv
