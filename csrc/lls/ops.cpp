#include "lls/ops.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "lls/gemm.h"
#include "lls/parallel.h"
#include "lls/qgemm.h"

namespace edgeml::lls {

namespace {

// Below this many multiply-adds (or element visits) a kernel runs its parts on the calling thread: waking
// a second thread costs more than it saves.
constexpr long kParallelWork = 1L << 18;

constexpr size_t kAlignFloats = 16;  // 64 bytes: GEMM packing buffers are read with aligned vector loads
size_t rounded(size_t floats) { return (floats + kAlignFloats - 1) / kAlignFloats * kAlignFloats; }
// A GEMM workspace inside a scratch slice: `floats` plus the slack that lets it start 64-byte aligned.
size_t workspace_slot(size_t floats) { return floats ? rounded(floats) + kAlignFloats : 0; }
float* aligned(float* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p), m = kAlignFloats * sizeof(float);
  return reinterpret_cast<float*>((a + m - 1) / m * m);
}

// Depthwise convolution one [h, w] plane at a time through a zero-padded copy P [hp, wp] (hp = h + 2ph,
// wp = w + 2pw), so that no inner loop tests a border. With stride 1 the output is computed in P's row
// width ("wide" rows of wp columns, the last wp - wo of them junk): tap (i, j) is then one long contiguous
// multiply-add over ho * wp values at offset i * wp + j, which vectorises even for 3x3 planes.
struct DepthwisePlanes {
  int hp, wp, ho, wo, kh, kw, sh, sw, ph, pw, h, w;
  explicit DepthwisePlanes(const Conv2dShape& s)
      : hp(s.h + 2 * s.ph), wp(s.w + 2 * s.pw), ho(s.ho()), wo(s.wo()), kh(s.kh), kw(s.kw), sh(s.sh), sw(s.sw),
        ph(s.ph), pw(s.pw), h(s.h), w(s.w) {}
  bool wide() const { return sh == 1 && sw == 1; }
  // P, plus room for the wide rows' reads past its end; then the wide output Q [ho, wp].
  size_t p_floats() const { return rounded(static_cast<size_t>(hp) * wp + kw); }
  size_t floats() const { return p_floats() + rounded(static_cast<size_t>(ho) * wp); }

  void pad(const float* x, float* P) const {
    std::memset(P, 0, sizeof(float) * p_floats());
    for (int y = 0; y < h; ++y) std::memcpy(P + static_cast<size_t>(y + ph) * wp + pw, x + static_cast<size_t>(y) * w,
                                            sizeof(float) * w);
  }
  // y[ho, wo] = b + conv(x, k)
  void forward(const float* x, const float* k, float b, float* y, float* P, float* Q) const {
    pad(x, P);
    if (wide()) {
      const int n = ho * wp;
      std::fill(Q, Q + n, b);
      for (int i = 0; i < kh; ++i)
        for (int j = 0; j < kw; ++j) {
          const float kv = k[i * kw + j];
          const float* src = P + i * wp + j;
#pragma omp simd
          for (int q = 0; q < n; ++q) Q[q] += kv * src[q];
        }
      for (int oy = 0; oy < ho; ++oy) std::memcpy(y + static_cast<size_t>(oy) * wo, Q + static_cast<size_t>(oy) * wp,
                                                  sizeof(float) * wo);
      return;
    }
    std::fill(y, y + static_cast<size_t>(ho) * wo, b);
    for (int oy = 0; oy < ho; ++oy)
      for (int i = 0; i < kh; ++i)
        for (int j = 0; j < kw; ++j) {
          const float kv = k[i * kw + j];
          const float* src = P + static_cast<size_t>(oy * sh + i) * wp + j;
          float* yr = y + static_cast<size_t>(oy) * wo;
          for (int ox = 0; ox < wo; ++ox) yr[ox] += kv * src[ox * sw];
        }
  }
  // g[kh*kw] += dL/dk of one plane: sum over outputs of gy * the input each tap read.
  void weight_grad(const float* x, const float* gy, float* g, float* P, float* Q) const {
    pad(x, P);
    if (wide()) {
      const int n = ho * wp;
      for (int oy = 0; oy < ho; ++oy) {  // gy in wide rows, junk columns zero
        std::memcpy(Q + static_cast<size_t>(oy) * wp, gy + static_cast<size_t>(oy) * wo, sizeof(float) * wo);
        std::fill(Q + static_cast<size_t>(oy) * wp + wo, Q + static_cast<size_t>(oy + 1) * wp, 0.0f);
      }
      for (int i = 0; i < kh; ++i)
        for (int j = 0; j < kw; ++j) {
          const float* src = P + i * wp + j;
          float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
          for (int q = 0; q < n; ++q) acc += Q[q] * src[q];
          g[i * kw + j] += acc;
        }
      return;
    }
    for (int i = 0; i < kh; ++i)
      for (int j = 0; j < kw; ++j) {
        float acc = 0.0f;
        for (int oy = 0; oy < ho; ++oy) {
          const float* src = P + static_cast<size_t>(oy * sh + i) * wp + j;
          const float* gr = gy + static_cast<size_t>(oy) * wo;
          float row = 0.0f;
#pragma omp simd reduction(+ : row)
          for (int ox = 0; ox < wo; ++ox) row += gr[ox] * src[ox * sw];
          acc += row;
        }
        g[i * kw + j] += acc;
      }
  }
  // gx[h, w] = dL/dx of one plane: every tap's gy * k scattered back into the padded plane, interior kept.
  void input_grad(const float* k, const float* gy, float* gx, float* P, float* Q) const {
    std::memset(P, 0, sizeof(float) * p_floats());
    if (wide()) {
      const int n = ho * wp;
      for (int oy = 0; oy < ho; ++oy) {
        std::memcpy(Q + static_cast<size_t>(oy) * wp, gy + static_cast<size_t>(oy) * wo, sizeof(float) * wo);
        std::fill(Q + static_cast<size_t>(oy) * wp + wo, Q + static_cast<size_t>(oy + 1) * wp, 0.0f);
      }
      for (int i = 0; i < kh; ++i)
        for (int j = 0; j < kw; ++j) {
          const float kv = k[i * kw + j];
          float* dst = P + i * wp + j;
#pragma omp simd
          for (int q = 0; q < n; ++q) dst[q] += kv * Q[q];
        }
    } else {
      for (int oy = 0; oy < ho; ++oy)
        for (int i = 0; i < kh; ++i)
          for (int j = 0; j < kw; ++j) {
            const float kv = k[i * kw + j];
            float* dst = P + static_cast<size_t>(oy * sh + i) * wp + j;
            const float* gr = gy + static_cast<size_t>(oy) * wo;
            for (int ox = 0; ox < wo; ++ox) dst[ox * sw] += kv * gr[ox];
          }
    }
    for (int y = 0; y < h; ++y) std::memcpy(gx + static_cast<size_t>(y) * w, P + static_cast<size_t>(y + ph) * wp + pw,
                                            sizeof(float) * w);
  }
};

// Where one thread's slice of a conv's scratch lies: im2col matrix, GEMM packing, partial weight gradient.
struct ConvSlice {
  size_t col = 0, ws = 0, partial = 0;
  size_t size() const { return col + ws + partial; }
};

ConvSlice conv_slice(const Conv2dShape& s, int threads) {
  ConvSlice sl;
  const int n = s.ho() * s.wo(), cg = s.cin / s.groups, og = s.cout / s.groups, kk = cg * s.kh * s.kw;
  if (s.depthwise()) {
    sl.col = rounded(DepthwisePlanes(s).floats());
    return sl;
  }
  sl.col = s.pointwise() ? 0 : rounded(static_cast<size_t>(kk) * n);
  sl.ws = workspace_slot(std::max({gemm_workspace(og, n, kk), gemm_workspace(og, kk, n), gemm_workspace(kk, n, og)}));
  if (threads > 1) sl.partial = rounded(static_cast<size_t>(s.cout) * kk);
  return sl;
}

// The output columns [lo, hi) whose input column ox*sw - pw + j lies inside [0, w) (kernel column j).
inline void valid_cols(const Conv2dShape& s, int j, int& lo, int& hi) {
  const int wo = s.wo(), first = s.pw - j, last = s.w - 1 + s.pw - j;  // need first <= ox*sw <= last
  lo = first <= 0 ? 0 : std::min(wo, (first + s.sw - 1) / s.sw);
  hi = last < 0 ? lo : std::max(lo, std::min(wo, last / s.sw + 1));
}

// col[(c*kh+i)*kw+j][oy*wo+ox] = x[c][oy*sh-ph+i][ox*sw-pw+j] (`pad` outside), for the channels of one group.
template <typename T>
void im2col(const Conv2dShape& s, const T* x, int cg, T* col, T pad = T(0)) {
  const int ho = s.ho(), wo = s.wo();
  for (int c = 0; c < cg; ++c)
    for (int i = 0; i < s.kh; ++i)
      for (int j = 0; j < s.kw; ++j) {
        T* row = col + (static_cast<size_t>(c * s.kh + i) * s.kw + j) * ho * wo;
        const T* xc = x + static_cast<size_t>(c) * s.h * s.w;
        // Output columns whose input column ox*sw - pw + j lies inside [0, w).
        int lo, hi;
        valid_cols(s, j, lo, hi);
        for (int oy = 0; oy < ho; ++oy) {
          const int iy = oy * s.sh - s.ph + i;
          T* r = row + static_cast<size_t>(oy) * wo;
          if (iy < 0 || iy >= s.h) {
            std::fill(r, r + wo, pad);
            continue;
          }
          const T* xr = xc + static_cast<size_t>(iy) * s.w;
          const int off = j - s.pw;
          for (int ox = 0; ox < lo; ++ox) r[ox] = pad;
          if (s.sw == 1 && hi > lo) std::memcpy(r + lo, xr + lo + off, sizeof(T) * (hi - lo));
          else
            for (int ox = lo; ox < hi; ++ox) r[ox] = xr[ox * s.sw + off];
          for (int ox = hi; ox < wo; ++ox) r[ox] = pad;
        }
      }
}

// Adds the columns of col[(c*kh+i)*kw+j][oy*wo+ox] back onto the input positions they were read from.
void col2im_acc(const Conv2dShape& s, const float* col, int cg, float* gx) {
  const int ho = s.ho(), wo = s.wo();
  for (int c = 0; c < cg; ++c)
    for (int i = 0; i < s.kh; ++i)
      for (int j = 0; j < s.kw; ++j) {
        const float* row = col + (static_cast<size_t>(c * s.kh + i) * s.kw + j) * ho * wo;
        float* gc = gx + static_cast<size_t>(c) * s.h * s.w;
        int lo, hi;
        valid_cols(s, j, lo, hi);
        for (int oy = 0; oy < ho; ++oy) {
          const int iy = oy * s.sh - s.ph + i;
          if (iy < 0 || iy >= s.h) continue;
          float* gr = gc + static_cast<size_t>(iy) * s.w;
          const float* r = row + static_cast<size_t>(oy) * wo;
          const int off = j - s.pw;
          for (int ox = lo; ox < hi; ++ox) gr[ox * s.sw + off] += r[ox];
        }
      }
}

// Sum of v[0..n) with a fixed vectorised association (the same on every run of one build).
inline float sum(int n, const float* v) {
  float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
  for (int i = 0; i < n; ++i) acc += v[i];
  return acc;
}

void fill_bias(int batch, int c, int n, const float* bias, float* y) {
  for (int b = 0; b < batch; ++b)
    for (int o = 0; o < c; ++o) {
      float* r = y + (static_cast<size_t>(b) * c + o) * n;
      std::fill(r, r + n, bias ? bias[o] : 0.0f);
    }
}

}  // namespace

size_t Conv2dShape::scratch(int threads) const {
  return rounded(conv_slice(*this, threads).size()) * static_cast<size_t>(std::max(threads, 1));
}

void conv2d_forward(const Conv2dShape& s, int batch, const float* x, const float* w, const float* bias, float* y,
                    float* scratch, int threads) {
  threads = std::max(threads, 1);
  const int n = s.ho() * s.wo(), cg = s.cin / s.groups, og = s.cout / s.groups, kk = cg * s.kh * s.kw;
  const size_t in_plane = static_cast<size_t>(s.h) * s.w, x_sample = in_plane * s.cin;
  const size_t y_sample = static_cast<size_t>(s.cout) * n;
  const ConvSlice sl = conv_slice(s, threads);
  const size_t stride = rounded(sl.size());
  const long work = static_cast<long>(batch) * s.cout * kk * n;
  if (s.depthwise()) {
    const DepthwisePlanes dw(s);
    const long planes = static_cast<long>(batch) * s.cin;
    for_parts(threads, work > kParallelWork, [&](int t) {
      float* P = scratch + stride * t;
      long lo, hi;
      part_range(planes, threads, t, lo, hi);
      for (long bc = lo; bc < hi; ++bc) {
        const int c = static_cast<int>(bc % s.cin);
        dw.forward(x + static_cast<size_t>(bc) * in_plane, w + static_cast<size_t>(c) * s.kh * s.kw,
                   bias ? bias[c] : 0.0f, y + static_cast<size_t>(bc) * n, P, P + dw.p_floats());
      }
    });
    return;
  }
  for_parts(threads, work > kParallelWork, [&](int t) {
    float* slice = scratch + stride * t;
    float* ws = aligned(slice + sl.col);
    const size_t cap = sl.ws - kAlignFloats;
    long lo, hi;
    part_range(batch, threads, t, lo, hi);
    if (hi > lo) fill_bias(static_cast<int>(hi - lo), s.cout, n, bias, y + y_sample * lo);
    for (long b = lo; b < hi; ++b)
      for (int g = 0; g < s.groups; ++g) {
        const float* xg = x + x_sample * b + in_plane * cg * g;
        const float* col = xg;  // a 1x1 stride-1 conv reads the input as its own im2col matrix
        if (!s.pointwise()) {
          im2col(s, xg, cg, slice);
          col = slice;
        }
        gemm(false, false, og, n, kk, w + static_cast<size_t>(g) * og * kk, kk, col, n, true,
             y + y_sample * b + static_cast<size_t>(g) * og * n, n, ws, cap);
      }
  });
}

void conv2d_weight_grad(const Conv2dShape& s, int batch, const float* x, const float* gy, float* gw, float* gb,
                        float* scratch, int threads) {
  threads = std::max(threads, 1);
  const int ho = s.ho(), wo = s.wo(), n = ho * wo;
  const int cg = s.cin / s.groups, og = s.cout / s.groups, kk = cg * s.kh * s.kw;
  const size_t in_plane = static_cast<size_t>(s.h) * s.w, x_sample = in_plane * s.cin;
  const size_t y_sample = static_cast<size_t>(s.cout) * n, gw_size = static_cast<size_t>(s.cout) * kk;
  const ConvSlice sl = conv_slice(s, threads);
  const size_t stride = rounded(sl.size());
  const long work = static_cast<long>(batch) * s.cout * kk * n;
  // The bias gradient: each channel summed over the batch in sample order, whatever the thread count.
  if (gb)
    for_parts(threads, static_cast<long>(batch) * y_sample > kParallelWork, [&](int t) {
      long lo, hi;
      part_range(s.cout, threads, t, lo, hi);
      for (long o = lo; o < hi; ++o) {
        float acc = 0.0f;
        for (int b = 0; b < batch; ++b) acc += sum(n, gy + y_sample * b + static_cast<size_t>(o) * n);
        gb[o] = acc;
      }
    });
  if (s.depthwise()) {
    // Per channel (one thread each), samples in order: the same sums whatever the thread count.
    const DepthwisePlanes dw(s);
    for_parts(threads, work > kParallelWork, [&](int t) {
      float* P = scratch + stride * t;
      long lo, hi;
      part_range(s.cin, threads, t, lo, hi);
      for (long c = lo; c < hi; ++c) {
        float* g = gw + static_cast<size_t>(c) * s.kh * s.kw;
        std::fill(g, g + s.kh * s.kw, 0.0f);
        for (int b = 0; b < batch; ++b)
          dw.weight_grad(x + x_sample * b + in_plane * c, gy + y_sample * b + static_cast<size_t>(c) * n, g, P,
                         P + dw.p_floats());
      }
    });
    return;
  }
  // Part t sums its samples into its own buffer (part 0: gw itself); the parts are then added in order.
  for_parts(threads, work > kParallelWork, [&](int t) {
    float* slice = scratch + stride * t;
    float* ws = aligned(slice + sl.col);
    const size_t cap = sl.ws - kAlignFloats;
    float* dst = t == 0 ? gw : slice + sl.col + sl.ws;
    std::memset(dst, 0, sizeof(float) * gw_size);
    long lo, hi;
    part_range(batch, threads, t, lo, hi);
    for (long b = lo; b < hi; ++b)
      for (int g = 0; g < s.groups; ++g) {
        const float* xg = x + x_sample * b + in_plane * cg * g;
        const float* col = xg;
        if (!s.pointwise()) {
          im2col(s, xg, cg, slice);
          col = slice;
        }
        // gw[o][:] += sum_p gy[o][p] * col[:][p]
        gemm(false, true, og, kk, n, gy + y_sample * b + static_cast<size_t>(g) * og * n, n, col, n, true,
             dst + static_cast<size_t>(g) * og * kk, kk, ws, cap);
      }
  });
  for (int t = 1; t < threads; ++t) {
    const float* part = scratch + stride * t + sl.col + sl.ws;
    for (size_t i = 0; i < gw_size; ++i) gw[i] += part[i];
  }
}

void conv2d_input_grad(const Conv2dShape& s, int batch, const float* w, const float* gy, float* gx, float* scratch,
                       int threads) {
  threads = std::max(threads, 1);
  const int n = s.ho() * s.wo(), cg = s.cin / s.groups, og = s.cout / s.groups, kk = cg * s.kh * s.kw;
  const size_t in_plane = static_cast<size_t>(s.h) * s.w, x_sample = in_plane * s.cin;
  const size_t y_sample = static_cast<size_t>(s.cout) * n;
  const ConvSlice sl = conv_slice(s, threads);
  const size_t stride = rounded(sl.size());
  const long work = static_cast<long>(batch) * s.cout * kk * n;
  if (s.depthwise()) {
    const DepthwisePlanes dw(s);
    const long planes = static_cast<long>(batch) * s.cin;
    for_parts(threads, work > kParallelWork, [&](int t) {
      float* P = scratch + stride * t;
      long lo, hi;
      part_range(planes, threads, t, lo, hi);
      for (long bc = lo; bc < hi; ++bc) {
        const int c = static_cast<int>(bc % s.cin);
        dw.input_grad(w + static_cast<size_t>(c) * s.kh * s.kw, gy + static_cast<size_t>(bc) * n,
                      gx + static_cast<size_t>(bc) * in_plane, P, P + dw.p_floats());
      }
    });
    return;
  }
  for_parts(threads, work > kParallelWork, [&](int t) {
    float* slice = scratch + stride * t;
    float* ws = aligned(slice + sl.col);
    const size_t cap = sl.ws - kAlignFloats;
    long lo, hi;
    part_range(batch, threads, t, lo, hi);
    for (long b = lo; b < hi; ++b)
      for (int g = 0; g < s.groups; ++g) {
        const float* wg = w + static_cast<size_t>(g) * og * kk;
        const float* gyg = gy + y_sample * b + static_cast<size_t>(g) * og * n;
        float* gxg = gx + x_sample * b + in_plane * cg * g;
        if (s.pointwise()) {  // gx = w^T gy, straight into the input's layout
          gemm(true, false, kk, n, og, wg, kk, gyg, n, false, gxg, n, ws, cap);
          continue;
        }
        gemm(true, false, kk, n, og, wg, kk, gyg, n, false, slice, n, ws, cap);
        std::memset(gxg, 0, sizeof(float) * in_plane * cg);
        col2im_acc(s, slice, cg, gxg);
      }
  });
}

size_t linear_scratch(int batch, int in, int out, int threads) {
  threads = std::max(threads, 1);
  size_t per = 0;
  for (int t = 0; t < threads; ++t) {
    long olo, ohi, ilo, ihi;
    part_range(out, threads, t, olo, ohi);
    part_range(in, threads, t, ilo, ihi);
    per = std::max({per, gemm_workspace(batch, static_cast<int>(ohi - olo), in),
                    gemm_workspace(static_cast<int>(ohi - olo), in, batch),
                    gemm_workspace(batch, static_cast<int>(ihi - ilo), out)});
  }
  return rounded(workspace_slot(per)) * threads;
}

namespace {

// Part t of a linear kernel's scratch (scratch_floats in all): its aligned packing buffer and capacity.
struct LinearSlice {
  float* ws;
  size_t capacity;
};
LinearSlice linear_slice(float* scratch, size_t scratch_floats, int threads, int t) {
  const size_t stride = scratch_floats / threads / kAlignFloats * kAlignFloats;
  return {aligned(scratch + stride * t), stride > kAlignFloats ? stride - kAlignFloats : 0};
}

}  // namespace

// The linear kernels cut the output features (forward, weight gradient) or input features (input gradient)
// into parts: every part is one GEMM with its own packing buffers.
void linear_forward(int batch, int in, int out, const float* x, const float* w, const float* bias, float* y,
                    float* scratch, size_t scratch_floats, int threads) {
  threads = std::max(threads, 1);
  fill_bias(batch, out, 1, bias, y);
  for_parts(threads, static_cast<long>(batch) * in * out > kParallelWork, [&](int t) {
    long lo, hi;
    part_range(out, threads, t, lo, hi);
    const LinearSlice sl = linear_slice(scratch, scratch_floats, threads, t);
    gemm(false, true, batch, static_cast<int>(hi - lo), in, x, in, w + static_cast<size_t>(lo) * in, in, true, y + lo,
         out, sl.ws, sl.capacity);
  });
}

void linear_weight_grad(int batch, int in, int out, const float* x, const float* gy, float* gw, float* gb,
                        float* scratch, size_t scratch_floats, int threads) {
  threads = std::max(threads, 1);
  for_parts(threads, static_cast<long>(batch) * in * out > kParallelWork, [&](int t) {
    long lo, hi;
    part_range(out, threads, t, lo, hi);
    const LinearSlice sl = linear_slice(scratch, scratch_floats, threads, t);
    gemm(true, false, static_cast<int>(hi - lo), in, batch, gy + lo, out, x, in, false,
         gw + static_cast<size_t>(lo) * in, in, sl.ws, sl.capacity);
    if (gb)
      for (long o = lo; o < hi; ++o) {
        float acc = 0.0f;
        for (int b = 0; b < batch; ++b) acc += gy[static_cast<size_t>(b) * out + o];
        gb[o] = acc;
      }
  });
}

void linear_input_grad(int batch, int in, int out, const float* w, const float* gy, float* gx, float* scratch,
                       size_t scratch_floats, int threads) {
  threads = std::max(threads, 1);
  for_parts(threads, static_cast<long>(batch) * in * out > kParallelWork, [&](int t) {
    long lo, hi;
    part_range(in, threads, t, lo, hi);
    const LinearSlice sl = linear_slice(scratch, scratch_floats, threads, t);
    gemm(false, false, batch, static_cast<int>(hi - lo), out, gy, out, w + lo, in, false, gx + lo, in, sl.ws,
         sl.capacity);
  });
}

void batchnorm_forward(int batch, int c, int s, const float* x, const float* gamma, const float* beta,
                       const float* mean, const float* var, float eps, float* y, int threads) {
  threads = std::max(threads, 1);
  const long planes = static_cast<long>(batch) * c;
  for_parts(threads, planes * s > kParallelWork, [&](int t) {
    long lo, hi;
    part_range(planes, threads, t, lo, hi);
    for (long bc = lo; bc < hi; ++bc) {
      const int ch = static_cast<int>(bc % c);
      const float inv = 1.0f / std::sqrt(var[ch] + eps);
      const float scale = (gamma ? gamma[ch] : 1.0f) * inv;
      const float shift = (beta ? beta[ch] : 0.0f) - mean[ch] * scale;
      const float* xp = x + static_cast<size_t>(bc) * s;
      float* yp = y + static_cast<size_t>(bc) * s;
#pragma omp simd  // yp may alias xp exactly, never partially
      for (int i = 0; i < s; ++i) yp[i] = xp[i] * scale + shift;
    }
  });
}

void batchnorm_backward(int batch, int c, int s, const float* x, const float* gy, const float* gamma,
                        const float* mean, const float* var, float eps, float* gx, float* ggamma, float* gbeta,
                        int threads) {
  threads = std::max(threads, 1);
  // Per channel (one thread each): sums over the batch in sample order, whatever the thread count.
  for_parts(threads, static_cast<long>(batch) * c * s > kParallelWork, [&](int t) {
    long lo, hi;
    part_range(c, threads, t, lo, hi);
    for (long ch = lo; ch < hi; ++ch) {
      const float inv = 1.0f / std::sqrt(var[ch] + eps);
      const float scale = (gamma ? gamma[ch] : 1.0f) * inv, mu = mean[ch];
      float sg = 0.0f, sgx = 0.0f;
      for (int b = 0; b < batch; ++b) {
        const size_t off = (static_cast<size_t>(b) * c + ch) * s;
        const float* g = gy + off;
        const float* xp = x + off;
        float s1 = 0.0f, s2 = 0.0f;
#pragma omp simd reduction(+ : s1, s2)
        for (int i = 0; i < s; ++i) {
          s1 += g[i];
          s2 += g[i] * (xp[i] - mu);
        }
        sg += s1;
        sgx += s2;
        if (gx) {
          float* o = gx + off;  // may alias gy exactly: read above, written here
#pragma omp simd
          for (int i = 0; i < s; ++i) o[i] = g[i] * scale;
        }
      }
      if (ggamma) ggamma[ch] = sgx * inv;
      if (gbeta) gbeta[ch] = sg;
    }
  });
}

// v * (v > 0 ? 1 : slope) is v > 0 ? v : v * slope exactly, as a select the compiler vectorises. The loops are
// functions of their own, called by every part: inlined into the pool's job thunk, GCC 12 kept only a scalar,
// branchy copy of the loop there (the 2-thread step spent a third of its time in it).
namespace {

__attribute__((noinline)) void leaky_relu_range(long lo, long hi, const float* x, float slope, float* y) {
#pragma omp simd  // y may alias x exactly (in place), never partially
  for (long i = lo; i < hi; ++i) y[i] = x[i] * (x[i] > 0.0f ? 1.0f : slope);
}

__attribute__((noinline)) void leaky_relu_grad_range(long lo, long hi, const float* y, const float* gy, float slope,
                                                     float* gx) {
#pragma omp simd  // gx may alias gy exactly (in place), never partially
  for (long i = lo; i < hi; ++i) gx[i] = gy[i] * (y[i] > 0.0f ? 1.0f : slope);
}

}  // namespace

void leaky_relu_forward(size_t n, const float* x, float slope, float* y, int threads) {
  threads = std::max(threads, 1);
  for_parts(threads, static_cast<long>(n) > kParallelWork, [&](int t) {
    long lo, hi;
    part_range(static_cast<long>(n), threads, t, lo, hi);
    leaky_relu_range(lo, hi, x, slope, y);
  });
}

void leaky_relu_backward(size_t n, const float* y, const float* gy, float slope, float* gx, int threads) {
  threads = std::max(threads, 1);
  for_parts(threads, static_cast<long>(n) > kParallelWork, [&](int t) {
    long lo, hi;
    part_range(static_cast<long>(n), threads, t, lo, hi);
    leaky_relu_grad_range(lo, hi, y, gy, slope, gx);
  });
}

void maxpool_forward(const Pool2dShape& p, int batch, const float* x, float* y, int32_t* argmax, int threads) {
  threads = std::max(threads, 1);
  const int ho = p.ho(), wo = p.wo(), k = p.k, st = p.s, w = p.w;
  const long planes = static_cast<long>(batch) * p.c;
  for_parts(threads, planes * p.h * p.w > kParallelWork, [&, k, st, w](int t) {
    long lo, hi;
    part_range(planes, threads, t, lo, hi);
    for (long bc = lo; bc < hi; ++bc) {
      const float* xc = x + static_cast<size_t>(bc) * p.h * w;
      float* yc = y + static_cast<size_t>(bc) * ho * wo;
      int32_t* ac = argmax ? argmax + static_cast<size_t>(bc) * ho * wo : nullptr;
      // The window's first maximum by a single compare per element (selects the compiler vectorises); a plane
      // holding a NaN is redone with PyTorch's rule (a NaN wins), which needs a second, branchy compare.
      int nan = 0;
#pragma omp simd reduction(| : nan)
      for (int i = 0; i < p.h * w; ++i) nan |= xc[i] != xc[i];
      for (int oy = 0; oy < ho; ++oy) {
#pragma omp simd
        for (int ox = 0; ox < wo; ++ox) {
          int best = oy * st * w + ox * st;
          float bv = xc[best];
          for (int i = 0; i < k; ++i)
            for (int j = 0; j < k; ++j) {
              const int idx = (oy * st + i) * w + ox * st + j;
              const float v = xc[idx];
              best = v > bv ? idx : best;
              bv = v > bv ? v : bv;
            }
          yc[oy * wo + ox] = bv;
          if (ac) ac[oy * wo + ox] = best;
        }
        if (!nan) continue;
        for (int ox = 0; ox < wo; ++ox) {
          int best = oy * st * w + ox * st;
          float bv = xc[best];
          for (int i = 0; i < k; ++i)
            for (int j = 0; j < k; ++j) {
              const int idx = (oy * st + i) * w + ox * st + j;
              if (xc[idx] > bv || std::isnan(xc[idx])) {
                bv = xc[idx];
                best = idx;
              }
            }
          yc[oy * wo + ox] = bv;
          if (ac) ac[oy * wo + ox] = best;
        }
      }
    }
  });
}

void maxpool_backward(const Pool2dShape& p, int batch, const float* gy, const int32_t* argmax, float* gx,
                      int threads) {
  threads = std::max(threads, 1);
  const size_t plane = static_cast<size_t>(p.h) * p.w, oplane = static_cast<size_t>(p.ho()) * p.wo();
  const long planes = static_cast<long>(batch) * p.c;
  for_parts(threads, static_cast<long>(planes * plane) > kParallelWork, [&](int t) {
    long lo, hi;
    part_range(planes, threads, t, lo, hi);
    for (long bc = lo; bc < hi; ++bc) {
      float* gc = gx + static_cast<size_t>(bc) * plane;
      std::memset(gc, 0, sizeof(float) * plane);
      for (size_t o = 0; o < oplane; ++o) gc[argmax[bc * oplane + o]] += gy[bc * oplane + o];
    }
  });
}

void avgpool_forward(const Pool2dShape& p, int batch, const float* x, float* y, int threads) {
  threads = std::max(threads, 1);
  const int ho = p.ho(), wo = p.wo();
  const float inv = 1.0f / static_cast<float>(p.k * p.k);
  const long planes = static_cast<long>(batch) * p.c;
  for_parts(threads, planes * p.h * p.w > kParallelWork, [&](int t) {
    long lo, hi;
    part_range(planes, threads, t, lo, hi);
    for (long bc = lo; bc < hi; ++bc) {
      const float* xc = x + static_cast<size_t>(bc) * p.h * p.w;
      for (int oy = 0; oy < ho; ++oy)
        for (int ox = 0; ox < wo; ++ox) {
          float acc = 0.0f;
          for (int i = 0; i < p.k; ++i)
            for (int j = 0; j < p.k; ++j) acc += xc[(oy * p.s + i) * p.w + ox * p.s + j];
          y[static_cast<size_t>(bc) * ho * wo + oy * wo + ox] = acc * inv;
        }
    }
  });
}

void avgpool_backward(const Pool2dShape& p, int batch, const float* gy, float* gx, int threads) {
  threads = std::max(threads, 1);
  const int ho = p.ho(), wo = p.wo();
  const float inv = 1.0f / static_cast<float>(p.k * p.k);
  const long planes = static_cast<long>(batch) * p.c;
  for_parts(threads, planes * p.h * p.w > kParallelWork, [&](int t) {
    long lo, hi;
    part_range(planes, threads, t, lo, hi);
    for (long bc = lo; bc < hi; ++bc) {
      float* gc = gx + static_cast<size_t>(bc) * p.h * p.w;
      std::memset(gc, 0, sizeof(float) * p.h * p.w);
      for (int oy = 0; oy < ho; ++oy)
        for (int ox = 0; ox < wo; ++ox) {
          const float g = gy[static_cast<size_t>(bc) * ho * wo + oy * wo + ox] * inv;
          for (int i = 0; i < p.k; ++i)
            for (int j = 0; j < p.k; ++j) gc[(oy * p.s + i) * p.w + ox * p.s + j] += g;
        }
    }
  });
}

namespace {
inline int bin_start(int i, int in, int out) { return (i * in) / out; }
inline int bin_end(int i, int in, int out) { return ((i + 1) * in + out - 1) / out; }
}  // namespace

void adaptive_avgpool_forward(int batch, int c, int h, int w, int oh, int ow, const float* x, float* y, int threads) {
  threads = std::max(threads, 1);
  const long planes = static_cast<long>(batch) * c;
  for_parts(threads, planes * h * w > kParallelWork, [&](int t) {
    long lo, hi;
    part_range(planes, threads, t, lo, hi);
    for (long bc = lo; bc < hi; ++bc) {
      const float* xc = x + static_cast<size_t>(bc) * h * w;
      for (int i = 0; i < oh; ++i) {
        const int y0 = bin_start(i, h, oh), y1 = bin_end(i, h, oh);
        for (int j = 0; j < ow; ++j) {
          const int x0 = bin_start(j, w, ow), x1 = bin_end(j, w, ow);
          float acc = 0.0f;
          for (int yy = y0; yy < y1; ++yy)
            for (int xx = x0; xx < x1; ++xx) acc += xc[yy * w + xx];
          y[static_cast<size_t>(bc) * oh * ow + i * ow + j] = acc / static_cast<float>((y1 - y0) * (x1 - x0));
        }
      }
    }
  });
}

void adaptive_avgpool_backward(int batch, int c, int h, int w, int oh, int ow, const float* gy, float* gx,
                               int threads) {
  threads = std::max(threads, 1);
  const long planes = static_cast<long>(batch) * c;
  for_parts(threads, planes * h * w > kParallelWork, [&](int t) {
    long lo, hi;
    part_range(planes, threads, t, lo, hi);
    for (long bc = lo; bc < hi; ++bc) {
      float* gc = gx + static_cast<size_t>(bc) * h * w;
      std::memset(gc, 0, sizeof(float) * h * w);
      for (int i = 0; i < oh; ++i) {
        const int y0 = bin_start(i, h, oh), y1 = bin_end(i, h, oh);
        for (int j = 0; j < ow; ++j) {
          const int x0 = bin_start(j, w, ow), x1 = bin_end(j, w, ow);
          const float g = gy[static_cast<size_t>(bc) * oh * ow + i * ow + j] / static_cast<float>((y1 - y0) * (x1 - x0));
          for (int yy = y0; yy < y1; ++yy)
            for (int xx = x0; xx < x1; ++xx) gc[yy * w + xx] += g;
        }
      }
    }
  });
}

void dequantize_rows(int rows, int cols, const int8_t* q, const float* scale, float* w) {
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c)
      w[static_cast<size_t>(r) * cols + c] = static_cast<float>(q[static_cast<size_t>(r) * cols + c]) * scale[r];
}

ActQuant quantize_activations(size_t n, const float* x, uint8_t* q, int threads) {
  threads = std::max(threads, 1);
  const bool parallel = n > static_cast<size_t>(kParallelWork);
  // The range: min / max are exact whatever the cut into parts, so the quantisation is too. Both include 0, so
  // that zero (the padding of a convolution) is exactly representable. A NaN is skipped here and quantised to 1.
  float lo_part[64], hi_part[64];
  const int parts = std::min(threads, 64);
  for_parts(parts, parallel, [&](int t) {
    long lo, hi;
    part_range(static_cast<long>(n), parts, t, lo, hi);
    float mn = 0.0f, mx = 0.0f;
    for (long i = lo; i < hi; ++i) {
      mn = x[i] < mn ? x[i] : mn;
      mx = x[i] > mx ? x[i] : mx;
    }
    lo_part[t] = mn, hi_part[t] = mx;
  });
  float mn = 0.0f, mx = 0.0f;
  for (int t = 0; t < parts; ++t) mn = std::min(mn, lo_part[t]), mx = std::max(mx, hi_part[t]);
  ActQuant a;
  const float scale = (mx - mn) / 254.0f;
  if (scale > 0.0f && std::isfinite(scale)) {
    a.scale = scale;
    a.zero = 1 + static_cast<int>(std::min(254.0f, std::nearbyint(-mn / scale)));
  }
  const float inv = 1.0f / a.scale, zero = static_cast<float>(a.zero);
  for_parts(threads, parallel, [&](int t) {
    long lo, hi;
    part_range(static_cast<long>(n), threads, t, lo, hi);
    for (long i = lo; i < hi; ++i) {
      const float v = std::nearbyint(x[i] * inv) + zero;
      q[i] = v >= 255.0f ? uint8_t{255} : v >= 1.0f ? static_cast<uint8_t>(v) : uint8_t{1};
    }
  });
  return a;
}

namespace {

size_t bytes64(size_t n) { return (n + 63) / 64 * 64; }

// y[r, j] = scale * wscale[r] * acc[r, j] + bias[r] over rows [r0, r1) of an [rows, cols] block whose int32 sums
// the integer product wrote over the float output in place (same size; read through memcpy, not type punning).
// Element (r, j) lies at y[r * rs + j * cs].
void dequantize_sums(int r0, int r1, int cols, size_t rs, size_t cs, float scale, const float* wscale,
                     const float* bias, float* y) {
  for (int r = r0; r < r1; ++r) {
    const float m = scale * wscale[r], b = bias ? bias[r] : 0.0f;
    for (int j = 0; j < cols; ++j) {
      float* at = y + static_cast<size_t>(r) * rs + static_cast<size_t>(j) * cs;
      int32_t acc;
      std::memcpy(&acc, at, sizeof(acc));
      *at = static_cast<float>(acc) * m + b;
    }
  }
}

}  // namespace

size_t conv2d_int8_scratch(const Conv2dShape& s, int threads) {
  const size_t kk = static_cast<size_t>(s.cin / s.groups) * s.kh * s.kw;
  return s.pointwise() ? 0 : bytes64(kk * s.ho() * s.wo()) * static_cast<size_t>(std::max(threads, 1));
}

void conv2d_forward_int8(const Conv2dShape& s, int batch, const float* x, const uint8_t* w, const float* wscale,
                         const float* bias, float* y, uint8_t* xq, uint8_t* scratch, Int8Gemm& gemm, int threads) {
  threads = std::max(threads, 1);
  const int n = s.ho() * s.wo(), cg = s.cin / s.groups, og = s.cout / s.groups, kk = cg * s.kh * s.kw;
  const size_t in_plane = static_cast<size_t>(s.h) * s.w, x_sample = in_plane * s.cin;
  const size_t y_sample = static_cast<size_t>(s.cout) * n;
  const ActQuant aq = quantize_activations(x_sample * batch, x, xq, threads);
  const size_t stride = bytes64(static_cast<size_t>(kk) * n);
  const long work = static_cast<long>(batch) * s.cout * kk * n;
  for_parts(threads, work > kParallelWork, [&](int t) {
    uint8_t* col = scratch + stride * t;
    long lo, hi;
    part_range(batch, threads, t, lo, hi);
    for (long b = lo; b < hi; ++b)
      for (int g = 0; g < s.groups; ++g) {
        const uint8_t* xg = xq + x_sample * b + in_plane * cg * g;
        const uint8_t* rhs = xg;  // a 1x1 stride-1 conv reads the input as its own im2col matrix
        if (!s.pointwise()) {
          im2col(s, xg, cg, col, static_cast<uint8_t>(aq.zero));
          rhs = col;
        }
        float* yg = y + y_sample * b + static_cast<size_t>(g) * og * n;
        gemm.run(t, og, n, kk, w + static_cast<size_t>(g) * og * kk, rhs, n, aq.zero, reinterpret_cast<int32_t*>(yg),
                 n, false);
        dequantize_sums(0, og, n, n, 1, aq.scale, wscale + static_cast<size_t>(g) * og,
                        bias ? bias + static_cast<size_t>(g) * og : nullptr, yg);
      }
  });
}

void linear_forward_int8(int batch, int in, int out, const float* x, const uint8_t* w, const float* wscale,
                         const float* bias, float* y, uint8_t* xq, Int8Gemm& gemm, int threads) {
  threads = std::max(threads, 1);
  const ActQuant aq = quantize_activations(static_cast<size_t>(batch) * in, x, xq, threads);
  for_parts(threads, static_cast<long>(batch) * in * out > kParallelWork, [&](int t) {
    long lo, hi;
    part_range(out, threads, t, lo, hi);
    if (hi <= lo) return;
    // Output features [lo, hi) of every sample: a column-major [hi - lo, batch] block of y (leading dimension out).
    gemm.run(t, static_cast<int>(hi - lo), batch, in, w + static_cast<size_t>(lo) * in, xq, in, aq.zero,
             reinterpret_cast<int32_t*>(y + lo), out, true);
    dequantize_sums(static_cast<int>(lo), static_cast<int>(hi), batch, 1, static_cast<size_t>(out), aq.scale, wscale,
                    bias, y);
  });
}

}  // namespace edgeml::lls
