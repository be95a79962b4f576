#include "mv/accumulate.h"

#include <algorithm>

#include "mv/rasterise.h"

namespace edgeml::mv {

void accumulate(const float* field, const float* prev, int height, int width, int grid, float* out) {
  const int ho = cells(height, grid), wo = cells(width, grid);
  const int64_t plane = static_cast<int64_t>(ho) * wo;
  if (prev == nullptr) {
    if (out != field) std::copy(field, field + 2 * plane, out);
    return;
  }
  // Cell of a clamped pixel: a shift for the power-of-two grids the bindings allow, a division otherwise.
  const bool pow2 = (grid & (grid - 1)) == 0;
  int shift = 0;
  while (pow2 && (1 << shift) < grid) ++shift;
  for (int i = 0; i < ho; ++i) {
    for (int j = 0; j < wo; ++j) {
      const int64_t c = static_cast<int64_t>(i) * wo + j;
      const float vx = field[c], vy = field[c + plane];
      // floor keeps the lookup right for fractional vectors too; whole-pixel vectors are exact either way
      const int sx = std::clamp(floor_int(j * grid - vx), 0, width - 1);
      const int sy = std::clamp(floor_int(i * grid - vy), 0, height - 1);
      const int64_t s = pow2 ? static_cast<int64_t>(sy >> shift) * wo + (sx >> shift)
                             : static_cast<int64_t>(sy / grid) * wo + sx / grid;
      out[c] = vx + prev[s];
      out[c + plane] = vy + prev[s + plane];
    }
  }
}

}  // namespace edgeml::mv
