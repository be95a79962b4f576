// Host-callable entry points of the CUDA twins. Each takes host buffers, runs on the current device
// and copies the result back, so callers (and tests) need no GPU memory management.
// Errors throw std::runtime_error with the CUDA error text.
#pragma once
#include <cstdint>

#include "mv/resample.h"
#include "mv/residual.h"

namespace edgeml::cuda {

int device_count();  // 0 when no device or no driver, never throws

// Same contract as edgeml::mv::rasterise.
void rasterise(const int32_t* rows, int64_t n, int height, int width, int grid, float* out);

// Same contract as edgeml::mv::accumulate.
void accumulate(const float* field, const float* prev, int height, int width, int grid, float* out);

// Same contracts as edgeml::mv::residual / edgeml::mv::warp (planes are host memory).
void residual(const mv::Plane* cur, const mv::Plane* ref, int channels, const float* field, int height, int width,
              int grid, int16_t* out);
void warp(const mv::Plane* ref, int channels, const float* field, int height, int width, int grid, uint8_t* out);

// Same contracts as edgeml::mv::residual_pooled / edgeml::mv::pool_field (same numbers, bit for bit).
void residual_pooled(const mv::Plane* cur, const mv::Plane* ref, int channels, const float* field, int height,
                     int width, int grid, const mv::Window& win, int16_t* out);
void pool_field(const float* field, int height, int width, int grid, const mv::Window& win, float* out);

}  // namespace edgeml::cuda
