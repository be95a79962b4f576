// Host-callable entry points of the CUDA twins. Each takes host buffers, runs on the current device
// and copies the result back, so callers (and tests) need no GPU memory management.
// Errors throw std::runtime_error with the CUDA error text.
#pragma once
#include <cstdint>

namespace edgeml::cuda {

int device_count();  // 0 when no device or no driver, never throws

// Same contract as edgeml::mv::rasterise.
void rasterise(const int32_t* rows, int64_t n, int height, int width, int grid, float* out);

}  // namespace edgeml::cuda
