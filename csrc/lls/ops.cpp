#include "lls/ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace edgeml::lls {

namespace {

// c[4 rows][n] += a[4 rows] * b[n]: four output rows share each load of b (the inner loop vectorises).
inline void axpy4(int n, const float a0, const float a1, const float a2, const float a3, const float* b, float* c0,
                  float* c1, float* c2, float* c3) {
  for (int j = 0; j < n; ++j) {
    const float v = b[j];
    c0[j] += a0 * v;
    c1[j] += a1 * v;
    c2[j] += a2 * v;
    c3[j] += a3 * v;
  }
}

inline void axpy(int n, const float a, const float* b, float* c) {
  for (int j = 0; j < n; ++j) c[j] += a * b[j];
}

// C[m][n] += A[m][k] B[k][n] (row-major, leading dims = widths).
// With OpenMP (EDGEML_LLS_OPENMP) the output rows are split across threads: each row is still summed in
// the same order, so results do not depend on the thread count.
void gemm_acc(int m, int n, int k, const float* a, const float* b, float* c) {
  const int blocked = m / 4 * 4;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (static_cast<long>(m) * n * k > 200000)
#endif
  for (int i = 0; i < blocked; i += 4) {
    const float* a0 = a + static_cast<size_t>(i) * k;
    float* c0 = c + static_cast<size_t>(i) * n;
    for (int p = 0; p < k; ++p)
      axpy4(n, a0[p], a0[k + p], a0[2 * k + p], a0[3 * k + p], b + static_cast<size_t>(p) * n, c0, c0 + n,
            c0 + 2 * n, c0 + 3 * n);
  }
  for (int i = blocked; i < m; ++i)
    for (int p = 0; p < k; ++p) axpy(n, a[static_cast<size_t>(i) * k + p], b + static_cast<size_t>(p) * n,
                                     c + static_cast<size_t>(i) * n);
}

inline float dot(int n, const float* a, const float* b) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int j = 0;
  for (; j + 8 <= n; j += 8)
    for (int u = 0; u < 8; ++u) acc[u] += a[j + u] * b[j + u];
  float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; j < n; ++j) s += a[j] * b[j];
  return s;
}

// col[(c*kh+i)*kw+j][oy*wo+ox] = x[c][oy*sh-ph+i][ox*sw-pw+j] (0 outside), for the channels of one group.
void im2col(const Conv2dShape& s, const float* x, int cg, float* col) {
  const int ho = s.ho(), wo = s.wo();
  for (int c = 0; c < cg; ++c)
    for (int i = 0; i < s.kh; ++i)
      for (int j = 0; j < s.kw; ++j) {
        float* row = col + (static_cast<size_t>(c * s.kh + i) * s.kw + j) * ho * wo;
        const float* xc = x + static_cast<size_t>(c) * s.h * s.w;
        for (int oy = 0; oy < ho; ++oy) {
          const int iy = oy * s.sh - s.ph + i;
          float* r = row + oy * wo;
          if (iy < 0 || iy >= s.h) {
            std::memset(r, 0, sizeof(float) * wo);
            continue;
          }
          const float* xr = xc + static_cast<size_t>(iy) * s.w;
          for (int ox = 0; ox < wo; ++ox) {
            const int ix = ox * s.sw - s.pw + j;
            r[ox] = (ix >= 0 && ix < s.w) ? xr[ix] : 0.0f;
          }
        }
      }
}

// The transposed layout: colT[oy*wo+ox][(c*kh+i)*kw+j], so the weight gradient is a sum of row updates.
void im2col_t(const Conv2dShape& s, const float* x, int cg, float* colt) {
  const int ho = s.ho(), wo = s.wo(), kk = cg * s.kh * s.kw;
  for (int oy = 0; oy < ho; ++oy)
    for (int ox = 0; ox < wo; ++ox) {
      float* r = colt + static_cast<size_t>(oy * wo + ox) * kk;
      for (int c = 0; c < cg; ++c) {
        const float* xc = x + static_cast<size_t>(c) * s.h * s.w;
        for (int i = 0; i < s.kh; ++i) {
          const int iy = oy * s.sh - s.ph + i;
          for (int j = 0; j < s.kw; ++j) {
            const int ix = ox * s.sw - s.pw + j;
            *r++ = (iy >= 0 && iy < s.h && ix >= 0 && ix < s.w) ? xc[static_cast<size_t>(iy) * s.w + ix] : 0.0f;
          }
        }
      }
    }
}

}  // namespace

size_t Conv2dShape::scratch() const {
  if (depthwise()) return 0;
  return static_cast<size_t>(cin / groups) * kh * kw * ho() * wo();
}

void conv2d_forward(const Conv2dShape& s, int batch, const float* x, const float* w, const float* bias, float* y,
                    float* scratch) {
  const int ho = s.ho(), wo = s.wo(), n = ho * wo;
  const int cg = s.cin / s.groups, og = s.cout / s.groups, kk = cg * s.kh * s.kw;
  for (int b = 0; b < batch; ++b) {
    const float* xb = x + static_cast<size_t>(b) * s.cin * s.h * s.w;
    float* yb = y + static_cast<size_t>(b) * s.cout * n;
    for (int o = 0; o < s.cout; ++o) std::fill(yb + static_cast<size_t>(o) * n, yb + static_cast<size_t>(o + 1) * n,
                                               bias ? bias[o] : 0.0f);
    if (s.depthwise()) {
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (static_cast<long>(s.cin) * n > 20000)
#endif
      for (int c = 0; c < s.cin; ++c) {
        const float* xc = xb + static_cast<size_t>(c) * s.h * s.w;
        const float* wc = w + static_cast<size_t>(c) * s.kh * s.kw;
        float* yc = yb + static_cast<size_t>(c) * n;
        for (int i = 0; i < s.kh; ++i)
          for (int j = 0; j < s.kw; ++j) {
            const float wv = wc[i * s.kw + j];
            for (int oy = 0; oy < ho; ++oy) {
              const int iy = oy * s.sh - s.ph + i;
              if (iy < 0 || iy >= s.h) continue;
              const float* xr = xc + static_cast<size_t>(iy) * s.w;
              float* yr = yc + oy * wo;
              for (int ox = 0; ox < wo; ++ox) {
                const int ix = ox * s.sw - s.pw + j;
                if (ix >= 0 && ix < s.w) yr[ox] += wv * xr[ix];
              }
            }
          }
      }
      continue;
    }
    for (int g = 0; g < s.groups; ++g) {
      const float* xg = xb + static_cast<size_t>(g) * cg * s.h * s.w;
      const bool pointwise = s.kh == 1 && s.kw == 1 && s.sh == 1 && s.sw == 1 && s.ph == 0 && s.pw == 0;
      const float* col = xg;  // a 1x1 stride-1 conv reads the input as its own im2col matrix
      if (!pointwise) {
        im2col(s, xg, cg, scratch);
        col = scratch;
      }
      gemm_acc(og, n, kk, w + static_cast<size_t>(g) * og * kk, col, yb + static_cast<size_t>(g) * og * n);
    }
  }
}

void conv2d_weight_grad(const Conv2dShape& s, int batch, const float* x, const float* gy, float* gw, float* gb,
                        float* scratch) {
  const int ho = s.ho(), wo = s.wo(), n = ho * wo;
  const int cg = s.cin / s.groups, og = s.cout / s.groups, kk = cg * s.kh * s.kw;
  std::memset(gw, 0, sizeof(float) * s.cout * kk);
  if (gb) std::memset(gb, 0, sizeof(float) * s.cout);
  for (int b = 0; b < batch; ++b) {
    const float* xb = x + static_cast<size_t>(b) * s.cin * s.h * s.w;
    const float* gyb = gy + static_cast<size_t>(b) * s.cout * n;
    if (gb)
      for (int o = 0; o < s.cout; ++o) {
        const float* r = gyb + static_cast<size_t>(o) * n;
        float acc = 0.0f;
        for (int p = 0; p < n; ++p) acc += r[p];
        gb[o] += acc;
      }
    if (s.depthwise()) {
      for (int c = 0; c < s.cin; ++c) {
        const float* xc = xb + static_cast<size_t>(c) * s.h * s.w;
        const float* gc = gyb + static_cast<size_t>(c) * n;
        for (int i = 0; i < s.kh; ++i)
          for (int j = 0; j < s.kw; ++j) {
            float acc = 0.0f;
            for (int oy = 0; oy < ho; ++oy) {
              const int iy = oy * s.sh - s.ph + i;
              if (iy < 0 || iy >= s.h) continue;
              const float* xr = xc + static_cast<size_t>(iy) * s.w;
              const float* gr = gc + oy * wo;
              for (int ox = 0; ox < wo; ++ox) {
                const int ix = ox * s.sw - s.pw + j;
                if (ix >= 0 && ix < s.w) acc += gr[ox] * xr[ix];
              }
            }
            gw[(static_cast<size_t>(c) * s.kh + i) * s.kw + j] += acc;
          }
      }
      continue;
    }
    for (int g = 0; g < s.groups; ++g) {
      im2col_t(s, xb + static_cast<size_t>(g) * cg * s.h * s.w, cg, scratch);
      // gw[o][:] += sum_p gy[o][p] * colT[p][:]
      gemm_acc(og, kk, n, gyb + static_cast<size_t>(g) * og * n, scratch, gw + static_cast<size_t>(g) * og * kk);
    }
  }
}

// Adds the columns of col[(c*kh+i)*kw+j][oy*wo+ox] back onto the input positions they were read from.
static void col2im_acc(const Conv2dShape& s, const float* col, int cg, float* gx) {
  const int ho = s.ho(), wo = s.wo();
  for (int c = 0; c < cg; ++c)
    for (int i = 0; i < s.kh; ++i)
      for (int j = 0; j < s.kw; ++j) {
        const float* row = col + (static_cast<size_t>(c * s.kh + i) * s.kw + j) * ho * wo;
        float* gc = gx + static_cast<size_t>(c) * s.h * s.w;
        for (int oy = 0; oy < ho; ++oy) {
          const int iy = oy * s.sh - s.ph + i;
          if (iy < 0 || iy >= s.h) continue;
          for (int ox = 0; ox < wo; ++ox) {
            const int ix = ox * s.sw - s.pw + j;
            if (ix >= 0 && ix < s.w) gc[static_cast<size_t>(iy) * s.w + ix] += row[oy * wo + ox];
          }
        }
      }
}

void conv2d_input_grad(const Conv2dShape& s, int batch, const float* w, const float* gy, float* gx, float* scratch) {
  const int ho = s.ho(), wo = s.wo(), n = ho * wo;
  const int cg = s.cin / s.groups, og = s.cout / s.groups, kk = cg * s.kh * s.kw;
  std::memset(gx, 0, sizeof(float) * batch * s.cin * s.h * s.w);
  for (int b = 0; b < batch; ++b) {
    float* gxb = gx + static_cast<size_t>(b) * s.cin * s.h * s.w;
    const float* gyb = gy + static_cast<size_t>(b) * s.cout * n;
    if (s.depthwise()) {
      for (int c = 0; c < s.cin; ++c)
        for (int i = 0; i < s.kh; ++i)
          for (int j = 0; j < s.kw; ++j) {
            const float wv = w[(static_cast<size_t>(c) * s.kh + i) * s.kw + j];
            for (int oy = 0; oy < ho; ++oy) {
              const int iy = oy * s.sh - s.ph + i;
              if (iy < 0 || iy >= s.h) continue;
              for (int ox = 0; ox < wo; ++ox) {
                const int ix = ox * s.sw - s.pw + j;
                if (ix >= 0 && ix < s.w)
                  gxb[(static_cast<size_t>(c) * s.h + iy) * s.w + ix] += wv * gyb[static_cast<size_t>(c) * n + oy * wo + ox];
              }
            }
          }
      continue;
    }
    for (int g = 0; g < s.groups; ++g) {
      std::memset(scratch, 0, sizeof(float) * static_cast<size_t>(kk) * n);
      const float* wg = w + static_cast<size_t>(g) * og * kk;
      for (int o = 0; o < og; ++o)
        for (int k = 0; k < kk; ++k)
          axpy(n, wg[static_cast<size_t>(o) * kk + k], gyb + static_cast<size_t>(g * og + o) * n,
               scratch + static_cast<size_t>(k) * n);
      col2im_acc(s, scratch, cg, gxb + static_cast<size_t>(g) * cg * s.h * s.w);
    }
  }
}

void linear_input_grad(int batch, int in, int out, const float* w, const float* gy, float* gx) {
  std::memset(gx, 0, sizeof(float) * static_cast<size_t>(batch) * in);
  for (int b = 0; b < batch; ++b)
    for (int o = 0; o < out; ++o)
      axpy(in, gy[static_cast<size_t>(b) * out + o], w + static_cast<size_t>(o) * in, gx + static_cast<size_t>(b) * in);
}

void linear_forward(int batch, int in, int out, const float* x, const float* w, const float* bias, float* y) {
  for (int b = 0; b < batch; ++b)
    for (int o = 0; o < out; ++o)
      y[static_cast<size_t>(b) * out + o] =
          dot(in, x + static_cast<size_t>(b) * in, w + static_cast<size_t>(o) * in) + (bias ? bias[o] : 0.0f);
}

void linear_weight_grad(int batch, int in, int out, const float* x, const float* gy, float* gw, float* gb) {
  std::memset(gw, 0, sizeof(float) * static_cast<size_t>(in) * out);
  if (gb) std::memset(gb, 0, sizeof(float) * out);
  for (int b = 0; b < batch; ++b)
    for (int o = 0; o < out; ++o) {
      const float g = gy[static_cast<size_t>(b) * out + o];
      if (gb) gb[o] += g;
      axpy(in, g, x + static_cast<size_t>(b) * in, gw + static_cast<size_t>(o) * in);
    }
}

void batchnorm_forward(int batch, int c, int s, const float* x, const float* gamma, const float* beta,
                       const float* mean, const float* var, float eps, float* y) {
  for (int ch = 0; ch < c; ++ch) {
    const float inv = 1.0f / std::sqrt(var[ch] + eps);
    const float scale = (gamma ? gamma[ch] : 1.0f) * inv;
    const float shift = (beta ? beta[ch] : 0.0f) - mean[ch] * scale;
    for (int b = 0; b < batch; ++b) {
      const size_t off = (static_cast<size_t>(b) * c + ch) * s;
      for (int i = 0; i < s; ++i) y[off + i] = x[off + i] * scale + shift;
    }
  }
}

void batchnorm_backward(int batch, int c, int s, const float* x, const float* gy, const float* gamma,
                        const float* mean, const float* var, float eps, float* gx, float* ggamma, float* gbeta) {
  for (int ch = 0; ch < c; ++ch) {
    const float inv = 1.0f / std::sqrt(var[ch] + eps);
    const float scale = (gamma ? gamma[ch] : 1.0f) * inv;
    float sg = 0.0f, sgx = 0.0f;
    for (int b = 0; b < batch; ++b) {
      const size_t off = (static_cast<size_t>(b) * c + ch) * s;
      for (int i = 0; i < s; ++i) {
        const float g = gy[off + i];
        sg += g;
        sgx += g * (x[off + i] - mean[ch]);
        if (gx) gx[off + i] = g * scale;
      }
    }
    if (ggamma) ggamma[ch] = sgx * inv;
    if (gbeta) gbeta[ch] = sg;
  }
}

void leaky_relu_forward(size_t n, const float* x, float slope, float* y) {
  for (size_t i = 0; i < n; ++i) y[i] = x[i] > 0.0f ? x[i] : x[i] * slope;
}

void leaky_relu_backward(size_t n, const float* y, const float* gy, float slope, float* gx) {
  for (size_t i = 0; i < n; ++i) gx[i] = y[i] > 0.0f ? gy[i] : gy[i] * slope;
}

void maxpool_forward(const Pool2dShape& p, int batch, const float* x, float* y, int32_t* argmax) {
  const int ho = p.ho(), wo = p.wo();
  for (size_t bc = 0; bc < static_cast<size_t>(batch) * p.c; ++bc) {
    const float* xc = x + bc * p.h * p.w;
    for (int oy = 0; oy < ho; ++oy)
      for (int ox = 0; ox < wo; ++ox) {
        int best = (oy * p.s) * p.w + ox * p.s;
        float bv = xc[best];
        for (int i = 0; i < p.k; ++i)
          for (int j = 0; j < p.k; ++j) {
            const int idx = (oy * p.s + i) * p.w + ox * p.s + j;
            if (xc[idx] > bv || std::isnan(xc[idx])) {
              bv = xc[idx];
              best = idx;
            }
          }
        const size_t o = bc * ho * wo + oy * wo + ox;
        y[o] = bv;
        if (argmax) argmax[o] = best;
      }
  }
}

void maxpool_backward(const Pool2dShape& p, int batch, const float* gy, const int32_t* argmax, float* gx) {
  const size_t plane = static_cast<size_t>(p.h) * p.w, oplane = static_cast<size_t>(p.ho()) * p.wo();
  std::memset(gx, 0, sizeof(float) * batch * p.c * plane);
  for (size_t bc = 0; bc < static_cast<size_t>(batch) * p.c; ++bc)
    for (size_t o = 0; o < oplane; ++o) gx[bc * plane + argmax[bc * oplane + o]] += gy[bc * oplane + o];
}

void avgpool_forward(const Pool2dShape& p, int batch, const float* x, float* y) {
  const int ho = p.ho(), wo = p.wo();
  const float inv = 1.0f / static_cast<float>(p.k * p.k);
  for (size_t bc = 0; bc < static_cast<size_t>(batch) * p.c; ++bc) {
    const float* xc = x + bc * p.h * p.w;
    for (int oy = 0; oy < ho; ++oy)
      for (int ox = 0; ox < wo; ++ox) {
        float acc = 0.0f;
        for (int i = 0; i < p.k; ++i)
          for (int j = 0; j < p.k; ++j) acc += xc[(oy * p.s + i) * p.w + ox * p.s + j];
        y[bc * ho * wo + oy * wo + ox] = acc * inv;
      }
  }
}

void avgpool_backward(const Pool2dShape& p, int batch, const float* gy, float* gx) {
  const int ho = p.ho(), wo = p.wo();
  const float inv = 1.0f / static_cast<float>(p.k * p.k);
  std::memset(gx, 0, sizeof(float) * batch * p.c * p.h * p.w);
  for (size_t bc = 0; bc < static_cast<size_t>(batch) * p.c; ++bc) {
    float* gc = gx + bc * p.h * p.w;
    for (int oy = 0; oy < ho; ++oy)
      for (int ox = 0; ox < wo; ++ox) {
        const float g = gy[bc * ho * wo + oy * wo + ox] * inv;
        for (int i = 0; i < p.k; ++i)
          for (int j = 0; j < p.k; ++j) gc[(oy * p.s + i) * p.w + ox * p.s + j] += g;
      }
  }
}

namespace {
inline int bin_start(int i, int in, int out) { return (i * in) / out; }
inline int bin_end(int i, int in, int out) { return ((i + 1) * in + out - 1) / out; }
}  // namespace

void adaptive_avgpool_forward(int batch, int c, int h, int w, int oh, int ow, const float* x, float* y) {
  for (size_t bc = 0; bc < static_cast<size_t>(batch) * c; ++bc) {
    const float* xc = x + bc * h * w;
    for (int i = 0; i < oh; ++i) {
      const int y0 = bin_start(i, h, oh), y1 = bin_end(i, h, oh);
      for (int j = 0; j < ow; ++j) {
        const int x0 = bin_start(j, w, ow), x1 = bin_end(j, w, ow);
        float acc = 0.0f;
        for (int yy = y0; yy < y1; ++yy)
          for (int xx = x0; xx < x1; ++xx) acc += xc[yy * w + xx];
        y[bc * oh * ow + i * ow + j] = acc / static_cast<float>((y1 - y0) * (x1 - x0));
      }
    }
  }
}

void adaptive_avgpool_backward(int batch, int c, int h, int w, int oh, int ow, const float* gy, float* gx) {
  std::memset(gx, 0, sizeof(float) * batch * c * h * w);
  for (size_t bc = 0; bc < static_cast<size_t>(batch) * c; ++bc) {
    float* gc = gx + bc * h * w;
    for (int i = 0; i < oh; ++i) {
      const int y0 = bin_start(i, h, oh), y1 = bin_end(i, h, oh);
      for (int j = 0; j < ow; ++j) {
        const int x0 = bin_start(j, w, ow), x1 = bin_end(j, w, ow);
        const float g = gy[bc * oh * ow + i * ow + j] / static_cast<float>((y1 - y0) * (x1 - x0));
        for (int yy = y0; yy < y1; ++yy)
          for (int xx = x0; xx < x1; ++xx) gc[yy * w + xx] += g;
      }
    }
  }
}

void dequantize_rows(int rows, int cols, const int8_t* q, const float* scale, float* w) {
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c)
      w[static_cast<size_t>(r) * cols + c] = static_cast<float>(q[static_cast<size_t>(r) * cols + c]) * scale[r];
}

}  // namespace edgeml::lls
