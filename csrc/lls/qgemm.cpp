#include "lls/qgemm.h"

#include <algorithm>
#include <cstdlib>
#include <new>
#include <tuple>

#include "public/gemmlowp.h"  // gemmlowp (csrc/lls/engine.cmake finds it)

namespace edgeml::lls {

namespace {

using gemmlowp::MapOrder;
using gemmlowp::MatrixMap;
// Left-hand side in [1, 255] (int8 in [-127, 127] once shifted): the form NEON's int8-operand kernel needs.
using BitDepth = gemmlowp::L8R8WithLhsNonzeroBitDepthParams;
using Kernel = gemmlowp::DefaultKernel<BitDepth>;
using Format = Kernel::Format;

size_t aligned(size_t bytes) {
  constexpr size_t a = gemmlowp::Allocator::kAlignment;
  return (bytes + a - 1) / a * a;
}

// gemmlowp's SingleThreadGemm without its dispatch (rows >= cols is the caller's job) and without an output
// pipeline: the raw int32 sums with the offsets applied.
template <MapOrder L, MapOrder R, MapOrder C>
void product(gemmlowp::SingleThreadGemmContext* ctx, const MatrixMap<const uint8_t, L>& lhs,
             const MatrixMap<const uint8_t, R>& rhs, MatrixMap<int32_t, C>* result, int lhs_offset, int rhs_offset) {
  gemmlowp::SingleThreadGemm<Format, uint8_t, int32_t, BitDepth>(
      ctx, Kernel(), lhs, rhs, result,
      gemmlowp::VectorDup<const int32_t, gemmlowp::VectorShape::Col>(lhs_offset, lhs.rows()),
      gemmlowp::VectorDup<const int32_t, gemmlowp::VectorShape::Row>(rhs_offset, rhs.cols()), std::tuple<>());
}

}  // namespace

struct Int8Gemm::Workspace {
  gemmlowp::SingleThreadGemmContext ctx;
};

Int8Gemm::Int8Gemm(int parts, size_t bytes) : ws_(new Workspace[static_cast<size_t>(std::max(parts, 1))]) {
  if (!bytes) return;
  bytes_ = 1;
  while (bytes_ < bytes) bytes_ *= 2;  // what gemmlowp's allocator takes: the next power of two
  for (int t = 0; t < std::max(parts, 1); ++t) {
    // gemmlowp aborts when its allocation fails: find out first, as an exception the engine reports.
    void* probe = std::malloc(bytes_);
    if (!probe) throw std::bad_alloc();
    std::free(probe);
    // One reservation of the largest product's size: every later product reserves no more, so gemmlowp's
    // allocator keeps this storage and never allocates again.
    gemmlowp::Allocator* a = ws_[t].ctx.allocator();
    a->Reserve<uint8_t>(bytes);
    a->Commit();
    a->Decommit();
  }
}

Int8Gemm::~Int8Gemm() = default;

size_t Int8Gemm::workspace(int m, int n, int k) {
  if (m <= 0 || n <= 0 || k <= 0) return 0;
  // What SingleThreadGemm reserves: packed L2 blocks of both sides with their per-slice sums, and the result block.
  gemmlowp::BlockParams bp;
  bp.Init<Format>(std::max(m, n), std::min(m, n), k, 1, gemmlowp::kDefaultL1CacheSize, gemmlowp::kDefaultL2CacheSize,
                  gemmlowp::kDefaultL2RhsFactor);
  const size_t rows = static_cast<size_t>(bp.l2_rows), cols = static_cast<size_t>(bp.l2_cols),
               depth = static_cast<size_t>(bp.l2_depth);
  return aligned(rows * depth) + aligned(4 * rows) + aligned(cols * depth) + aligned(4 * cols) +
         aligned(4 * rows * cols);
}

void Int8Gemm::run(int part, int m, int n, int k, const uint8_t* a, const uint8_t* b, int ldb, int b_zero,
                   int32_t* c, int ldc, bool col_major) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) c[col_major ? static_cast<size_t>(j) * ldc + i : static_cast<size_t>(i) * ldc + j] = 0;
    return;
  }
  gemmlowp::SingleThreadGemmContext* ctx = &ws_[part].ctx;
  constexpr MapOrder Row = MapOrder::RowMajor, Col = MapOrder::ColMajor;
  const MatrixMap<const uint8_t, Row> w(a, m, k, k);
  // gemmlowp's kernels want at least as many rows as columns: with fewer, compute C^T = B^T A^T.
  if (!col_major) {
    if (m >= n) {
      MatrixMap<int32_t, Row> out(c, m, n, ldc);
      product(ctx, w, MatrixMap<const uint8_t, Row>(b, k, n, ldb), &out, -128, -b_zero);
    } else {
      MatrixMap<int32_t, Col> out(c, n, m, ldc);
      product(ctx, MatrixMap<const uint8_t, Col>(b, n, k, ldb), MatrixMap<const uint8_t, Col>(a, k, m, k), &out,
              -b_zero, -128);
    }
  } else if (m >= n) {
    MatrixMap<int32_t, Col> out(c, m, n, ldc);
    product(ctx, w, MatrixMap<const uint8_t, Col>(b, k, n, ldb), &out, -128, -b_zero);
  } else {
    MatrixMap<int32_t, Row> out(c, n, m, ldc);
    product(ctx, MatrixMap<const uint8_t, Row>(b, n, k, ldb), MatrixMap<const uint8_t, Col>(a, k, m, k), &out, -b_zero,
            -128);
  }
}

}  // namespace edgeml::lls
