#include "mv/residual.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <vector>

#include "mv/rasterise.h"
#include "mv/resample.h"
#include "mv/simd.h"

namespace edgeml::mv {

namespace {

inline int clampi(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

std::atomic<int> g_simd_cap{2};  // set_simd_cap: the highest instruction set the kernels may pick

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
// ----------------------------------------------------------------------------------------- the fused pooled kernel

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
#if defined(__SSE2__)
    int q = 0;
    for (; q + 16 <= pairs; q += 16) {  // unpack-with-itself: 16 samples -> 32
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + q));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + k + 2 * q), _mm_unpacklo_epi8(v, v));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + k + 2 * q + 16), _mm_unpackhi_epi8(v, v));
    }
    for (; q < pairs; ++q) dst[k + 2 * q] = dst[k + 2 * q + 1] = s[q];
#else
    for (int q = 0; q < pairs; ++q) dst[k + 2 * q] = dst[k + 2 * q + 1] = s[q];
#endif
    k += 2 * pairs;
    x += 2 * pairs;
    if (x < x0 + n) dst[k] = src[x >> 1];
  } else {
    for (int k = 0; k < n; ++k) dst[k] = src[((x0 + k) >> p.shift_x) * p.col_stride];
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

// Prefix sums p[u + 1] = s[0] + ... + s[u] of a finished output row's column sums, p[0] = 0 and p[n + 1] = p[n] (so
// p[q + 1] may be read at q = n). In int32 (every partial sum fits: the caller checks) SSE2 does four lanes at a
// time: two shifted adds within the register and the carry of the lanes before.
template <typename T>
void prefix_sums(const int32_t* s, size_t n, T* p) {
  p[0] = 0;
  size_t u = 0;
  T run = 0;
#if defined(__SSE2__)
  if constexpr (sizeof(T) == 4) {
    __m128i carry = _mm_setzero_si128();
    for (; u + 4 <= n; u += 4) {
      __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + u));
      x = _mm_add_epi32(x, _mm_slli_si128(x, 4));
      x = _mm_add_epi32(x, _mm_slli_si128(x, 8));
      x = _mm_add_epi32(x, carry);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(p + u + 1), x);
      carry = _mm_shuffle_epi32(x, 0xff);
    }
    run = p[u];
  }
#endif
  for (; u < n; ++u) p[u + 1] = run += s[u];
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

// Column sums of a finished output row from its accumulators: s = wf * full + oh * folded + wa * above + wb * below
// (int16 rows, int32 sums; folded may be null; a zero weight makes stale contents count nothing). Plain loops: the
// compiler vectorises them for each instruction set.
__attribute__((always_inline)) inline void column_sums(const int16_t* full, const int32_t* folded,
                                                       const int16_t* above, const int16_t* below, int wf, int oh,
                                                       int wa, int wb, size_t n, int32_t* s) {
  for (size_t x = 0; x < n; ++x) s[x] = wf * full[x] + wa * above[x] + wb * below[x];
  if (folded) {
    for (size_t x = 0; x < n; ++x) s[x] += oh * folded[x];
  }
}

// The boundaries' integrals I[j] = w_q[j] * p[q[j]] + w_next[j] * p[q[j] + 1] for j < count, modulo 2^32 (their
// differences, the output sums, are exact), then sums[j] = I[j + 1] - I[j].
struct Cols32 {
  std::vector<int32_t> q, w_q, w_next;
  explicit Cols32(const std::vector<Boundary>& b) {
    for (const Boundary& x : b) {
      q.push_back(x.q);
      w_q.push_back(static_cast<int32_t>(x.w_q));
      w_next.push_back(static_cast<int32_t>(x.w_next));
    }
  }
};

__attribute__((always_inline)) inline void sums_of(const uint32_t* integral, int count, int32_t* sums) {
  for (int j = 0; j + 1 < count; ++j) sums[j] = static_cast<int32_t>(integral[j + 1] - integral[j]);
}

void column_sums_base(const int16_t* full, const int32_t* folded, const int16_t* above, const int16_t* below, int wf,
                      int oh, int wa, int wb, size_t n, int32_t* s) {
  column_sums(full, folded, above, below, wf, oh, wa, wb, n, s);
}

void boundary_sums_base(const int32_t* p, const Cols32& c, uint32_t* integral, int32_t* sums) {
  const auto* u = reinterpret_cast<const uint32_t*>(p);
  const int count = static_cast<int>(c.q.size());
  for (int j = 0; j < count; ++j) {
    integral[j] = static_cast<uint32_t>(c.w_q[j]) * u[c.q[j]] + static_cast<uint32_t>(c.w_next[j]) * u[c.q[j] + 1];
  }
  sums_of(integral, count, sums);
}

#if EDGEML_MV_AVX2
// column_sums and prefix_sums<int32_t> in one pass, eight columns at a time: (full, above) pairs weighted by one
// pmaddwd (wf, wa, wb < 2^15), then the prefix within each 128-bit lane by two shifted adds, the low lane's total
// into the high lane, and the carry of the lanes before.
__attribute__((target("avx2"))) void column_prefix_avx2(const int16_t* full, const int32_t* folded,
                                                        const int16_t* above, const int16_t* below, int wf, int oh,
                                                        int wa, int wb, size_t n, int32_t* p) {
  p[0] = 0;
  size_t u = 0;
  __m256i carry = _mm256_setzero_si256();
  const __m256i last = _mm256_set1_epi32(7);
  const auto pair = (static_cast<uint32_t>(wa) << 16) | static_cast<uint16_t>(wf);  // int16 (wf, wa)
  const __m256i wfa = _mm256_set1_epi32(static_cast<int>(pair));
  const __m256i wbv = _mm256_set1_epi32(wb), wov = _mm256_set1_epi32(oh);
  for (; u + 8 <= n; u += 8) {
    const __m128i f = _mm_loadu_si128(reinterpret_cast<const __m128i*>(full + u));
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(above + u));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(below + u));
    __m256i x = _mm256_madd_epi16(_mm256_set_m128i(_mm_unpackhi_epi16(f, a), _mm_unpacklo_epi16(f, a)), wfa);
    x = _mm256_add_epi32(x, _mm256_mullo_epi32(_mm256_cvtepi16_epi32(b), wbv));
    if (folded) {
      const __m256i g = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(folded + u));
      x = _mm256_add_epi32(x, _mm256_mullo_epi32(g, wov));
    }
    x = _mm256_add_epi32(x, _mm256_slli_si256(x, 4));
    x = _mm256_add_epi32(x, _mm256_slli_si256(x, 8));
    x = _mm256_add_epi32(x, _mm256_shuffle_epi32(_mm256_permute2x128_si256(x, x, 0x08), 0xff));
    x = _mm256_add_epi32(x, carry);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + u + 1), x);
    carry = _mm256_permutevar8x32_epi32(x, last);
  }
  int32_t run = p[u];
  for (; u < n; ++u) {
    p[u + 1] = run += wf * full[u] + wa * above[u] + wb * below[u] + (folded ? oh * folded[u] : 0);
  }
  p[n + 1] = p[n];
}

__attribute__((target("avx2"))) void boundary_sums_avx2(const int32_t* p, const Cols32& c, uint32_t* integral,
                                                        int32_t* sums) {
  const int count = static_cast<int>(c.q.size());
  int j = 0;
  for (; j + 8 <= count; j += 8) {  // two gathers of the prefix sums, eight boundaries at a time
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c.q.data() + j));
    const __m256i a = _mm256_i32gather_epi32(reinterpret_cast<const int*>(p), q, 4);
    const __m256i b = _mm256_i32gather_epi32(reinterpret_cast<const int*>(p + 1), q, 4);
    const __m256i wq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c.w_q.data() + j));
    const __m256i wn = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c.w_next.data() + j));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(integral + j),
                        _mm256_add_epi32(_mm256_mullo_epi32(wq, a), _mm256_mullo_epi32(wn, b)));
  }
  const auto* u = reinterpret_cast<const uint32_t*>(p);
  for (; j < count; ++j) {
    integral[j] = static_cast<uint32_t>(c.w_q[j]) * u[c.q[j]] + static_cast<uint32_t>(c.w_next[j]) * u[c.q[j] + 1];
  }
  sums_of(integral, count, sums);
}

// round_row's arithmetic on eight sums `v` (inv = 1 / den): the eight int16 outputs.
__attribute__((target("avx2"))) inline __m128i round8_avx2(__m256i v, __m256d inv) {
  const __m256d half = _mm256_set1_pd(0.5 + 0x1p-30), sign = _mm256_set1_pd(-0.0);
  const __m256d lo = _mm256_cvtepi32_pd(_mm256_castsi256_si128(v));
  const __m256d hi = _mm256_cvtepi32_pd(_mm256_extracti128_si256(v, 1));
  const __m128i qlo = _mm256_cvttpd_epi32(_mm256_add_pd(_mm256_mul_pd(_mm256_andnot_pd(sign, lo), inv), half));
  const __m128i qhi = _mm256_cvttpd_epi32(_mm256_add_pd(_mm256_mul_pd(_mm256_andnot_pd(sign, hi), inv), half));
  const __m256i q = _mm256_inserti128_si256(_mm256_castsi128_si256(qlo), qhi, 1);
  const __m256i neg = _mm256_srai_epi32(v, 31);
  const __m256i r = _mm256_sub_epi32(_mm256_xor_si256(q, neg), neg);
  return _mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packs_epi32(r, r), 0x08));  // lanes' halves together
}

// round_row eight at a time (the same double arithmetic).
__attribute__((target("avx2"))) void round_row_avx2(const int32_t* n, int count, int64_t den, int16_t* out) {
  const __m256d inv = _mm256_set1_pd(1.0 / static_cast<double>(den));
  int j = 0;
  for (; j + 8 <= count; j += 8) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(n + j));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + j), round8_avx2(v, inv));
  }
  round_row(n + j, count - j, den, out + j);
}
#else
constexpr auto boundary_sums_avx2 = boundary_sums_base;  // never picked: simd_level() is 1 without AVX2
constexpr auto round_row_avx2 = round_row;
#endif

// The boundaries of the output columns by blocks of eight window columns (fused_row_avx2): boundary j < out of a
// window `in` columns wide falls in column q = j * in / out at offset r (Boundary); with the column sums s and their
// inclusive prefix P (P[q] = s[0] + ... + s[q]), its integral is out * P[q] - (out - r) * s[q]. Block b holds the
// boundaries with q in [8b, 8b + 8) (at most eight: in >= out): `first[b]` the index of its first one, `lane` their
// lanes q - 8b and `w_q` their out - r, eight per block (unused lanes: lane 0, weight 0).
struct Blocks {
  std::vector<int32_t> first, lane, w_q;
  Blocks(const std::vector<Boundary>& b, int in) {
    const int nb = (in + 7) / 8, out = static_cast<int>(b.size()) - 1;
    first.assign(nb + 1, 0);
    lane.assign(static_cast<size_t>(nb) * 8, 0);
    w_q.assign(static_cast<size_t>(nb) * 8, 0);
    for (int j = 0; j < out; ++j) ++first[b[j].q / 8 + 1];
    for (int k = 0; k < nb; ++k) first[k + 1] += first[k];
    for (int j = 0; j < out; ++j) {
      const int blk = b[j].q / 8, m = j - first[blk];
      lane[blk * 8 + m] = b[j].q - 8 * blk;
      w_q[blk * 8 + m] = static_cast<int32_t>(b[j].w_q);
    }
  }
};

#if EDGEML_MV_AVX2
// One finished output row of one plane in one pass, no gathers: per block of eight window columns the column sums
// (as column_prefix_avx2), their inclusive prefix, and the integrals of the block's boundaries picked out of the two
// registers by one permute each, stored eight lanes at a time at the block's first boundary (the next block's store
// overwrites the unused lanes); the last boundary (q = in) is out * P[in - 1]. Then each output's sum is the
// difference of two neighbouring integrals (modulo 2^32, exact), rounded as round_row_avx2. The rows are read in
// whole blocks: each must have 7 readable samples past `n` (the caller pads them), whatever they hold.
__attribute__((target("avx2"))) void fused_row_avx2(const int16_t* full, const int32_t* folded, const int16_t* above,
                                                    const int16_t* below, int wf, int oh, int wa, int wb, size_t n,
                                                    int out, const Blocks& blocks, uint32_t* integral, int64_t den,
                                                    int16_t* dst) {
  const auto pair = (static_cast<uint32_t>(wa) << 16) | static_cast<uint16_t>(wf);  // int16 (wf, wa)
  const __m256i wfa = _mm256_set1_epi32(static_cast<int>(pair));
  const __m256i wbv = _mm256_set1_epi32(wb), wov = _mm256_set1_epi32(oh), outv = _mm256_set1_epi32(out);
  const __m256i last = _mm256_set1_epi32(7);
  __m256i carry = _mm256_setzero_si256(), x = carry;
  const size_t nb = (n + 7) / 8;
  for (size_t blk = 0; blk < nb; ++blk) {
    const size_t u = 8 * blk;
    const __m128i f = _mm_loadu_si128(reinterpret_cast<const __m128i*>(full + u));
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(above + u));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(below + u));
    __m256i s = _mm256_madd_epi16(_mm256_set_m128i(_mm_unpackhi_epi16(f, a), _mm_unpacklo_epi16(f, a)), wfa);
    s = _mm256_add_epi32(s, _mm256_mullo_epi32(_mm256_cvtepi16_epi32(b), wbv));
    if (folded) {
      s = _mm256_add_epi32(s, _mm256_mullo_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(folded + u)),
                                                 wov));
    }
    x = _mm256_add_epi32(s, _mm256_slli_si256(s, 4));
    x = _mm256_add_epi32(x, _mm256_slli_si256(x, 8));
    x = _mm256_add_epi32(x, _mm256_shuffle_epi32(_mm256_permute2x128_si256(x, x, 0x08), 0xff));
    x = _mm256_add_epi32(x, carry);
    carry = _mm256_permutevar8x32_epi32(x, last);
    const __m256i lane = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blocks.lane.data() + u));
    const __m256i wq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blocks.w_q.data() + u));
    const __m256i i = _mm256_sub_epi32(_mm256_mullo_epi32(outv, _mm256_permutevar8x32_epi32(x, lane)),
                                       _mm256_mullo_epi32(wq, _mm256_permutevar8x32_epi32(s, lane)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(integral + blocks.first[blk]), i);
  }
  alignas(32) int32_t tail[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(tail), x);
  integral[out] = static_cast<uint32_t>(out) * static_cast<uint32_t>(tail[(n - 1) % 8]);
  // the outputs: sums[j] = integral[j + 1] - integral[j], rounded (round_row_avx2's arithmetic)
  const __m256d inv = _mm256_set1_pd(1.0 / static_cast<double>(den));
  int j = 0;
  for (; j + 8 <= out; j += 8) {
    const __m256i v = _mm256_sub_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(integral + j + 1)),
                                       _mm256_loadu_si256(reinterpret_cast<const __m256i*>(integral + j)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + j), round8_avx2(v, inv));
  }
  int32_t rest[8];
  for (int k = j; k < out; ++k) rest[k - j] = static_cast<int32_t>(integral[k + 1] - integral[k]);
  round_row(rest, out - j, den, dst + j);
}
#endif

// The vectors of cell row i as start offsets into padded reference planes (widen_padded; all share one layout):
// cell j of the window's cells [j0, j0 + count) reads the rows [y, y + rows) and its `grid` columns shifted by
// (floor(-fx), floor(-fy)), i.e. from sample (y + dy, j*grid + dx) on, with that start clamped to the border so that
// every read the rows and columns of the cell make lies inside the padded plane and is the clamped sample (a start
// beyond the border reads border copies of the edge sample only, as the clamped read does, since grid <= kPad).
#if EDGEML_MV_AVX2
// cell_offsets eight cells at a time, in float (floor and clamp of whole numbers below 2^24 are exact; a start beyond
// that range is clamped either way): returns the number of cells done.
__attribute__((target("avx2"))) int cell_offsets_avx2(const float* fx, const float* fy, int height, int width,
                                                      int grid, int y, int rows, int j0, int count, int64_t stride,
                                                      int32_t* off) {
  const __m256 lo = _mm256_set1_ps(-kPad), sign = _mm256_set1_ps(-0.0f);
  const __m256 xhi = _mm256_set1_ps(static_cast<float>(width + kPad - grid));
  const __m256 yhi = _mm256_set1_ps(static_cast<float>(height + kPad - rows));
  const __m256 top = _mm256_set1_ps(static_cast<float>(y));
  const __m256 step = _mm256_set1_ps(static_cast<float>(8 * grid));
  const __m256 lane = _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7);
  __m256 px = _mm256_mul_ps(_mm256_add_ps(_mm256_set1_ps(static_cast<float>(j0)), lane),
                            _mm256_set1_ps(static_cast<float>(grid)));
  const __m256i sv = _mm256_set1_epi32(static_cast<int>(stride));
  int k = 0;
  for (; k + 8 <= count; k += 8, px = _mm256_add_ps(px, step)) {
    const __m256 dx = _mm256_floor_ps(_mm256_xor_ps(_mm256_loadu_ps(fx + j0 + k), sign));
    const __m256 dy = _mm256_floor_ps(_mm256_xor_ps(_mm256_loadu_ps(fy + j0 + k), sign));
    const __m256 sx = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(px, dx), lo), xhi);
    const __m256 sy = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(top, dy), lo), yhi);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(off + k),
                        _mm256_add_epi32(_mm256_mullo_epi32(_mm256_cvtps_epi32(sy), sv), _mm256_cvtps_epi32(sx)));
  }
  return k;
}
#endif

void cell_offsets(const float* field, int height, int width, int grid, int i, int y, int rows, int j0, int count,
                  int64_t stride, int32_t* off) {
  const int wo = cells(width, grid);
  const int64_t plane = static_cast<int64_t>(cells(height, grid)) * wo;
  const float* fx = field ? field + static_cast<int64_t>(i) * wo : nullptr;
  int k = 0;
#if EDGEML_MV_AVX2
  if (fx && simd_level() >= 2) {
    k = cell_offsets_avx2(fx, fx + plane, height, width, grid, y, rows, j0, count, stride, off);
  }
#endif
  for (; k < count; ++k) {
    const int j = j0 + k;
    int64_t dx = 0, dy = 0;
    if (fx) {
      dx = floor_int(-fx[j]);
      dy = floor_int(-fx[j + plane]);
    }
    const int64_t sy = std::clamp<int64_t>(y + dy, -kPad, height + kPad - rows);
    const int64_t sx = std::clamp<int64_t>(static_cast<int64_t>(j) * grid + dx, -kPad, width + kPad - grid);
    off[k] = static_cast<int32_t>(sy * stride + sx);
  }
}

// One native row of one plane into a row accumulator: dst[x] (+)= cur[x] - warped[x] over the window's columns, at
// grid 4 with the window starting on a cell (x0 % 4 == 0): warped[4k .. 4k + 3] are the 4 bytes at ref + off[k]
// (ref: the padded plane at this row's offset). kHalf: `a` is a chroma row subsampled by 2 (a[x >> 1]), else a
// full-resolution row (a[x]); both start at the window. kStore: dst = (the first and only row of a split row).
// Four cells (16 samples) per step in SSE2; the AVX2 twin loads eight cells at once.
template <bool kHalf, bool kStore>
inline int cells4(const uint8_t* a, const uint8_t* ref, const int32_t* off, int k, int nc, int16_t* dst) {
#if defined(__SSE2__)
  const __m128i zero = _mm_setzero_si128();
  for (; k + 4 <= nc; k += 4) {
    uint32_t v[4];
    for (int m = 0; m < 4; ++m) std::memcpy(&v[m], ref + off[k + m], 4);
    const __m128i w = _mm_setr_epi32(static_cast<int>(v[0]), static_cast<int>(v[1]), static_cast<int>(v[2]),
                                     static_cast<int>(v[3]));
    __m128i c;
    if constexpr (kHalf) {
      c = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(a + 2 * k));
      c = _mm_unpacklo_epi8(c, c);
    } else {
      c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a + 4 * k));
    }
    __m128i d0 = _mm_sub_epi16(_mm_unpacklo_epi8(c, zero), _mm_unpacklo_epi8(w, zero));
    __m128i d1 = _mm_sub_epi16(_mm_unpackhi_epi8(c, zero), _mm_unpackhi_epi8(w, zero));
    int16_t* o = dst + 4 * k;
    if constexpr (!kStore) {
      d0 = _mm_add_epi16(d0, _mm_loadu_si128(reinterpret_cast<const __m128i*>(o)));
      d1 = _mm_add_epi16(d1, _mm_loadu_si128(reinterpret_cast<const __m128i*>(o + 8)));
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(o), d0);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(o + 8), d1);
  }
#endif
  return k;
}

// The rest of a grid-4 row, sample by sample: cells [k, ...) and the window's last partial cell.
template <bool kHalf, bool kStore>
inline void tail4(const uint8_t* a, const uint8_t* ref, const int32_t* off, int k, int n, int16_t* dst) {
  for (int x = 4 * k; x < n; ++x) {
    const int d = static_cast<int>(kHalf ? a[x >> 1] : a[x]) - ref[off[x >> 2] + (x & 3)];
    dst[x] = static_cast<int16_t>(kStore ? d : dst[x] + d);
  }
}

template <bool kHalf, bool kStore>
void row4_sse2(const uint8_t* a, const uint8_t* ref, const int32_t* off, int n, int16_t* dst) {
  const int k = cells4<kHalf, kStore>(a, ref, off, 0, n / 4, dst);
  tail4<kHalf, kStore>(a, ref, off, k, n, dst);
}

#if EDGEML_MV_AVX2
template <bool kHalf, bool kStore>
__attribute__((target("avx2"))) void row4_avx2(const uint8_t* a, const uint8_t* ref, const int32_t* off, int n,
                                               int16_t* dst) {
  const int nc = n / 4;
  int k = 0;
  for (; k + 8 <= nc; k += 8) {
    // 8 cells x 4 bytes by plain loads: faster than vpgatherdd where measured (AMD EPYC: 15 % off the row kernels)
    uint32_t v[8];
    for (int m = 0; m < 8; ++m) std::memcpy(&v[m], ref + off[k + m], 4);
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v));
    __m128i c0, c1;
    if constexpr (kHalf) {
      const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a + 2 * k));
      c0 = _mm_unpacklo_epi8(h, h);
      c1 = _mm_unpackhi_epi8(h, h);
    } else {
      c0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a + 4 * k));
      c1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a + 4 * k + 16));
    }
    __m256i d0 = _mm256_sub_epi16(_mm256_cvtepu8_epi16(c0), _mm256_cvtepu8_epi16(_mm256_castsi256_si128(w)));
    __m256i d1 = _mm256_sub_epi16(_mm256_cvtepu8_epi16(c1), _mm256_cvtepu8_epi16(_mm256_extracti128_si256(w, 1)));
    int16_t* o = dst + 4 * k;
    if constexpr (!kStore) {
      d0 = _mm256_add_epi16(d0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(o)));
      d1 = _mm256_add_epi16(d1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(o + 16)));
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(o), d0);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + 16), d1);
  }
  k = cells4<kHalf, kStore>(a, ref, off, k, nc, dst);
  tail4<kHalf, kStore>(a, ref, off, k, n, dst);
}
#endif

using RowFn = void (*)(const uint8_t*, const uint8_t*, const int32_t*, int, int16_t*);

// The grid-4 row kernels for (half, store), AVX2 where the CPU has it and simd_level() allows.
RowFn row4(bool half, bool store) {
#if EDGEML_MV_AVX2
  if (simd_level() >= 2) {
    if (half) return store ? row4_avx2<true, true> : row4_avx2<true, false>;
    return store ? row4_avx2<false, true> : row4_avx2<false, false>;
  }
#endif
  if (half) return store ? row4_sse2<true, true> : row4_sse2<true, false>;
  return store ? row4_sse2<false, true> : row4_sse2<false, false>;
}

}  // namespace

int simd_level() {
#if EDGEML_MV_AVX2
  static const int best = __builtin_cpu_supports("avx2") ? 2 : 1;
#else
  static const int best = 1;
#endif
  const int want = g_simd_cap.load(std::memory_order_relaxed);
  return want < best ? want : best;
}

int set_simd_cap(int level) { return g_simd_cap.exchange(level < 1 ? 1 : level); }

void residual(const Plane* cur, const Plane* ref, int channels, const float* field, int height, int width, int grid,
              int16_t* out) {
  run<false>(cur, ref, channels, field, height, width, grid, out, nullptr);
}

void warp(const Plane* ref, int channels, const float* field, int height, int width, int grid, uint8_t* out) {
  run<true>(nullptr, ref, channels, field, height, width, grid, nullptr, out);
}

Plane widen_padded(const Plane& p, int height, int width, uint8_t* out) {
  const int64_t stride = width + 2 * kPad;
  uint8_t* origin = out + kPad * stride + kPad;
  for (int y = 0; y < height; ++y) {
    uint8_t* row = origin + y * stride;
    if (p.shift_y && (y & 1)) {
      std::memcpy(row, row - stride, static_cast<size_t>(width));  // the row above, repeated
    } else {
      widen_row(p, y >> p.shift_y, 0, width, row);
    }
    std::memset(row - kPad, row[0], kPad);
    std::memset(row + width, row[width - 1], kPad);
  }
  for (int t = 1; t <= kPad; ++t) {
    std::memcpy(origin - kPad - t * stride, origin - kPad, static_cast<size_t>(stride));
    std::memcpy(origin - kPad + (height - 1 + t) * stride, origin - kPad + (height - 1) * stride,
                static_cast<size_t>(stride));
  }
  return {origin, stride, 1, 0, 0};
}

void residual_pooled(const Plane* cur, const Plane* ref, int channels, const float* field, int height, int width,
                     int grid, const Window& win, int16_t* out) {
  if (win.y0 == 0 && win.x0 == 0 && win.hs == height && win.ws == width && win.out_h == height &&
      win.out_w == width) {
    residual(cur, ref, channels, field, height, width, grid, out);  // every weight is one: the plain residual
    return;
  }
  std::vector<Plane> padded(channels);
  std::unique_ptr<uint8_t[]> own(new uint8_t[padded_size(height, width) * channels]);  // every byte is written
  for (int c = 0; c < channels; ++c) {
    padded[c] = widen_padded(ref[c], height, width, own.get() + padded_size(height, width) * c);
  }
  residual_pooled_padded(cur, padded.data(), channels, field, height, width, grid, win, out);
}

void residual_pooled_padded(const Plane* cur, const Plane* ref, int channels, const float* field, int height,
                            int width, int grid, const Window& win, int16_t* out) {
  // Native rows of the window in order, each read once, a cell row (grid rows sharing the field's vectors) at a time:
  // row v covers [v*oh, (v+1)*oh) and output row i covers [i*hs, (i+1)*hs) (hs >= oh), so a row lies inside one
  // output row (weight oh: "full") or is split at the boundary between two (weights w0 + w1 = oh; each boundary splits
  // at most one row). Per row and plane, cur - warped(ref) goes unweighted into int16 accumulators: summed into the
  // current output row's `full` (folded into int32 every 128 rows), or kept as the split row of the boundary below.
  // The weights come in once per finished output row: column sums s = oh * full + wt * split above + wb * split below,
  // whose horizontal taps come from a prefix sum. Column sums are at most 255 * hs (int32), the 2-D sums
  // 255 * hs * ws (int64): exact. The warped reference is read through per-cell offsets into the padded planes (no
  // per-sample clamping); at grid 4 on a cell-aligned window, 4 (SSE2) or 8 (AVX2 gather) cells per step.
  const int oh = win.out_h, ws = win.ws, x0 = win.x0;
  const auto cols = boundaries(ws, win.out_w);
  const Cols32 cols32(cols);
  const bool avx2 = EDGEML_MV_AVX2 && simd_level() >= 2;
  const int64_t out_plane = static_cast<int64_t>(oh) * win.out_w;
  const size_t n = static_cast<size_t>(ws);
  const int64_t stride = ref[0].row_stride;
  const bool fast = grid == 4 && x0 % 4 == 0;
  const int j0 = x0 / grid, ncells = (x0 + ws + grid - 1) / grid - j0;
  std::vector<int32_t> off(ncells);
  std::vector<uint8_t> cur_row(n), warped(n);
  // 8 samples of padding past the last plane's row: fused_row_avx2 reads whole blocks of 8 columns
  const size_t rows_n = n * channels + 8;
  std::vector<int16_t> full(rows_n, 0), split_above(rows_n, 0), split_below(rows_n, 0);
  std::vector<int32_t> folded, s(n), prefix32(n + 2), sums(win.out_w);
  std::vector<uint32_t> integral(win.out_w + 9);  // fused_row_avx2 stores 8 lanes from any boundary
  std::vector<int64_t> prefix(n + 2, 0);
  int n16 = 0, w_above = 0, w_below = 0, w_next = 0;  // weights of the split rows above and below, and the next's
  bool any_folded = false;
  const RowFn add_full = fast ? row4(false, false) : nullptr, set_full = fast ? row4(false, true) : nullptr;
  const RowFn add_half = fast ? row4(true, false) : nullptr, set_half = fast ? row4(true, true) : nullptr;

  bool has_full = false;  // a full row was written into `full` since it was last cleared (the first one stores)
  auto fold = [&] {  // the int16 full-row sums into int32
    if (folded.empty()) folded.assign(rows_n, 0);
    for (size_t k = 0; k < full.size(); ++k) folded[k] += full[k];
    any_folded = true;
    has_full = false;
    n16 = 0;
  };
  const int64_t den = static_cast<int64_t>(win.hs) * ws;
  const bool narrow = 255 * den < (int64_t{1} << 31);  // every sum fits int32 (any window up to ~2900 x 2900)
  const bool fused = avx2 && narrow && oh < (1 << 15);  // the one-pass row (fused_row_avx2)
  const Blocks blocks = fused ? Blocks(cols, ws) : Blocks({Boundary{0, 0, 0}}, 0);
  auto finish = [&](int i) {  // output row i from its accumulators; the split row below becomes the next one's above
    for (int c = 0; c < channels; ++c) {
      int16_t* o = out + c * out_plane + static_cast<int64_t>(i) * win.out_w;
      const int16_t* f = full.data() + c * n;
      const int16_t* za = split_above.data() + c * n;
      const int16_t* zb = split_below.data() + c * n;
      int32_t* sp = s.data();
      const int32_t* g = any_folded ? folded.data() + c * n : nullptr;
      const int wf = has_full ? oh : 0;  // no full row written since the last clear: `full` holds stale numbers
      if (fused) {
        fused_row_avx2(f, g, za, zb, wf, oh, w_above, w_below, n, win.out_w, blocks, integral.data(), den, o);
      } else if (narrow) {
        if (avx2 && oh < (1 << 15)) {
          column_prefix_avx2(f, g, za, zb, wf, oh, w_above, w_below, n, prefix32.data());
        } else {
          column_sums_base(f, g, za, zb, wf, oh, w_above, w_below, n, sp);
          prefix_sums(sp, n, prefix32.data());
        }
        (avx2 ? boundary_sums_avx2 : boundary_sums_base)(prefix32.data(), cols32, integral.data(), sums.data());
        (avx2 ? round_row_avx2 : round_row)(sums.data(), win.out_w, den, o);
      } else {
        column_sums_base(f, g, za, zb, wf, oh, w_above, w_below, n, sp);
        prefix_sums(sp, n, prefix.data());
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
    if (any_folded) std::fill(folded.begin(), folded.end(), 0);
    any_folded = has_full = false;
    n16 = 0;
    split_above.swap(split_below);
    w_above = w_below ? w_next : 0;
    w_below = 0;
  };

  int row_now = 0;
  for (int v = 0; v < win.hs;) {
    const int y = win.y0 + v, rows = std::min(grid - y % grid, win.hs - v);  // the window's rows of this cell row
    cell_offsets(field, height, width, grid, y / grid, y, rows, j0, ncells, stride, off.data());
    for (int t = 0; t < rows; ++t, ++v) {
      const int64_t lo = static_cast<int64_t>(v) * oh;
      const int i0 = static_cast<int>(lo / win.hs);
      const auto w0 = static_cast<int>(std::min<int64_t>(lo + oh, static_cast<int64_t>(i0 + 1) * win.hs) - lo);
      if (i0 != row_now) {
        finish(row_now);
        row_now = i0;
      }
      const bool split = w0 < oh, store = split || !has_full;  // a split row, or the output row's first full one
      for (int c = 0; c < channels; ++c) {
        const Plane& p = cur[c];
        const uint8_t* rrow = ref[c].data + t * stride;  // the padded reference at this row's offset
        const int r = (y + t) >> p.shift_y;
        int16_t* dst = (split ? split_below.data() : full.data()) + c * n;
        if (fast && p.col_stride == 1 && p.shift_x <= 1) {
          const uint8_t* a = p.data + r * p.row_stride + (x0 >> p.shift_x);
          const RowFn fn = p.shift_x ? (store ? set_half : add_half) : (store ? set_full : add_full);
          fn(a, rrow, off.data(), ws, dst);
          continue;
        }
        const uint8_t* a = p.data + r * p.row_stride + x0;
        if (!(p.col_stride == 1 && p.shift_x == 0)) {
          widen_row(p, r, x0, ws, cur_row.data());
          a = cur_row.data();
        }
        for (int k = 0; k < ncells; ++k) {  // the warped row: each cell's part of the window, one shifted copy
          const int c0 = std::max((j0 + k) * grid, x0), c1 = std::min((j0 + k + 1) * grid, x0 + ws);
          std::memcpy(warped.data() + (c0 - x0), rrow + off[k] + (c0 - (j0 + k) * grid), static_cast<size_t>(c1 - c0));
        }
        const uint8_t* b = warped.data();
        if (store) {
          for (size_t x = 0; x < n; ++x) dst[x] = static_cast<int16_t>(a[x] - b[x]);
        } else {
          for (size_t x = 0; x < n; ++x) dst[x] = static_cast<int16_t>(dst[x] + (a[x] - b[x]));
        }
      }
      if (split) {
        w_below = w0;
        w_next = oh - w0;
      } else {
        has_full = true;
        if (++n16 == 128) fold();
      }
    }
  }
  finish(row_now);
}

}  // namespace edgeml::mv
