#include "mv/resample.h"

#include <algorithm>
#include <vector>

#include "mv/rasterise.h"

namespace edgeml::mv {

namespace {

// Native cells a model cell's window rows (or columns) touch, with their integer overlap weights.
struct CellWeights {
  int first;
  std::vector<int64_t> w;
};

// Model cell a spans output pixels [a*grid, (a+1)*grid) = [a*grid*in, (a+1)*grid*in) in units of 1/out native
// pixels, offset by `origin` native pixels; native cell c spans native pixels [c*grid, min((c+1)*grid, extent)).
CellWeights cell_weights(int a, int grid, int origin, int in, int out, int extent) {
  const int64_t lo = static_cast<int64_t>(a) * grid * in, hi = lo + static_cast<int64_t>(grid) * in;
  const int first_px = origin + static_cast<int>(lo / out), last_px = origin + static_cast<int>((hi - 1) / out);
  CellWeights cw{first_px / grid, {}};
  for (int c = first_px / grid; c <= last_px / grid; ++c) {
    const int64_t p0 = static_cast<int64_t>(c) * grid - origin, p1 = std::min((c + 1) * grid, extent) - origin;
    cw.w.push_back(overlap(lo, hi, p0 * out, p1 * out));
  }
  return cw;
}

}  // namespace

void pool_field(const float* field, int height, int width, int grid, const Window& win, float* out) {
  const int wo = cells(width, grid), ho = cells(height, grid);
  const int64_t plane = static_cast<int64_t>(ho) * wo;
  const int mo_h = win.out_h / grid, mo_w = win.out_w / grid;
  const int64_t out_plane = static_cast<int64_t>(mo_h) * mo_w;
  if (win.y0 == 0 && win.x0 == 0 && win.hs == height && win.ws == width && win.out_h == height &&
      win.out_w == width) {
    std::copy(field, field + 2 * plane, out);  // the model's size is the video's: the field itself, bit for bit
    return;
  }
  std::vector<CellWeights> cols(mo_w);
  for (int b = 0; b < mo_w; ++b) cols[b] = cell_weights(b, grid, win.x0, win.ws, win.out_w, width);
  const double den = static_cast<double>(grid) * win.hs * grid * win.ws;
  const double sx = static_cast<double>(win.out_w) / win.ws, sy = static_cast<double>(win.out_h) / win.hs;
  for (int a = 0; a < mo_h; ++a) {
    const CellWeights rows = cell_weights(a, grid, win.y0, win.hs, win.out_h, height);
    for (int b = 0; b < mo_w; ++b) {
      const CellWeights& cw = cols[b];
      double nx = 0, ny = 0;
      for (size_t r = 0; r < rows.w.size(); ++r) {
        const int64_t base = static_cast<int64_t>(rows.first + static_cast<int>(r)) * wo + cw.first;
        double rx = 0, ry = 0;
        for (size_t c = 0; c < cw.w.size(); ++c) {
          rx += static_cast<double>(cw.w[c]) * field[base + c];
          ry += static_cast<double>(cw.w[c]) * field[base + c + plane];
        }
        nx += static_cast<double>(rows.w[r]) * rx;
        ny += static_cast<double>(rows.w[r]) * ry;
      }
      out[static_cast<int64_t>(a) * mo_w + b] = static_cast<float>(nx / den * sx);
      out[static_cast<int64_t>(a) * mo_w + b + out_plane] = static_cast<float>(ny / den * sy);
    }
  }
}

}  // namespace edgeml::mv
