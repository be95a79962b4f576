// The engine's one matrix product: row-major single-precision C = op(A) op(B) (or C += ...), computed by
// Eigen's blocked, vectorised GEMM kernel (header-only; SSE/AVX/AVX-512 or NEON, whatever the build targets),
// with its packing buffers handed in by the caller so that a training step allocates nothing.
#pragma once
#include <cstddef>

namespace edgeml::lls {

// Floats of workspace gemm() needs for an [m, k] x [k, n] product (Eigen's packed panels of A and B).
size_t gemm_workspace(int m, int n, int k);

// C[m, n] (+)= op(A)[m, k] op(B)[k, n]; op(A) = A^T when ta (A stored [k, m]), likewise B. Leading dimensions are
// the row lengths as stored. `workspace`: `capacity` floats, 64-byte aligned; with fewer than
// gemm_workspace(m, n, k) the product runs in smaller blocks (same result, a little slower), never beyond it.
void gemm(bool ta, bool tb, int m, int n, int k, const float* a, int lda, const float* b, int ldb, bool accumulate,
          float* c, int ldc, float* workspace, size_t capacity);

}  // namespace edgeml::lls
