#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "cuda/cuda_api.h"
#include "cuda/mv_cuda_util.cuh"
#include "mv/rasterise.h"

namespace edgeml::cuda {

namespace {

using detail::check;
using DeviceBuffer = detail::Buffer;

__device__ int first_cell(int pixel, int grid) { return pixel <= 0 ? 0 : (pixel + grid - 1) / grid; }

// Pass 1: each cell records the highest row index covering it ("last block wins", as on the CPU).
__global__ void claim_cells(const int32_t* rows, int64_t n, int ho, int wo, int grid, int* owner) {
  int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (r >= n) return;
  const int32_t* row = rows + r * mv::kRowCols;
  const int w = row[0], h = row[1];
  const int x0 = row[4] - w / 2, y0 = row[5] - h / 2;
  const int j0 = first_cell(x0, grid), j1 = min(wo, first_cell(x0 + w, grid));
  const int i0 = first_cell(y0, grid), i1 = min(ho, first_cell(y0 + h, grid));
  for (int i = i0; i < i1; ++i)
    for (int j = j0; j < j1; ++j) atomicMax(owner + static_cast<int64_t>(i) * wo + j, static_cast<int>(r));
}

// Pass 2: each cell copies its owner's vector.
__global__ void paint_cells(const int32_t* rows, int64_t plane, const int* owner, float* out) {
  int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= plane) return;
  const int r = owner[c];
  if (r < 0) {
    out[c] = 0.0f;
    out[c + plane] = 0.0f;
    return;
  }
  const int32_t* row = rows + static_cast<int64_t>(r) * mv::kRowCols;
  out[c] = static_cast<float>(row[4] - row[2]);
  out[c + plane] = static_cast<float>(row[5] - row[3]);
}

}  // namespace

int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return count;
}

void rasterise(const int32_t* rows, int64_t n, int height, int width, int grid, float* out) {
  const int ho = mv::cells(height, grid), wo = mv::cells(width, grid);
  const int64_t plane = static_cast<int64_t>(ho) * wo;
  DeviceBuffer d_rows(static_cast<size_t>(n) * mv::kRowCols * sizeof(int32_t));
  DeviceBuffer d_owner(static_cast<size_t>(plane) * sizeof(int));
  DeviceBuffer d_out(static_cast<size_t>(2 * plane) * sizeof(float));
  if (n > 0) {
    check(cudaMemcpy(d_rows.ptr, rows, static_cast<size_t>(n) * mv::kRowCols * sizeof(int32_t),
                     cudaMemcpyHostToDevice),
          "cudaMemcpy rows");
  }
  check(cudaMemset(d_owner.ptr, 0xff, static_cast<size_t>(plane) * sizeof(int)), "cudaMemset");  // -1
  const int threads = 256;
  if (n > 0) {
    claim_cells<<<static_cast<unsigned>((n + threads - 1) / threads), threads>>>(
        static_cast<const int32_t*>(d_rows.ptr), n, ho, wo, grid, static_cast<int*>(d_owner.ptr));
    check(cudaGetLastError(), "claim_cells launch");
  }
  paint_cells<<<static_cast<unsigned>((plane + threads - 1) / threads), threads>>>(
      static_cast<const int32_t*>(d_rows.ptr), plane, static_cast<const int*>(d_owner.ptr),
      static_cast<float*>(d_out.ptr));
  check(cudaGetLastError(), "paint_cells launch");
  check(cudaMemcpy(out, d_out.ptr, static_cast<size_t>(2 * plane) * sizeof(float), cudaMemcpyDeviceToHost),
        "cudaMemcpy out");
}

}  // namespace edgeml::cuda
