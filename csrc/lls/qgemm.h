// The engine's integer matrix product for frozen int8 layers, on gemmlowp's kernels (header-only; SSE4 / AVX2 on
// x86, NEON on aarch64):
//   C[m, n] (int32) = sum_p (A[m, p] - 128) (B[p, n] - b_zero)
// A: symmetric int8 weights stored shifted by 128 (values in [1, 255]); B: uint8 activations in [1, 255] (see
// quantize_activations in lls/ops.h). With both in [1, 255] either may be gemmlowp's left-hand side, so the product
// always runs in the orientation its kernels want, and on aarch64 it takes the int8-operand NEON kernel. Integer
// sums are exact: the result does not depend on blocking or on how a caller cuts the work into parts.
//
// Each part (one per engine thread) has its own packing workspace, grown once at construction to the size the
// largest product needs, so a training step allocates nothing.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

namespace edgeml::lls {

// Deepest product whose int32 accumulator cannot overflow: gemmlowp sums raw uint8 products (<= 255 * 255 each)
// before it applies the offsets. Deeper layers run the float32 path.
constexpr int kInt8MaxDepth = 32768;

class Int8Gemm {
 public:
  // `parts` workspaces of `bytes` each (bytes: the largest workspace() of the products they will run).
  Int8Gemm(int parts, size_t bytes);
  ~Int8Gemm();
  Int8Gemm(const Int8Gemm&) = delete;
  Int8Gemm& operator=(const Int8Gemm&) = delete;

  // Bytes of packing buffers one [m, k] x [k, n] product reserves.
  static size_t workspace(int m, int n, int k);
  size_t bytes() const { return bytes_; }  // of one part's workspace, as allocated

  // On part `part`'s workspace (one thread per part at a time). A: row-major [m, k]; B [k, n] and C [m, n] are both
  // row-major (col_major false) or both column-major, with leading dimensions ldb and ldc.
  void run(int part, int m, int n, int k, const uint8_t* a, const uint8_t* b, int ldb, int b_zero, int32_t* c,
           int ldc, bool col_major);

 private:
  struct Workspace;
  std::unique_ptr<Workspace[]> ws_;
  size_t bytes_ = 0;
};

}  // namespace edgeml::lls
