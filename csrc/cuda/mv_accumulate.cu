// CUDA twins of csrc/mv/accumulate.cpp, csrc/mv/residual.cpp and csrc/mv/resample.cpp (host buffers in and out).
#include <cuda_runtime.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/cuda_api.h"
#include "cuda/mv_cuda_util.cuh"
#include "mv/accumulate.h"
#include "mv/rasterise.h"
#include "mv/resample.h"
#include "mv/residual.h"

namespace edgeml::cuda {

namespace {

using detail::Buffer;
using detail::check;

__device__ int clampi(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

__global__ void accumulate_kernel(const float* field, const float* prev, int height, int width, int grid, int ho,
                                  int wo, float* out) {
  const int64_t plane = static_cast<int64_t>(ho) * wo;
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= plane) return;
  const int i = static_cast<int>(c / wo), j = static_cast<int>(c % wo);
  const float vx = field[c], vy = field[c + plane];
  const int sx = clampi(static_cast<int>(floorf(j * grid - vx)), 0, width - 1);
  const int sy = clampi(static_cast<int>(floorf(i * grid - vy)), 0, height - 1);
  const int64_t s = static_cast<int64_t>(sy / grid) * wo + sx / grid;
  out[c] = vx + prev[s];
  out[c + plane] = vy + prev[s + plane];
}

struct DevPlane {
  const uint8_t* data;
  int64_t row_stride, col_stride;
  int shift_y, shift_x;
};

__device__ uint8_t sample(const DevPlane& p, int y, int x) {
  return p.data[(y >> p.shift_y) * p.row_stride + (x >> p.shift_x) * p.col_stride];
}

// One thread per pixel and channel; `ref_only` selects warp (uint8 out) instead of residual (int16 out).
__global__ void warp_kernel(const DevPlane* cur, const DevPlane* ref, int channels, const float* field, int height,
                            int width, int grid, int16_t* res_out, uint8_t* warp_out) {
  const int64_t hw = static_cast<int64_t>(height) * width;
  const int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (k >= hw * channels) return;
  const int c = static_cast<int>(k / hw);
  const int64_t p = k % hw;
  const int y = static_cast<int>(p / width), x = static_cast<int>(p % width);
  int sy = y, sx = x;
  if (field != nullptr) {
    const int wo = (width + grid - 1) / grid;
    const int64_t plane = static_cast<int64_t>((height + grid - 1) / grid) * wo;
    const int64_t cell = static_cast<int64_t>(y / grid) * wo + x / grid;
    sx = clampi(static_cast<int>(floorf(x - field[cell])), 0, width - 1);
    sy = clampi(static_cast<int>(floorf(y - field[cell + plane])), 0, height - 1);
  }
  const uint8_t r = sample(ref[c], sy, sx);
  if (warp_out != nullptr) {
    warp_out[k] = r;
  } else {
    res_out[k] = static_cast<int16_t>(static_cast<int>(sample(cur[c], y, x)) - static_cast<int>(r));
  }
}

// One thread per output sample (c, i, j) of the model-resolution residual: the exact integer area sum of the
// native residual over its window part, the same integers as the CPU in any order, so the same rounded mean.
__global__ void residual_pooled_kernel(const DevPlane* cur, const DevPlane* ref, int channels, const float* field,
                                       int height, int width, int grid, mv::Window win, int16_t* out) {
  const int64_t plane = static_cast<int64_t>(win.out_h) * win.out_w;
  const int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (k >= plane * channels) return;
  const int c = static_cast<int>(k / plane);
  const int i = static_cast<int>((k % plane) / win.out_w), j = static_cast<int>(k % win.out_w);
  const int wo = (width + grid - 1) / grid;
  const int64_t fplane = static_cast<int64_t>((height + grid - 1) / grid) * wo;
  const mv::Taps rows = mv::taps(i, win.hs, win.out_h), cols = mv::taps(j, win.ws, win.out_w);
  int64_t acc = 0;
  for (int v = rows.first; v <= rows.last; ++v) {
    const int y = win.y0 + v;
    const int64_t wy = v == rows.first ? rows.w_first : (v == rows.last ? rows.w_last : win.out_h);
    int64_t sum = 0;
    for (int u = cols.first; u <= cols.last; ++u) {
      const int x = win.x0 + u;
      int sy = y, sx = x;
      if (field != nullptr) {
        const int64_t cell = static_cast<int64_t>(y / grid) * wo + x / grid;
        // x + floor(-v), as the CPU spans compute it (x - v may round in float32 for a fractional v)
        sx = clampi(x + static_cast<int>(floorf(-field[cell])), 0, width - 1);
        sy = clampi(y + static_cast<int>(floorf(-field[cell + fplane])), 0, height - 1);
      }
      const int r = static_cast<int>(sample(cur[c], y, x)) - static_cast<int>(sample(ref[c], sy, sx));
      const int64_t wx = u == cols.first ? cols.w_first : (u == cols.last ? cols.w_last : win.out_w);
      sum += wx * r;
    }
    acc += wy * sum;
  }
  out[k] = static_cast<int16_t>(mv::round_div(acc, static_cast<int64_t>(win.hs) * win.ws));
}

// One thread per model cell: the CPU's loop order (per native cell column, the row-weighted sum; then the column
// taps) with rounding-exact double steps (no FMA contraction), so the same float32 result.
__global__ void pool_field_kernel(const float* field, int height, int width, int grid, mv::Window win, float* out) {
  const int mo_h = win.out_h / grid, mo_w = win.out_w / grid;
  const int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t out_plane = static_cast<int64_t>(mo_h) * mo_w;
  if (k >= out_plane) return;
  const int a = static_cast<int>(k / mo_w), b = static_cast<int>(k % mo_w);
  const int wo = (width + grid - 1) / grid;
  const int64_t plane = static_cast<int64_t>((height + grid - 1) / grid) * wo;
  const int64_t ylo = static_cast<int64_t>(a) * grid * win.hs, yhi = ylo + static_cast<int64_t>(grid) * win.hs;
  const int64_t xlo = static_cast<int64_t>(b) * grid * win.ws, xhi = xlo + static_cast<int64_t>(grid) * win.ws;
  const int ry0 = (win.y0 + static_cast<int>(ylo / win.out_h)) / grid;
  const int ry1 = (win.y0 + static_cast<int>((yhi - 1) / win.out_h)) / grid;
  const int cx0 = (win.x0 + static_cast<int>(xlo / win.out_w)) / grid;
  const int cx1 = (win.x0 + static_cast<int>((xhi - 1) / win.out_w)) / grid;
  double nx = 0, ny = 0;
  for (int c = cx0; c <= cx1; ++c) {
    const int64_t q0 = static_cast<int64_t>(c) * grid - win.x0, q1 = min((c + 1) * grid, width) - win.x0;
    const double wc = static_cast<double>(mv::overlap(xlo, xhi, q0 * win.out_w, q1 * win.out_w));
    double tx = 0, ty = 0;
    for (int r = ry0; r <= ry1; ++r) {
      const int64_t p0 = static_cast<int64_t>(r) * grid - win.y0, p1 = min((r + 1) * grid, height) - win.y0;
      const double wr = static_cast<double>(mv::overlap(ylo, yhi, p0 * win.out_h, p1 * win.out_h));
      const int64_t cell = static_cast<int64_t>(r) * wo + c;
      tx = __dadd_rn(tx, __dmul_rn(wr, static_cast<double>(field[cell])));
      ty = __dadd_rn(ty, __dmul_rn(wr, static_cast<double>(field[cell + plane])));
    }
    nx = __dadd_rn(nx, __dmul_rn(wc, tx));
    ny = __dadd_rn(ny, __dmul_rn(wc, ty));
  }
  const double den = static_cast<double>(grid) * win.hs * grid * win.ws;
  out[k] = static_cast<float>(__dmul_rn(__ddiv_rn(nx, den), static_cast<double>(win.out_w) / win.ws));
  out[k + out_plane] = static_cast<float>(__dmul_rn(__ddiv_rn(ny, den), static_cast<double>(win.out_h) / win.hs));
}

size_t plane_bytes(const mv::Plane& p, int height, int width) {
  const int64_t rows = ((height - 1) >> p.shift_y) + 1, cols = ((width - 1) >> p.shift_x) + 1;
  return static_cast<size_t>((rows - 1) * p.row_stride + (cols - 1) * p.col_stride + 1);
}

// Copies host planes to the device; `views` point into `buffers`.
struct DevicePlanes {
  std::vector<std::unique_ptr<Buffer>> buffers;
  std::unique_ptr<Buffer> table;
  DevicePlanes(const mv::Plane* planes, int channels, int height, int width) {
    std::vector<DevPlane> views;
    for (int c = 0; c < channels; ++c) {
      const mv::Plane& p = planes[c];
      buffers.push_back(std::make_unique<Buffer>(p.data, plane_bytes(p, height, width)));
      views.push_back({buffers.back()->as<uint8_t>(), p.row_stride, p.col_stride, p.shift_y, p.shift_x});
    }
    table = std::make_unique<Buffer>(views.data(), views.size() * sizeof(DevPlane));
  }
  const DevPlane* get() const { return table->as<DevPlane>(); }
};

void run_warp(const mv::Plane* cur, const mv::Plane* ref, int channels, const float* field, int height, int width,
              int grid, int16_t* res_out, uint8_t* warp_out) {
  const int64_t total = static_cast<int64_t>(height) * width * channels;
  const size_t field_bytes = static_cast<size_t>(2) * mv::cells(height, grid) * mv::cells(width, grid) * 4;
  DevicePlanes d_ref(ref, channels, height, width);
  std::unique_ptr<DevicePlanes> d_cur;
  if (cur != nullptr) d_cur = std::make_unique<DevicePlanes>(cur, channels, height, width);
  std::unique_ptr<Buffer> d_field;
  if (field != nullptr) d_field = std::make_unique<Buffer>(field, field_bytes);
  const size_t out_bytes = static_cast<size_t>(total) * (warp_out ? 1 : 2);
  Buffer d_out(out_bytes);
  const int threads = 256;
  if (total > 0) {
    warp_kernel<<<static_cast<unsigned>((total + threads - 1) / threads), threads>>>(
        d_cur ? d_cur->get() : nullptr, d_ref.get(), channels, d_field ? d_field->as<float>() : nullptr, height,
        width, grid, warp_out ? nullptr : d_out.as<int16_t>(), warp_out ? d_out.as<uint8_t>() : nullptr);
    check(cudaGetLastError(), "warp_kernel launch");
  }
  check(cudaMemcpy(warp_out ? static_cast<void*>(warp_out) : static_cast<void*>(res_out), d_out.ptr, out_bytes,
                   cudaMemcpyDeviceToHost),
        "cudaMemcpy out");
}

}  // namespace

void accumulate(const float* field, const float* prev, int height, int width, int grid, float* out) {
  const int ho = mv::cells(height, grid), wo = mv::cells(width, grid);
  const size_t bytes = static_cast<size_t>(2) * ho * wo * sizeof(float);
  if (prev == nullptr) {
    // same contract as the CPU: the first P-step's accumulated field is its own field (still touch the device,
    // so a missing GPU is reported the same way on every call)
    Buffer d(field, bytes);
    check(cudaMemcpy(out, d.ptr, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy out");
    return;
  }
  Buffer d_field(field, bytes), d_prev(prev, bytes), d_out(bytes);
  const int64_t plane = static_cast<int64_t>(ho) * wo;
  const int threads = 256;
  accumulate_kernel<<<static_cast<unsigned>((plane + threads - 1) / threads), threads>>>(
      d_field.as<float>(), d_prev.as<float>(), height, width, grid, ho, wo, d_out.as<float>());
  check(cudaGetLastError(), "accumulate_kernel launch");
  check(cudaMemcpy(out, d_out.ptr, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy out");
}

void residual(const mv::Plane* cur, const mv::Plane* ref, int channels, const float* field, int height, int width,
              int grid, int16_t* out) {
  run_warp(cur, ref, channels, field, height, width, grid, out, nullptr);
}

void warp(const mv::Plane* ref, int channels, const float* field, int height, int width, int grid, uint8_t* out) {
  run_warp(nullptr, ref, channels, field, height, width, grid, nullptr, out);
}

void residual_pooled(const mv::Plane* cur, const mv::Plane* ref, int channels, const float* field, int height,
                     int width, int grid, const mv::Window& win, int16_t* out) {
  DevicePlanes d_ref(ref, channels, height, width), d_cur(cur, channels, height, width);
  std::unique_ptr<Buffer> d_field;
  if (field != nullptr) {
    d_field = std::make_unique<Buffer>(field, static_cast<size_t>(2) * mv::cells(height, grid) *
                                                  mv::cells(width, grid) * sizeof(float));
  }
  const int64_t total = static_cast<int64_t>(win.out_h) * win.out_w * channels;
  Buffer d_out(static_cast<size_t>(total) * sizeof(int16_t));
  const int threads = 256;
  if (total > 0) {
    residual_pooled_kernel<<<static_cast<unsigned>((total + threads - 1) / threads), threads>>>(
        d_cur.get(), d_ref.get(), channels, d_field ? d_field->as<float>() : nullptr, height, width, grid, win,
        d_out.as<int16_t>());
    check(cudaGetLastError(), "residual_pooled_kernel launch");
  }
  check(cudaMemcpy(out, d_out.ptr, static_cast<size_t>(total) * sizeof(int16_t), cudaMemcpyDeviceToHost),
        "cudaMemcpy out");
}

void pool_field(const float* field, int height, int width, int grid, const mv::Window& win, float* out) {
  const size_t in_bytes = static_cast<size_t>(2) * mv::cells(height, grid) * mv::cells(width, grid) * sizeof(float);
  const int64_t cells_out = static_cast<int64_t>(win.out_h / grid) * (win.out_w / grid);
  const size_t out_bytes = static_cast<size_t>(2 * cells_out) * sizeof(float);
  Buffer d_field(field, in_bytes), d_out(out_bytes);
  if (win.y0 == 0 && win.x0 == 0 && win.hs == height && win.ws == width && win.out_h == height &&
      win.out_w == width) {
    check(cudaMemcpy(out, d_field.ptr, in_bytes, cudaMemcpyDeviceToHost), "cudaMemcpy out");  // as the CPU: a copy
    return;
  }
  const int threads = 256;
  if (cells_out > 0) {
    pool_field_kernel<<<static_cast<unsigned>((cells_out + threads - 1) / threads), threads>>>(
        d_field.as<float>(), height, width, grid, win, d_out.as<float>());
    check(cudaGetLastError(), "pool_field_kernel launch");
  }
  check(cudaMemcpy(out, d_out.ptr, out_bytes, cudaMemcpyDeviceToHost), "cudaMemcpy out");
}

}  // namespace edgeml::cuda
