// Chain per-step motion fields back to the GOP's I-frame (CoViAR's accumulation). Plain C++17.
#pragma once
#include <cstdint>

namespace edgeml::mv {

// One accumulation step on a grid field (cell (i, j) stands for pixel (i*grid, j*grid)).
// field, prev: float32 [2, ho, wo] with ho = cells(height, grid), wo = cells(width, grid), channel 0 = x.
// A cell's vector v says its pixels came from p - v in the previous frame; its accumulated vector is
//   out(p) = v(p) + prev(cell of clamp(p - v(p)))
// with the source position clamped to the frame [0, width-1] x [0, height-1]. prev == nullptr means the previous
// frame is the I-frame (accumulated vector zero), so out = field. Vectors are whole pixels (as rasterised), so every
// value stays an exact integer in float32. out may not alias prev; it may alias field.
void accumulate(const float* field, const float* prev, int height, int width, int grid, float* out);

}  // namespace edgeml::mv
