// CUDA twins of the LLS engine kernels. Simple one-thread-per-output kernels: they mirror the CPU reference
// (csrc/lls) formula by formula, so the tests can compare them directly on a device.
#include <cuda_runtime.h>

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/lls_cuda.h"

namespace edgeml::cuda {

namespace {

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(err) + " (code " +
                             std::to_string(static_cast<int>(err)) + ")");
}

// A device copy of a host buffer (or an empty one), freed on scope exit.
struct Buf {
  void* ptr = nullptr;
  size_t bytes = 0;
  explicit Buf(size_t n, const void* host = nullptr) : bytes(n) {
    check(cudaMalloc(&ptr, n > 0 ? n : 1), "cudaMalloc");
    if (host && n) check(cudaMemcpy(ptr, host, n, cudaMemcpyHostToDevice), "cudaMemcpy H2D");
    else check(cudaMemset(ptr, 0, n > 0 ? n : 1), "cudaMemset");
  }
  ~Buf() { cudaFree(ptr); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  template <typename T>
  T* as() const { return static_cast<T*>(ptr); }
  void to_host(void* host) const { check(cudaMemcpy(host, ptr, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy D2H"); }
};

int blocks_for(size_t n, int threads) { return static_cast<int>((n + threads - 1) / threads); }

__global__ void conv2d_kernel(lls::Conv2dShape s, int batch, const float* x, const float* w, const float* bias,
                              float* y) {
  const int ho = s.ho(), wo = s.wo();
  const size_t total = static_cast<size_t>(batch) * s.cout * ho * wo;
  const size_t idx = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  if (idx >= total) return;
  const int ox = idx % wo, oy = (idx / wo) % ho, o = (idx / (static_cast<size_t>(wo) * ho)) % s.cout;
  const int b = static_cast<int>(idx / (static_cast<size_t>(wo) * ho * s.cout));
  const int cg = s.cin / s.groups, og = s.cout / s.groups, g = o / og;
  float acc = bias ? bias[o] : 0.0f;
  for (int c = 0; c < cg; ++c) {
    const float* xc = x + (static_cast<size_t>(b) * s.cin + g * cg + c) * s.h * s.w;
    const float* wc = w + (static_cast<size_t>(o) * cg + c) * s.kh * s.kw;
    for (int i = 0; i < s.kh; ++i) {
      const int iy = oy * s.sh - s.ph + i;
      if (iy < 0 || iy >= s.h) continue;
      for (int j = 0; j < s.kw; ++j) {
        const int ix = ox * s.sw - s.pw + j;
        if (ix >= 0 && ix < s.w) acc += wc[i * s.kw + j] * xc[iy * s.w + ix];
      }
    }
  }
  y[idx] = acc;
}

__device__ int bin_start(int i, int in, int out) { return (i * in) / out; }
__device__ int bin_end(int i, int in, int out) { return ((i + 1) * in + out - 1) / out; }

// z[b, c*p*p + i*p + j] = mean of a over the adaptive bin (i, j) of channel c (p = 0: z = a).
__global__ void pool_kernel(int batch, int c, int h, int w, int p, const float* a, float* z) {
  const int d = p > 0 ? c * p * p : c * h * w;
  const size_t idx = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  if (idx >= static_cast<size_t>(batch) * d) return;
  if (p == 0) {
    z[idx] = a[idx];
    return;
  }
  const int b = static_cast<int>(idx / d), r = static_cast<int>(idx % d);
  const int ch = r / (p * p), i = (r / p) % p, j = r % p;
  const int y0 = bin_start(i, h, p), y1 = bin_end(i, h, p), x0 = bin_start(j, w, p), x1 = bin_end(j, w, p);
  const float* ac = a + (static_cast<size_t>(b) * c + ch) * h * w;
  float acc = 0.0f;
  for (int yy = y0; yy < y1; ++yy)
    for (int xx = x0; xx < x1; ++xx) acc += ac[yy * w + xx];
  z[idx] = acc / static_cast<float>((y1 - y0) * (x1 - x0));
}

__global__ void unpool_kernel(int batch, int c, int h, int w, int p, const float* gz, float* ga) {
  const size_t idx = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  if (idx >= static_cast<size_t>(batch) * c * h * w) return;
  if (p == 0) {
    ga[idx] = gz[idx];
    return;
  }
  const int xx = idx % w, yy = (idx / w) % h;
  const size_t bc = idx / (static_cast<size_t>(w) * h);
  float acc = 0.0f;
  for (int i = 0; i < p; ++i) {
    const int y0 = bin_start(i, h, p), y1 = bin_end(i, h, p);
    if (yy < y0 || yy >= y1) continue;
    for (int j = 0; j < p; ++j) {
      const int x0 = bin_start(j, w, p), x1 = bin_end(j, w, p);
      if (xx < x0 || xx >= x1) continue;
      acc += gz[bc * p * p + i * p + j] / static_cast<float>((y1 - y0) * (x1 - x0));
    }
  }
  ga[idx] = acc;
}

constexpr int kThreads = 256;

__device__ float block_sum(float v, float* shared) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) shared[threadIdx.x] += shared[threadIdx.x + s];
    __syncthreads();
  }
  const float out = shared[0];
  __syncthreads();
  return out;
}

// One block per sample: normalise z in place, project on the basis, modulate, smoothed CE, and the gradient
// back to z (into gz). y0/y/gy0 are [B, K] work buffers; loss and gm/gmm are accumulated with atomics.
__global__ void sample_kernel(int d, int k, int mode, float temperature, float eps_ls, int batch, float* z,
                              const int32_t* labels, const float* basis, const float* m, const float* mm, float* y0,
                              float* y, float* gy0, float* gz, float* gm, float* gmm, float* loss) {
  __shared__ float shared[kThreads];
  __shared__ float norm_s;
  const int b = blockIdx.x;
  float* zb = z + static_cast<size_t>(b) * d;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < d; i += blockDim.x) ss += zb[i] * zb[i];
  ss = block_sum(ss, shared);
  if (threadIdx.x == 0) norm_s = fmaxf(sqrtf(ss), 1e-12f);
  __syncthreads();
  const float norm = norm_s;
  for (int i = threadIdx.x; i < d; i += blockDim.x) zb[i] /= norm;
  __syncthreads();
  for (int j = 0; j < k; ++j) {
    float acc = 0.0f;
    for (int i = threadIdx.x; i < d; i += blockDim.x) acc += zb[i] * basis[static_cast<size_t>(j) * d + i];
    acc = block_sum(acc, shared);
    if (threadIdx.x == 0) y0[static_cast<size_t>(b) * k + j] = acc;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    const float* s0 = y0 + static_cast<size_t>(b) * k;
    float* yb = y + static_cast<size_t>(b) * k;
    for (int j = 0; j < k; ++j) {
      if (mode == 0) yb[j] = s0[j];
      else if (mode == 1) yb[j] = s0[j] * m[j];
      else {
        float acc = 0.0f;
        for (int i = 0; i < k; ++i) acc += s0[i] * mm[i * k + j];
        yb[j] = acc;
      }
    }
    float mx = yb[0] / temperature;
    for (int j = 1; j < k; ++j) mx = fmaxf(mx, yb[j] / temperature);
    double se = 0.0;
    for (int j = 0; j < k; ++j) se += exp(static_cast<double>(yb[j] / temperature - mx));
    const double lse = mx + log(se);
    double l = 0.0;
    float* g = gy0 + static_cast<size_t>(b) * k;
    for (int j = 0; j < k; ++j) {
      const double logp = yb[j] / temperature - lse;
      const double q = (j == labels[b] ? 1.0 - eps_ls : 0.0) + eps_ls / k;
      l -= q * logp;
      yb[j] = static_cast<float>((exp(logp) - q) / (static_cast<double>(temperature) * batch));  // now dL/dy
    }
    atomicAdd(loss, static_cast<float>(l / batch));
    for (int j = 0; j < k; ++j) {
      if (mode == 0) g[j] = yb[j];
      else if (mode == 1) {
        g[j] = yb[j] * m[j];
        atomicAdd(gm + j, s0[j] * yb[j]);
      } else {
        float acc = 0.0f;
        for (int jj = 0; jj < k; ++jj) {
          acc += yb[jj] * mm[j * k + jj];
          atomicAdd(gmm + j * k + jj, s0[j] * yb[jj]);
        }
        g[j] = acc;
      }
    }
  }
  __syncthreads();
  const float* g = gy0 + static_cast<size_t>(b) * k;
  float* gzb = gz + static_cast<size_t>(b) * d;
  float proj = 0.0f;
  for (int i = threadIdx.x; i < d; i += blockDim.x) {
    float acc = 0.0f;
    for (int j = 0; j < k; ++j) acc += g[j] * basis[static_cast<size_t>(j) * d + i];
    gzb[i] = acc;
    proj += zb[i] * acc;
  }
  proj = block_sum(proj, shared);
  const bool clamped = norm <= 1e-12f;
  for (int i = threadIdx.x; i < d; i += blockDim.x) gzb[i] = (gzb[i] - (clamped ? 0.0f : zb[i] * proj)) / norm;
}

// The numbers of an OptimizerSpec (which holds a std::string and so cannot be a kernel argument).
struct OptNumbers {
  float lr, momentum, dampening, weight_decay, beta1, beta2, eps;
  bool nesterov;
};

__global__ void update_kernel(OptNumbers o, int adamw, long step, float step_size, float bc2_sqrt, size_t n,
                              float* p, const float* g, float* s0, float* s1) {
  const size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  if (adamw) {
    p[i] *= 1.0f - o.lr * o.weight_decay;
    s0[i] += (g[i] - s0[i]) * (1.0f - o.beta1);
    s1[i] = s1[i] * o.beta2 + (1.0f - o.beta2) * g[i] * g[i];
    p[i] -= step_size * s0[i] / (sqrtf(s1[i]) / bc2_sqrt + o.eps);
    return;
  }
  float d = g[i];
  if (o.weight_decay != 0.0f) d += o.weight_decay * p[i];
  if (o.momentum != 0.0f) {
    s0[i] = step == 1 ? d : o.momentum * s0[i] + (1.0f - o.dampening) * d;
    d = o.nesterov ? d + o.momentum * s0[i] : s0[i];
  }
  p[i] -= o.lr * d;
}

}  // namespace

void lls_conv2d_forward(const lls::Conv2dShape& s, int batch, const float* x, const float* w, const float* bias,
                        float* y) {
  const size_t nx = static_cast<size_t>(batch) * s.cin * s.h * s.w;
  const size_t nw = static_cast<size_t>(s.cout) * (s.cin / s.groups) * s.kh * s.kw;
  const size_t ny = static_cast<size_t>(batch) * s.cout * s.ho() * s.wo();
  Buf dx(nx * 4, x), dw(nw * 4, w), db(bias ? s.cout * 4 : 0, bias), dy(ny * 4);
  conv2d_kernel<<<blocks_for(ny, kThreads), kThreads>>>(s, batch, dx.as<float>(), dw.as<float>(),
                                                         bias ? db.as<float>() : nullptr, dy.as<float>());
  check(cudaGetLastError(), "conv2d kernel");
  dy.to_host(y);
}

float lls_local_loss_grad(const lls::LocalHead& head, int batch, const float* a, const int32_t* labels,
                          const float* basis, const float* m, const float* mm, float* ga, float* gm, float* gmm) {
  if (head.mode == lls::LocalMode::CE) throw std::runtime_error("the CUDA local loss covers lls, lls_m and lls_mxm");
  const int k = head.k, d = head.dim();
  const int p = head.pool > 0 && head.h * head.w > 1 ? head.pool : 0;
  const size_t na = static_cast<size_t>(batch) * head.c * head.h * head.w;
  const size_t nz = static_cast<size_t>(batch) * d, nk = static_cast<size_t>(batch) * k;
  const int mode = head.mode == lls::LocalMode::LLS ? 0 : head.mode == lls::LocalMode::LLS_M ? 1 : 2;
  Buf da(na * 4, a), dl(batch * 4, labels), dbasis(static_cast<size_t>(k) * d * 4, basis);
  Buf dm(mode == 1 ? k * 4 : 0, m), dmm(mode == 2 ? static_cast<size_t>(k) * k * 4 : 0, mm);
  Buf z(nz * 4), gz(nz * 4), y0(nk * 4), y(nk * 4), gy0(nk * 4), dga(na * 4), loss(4);
  Buf dgm(mode == 1 ? k * 4 : 0), dgmm(mode == 2 ? static_cast<size_t>(k) * k * 4 : 0);
  pool_kernel<<<blocks_for(nz, kThreads), kThreads>>>(batch, head.c, head.h, head.w, p, da.as<float>(),
                                                       z.as<float>());
  sample_kernel<<<batch, kThreads>>>(d, k, mode, head.temperature, head.label_smoothing, batch, z.as<float>(),
                                     dl.as<int32_t>(), dbasis.as<float>(), dm.as<float>(), dmm.as<float>(),
                                     y0.as<float>(), y.as<float>(), gy0.as<float>(), gz.as<float>(), dgm.as<float>(),
                                     dgmm.as<float>(), loss.as<float>());
  unpool_kernel<<<blocks_for(na, kThreads), kThreads>>>(batch, head.c, head.h, head.w, p, gz.as<float>(),
                                                         dga.as<float>());
  check(cudaGetLastError(), "local loss kernels");
  dga.to_host(ga);
  if (mode == 1 && gm) dgm.to_host(gm);
  if (mode == 2 && gmm) dgmm.to_host(gmm);
  float out = 0.0f;
  loss.to_host(&out);
  return out;
}

void lls_optimizer_update(const lls::OptimizerSpec& o, long step, size_t n, float* p, const float* g, float* s0,
                          float* s1) {
  const bool adamw = o.name == "adamw";
  if (!adamw && o.name != "sgd") throw std::runtime_error("unknown optimizer '" + o.name + "'");
  const double bc1 = 1.0 - std::pow(static_cast<double>(o.beta1), static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(o.beta2), static_cast<double>(step));
  const OptNumbers numbers{o.lr, o.momentum, o.dampening, o.weight_decay, o.beta1, o.beta2, o.eps, o.nesterov};
  Buf dp(n * 4, p), dg(n * 4, g), d0(n * 4, s0), d1(adamw ? n * 4 : 0, s1);
  update_kernel<<<blocks_for(n, kThreads), kThreads>>>(numbers, adamw, step, static_cast<float>(o.lr / bc1),
                                                        static_cast<float>(std::sqrt(bc2)), n, dp.as<float>(),
                                                        dg.as<float>(), d0.as<float>(), d1.as<float>());
  check(cudaGetLastError(), "optimizer kernel");
  dp.to_host(p);
  if (s0) d0.to_host(s0);
  if (adamw && s1) d1.to_host(s1);
}

}  // namespace edgeml::cuda
