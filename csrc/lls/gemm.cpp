#include "lls/gemm.h"

#include <cstring>

// Eigen's own product front end would heap-allocate its packing buffers above 128 KiB and may spawn OpenMP
// teams of its own; the engine calls the blocked kernel directly with arena buffers and does its own threading.
#define EIGEN_DONT_PARALLELIZE
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 warns inside its own AVX-512 intrinsics as Eigen instantiates them (a known false positive).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <Eigen/Core>

namespace edgeml::lls {

namespace {

using Index = Eigen::Index;

// Blocking sizes of an [rows, depth] x [depth, cols] column-major product, as Eigen's own GEMM would choose them,
// shrunk where needed to fit `capacity` floats of packing buffers (Eigen's loops take any block sizes >= 1).
struct Blocking : Eigen::internal::level3_blocking<float, float> {
  Blocking(Index rows, Index cols, Index depth, float* workspace, size_t capacity = static_cast<size_t>(-1)) {
    m_kc = depth, m_mc = rows, m_nc = cols;
    Eigen::internal::computeProductBlockingSizes<float, float, 1>(m_kc, m_mc, m_nc, Index(1));
    while (floats() > capacity && (m_kc > 1 || m_mc > 1 || m_nc > 1)) {
      if (m_nc >= m_mc && m_nc > 1) m_nc = (m_nc + 1) / 2;
      else if (m_mc > 1) m_mc = (m_mc + 1) / 2;
      else m_kc = (m_kc + 1) / 2;
    }
    m_blockA = workspace;
    m_blockB = workspace ? workspace + padded(m_kc * m_mc) : nullptr;
  }
  size_t floats() const { return padded(m_kc * m_mc) + padded(m_kc * m_nc); }
  static size_t padded(Index n) { return (static_cast<size_t>(n) + 15) / 16 * 16; }  // keeps B 64-byte aligned
};

// The column-major product C^T[n, m] = op(B)^T op(A)^T over the row-major buffers (a row-major [r, c] buffer is
// a column-major [c, r] one): Lhs = op(B)^T [n, k], Rhs = op(A)^T [k, m].
template <int LhsOrder, int RhsOrder>
void colmajor_product(int m, int n, int k, const float* a, int lda, const float* b, int ldb, float* c, int ldc,
                      float* workspace, size_t capacity) {
  Blocking blocking(n, m, k, workspace, capacity);
  Eigen::internal::general_matrix_matrix_product<Index, float, LhsOrder, false, float, RhsOrder, false,
                                                 Eigen::ColMajor, 1>::run(n, m, k, b, ldb, a, lda, c, 1, ldc, 1.0f,
                                                                          blocking, nullptr);
}

}  // namespace

size_t gemm_workspace(int m, int n, int k) {
  if (m <= 0 || n <= 0 || k <= 0) return 0;
  return Blocking(n, m, k, nullptr).floats();
}

void gemm(bool ta, bool tb, int m, int n, int k, const float* a, int lda, const float* b, int ldb, bool accumulate,
          float* c, int ldc, float* workspace, size_t capacity) {
  if (m <= 0 || n <= 0) return;
  if (!accumulate)
    for (int i = 0; i < m; ++i) std::memset(c + static_cast<size_t>(i) * ldc, 0, sizeof(float) * n);
  if (k <= 0) return;
  if (capacity < Blocking(1, 1, 1, nullptr).floats()) {  // no room to pack even 1x1 blocks: plain loops
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) {
        float acc = 0.0f;
        for (int p = 0; p < k; ++p)
          acc += (ta ? a[static_cast<size_t>(p) * lda + i] : a[static_cast<size_t>(i) * lda + p]) *
                 (tb ? b[static_cast<size_t>(j) * ldb + p] : b[static_cast<size_t>(p) * ldb + j]);
        c[static_cast<size_t>(i) * ldc + j] += acc;
      }
    return;
  }
  // op(B)^T is B itself read row-major when tb (RowMajor), else B^T: B's row-major buffer read column-major.
  if (!ta && !tb) colmajor_product<Eigen::ColMajor, Eigen::ColMajor>(m, n, k, a, lda, b, ldb, c, ldc, workspace, capacity);
  else if (!ta && tb) colmajor_product<Eigen::RowMajor, Eigen::ColMajor>(m, n, k, a, lda, b, ldb, c, ldc, workspace, capacity);
  else if (ta && !tb) colmajor_product<Eigen::ColMajor, Eigen::RowMajor>(m, n, k, a, lda, b, ldb, c, ldc, workspace, capacity);
  else colmajor_product<Eigen::RowMajor, Eigen::RowMajor>(m, n, k, a, lda, b, ldb, c, ldc, workspace, capacity);
}

}  // namespace edgeml::lls
