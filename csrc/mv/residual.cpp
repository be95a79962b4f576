#include "mv/residual.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

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

// The spans of cell row i over the columns [x0, x1) only (the window of a model-resolution output): as
// cell_row_spans, cut to the window, so the cells outside it are never read.
void window_spans(const float* field, int height, int width, int grid, int i, int x0, int x1,
                  std::vector<Span>& spans) {
  spans.clear();
  const int wo = cells(width, grid);
  const int64_t plane = static_cast<int64_t>(cells(height, grid)) * wo;
  const float* fx = field ? field + static_cast<int64_t>(i) * wo : nullptr;
  for (int j = x0 / grid; j * grid < x1; ++j) {
    const int a = std::max(j * grid, x0), b = std::min(std::min((j + 1) * grid, width), x1);
    int dx = 0, dy = 0;
    if (fx) {
      dx = floor_int(-fx[j]);
      dy = floor_int(-fx[j + plane]);
    }
    if (!spans.empty() && spans.back().dx == dx && spans.back().dy == dy) {
      spans.back().x1 = b;
    } else {
      spans.push_back({a, b, dy, dx, false});
    }
  }
  for (Span& s : spans) s.clamped = s.x0 + s.dx < 0 || s.x1 - 1 + s.dx > width - 1;
}

inline bool is_unit(const Plane& p) { return p.col_stride == 1 && p.shift_x == 0 && p.shift_y == 0; }

// Full-resolution samples [x0, x0 + n) of plane row r (each sample repeated 2^shift_x times, any column stride).
void widen_row(const Plane& p, int r, int x0, int n, uint8_t* dst) {
  const uint8_t* src = p.data + r * p.row_stride;
  if (p.col_stride == 1 && p.shift_x == 0) {
    std::memcpy(dst, src + x0, static_cast<size_t>(n));
  } else if (p.col_stride == 1 && p.shift_x == 1) {
    int x = x0, k = 0;
    if (x & 1) dst[k++] = src[x++ >> 1];
    const int pairs = (x0 + n - x) / 2;
    const uint8_t* s = src + (x >> 1);
    for (int q = 0; q < pairs; ++q) dst[k + 2 * q] = dst[k + 2 * q + 1] = s[q];  // unpack-with-itself
    k += 2 * pairs;
    x += 2 * pairs;
    if (x < x0 + n) dst[k] = src[x >> 1];
  } else {
    for (int k = 0; k < n; ++k) dst[k] = src[((x0 + k) >> p.shift_x) * p.col_stride];
  }
}

// The warped reference over rows [y, y + rows) of one cell row (all share `spans`): row t of `dst` (rows `pitch`
// apart, column x at x - x0) = ref(clamp(y + t + dy), clamp(x + dx)). Inside the frame a span is one shifted copy per
// row; at grid 4 most spans are one cell (fields chained to the I-frame change from cell to cell): a 4-byte move.
void warp_rows(const Plane& b, const std::vector<Span>& spans, int y, int rows, int height, int width, int x0,
               uint8_t* dst, int64_t pitch) {
  for (const Span& sp : spans) {
    const int n = sp.x1 - sp.x0;
    uint8_t* d = dst + (sp.x0 - x0);
    const int top = y + sp.dy;
    if (!sp.clamped && top >= 0 && top + rows <= height) {  // the common case: no clamping at all
      const uint8_t* s = b.data + top * b.row_stride + sp.x0 + sp.dx;
      if (n == 4) {
        for (int t = 0; t < rows; ++t, s += b.row_stride, d += pitch) std::memcpy(d, s, 4);
      } else if (n % 4 == 0 && n <= 16) {  // a few cells with one vector: 4-byte moves, no memcpy call
        for (int t = 0; t < rows; ++t, s += b.row_stride, d += pitch) {
          for (int k = 0; k < n; k += 4) std::memcpy(d + k, s + k, 4);
        }
      } else {
        for (int t = 0; t < rows; ++t, s += b.row_stride, d += pitch) std::memcpy(d, s, static_cast<size_t>(n));
      }
      continue;
    }
    for (int t = 0; t < rows; ++t, d += pitch) {
      const uint8_t* brow = b.data + clampi(top + t, 0, height - 1) * b.row_stride;
      if (!sp.clamped) {
        std::memcpy(d, brow + sp.x0 + sp.dx, static_cast<size_t>(n));
      } else {
        for (int k = 0; k < n; ++k) d[k] = brow[clampi(sp.x0 + k + sp.dx, 0, width - 1)];
      }
    }
  }
}

// A row of full weight (it lies inside one output row): acc += cur - warped, int16 (at most 128 rows before a fold:
// 128 * 255 < 2^15). Contiguous and branch-free: the compiler vectorises it.
inline void add_rows(const uint8_t* a, const uint8_t* b, int n, int16_t* acc) {
  for (int x = 0; x < n; ++x) acc[x] = static_cast<int16_t>(acc[x] + (a[x] - b[x]));
}

// A row split between two output rows: weights w0 (this one) and w1 (the next), int16 x int16 -> int32 products
// (SSE2 pmullw/pmulhw; a 32-bit multiply would need SSE4.1).
inline void add_split(const uint8_t* a, const uint8_t* b, int n, int16_t w0, int16_t w1, int32_t* now,
                      int32_t* next) {
  for (int x = 0; x < n; ++x) {
    const auto r = static_cast<int16_t>(a[x] - b[x]);
    now[x] += static_cast<int32_t>(w0) * r;
    next[x] += static_cast<int32_t>(w1) * r;
  }
}

// n / den rounded half away from zero, for |n| <= 255 * den: the output of the area mean.
inline int16_t round_div16(int64_t n, int64_t den) {
  const int64_t q = (2 * (n < 0 ? -n : n) + den) / (2 * den);
  return static_cast<int16_t>(n < 0 ? -q : q);
}

// The same for a row of int32 sums and den <= 2^26 (every narrow window): floor(|n| * (1 / den) + 1/2 + 2^-30) in
// double, sign restored. Exact: the product is within 2^-44 of |n| / den, and where |n| / den + 1/2 is not whole it
// is at least 1 / 2den >= 2^-27 from the next integer. SSE2 does two at a time (no 64-bit division per sample).
void round_row(const int32_t* n, int count, int64_t den, int16_t* out) {
  const double inv = 1.0 / static_cast<double>(den);
  int j = 0;
#if defined(__SSE2__)
  const __m128d vinv = _mm_set1_pd(inv), half = _mm_set1_pd(0.5 + 0x1p-30), sign = _mm_set1_pd(-0.0);
  for (; j + 4 <= count; j += 4) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(n + j));
    const __m128d lo = _mm_cvtepi32_pd(v), hi = _mm_cvtepi32_pd(_mm_shuffle_epi32(v, 0x0e));
    const __m128i qlo = _mm_cvttpd_epi32(_mm_add_pd(_mm_mul_pd(_mm_andnot_pd(sign, lo), vinv), half));
    const __m128i qhi = _mm_cvttpd_epi32(_mm_add_pd(_mm_mul_pd(_mm_andnot_pd(sign, hi), vinv), half));
    const __m128i q = _mm_unpacklo_epi64(qlo, qhi);
    const __m128i neg = _mm_srai_epi32(v, 31);                      // -1 where n < 0
    const __m128i r = _mm_sub_epi32(_mm_xor_si128(q, neg), neg);    // q or -q
    _mm_storel_epi64(reinterpret_cast<__m128i*>(out + j), _mm_packs_epi32(r, r));
  }
#endif
  for (; j < count; ++j) {
    const double a = static_cast<double>(n[j] < 0 ? -static_cast<int64_t>(n[j]) : n[j]);
    const auto q = static_cast<int32_t>(a * inv + (0.5 + 0x1p-30));
    out[j] = static_cast<int16_t>(n[j] < 0 ? -q : q);
  }
}

// Prefix sums of a finished output row's column sums s[u] = now[u] + oh * acc16[u]: p[u + 1] = s[0] + ... + s[u],
// p[0] = 0 and p[n + 1] = p[n] (so p[q + 1] may be read at q = n). Where every partial sum fits int32 (the caller
// checks), SSE2 does four lanes at a time: oh * acc16 by one pmaddwd, then two shifted adds within the register and
// the carry of the lanes before.
template <typename T>
void prefix_sums(const int32_t* now, const int16_t* acc16, int16_t oh, size_t n, T* p) {
  p[0] = 0;
  size_t u = 0;
  T run = 0;
#if defined(__SSE2__)
  if constexpr (sizeof(T) == 4) {
    __m128i carry = _mm_setzero_si128();
    const __m128i w = _mm_set1_epi32(oh);  // (oh, 0) int16 pairs
    for (; u + 4 <= n; u += 4) {
      const __m128i a16 = _mm_unpacklo_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(acc16 + u)),
                                             _mm_setzero_si128());
      __m128i x = _mm_add_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(now + u)), _mm_madd_epi16(a16, w));
      x = _mm_add_epi32(x, _mm_slli_si128(x, 4));
      x = _mm_add_epi32(x, _mm_slli_si128(x, 8));
      x = _mm_add_epi32(x, carry);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(p + u + 1), x);
      carry = _mm_shuffle_epi32(x, 0xff);
    }
    run = p[u];
  }
#endif
  for (; u < n; ++u) p[u + 1] = run += now[u] + static_cast<int32_t>(oh) * acc16[u];
  p[n + 1] = p[n];
}

// The window's columns as a continuous axis (native column u spans [u*out, (u+1)*out), output column j spans
// [j*in, (j+1)*in)): boundary j of the output columns, X = j*in, falls in native column q = X / out at offset
// r = X % out. With the prefix sums P of the column sums, the integral up to X is (out - r) * P[q] + r * P[q + 1], and
// output column j is the integral up to boundary j + 1 minus that up to boundary j: one evaluation per boundary,
// shared by the two columns it separates.
struct Boundary {
  int q;
  int64_t w_q, w_next;  // out - r and r
};

std::vector<Boundary> boundaries(int in, int out) {
  std::vector<Boundary> b(out + 1);
  for (int j = 0; j <= out; ++j) {
    const int64_t x = static_cast<int64_t>(j) * in;
    const auto q = static_cast<int>(x / out), r = static_cast<int>(x % out);
    b[j] = {q, out - r, r};
  }
  return b;
}

}  // namespace

void residual(const Plane* cur, const Plane* ref, int channels, const float* field, int height, int width, int grid,
              int16_t* out) {
  run<false>(cur, ref, channels, field, height, width, grid, out, nullptr);
}

void warp(const Plane* ref, int channels, const float* field, int height, int width, int grid, uint8_t* out) {
  run<true>(nullptr, ref, channels, field, height, width, grid, nullptr, out);
}

void widen_plane(const Plane& p, int height, int width, uint8_t* out) {
  for (int y = 0; y < height; ++y, out += width) {
    if (p.shift_y && (y & 1)) {
      std::memcpy(out, out - width, static_cast<size_t>(width));  // the row above, repeated
    } else {
      widen_row(p, y >> p.shift_y, 0, width, out);
    }
  }
}

void residual_pooled(const Plane* cur, const Plane* ref, int channels, const float* field, int height, int width,
                     int grid, const Window& win, int16_t* out) {
  if (win.y0 == 0 && win.x0 == 0 && win.hs == height && win.ws == width && win.out_h == height &&
      win.out_w == width) {
    residual(cur, ref, channels, field, height, width, grid, out);  // every weight is one: the plain residual
    return;
  }
  std::vector<Plane> wide(ref, ref + channels);
  std::vector<std::unique_ptr<uint8_t[]>> own(channels);  // every byte is written: no zero fill
  for (int c = 0; c < channels; ++c) {
    if (is_unit(ref[c])) continue;
    own[c].reset(new uint8_t[static_cast<size_t>(height) * width]);
    widen_plane(ref[c], height, width, own[c].get());
    wide[c] = {own[c].get(), width, 1, 0, 0};
  }
  residual_pooled_wide(cur, wide.data(), channels, field, height, width, grid, win, out);
}

void residual_pooled_wide(const Plane* cur, const Plane* ref, int channels, const float* field, int height,
                          int width, int grid, const Window& win, int16_t* out) {
  // Native rows of the window in order, each read once, a cell row (grid rows sharing the field's spans) at a time:
  // row v covers [v*oh, (v+1)*oh) and output row i covers [i*hs, (i+1)*hs) (hs >= oh), so a row feeds at most two
  // output rows. Per cell row and plane: the warped reference rows (shifted copies); per row: cur - warped summed
  // into the column sums of the current output row — plain int16 sums for rows of full weight oh (most of them),
  // weighted int32 sums for rows split between two output rows. A finished output row takes its horizontal taps
  // from a prefix sum of its column sums. Column sums are at most 255 * hs (int32), the 2-D sums 255 * hs * ws
  // (int64): exact.
  const int oh = win.out_h, ws = win.ws, x0 = win.x0;
  const auto cols = boundaries(ws, win.out_w);
  const int64_t out_plane = static_cast<int64_t>(oh) * win.out_w;
  const size_t n = static_cast<size_t>(ws);
  std::vector<uint8_t> warped(n * grid * channels), cur_rows(n * channels);
  std::vector<int> cur_row_of(channels, -1);
  std::vector<int16_t> acc16(n * channels, 0);
  std::vector<int32_t> now(n * channels, 0), next(n * channels, 0), prefix32(n + 2), sums(win.out_w);
  std::vector<int64_t> prefix(n + 2, 0);
  int n16 = 0;  // rows summed in acc16 since it was last folded into `now`

  auto fold = [&] {  // acc16 (rows of weight oh) into now
    for (size_t k = 0; k < acc16.size(); ++k) now[k] += static_cast<int32_t>(oh) * acc16[k];
    std::fill(acc16.begin(), acc16.end(), int16_t{0});
    n16 = 0;
  };
  // Every sum fits int32 when 255 * hs * ws does (any window up to ~2900 x 2900): SSE2 prefix sums and means.
  const int64_t den = static_cast<int64_t>(win.hs) * ws;
  const bool narrow = 255 * den < (int64_t{1} << 31);
  auto finish = [&](int i) {  // output row i from its column sums, which are cleared for the row after next
    for (int c = 0; c < channels; ++c) {
      int16_t* o = out + c * out_plane + static_cast<int64_t>(i) * win.out_w;
      const int32_t* a = now.data() + c * n;
      const int16_t* a16 = acc16.data() + c * n;
      if (narrow) {
        prefix_sums(a, a16, static_cast<int16_t>(oh), n, prefix32.data());
        const int32_t* p = prefix32.data();
        int32_t left = 0;  // the integral up to boundary 0
        for (int j = 0; j < win.out_w; ++j) {
          const Boundary& b = cols[j + 1];
          const auto right = static_cast<int32_t>(b.w_q * p[b.q] + b.w_next * p[b.q + 1]);
          sums[j] = right - left;
          left = right;
        }
        round_row(sums.data(), win.out_w, den, o);
      } else {
        prefix_sums(a, a16, static_cast<int16_t>(oh), n, prefix.data());
        const int64_t* p = prefix.data();
        int64_t left = 0;
        for (int j = 0; j < win.out_w; ++j) {
          const Boundary& b = cols[j + 1];
          const int64_t right = b.w_q * p[b.q] + b.w_next * p[b.q + 1];
          o[j] = round_div16(right - left, den);
          left = right;
        }
      }
    }
    std::fill(acc16.begin(), acc16.end(), int16_t{0});
    std::fill(now.begin(), now.end(), 0);
    n16 = 0;
  };

  std::vector<Span> spans;
  int row_now = 0;
  const int64_t pitch = static_cast<int64_t>(n);
  for (int v = 0; v < win.hs;) {
    const int y = win.y0 + v, rows = std::min(grid - y % grid, win.hs - v);  // the window's rows of this cell row
    window_spans(field, height, width, grid, y / grid, x0, x0 + ws, spans);
    for (int c = 0; c < channels; ++c) {
      warp_rows(ref[c], spans, y, rows, height, width, x0, warped.data() + c * grid * n, pitch);
    }
    for (int t = 0; t < rows; ++t, ++v) {
      const int64_t lo = static_cast<int64_t>(v) * oh;
      const int i0 = static_cast<int>(lo / win.hs);
      const auto w0 = static_cast<int16_t>(std::min<int64_t>(lo + oh, static_cast<int64_t>(i0 + 1) * win.hs) - lo);
      const auto w1 = static_cast<int16_t>(oh - w0);
      if (i0 != row_now) {
        finish(row_now);
        now.swap(next);
        row_now = i0;
      }
      for (int c = 0; c < channels; ++c) {
        const Plane& p = cur[c];
        const int r = (y + t) >> p.shift_y;
        const uint8_t* a;
        if (is_unit(p)) {
          a = p.data + r * p.row_stride + x0;
        } else {
          uint8_t* buf = cur_rows.data() + c * n;
          if (cur_row_of[c] != r) widen_row(p, r, x0, ws, buf);  // chroma: shared by the two rows it covers
          cur_row_of[c] = r;
          a = buf;
        }
        const uint8_t* b = warped.data() + (c * grid + t) * n;
        if (w1 == 0) {
          add_rows(a, b, ws, acc16.data() + c * n);
        } else {
          add_split(a, b, ws, w0, w1, now.data() + c * n, next.data() + c * n);
        }
      }
      if (w1 == 0 && ++n16 == 128) fold();
    }
  }
  finish(row_now);
}

}  // namespace edgeml::mv
