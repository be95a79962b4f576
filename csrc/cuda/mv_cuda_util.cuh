// Helpers shared by the CUDA twins in csrc/cuda/mv_*.cu: error checks and an owning device buffer.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <stdexcept>
#include <string>

namespace edgeml::cuda::detail {

inline void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(err) + " (code " +
                             std::to_string(static_cast<int>(err)) + ")");
  }
}

// Device memory freed on scope exit; the second constructor also copies `bytes` from host memory.
struct Buffer {
  void* ptr = nullptr;
  explicit Buffer(size_t bytes) { check(cudaMalloc(&ptr, bytes > 0 ? bytes : 1), "cudaMalloc"); }
  Buffer(const void* host, size_t bytes) : Buffer(bytes) {
    if (bytes > 0) check(cudaMemcpy(ptr, host, bytes, cudaMemcpyHostToDevice), "cudaMemcpy to device");
  }
  ~Buffer() { cudaFree(ptr); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr);
  }
};

}  // namespace edgeml::cuda::detail
