#include "mv/residual.h"

#include <algorithm>
#include <vector>

#include "mv/rasterise.h"
#include "mv/resample.h"

namespace edgeml::mv {

namespace {

inline int clampi(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

struct Span {
  int x0, x1, dy, dx;
  bool clamped;
};

// The spans of the rows of cell row i: inside a cell the vector is constant, so a pixel row reads source row
// clamp(y + dy) and source columns shifted by dx (floor(y - v) == y + floor(-v) for whole y); neighbouring cells
// with the same vector are merged into one span (blocks are usually larger than a cell and many vectors are
// equal), so the per-sample loops run over long ranges. Computed once per cell row and shared by its rows.
void cell_row_spans(const float* field, int height, int width, int grid, int i, std::vector<Span>& spans) {
  spans.clear();
  const int wo = cells(width, grid);
  const int64_t plane = static_cast<int64_t>(cells(height, grid)) * wo;
  const float* fx = field ? field + static_cast<int64_t>(i) * wo : nullptr;
  for (int j = 0; j < wo; ++j) {
    const int x0 = j * grid, x1 = std::min(x0 + grid, width);
    int dx = 0, dy = 0;
    if (fx) {
      dx = floor_int(-fx[j]);
      dy = floor_int(-fx[j + plane]);
    }
    if (!spans.empty() && spans.back().dx == dx && spans.back().dy == dy && spans.back().x1 == x0) {
      spans.back().x1 = x1;
    } else {
      spans.push_back({x0, x1, dy, dx, false});
    }
  }
  for (Span& s : spans) s.clamped = s.x0 + s.dx < 0 || s.x1 - 1 + s.dx > width - 1;
}

// Samples of one full-resolution row span [x0, x1) of a plane whose columns are subsampled by 2^kShift, read at
// column x + dx (no clamping needed: the caller checked the span is inside the frame).
template <int kShift>
inline uint8_t at(const uint8_t* row, int x) {
  return row[x >> kShift];
}

template <bool kWarpOnly, int kShift>
void span_fast(const uint8_t* arow, const uint8_t* brow, int x0, int x1, int dx, int16_t* res, uint8_t* wrp) {
  if constexpr (kShift == 1) {
    // Chroma upsampled by 2: full-resolution columns 2k and 2k+1 share the sample a[k] and read b at
    // k + floor(dx/2) and k + floor((dx+1)/2) (arithmetic shifts floor). Pairs run as two unit-stride streams
    // without per-sample shifts; an odd first or last column goes through the scalar loop below.
    const int he = dx >> 1, ho = (dx + 1) >> 1;
    if (x0 & 1) {
      if constexpr (kWarpOnly) {
        wrp[x0] = brow[(x0 + dx) >> 1];
      } else {
        res[x0] = static_cast<int16_t>(arow[x0 >> 1] - brow[(x0 + dx) >> 1]);
      }
      ++x0;
    }
    const int k0 = x0 >> 1, k1 = x1 >> 1;
    for (int k = k0; k < k1; ++k) {
      if constexpr (kWarpOnly) {
        wrp[2 * k] = brow[k + he];
        wrp[2 * k + 1] = brow[k + ho];
      } else {
        const int av = arow[k];
        res[2 * k] = static_cast<int16_t>(av - brow[k + he]);
        res[2 * k + 1] = static_cast<int16_t>(av - brow[k + ho]);
      }
    }
    x0 = 2 * k1 > x0 ? 2 * k1 : x0;
  }
  for (int x = x0; x < x1; ++x) {
    if constexpr (kWarpOnly) {
      wrp[x] = at<kShift>(brow, x + dx);
    } else {
      res[x] = static_cast<int16_t>(at<kShift>(arow, x) - at<kShift>(brow, x + dx));
    }
  }
}

// A span of exactly 4 columns starting at an even column, unrolled (fields accumulated to the I-frame change from
// cell to cell, so at grid 4 most spans are one cell long and the loop overhead would dominate).
template <bool kWarpOnly, int kShift>
inline void span4(const uint8_t* arow, const uint8_t* brow, int x0, int dx, int16_t* res, uint8_t* wrp) {
  if constexpr (kShift == 0) {
    const uint8_t* b = brow + x0 + dx;
    if constexpr (kWarpOnly) {
      wrp[x0] = b[0], wrp[x0 + 1] = b[1], wrp[x0 + 2] = b[2], wrp[x0 + 3] = b[3];
    } else {
      const uint8_t* a = arow + x0;
      res[x0] = static_cast<int16_t>(a[0] - b[0]);
      res[x0 + 1] = static_cast<int16_t>(a[1] - b[1]);
      res[x0 + 2] = static_cast<int16_t>(a[2] - b[2]);
      res[x0 + 3] = static_cast<int16_t>(a[3] - b[3]);
    }
  } else {
    const int k = x0 >> 1;
    const uint8_t* be = brow + k + (dx >> 1);
    const uint8_t* bo = brow + k + ((dx + 1) >> 1);
    if constexpr (kWarpOnly) {
      wrp[x0] = be[0], wrp[x0 + 1] = bo[0], wrp[x0 + 2] = be[1], wrp[x0 + 3] = bo[1];
    } else {
      const int a0 = arow[k], a1 = arow[k + 1];
      res[x0] = static_cast<int16_t>(a0 - be[0]);
      res[x0 + 1] = static_cast<int16_t>(a0 - bo[0]);
      res[x0 + 2] = static_cast<int16_t>(a1 - be[1]);
      res[x0 + 3] = static_cast<int16_t>(a1 - bo[1]);
    }
  }
}

// One plane over the spans of a row. kShift: column subsampling of both planes when kUnit (unit column stride)
// holds; otherwise the generic strided path. Long unclamped spans run as plain shifted ranges (vectorisable).
template <bool kWarpOnly, bool kUnit, int kShift>
void do_row(const Plane& b, const Plane* a, const std::vector<Span>& spans, int y, int height, int width,
            int16_t* res_row, uint8_t* warp_row) {
  const uint8_t* arow = kWarpOnly ? nullptr : a->data + (y >> a->shift_y) * a->row_stride;
  for (const Span& sp : spans) {
    const int sy = clampi(y + sp.dy, 0, height - 1);
    const uint8_t* brow = b.data + (sy >> b.shift_y) * b.row_stride;
    if (kUnit && !sp.clamped) {
      if (sp.x1 - sp.x0 == 4 && !(sp.x0 & 1)) {
        span4<kWarpOnly, kShift>(arow, brow, sp.x0, sp.dx, res_row, warp_row);  // one grid-4 cell: the common case
      } else {
        span_fast<kWarpOnly, kShift>(arow, brow, sp.x0, sp.x1, sp.dx, res_row, warp_row);
      }
      continue;
    }
    for (int x = sp.x0; x < sp.x1; ++x) {
      const int sx = clampi(x + sp.dx, 0, width - 1);
      const uint8_t r = kUnit ? brow[sx >> kShift] : brow[(sx >> b.shift_x) * b.col_stride];
      if constexpr (kWarpOnly) {
        warp_row[x] = r;
      } else {
        const uint8_t v = kUnit ? arow[x >> kShift] : arow[(x >> a->shift_x) * a->col_stride];
        res_row[x] = static_cast<int16_t>(static_cast<int>(v) - static_cast<int>(r));
      }
    }
  }
}

// One row of one plane over `spans` (absolute columns): the specialised loops for unit column stride and the same
// column subsampling (none or 2x) in both planes, the generic strided loop otherwise.
template <bool kWarpOnly>
inline void plane_row(const Plane& b, const Plane* a, const std::vector<Span>& spans, int y, int height, int width,
                      int16_t* res_row, uint8_t* warp_row) {
  const bool unit =
      b.col_stride == 1 && b.shift_x <= 1 && (kWarpOnly || (a->col_stride == 1 && a->shift_x == b.shift_x));
  if (unit && b.shift_x == 0) {
    do_row<kWarpOnly, true, 0>(b, a, spans, y, height, width, res_row, warp_row);
  } else if (unit) {
    do_row<kWarpOnly, true, 1>(b, a, spans, y, height, width, res_row, warp_row);
  } else {
    do_row<kWarpOnly, false, 0>(b, a, spans, y, height, width, res_row, warp_row);
  }
}

template <bool kWarpOnly>
void run(const Plane* cur, const Plane* ref, int channels, const float* field, int height, int width, int grid,
         int16_t* res_out, uint8_t* warp_out) {
  const int64_t hw = static_cast<int64_t>(height) * width;
  std::vector<Span> spans;
  for (int y = 0; y < height; ++y) {
    if (y % grid == 0) cell_row_spans(field, height, width, grid, y / grid, spans);  // shared by rows and planes
    for (int c = 0; c < channels; ++c) {
      const int64_t o = c * hw + static_cast<int64_t>(y) * width;
      plane_row<kWarpOnly>(ref[c], kWarpOnly ? nullptr : &cur[c], spans, y, height, width,
                           kWarpOnly ? nullptr : res_out + o, kWarpOnly ? warp_out + o : nullptr);
    }
  }
}

// The spans of a cell row cut to the columns [x0, x1) (the window of a model-resolution output).
void clip_spans(const std::vector<Span>& in, int x0, int x1, int width, std::vector<Span>& out) {
  out.clear();
  for (Span s : in) {
    s.x0 = std::max(s.x0, x0);
    s.x1 = std::min(s.x1, x1);
    if (s.x0 >= s.x1) continue;
    s.clamped = s.x0 + s.dx < 0 || s.x1 - 1 + s.dx > width - 1;
    out.push_back(s);
  }
}

// acc[x] += weight * row[x] over one residual row: int16 x int16 -> int32, which baseline SSE2 vectorises (a 32-bit
// multiply would not: pmulld is SSE4.1).
inline void add_weighted(const int16_t* row, int n, int16_t weight, int32_t* acc) {
  for (int x = 0; x < n; ++x) acc[x] += static_cast<int32_t>(weight) * static_cast<int32_t>(row[x]);
}

// The horizontal taps of every output column as a dense [out_w, k] table (k = the most native columns one output
// column touches; unused taps weigh 0), so the per-output loop has a fixed length and no branches.
struct DenseTaps {
  int k = 0;
  std::vector<int> start;
  std::vector<int32_t> weight;
};

DenseTaps dense_taps(int in, int out) {
  DenseTaps d;
  std::vector<Taps> t(out);
  for (int j = 0; j < out; ++j) {
    t[j] = taps(j, in, out);
    d.k = std::max(d.k, t[j].last - t[j].first + 1);
  }
  d.start.resize(out);
  d.weight.assign(static_cast<size_t>(out) * d.k, 0);
  for (int j = 0; j < out; ++j) {
    d.start[j] = t[j].first;
    int32_t* w = d.weight.data() + static_cast<size_t>(j) * d.k;
    for (int u = t[j].first; u <= t[j].last; ++u) {
      w[u - t[j].first] = static_cast<int32_t>(u == t[j].first ? t[j].w_first : (u == t[j].last ? t[j].w_last : out));
    }
  }
  return d;
}

// One output row from its column sums (acc: [channels][stride], the window's native rows already weighted, zero past
// ws): the horizontal taps, then the rounded mean.
void finish_row(const int32_t* acc, int64_t stride, int channels, const DenseTaps& cols, const Window& win, int i,
                int16_t* out) {
  const int64_t den = static_cast<int64_t>(win.hs) * win.ws;
  const int64_t out_plane = static_cast<int64_t>(win.out_h) * win.out_w;
  const bool narrow = 255 * den < (int64_t{1} << 31);
  // round_div(sum, den) without a 64-bit division per sample (idiv: tens of cycles): floor(num / (2 den)) with
  // num = 2|sum| + den < 2^36 as a multiply and a shift by a rounded-up reciprocal (Granlund-Montgomery: with
  // s = 36 + ceil(log2(2 den)) the error stays below one step, so the quotient is exact).
  __extension__ typedef unsigned __int128 u128;  // GCC/Clang; -Wpedantic knows it is not ISO C++
  const uint64_t d2 = static_cast<uint64_t>(2 * den);
  int shift = 36;
  while ((uint64_t{1} << (shift - 36)) < d2) ++shift;
  const auto magic = static_cast<uint64_t>(((u128{1} << shift) + d2 - 1) / d2);
  auto mean = [den, magic, shift](int64_t sum) {
    const auto num = static_cast<uint64_t>(2 * (sum < 0 ? -sum : sum) + den);
    const auto q = static_cast<int64_t>((static_cast<u128>(num) * magic) >> shift);
    return static_cast<int16_t>(sum < 0 ? -q : q);
  };
  for (int c = 0; c < channels; ++c) {
    const int32_t* a = acc + c * stride;
    int16_t* o = out + c * out_plane + static_cast<int64_t>(i) * win.out_w;
    for (int j = 0; j < win.out_w; ++j) {
      const int32_t* w = cols.weight.data() + static_cast<size_t>(j) * cols.k;
      const int32_t* src = a + cols.start[j];
      if (narrow) {  // every sum fits int32 (255 * hs * ws < 2^31): the cheaper multiply
        int32_t sum = 0;
        for (int k = 0; k < cols.k; ++k) sum += w[k] * src[k];
        o[j] = mean(sum);
      } else {
        int64_t sum = 0;
        for (int k = 0; k < cols.k; ++k) sum += static_cast<int64_t>(w[k]) * src[k];
        o[j] = mean(sum);
      }
    }
  }
}

}  // namespace

void residual(const Plane* cur, const Plane* ref, int channels, const float* field, int height, int width, int grid,
              int16_t* out) {
  run<false>(cur, ref, channels, field, height, width, grid, out, nullptr);
}

void warp(const Plane* ref, int channels, const float* field, int height, int width, int grid, uint8_t* out) {
  run<true>(nullptr, ref, channels, field, height, width, grid, nullptr, out);
}

void residual_pooled(const Plane* cur, const Plane* ref, int channels, const float* field, int height, int width,
                     int grid, const Window& win, int16_t* out) {
  if (win.y0 == 0 && win.x0 == 0 && win.hs == height && win.ws == width && win.out_h == height &&
      win.out_w == width) {
    residual(cur, ref, channels, field, height, width, grid, out);  // every weight is one: the plain residual
    return;
  }
  // Native rows in order, each computed once: row v of the window covers [v*oh, (v+1)*oh) and output row i covers
  // [i*hs, (i+1)*hs) (hs >= oh), so a row feeds at most two output rows: `now` (weight w0) and `next` (the rest).
  // A column sum is at most 255 * hs (the weights of an output row sum to hs): int32; the horizontal sums int64.
  const int oh = win.out_h;
  const DenseTaps cols = dense_taps(win.ws, win.out_w);
  std::vector<int16_t> res_row(static_cast<size_t>(channels) * width);  // one native row: never the whole frame
  const int64_t stride = win.ws + cols.k;                                 // zeros past ws for the dense taps
  std::vector<int32_t> acc_now(static_cast<size_t>(channels * stride), 0), acc_next(acc_now.size(), 0);
  std::vector<Span> cell_spans, spans;
  int spans_of = -1, row_now = 0;
  for (int v = 0; v < win.hs; ++v) {
    const int64_t lo = static_cast<int64_t>(v) * oh;
    const int i0 = static_cast<int>(lo / win.hs);
    const auto w0 = static_cast<int16_t>(std::min<int64_t>(lo + oh, static_cast<int64_t>(i0 + 1) * win.hs) - lo);
    const auto w1 = static_cast<int16_t>(oh - w0);
    if (i0 != row_now) {
      finish_row(acc_now.data(), stride, channels, cols, win, row_now, out);
      acc_now.swap(acc_next);
      std::fill(acc_next.begin(), acc_next.end(), 0);
      row_now = i0;
    }
    const int y = win.y0 + v;
    if (spans_of != y / grid) {
      cell_row_spans(field, height, width, grid, y / grid, cell_spans);
      clip_spans(cell_spans, win.x0, win.x0 + win.ws, width, spans);
      spans_of = y / grid;
    }
    for (int c = 0; c < channels; ++c) {
      int16_t* row = res_row.data() + static_cast<int64_t>(c) * width;
      plane_row<false>(ref[c], &cur[c], spans, y, height, width, row, nullptr);
      add_weighted(row + win.x0, win.ws, w0, acc_now.data() + c * stride);
      if (w1) add_weighted(row + win.x0, win.ws, w1, acc_next.data() + c * stride);
    }
  }
  finish_row(acc_now.data(), stride, channels, cols, win, row_now, out);
}

}  // namespace edgeml::mv
