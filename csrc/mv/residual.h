// Residual = current frame - reference warped by a motion field, over planar images. Plain C++17.
#pragma once
#include <cstddef>
#include <cstdint>

#include "mv/resample.h"

namespace edgeml::mv {

// One image plane in memory: rows of `width` samples, `row_stride` bytes apart, `col_stride` bytes between samples
// (1 for a planar Y/U/V plane, 3 for one channel of packed RGB). Chroma planes are smaller than the luma plane by
// (shift_y, shift_x): sample (y, x) of the full-resolution image lives at (y >> shift_y, x >> shift_x).
struct Plane {
  const uint8_t* data;
  int64_t row_stride;
  int64_t col_stride;
  int shift_y;
  int shift_x;
};

// out[c, y, x] = cur_c(y, x) - ref_c(clamp(y - fy), clamp(x - fx)) for c < channels, where (fx, fy) is the field
// of the cell covering pixel (y, x): field float32 [2, cells(height, grid), cells(width, grid)] (channel 0 = x) and
// nearest sampling (vectors are whole pixels; a fractional one is floored). Chroma is read at the subsampled
// position, i.e. the planes are upsampled by sample repetition. So cur == out + warp(ref) exactly, per channel.
// field == nullptr means a zero field. out: int16 [channels, height, width].
void residual(const Plane* cur, const Plane* ref, int channels, const float* field, int height, int width, int grid,
              int16_t* out);

// warp only: out[c, y, x] = ref_c(clamp(y - fy), clamp(x - fx)) as uint8 [channels, height, width].
void warp(const Plane* ref, int channels, const float* field, int height, int width, int grid, uint8_t* out);

// The residual at model resolution in one pass: out[c, i, j] = the area mean of residual (as above) over output
// pixel (i, j)'s part of `win`, with exact integer weights, rounded half away from zero. The full-resolution residual
// is never written (one native row at a time). out: int16 [channels, win.out_h, win.out_w]. An identity window gives
// residual() bit for bit.
void residual_pooled(const Plane* cur, const Plane* ref, int channels, const float* field, int height, int width,
                     int grid, const Window& win, int16_t* out);

// Border of replicated edge samples around a padded reference plane (widen_padded): with cells of at most kPad
// samples a side, every clamped read of the warp becomes one clamped start offset per cell.
constexpr int kPad = 16;

// Bytes of a padded plane for a height x width frame.
inline size_t padded_size(int height, int width) {
  return static_cast<size_t>(height + 2 * kPad) * static_cast<size_t>(width + 2 * kPad);
}

// A plane at full resolution with a border of kPad replicated samples on every side: out (padded_size bytes) holds
// p(clamp(y) >> shift_y, clamp(x) >> shift_x) for y in [-kPad, height + kPad), x in [-kPad, width + kPad); any column
// stride. Returns the view of sample (0, 0) (row stride width + 2 * kPad, unit column stride, no subsampling).
Plane widen_padded(const Plane& p, int height, int width, uint8_t* out);

// residual_pooled with reference planes already padded (widen_padded views, one layout for all), the form the fused
// kernel reads; a caller that reuses one reference for many frames (the I-frame of a GOP) pads it once. Not for an
// identity window (use residual()).
void residual_pooled_padded(const Plane* cur, const Plane* padded_ref, int channels, const float* field, int height,
                            int width, int grid, const Window& win, int16_t* out);

}  // namespace edgeml::mv
