// Model-resolution output from native-resolution planes and fields: the window of the native frame a model input
// covers, and exact integer area weights. Plain C++17; the helpers also compile as CUDA device code.
#pragma once
#include <cstdint>
#include <vector>

#ifdef __CUDACC__
#define EDGEML_HD __host__ __device__
#else
#define EDGEML_HD
#endif

namespace edgeml::mv {

// The rectangle [y0, y0 + hs) x [x0, x0 + ws) of a native frame, area-averaged to out_h x out_w (hs >= out_h,
// ws >= out_w). Coordinates are scaled by out_h (rows) and out_w (columns) so every area weight is an integer:
// native row v of the window covers [v * out_h, (v + 1) * out_h), output row i covers [i * hs, (i + 1) * hs).
struct Window {
  int y0, x0, hs, ws, out_h, out_w;
};

// Overlap of [a0, a1) and [b0, b1) (0 when disjoint).
EDGEML_HD inline int64_t overlap(int64_t a0, int64_t a1, int64_t b0, int64_t b1) {
  const int64_t lo = a0 > b0 ? a0 : b0, hi = a1 < b1 ? a1 : b1;
  return hi > lo ? hi - lo : 0;
}

// n / d rounded to the nearest integer, halves away from zero (d > 0).
EDGEML_HD inline int64_t round_div(int64_t n, int64_t d) { return n >= 0 ? (2 * n + d) / (2 * d) : -((d - 2 * n) / (2 * d)); }

// Output pixel k of `out` pixels over `in` native pixels: first and last native index it touches and their weights
// (interior native pixels weigh `out`; the weights sum to `in`).
struct Taps {
  int first, last;
  int64_t w_first, w_last;
};

EDGEML_HD inline Taps taps(int k, int in, int out) {
  const int64_t lo = static_cast<int64_t>(k) * in, hi = lo + in;
  Taps t;
  t.first = static_cast<int>(lo / out);
  t.last = static_cast<int>((hi - 1) / out);
  t.w_first = overlap(lo, hi, static_cast<int64_t>(t.first) * out, static_cast<int64_t>(t.first + 1) * out);
  t.w_last = t.last == t.first ? 0 : overlap(lo, hi, static_cast<int64_t>(t.last) * out,
                                             static_cast<int64_t>(t.last + 1) * out);
  return t;
}

// Area mean of a grid field (float32 [2, cells(height, grid), cells(width, grid)], piecewise constant per cell as the
// residual reads it) over each model cell's window area, vectors scaled to model pixels (x by out_w / ws, y by
// out_h / hs). out: float32 [2, out_h / grid, out_w / grid] (out_h, out_w multiples of grid). An identity window
// (the whole frame at its own size) copies the field exactly.
void pool_field(const float* field, int height, int width, int grid, const Window& win, float* out);

// pool_field with its weights computed once for one frame size, grid and window (a chain that pools every frame of a
// video builds one); run() gives pool_field's numbers. Not for an identity window. Not thread-safe (scratch rows).
class FieldPool {
 public:
  FieldPool(int height, int width, int grid, const Window& win);
  void run(const float* field, float* out) const;
  void row(int a, const float* field, float* out) const;  // model row a of run()

  // Native cells a model cell's window rows (or columns) touch, from `first`, with their integer overlap weights.
  struct Cells {
    int first;
    std::vector<int64_t> w;
  };

 private:
  int height_, width_, grid_;
  Window win_;
  std::vector<Cells> rows_;
  int c_lo_ = 0, c_hi_ = 0;  // the native cell columns any model cell touches
  int taps_ = 0;             // native cell columns per model column, padded to the most any one touches
  std::vector<int32_t> col_first_;  // each model column's first native cell column, from c_lo_
  std::vector<double> col_w_;       // its `taps_` weights (zero past its own)
  mutable std::vector<double> tx_, ty_, nx_, ny_;
};

}  // namespace edgeml::mv
