// Model-resolution extraction of one video as a stateful chain: the reference planes are copied (and, for the fused
// kernel, widened to full resolution and padded) once per reference instead of once per frame, and the accumulated
// native field stays in C++. The same numbers as rasterise -> accumulate -> pool_field / residual_pooled in turn.
// Plain C++17 (with run-time picked AVX2 loops, mv/simd.h).
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "mv/resample.h"
#include "mv/residual.h"

namespace edgeml::mv {

class Extractor {
 public:
  // Native frames of height x width, fields on `grid`, the output window `win` (identity: the full-resolution
  // residual), `channels` planes per frame. accumulate: fields chained to the I-frame and residuals against it; else
  // per-step fields and residuals against the previous frame.
  Extractor(int height, int width, int grid, bool accumulate, const Window& win, int channels);

  // An I-frame (or any frame that starts a chain): its planes become the reference (copied), the chain restarts.
  void reset(const Plane* planes);

  // One P-frame: rows int32 [n, kRowCols] (predicted from an earlier frame), its planes `cur`. Writes the residual
  // int16 [channels, out_h, out_w] and the pooled field float32 [2, out_h / grid, out_w / grid] (at an identity
  // window: the native field's shape). Needs a reset() first.
  void step(const int32_t* rows, int64_t n, const Plane* cur, int16_t* residual, float* mv);

  bool ready() const { return ready_; }
  // The last step's native field (accumulated to the I-frame in accumulated mode).
  const std::vector<float>& field() const { return accumulate_ ? acc_ : field_; }

 private:
  void keep(const Plane* planes);  // planes -> ref_ (owned copies)

  int height_, width_, grid_, channels_;
  bool accumulate_, identity_, ready_ = false, chained_ = false;
  Window win_;
  std::unique_ptr<FieldPool> pool_;  // the field pooling's weights (not at an identity window)
  std::vector<float> field_, acc_;
  std::vector<std::vector<uint8_t>> own_;
  std::vector<Plane> ref_;
};

}  // namespace edgeml::mv
