// Residual = current frame - reference warped by a motion field, over planar images. Plain C++17.
#pragma once
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

// residual_pooled with reference planes already at full resolution with unit column stride (shift 0, col_stride 1:
// e.g. from widen_plane), the form the fused kernel reads; a caller that reuses one reference for many frames (the
// I-frame of a GOP) widens it once. Not for an identity window (use residual()).
void residual_pooled_wide(const Plane* cur, const Plane* wide_ref, int channels, const float* field, int height,
                          int width, int grid, const Window& win, int16_t* out);

// A plane at full resolution: out (height x width bytes, rows `width` apart) = p(y >> shift_y, x >> shift_x), any
// column stride.
void widen_plane(const Plane& p, int height, int width, uint8_t* out);

}  // namespace edgeml::mv
