// Layer kernels of the LLS engine over raw NCHW float32 buffers: forward passes, and the backward pieces a
// local step needs (gradient w.r.t. weights of one block; gradient w.r.t. inputs only inside that block).
// Convolutions and linear layers are im2col + GEMM (lls/gemm.h); depthwise convolutions, norms and pools are
// vectorisable loops. No allocation: callers hand in every scratch buffer (sized with the *scratch functions).
// `threads`: how many parts the work is cut into (see lls/parallel.h): results are bit-identical for a given
// count, and for per-sample outputs (forward, input gradients) for any count.
#pragma once
#include <cstddef>
#include <cstdint>

#ifdef __CUDACC__
#define EDGEML_HD __host__ __device__
#else
#define EDGEML_HD
#endif

namespace edgeml::lls {

struct Conv2dShape {
  int cin, cout, h, w, kh, kw, sh, sw, ph, pw, groups;
  EDGEML_HD int ho() const { return (h + 2 * ph - kh) / sh + 1; }
  EDGEML_HD int wo() const { return (w + 2 * pw - kw) / sw + 1; }
  bool depthwise() const { return groups == cin && groups == cout; }
  bool pointwise() const { return kh == 1 && kw == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0; }
  // Floats of scratch the three conv kernels need on `threads` threads (im2col, GEMM packing, partial sums).
  size_t scratch(int threads = 1) const;
};

// y[B,cout,ho,wo] = conv(x[B,cin,h,w], w[cout,cin/groups,kh,kw]) + bias (bias may be null).
void conv2d_forward(const Conv2dShape& s, int batch, const float* x, const float* w, const float* bias, float* y,
                    float* scratch, int threads = 1);
// gw[cout,cin/groups,kh,kw] = dL/dw, gb[cout] = dL/db (gb may be null); overwritten, not accumulated.
void conv2d_weight_grad(const Conv2dShape& s, int batch, const float* x, const float* gy, float* gw, float* gb,
                        float* scratch, int threads = 1);

// gx[B,cin,h,w] = dL/dx (overwritten); scratch as for the forward.
void conv2d_input_grad(const Conv2dShape& s, int batch, const float* w, const float* gy, float* gx, float* scratch,
                       int threads = 1);

// Floats of scratch the three linear kernels need on `threads` threads (GEMM packing) for batches up to `batch`.
// The kernels take the scratch's size: they fit their blocking to it (any size works; this one is the fastest).
size_t linear_scratch(int batch, int in, int out, int threads = 1);
// y[B,out] = x[B,in] w[out,in]^T + b.
void linear_forward(int batch, int in, int out, const float* x, const float* w, const float* bias, float* y,
                    float* scratch, size_t scratch_floats, int threads = 1);
void linear_weight_grad(int batch, int in, int out, const float* x, const float* gy, float* gw, float* gb,
                        float* scratch, size_t scratch_floats, int threads = 1);
void linear_input_grad(int batch, int in, int out, const float* w, const float* gy, float* gx, float* scratch,
                       size_t scratch_floats, int threads = 1);

// Batch norm with fixed statistics over [B, C, S] (S = H*W, or 1 after a linear layer).
void batchnorm_forward(int batch, int c, int s, const float* x, const float* gamma, const float* beta,
                       const float* mean, const float* var, float eps, float* y, int threads = 1);
// gx = dL/dx (may alias gy), ggamma/gbeta overwritten (may be null when frozen).
void batchnorm_backward(int batch, int c, int s, const float* x, const float* gy, const float* gamma,
                        const float* mean, const float* var, float eps, float* gx, float* ggamma, float* gbeta,
                        int threads = 1);

void leaky_relu_forward(size_t n, const float* x, float slope, float* y, int threads = 1);
// Uses the layer's output (same sign as its input for slope > 0); gx may alias gy.
void leaky_relu_backward(size_t n, const float* y, const float* gy, float slope, float* gx, int threads = 1);

struct Pool2dShape {
  int c, h, w, k, s;
  int ho() const { return (h - k) / s + 1; }
  int wo() const { return (w - k) / s + 1; }
};
// Max pool keeps the argmax (first maximum in the window, as PyTorch's CPU kernel) for the backward.
void maxpool_forward(const Pool2dShape& p, int batch, const float* x, float* y, int32_t* argmax, int threads = 1);
void maxpool_backward(const Pool2dShape& p, int batch, const float* gy, const int32_t* argmax, float* gx,
                      int threads = 1);
void avgpool_forward(const Pool2dShape& p, int batch, const float* x, float* y, int threads = 1);
void avgpool_backward(const Pool2dShape& p, int batch, const float* gy, float* gx, int threads = 1);

// Adaptive average pooling [B,C,H,W] -> [B,C,oh,ow] with PyTorch's bins [floor(i*H/o), ceil((i+1)*H/o)).
void adaptive_avgpool_forward(int batch, int c, int h, int w, int oh, int ow, const float* x, float* y,
                              int threads = 1);
void adaptive_avgpool_backward(int batch, int c, int h, int w, int oh, int ow, const float* gy, float* gx,
                               int threads = 1);

// Symmetric int8 weights with one scale per output row: w[r, :] = q[r, :] * scale[r].
void dequantize_rows(int rows, int cols, const int8_t* q, const float* scale, float* w);

// -- int8 frozen layers ---------------------------------------------------------------------------------------
// Weights: symmetric int8 per output row, stored shifted by 128 (w[r, :] ~ (u[r, :] - 128) * wscale[r]). Activations:
// quantised per tensor (the whole batch) to uint8 with a zero point, over the 255 levels [1, 255]:
// x ~ (q - zero) * scale, zero exact. The product is integer (lls/qgemm.h, int32 sums) and the output comes back as
// float32: y[r] = scale * wscale[r] * acc[r] + bias[r]. Integer sums make the result independent of `threads`.
class Int8Gemm;

struct ActQuant {
  float scale = 1.0f;
  int zero = 1;
};
// q[i] = clamp(rint(x[i] / scale) + zero, 1, 255) over the range [min(x, 0), max(x, 0)] (scale = range / 254).
ActQuant quantize_activations(size_t n, const float* x, uint8_t* q, int threads = 1);
// Bytes of scratch conv2d_forward_int8 needs on `threads` threads (the uint8 im2col matrices).
size_t conv2d_int8_scratch(const Conv2dShape& s, int threads = 1);
// y[B,cout,ho,wo] as conv2d_forward with int8 weights (not depthwise); xq: [B*cin*h*w] bytes for the quantised input.
void conv2d_forward_int8(const Conv2dShape& s, int batch, const float* x, const uint8_t* w, const float* wscale,
                         const float* bias, float* y, uint8_t* xq, uint8_t* scratch, Int8Gemm& gemm, int threads = 1);
// y[B,out] = x[B,in] w[out,in]^T + b with int8 weights; xq: [B*in] bytes for the quantised input.
void linear_forward_int8(int batch, int in, int out, const float* x, const uint8_t* w, const float* wscale,
                         const float* bias, float* y, uint8_t* xq, Int8Gemm& gemm, int threads = 1);

}  // namespace edgeml::lls
