// Block motion vectors -> dense field. Plain C++17 over raw buffers.
#pragma once
#include <cstdint>

namespace edgeml::mv {

// One exported block, the columns the kernels need from libavcodec's AVMotionVector:
// (w, h, src_x, src_y, dst_x, dst_y). dst is the block centre, as libavcodec exports it.
constexpr int kRowCols = 6;

// Paint block vectors (dst - src, in pixels) onto a grid of `grid` x `grid` cells.
// rows: int32 [n, 6]; out: float32 [2, ceil(height/grid), ceil(width/grid)], overwritten.
// Cell (i, j) takes the vector of the last block that covers pixel (i*grid, j*grid); cells no block
// covers are zero. Blocks may reach outside the frame: the part outside is clipped.
void rasterise(const int32_t* rows, int64_t n, int height, int width, int grid, float* out);

inline int cells(int extent, int grid) { return (extent + grid - 1) / grid; }

// floor(v) as int for |v| < 2^31, without a libm call (baseline x86-64 has no SSE4.1 round instruction).
inline int floor_int(float v) {
  const int i = static_cast<int>(v);
  return i - (static_cast<float>(i) > v);
}

}  // namespace edgeml::mv
