#include "mv/rasterise.h"

#include <algorithm>
#include <cstring>

namespace edgeml::mv {

namespace {
// First cell index whose sample pixel (cell * grid) is >= pixel; shift >= 0: grid == 1 << shift (no division).
inline int first_cell(int pixel, int grid, int shift) {
  if (pixel <= 0) return 0;
  return shift >= 0 ? (pixel + grid - 1) >> shift : (pixel + grid - 1) / grid;
}

// One cell row's run [j0, j1) of a block: two short fills (a block spans a few cells: no loop set-up to amortise;
// four cells, a 16 x 16 macroblock at grid 4, are two 16-byte stores).
inline void paint(float* __restrict ox, float* __restrict oy, int j0, int j1, float vx, float vy) {
  if (j1 - j0 == 4) {
    const float x4[4] = {vx, vx, vx, vx}, y4[4] = {vy, vy, vy, vy};
    std::memcpy(ox + j0, x4, sizeof x4);
    std::memcpy(oy + j0, y4, sizeof y4);
    return;
  }
  for (int j = j0; j < j1; ++j) {
    ox[j] = vx;
    oy[j] = vy;
  }
}
}  // namespace

void rasterise(const int32_t* rows, int64_t n, int height, int width, int grid, float* out) {
  const int ho = cells(height, grid), wo = cells(width, grid);
  const int64_t plane = static_cast<int64_t>(ho) * wo;
  std::fill(out, out + 2 * plane, 0.0f);
  int shift = -1;
  if ((grid & (grid - 1)) == 0) {
    for (shift = 0; (1 << shift) < grid;) ++shift;
  }
  for (int64_t r = 0; r < n; ++r) {
    const int32_t* row = rows + r * kRowCols;
    const int w = row[0], h = row[1];
    const int x0 = row[4] - w / 2, y0 = row[5] - h / 2;
    const int j0 = first_cell(x0, grid, shift), j1 = std::min(wo, first_cell(x0 + w, grid, shift));
    const int i0 = first_cell(y0, grid, shift), i1 = std::min(ho, first_cell(y0 + h, grid, shift));
    if (j0 >= j1) continue;
    const float vx = static_cast<float>(row[4] - row[2]);
    const float vy = static_cast<float>(row[5] - row[3]);
    float* ox = out + static_cast<int64_t>(i0) * wo;
    for (int i = i0; i < i1; ++i, ox += wo) paint(ox, ox + plane, j0, j1, vx, vy);
  }
}

}  // namespace edgeml::mv
