#include "lls/local_loss.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "lls/ops.h"

namespace edgeml::lls {

LocalMode parse_mode(const std::string& name) {
  if (name == "lls") return LocalMode::LLS;
  if (name == "lls_m") return LocalMode::LLS_M;
  if (name == "lls_mxm") return LocalMode::LLS_MXM;
  if (name == "ce") return LocalMode::CE;
  throw std::runtime_error("unknown local loss mode '" + name + "' (expected lls, lls_m, lls_mxm or ce)");
}

void make_basis(const BasisSpec& spec, int d, float* basis) {
  const int k = spec.k;
  // As edgeml.lls.basis: float64 torch.linspace (its two-sided formula: the first half counts up from start,
  // the second half down from end), float64 sin of f * n, sign() for square, then one rounding to float32.
  const double start = spec.f_min, end = spec.f_max;
  const double step = k > 1 ? (end - start) / static_cast<double>(k - 1) : 0.0;
  const int halfway = k / 2;
  for (int i = 0; i < k; ++i) {
    const double f = k == 1 ? start : i < halfway ? start + step * i : end - step * (k - i - 1);
    for (int n = 0; n < d; ++n) {
      double v = std::sin(f * static_cast<double>(n + spec.n_offset));
      if (spec.waveform == "square") v = v > 0.0 ? 1.0 : (v < 0.0 ? -1.0 : 0.0);
      basis[static_cast<size_t>(i) * d + n] = static_cast<float>(v);
    }
  }
}

size_t LocalHead::scratch(int batch) const {
  const size_t d = static_cast<size_t>(dim());
  // z/zn [B,D], gz [B,D], y0 [B,K], y [B,K], gy [B,K], gy0 [B,K], norms [B]
  return 2 * batch * d + 4 * static_cast<size_t>(batch) * k + batch;
}

float local_loss_grad(const LocalHead& head, int batch, const float* a, const int32_t* labels, const float* basis,
                      const float* m, const float* mm, float* ga, float* gm, float* gmm, float* scratch) {
  const int K = head.k, D = head.dim();
  const size_t bd = static_cast<size_t>(batch) * D, bk = static_cast<size_t>(batch) * K;
  float* zn = scratch;
  float* gz = zn + bd;
  float* y0 = gz + bd;
  float* y = y0 + bk;
  float* gy = y + bk;
  float* gy0 = gy + bk;
  float* norms = gy0 + bk;
  const bool ce = head.mode == LocalMode::CE;
  const bool pooled = !ce && head.pool > 0 && head.h * head.w > 1;

  if (ce) {
    std::memcpy(y, a, sizeof(float) * bk);
  } else {
    if (pooled) adaptive_avgpool_forward(batch, head.c, head.h, head.w, head.pool, head.pool, a, zn);
    else std::memcpy(zn, a, sizeof(float) * bd);
    for (int b = 0; b < batch; ++b) {
      float* z = zn + static_cast<size_t>(b) * D;
      double ss = 0.0;
      for (int i = 0; i < D; ++i) ss += static_cast<double>(z[i]) * z[i];
      const float norm = std::max(static_cast<float>(std::sqrt(ss)), 1e-12f);
      norms[b] = norm;
      for (int i = 0; i < D; ++i) z[i] /= norm;
    }
    for (int b = 0; b < batch; ++b)
      for (int j = 0; j < K; ++j) {
        const float* z = zn + static_cast<size_t>(b) * D;
        const float* row = basis + static_cast<size_t>(j) * D;
        float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
        for (int i = 0; i < D; ++i) acc += z[i] * row[i];
        y0[static_cast<size_t>(b) * K + j] = acc;
      }
    for (int b = 0; b < batch; ++b)
      for (int j = 0; j < K; ++j) {
        const size_t o = static_cast<size_t>(b) * K + j;
        if (head.mode == LocalMode::LLS) y[o] = y0[o];
        else if (head.mode == LocalMode::LLS_M) y[o] = y0[o] * m[j];
        else {
          float acc = 0.0f;
          for (int i = 0; i < K; ++i) acc += y0[static_cast<size_t>(b) * K + i] * mm[static_cast<size_t>(i) * K + j];
          y[o] = acc;
        }
      }
  }

  // Cross-entropy with label smoothing on y / T, averaged over the batch; gy = dL/dy.
  const float T = ce ? 1.0f : head.temperature, eps = head.label_smoothing;
  double loss = 0.0;
  for (int b = 0; b < batch; ++b) {
    const float* yb = y + static_cast<size_t>(b) * K;
    float mx = yb[0] / T;
    for (int j = 1; j < K; ++j) mx = std::max(mx, yb[j] / T);
    double se = 0.0;
    for (int j = 0; j < K; ++j) se += std::exp(static_cast<double>(yb[j] / T - mx));
    const double lse = mx + std::log(se);
    for (int j = 0; j < K; ++j) {
      const double logp = yb[j] / T - lse;
      const double q = (j == labels[b] ? 1.0 - eps : 0.0) + eps / K;
      loss -= q * logp;
      gy[static_cast<size_t>(b) * K + j] = static_cast<float>((std::exp(logp) - q) / (static_cast<double>(T) * batch));
    }
  }
  loss /= batch;

  if (ce) {
    std::memcpy(ga, gy, sizeof(float) * bk);
    return static_cast<float>(loss);
  }
  // Through the modulation.
  if (head.mode == LocalMode::LLS) {
    std::memcpy(gy0, gy, sizeof(float) * bk);
  } else if (head.mode == LocalMode::LLS_M) {
    for (int j = 0; j < K; ++j) gm[j] = 0.0f;
    for (int b = 0; b < batch; ++b)
      for (int j = 0; j < K; ++j) {
        const size_t o = static_cast<size_t>(b) * K + j;
        gm[j] += y0[o] * gy[o];
        gy0[o] = gy[o] * m[j];
      }
  } else {
    std::memset(gmm, 0, sizeof(float) * K * K);
    for (int b = 0; b < batch; ++b)
      for (int i = 0; i < K; ++i) {
        const float yi = y0[static_cast<size_t>(b) * K + i];
        float acc = 0.0f;
        for (int j = 0; j < K; ++j) {
          const float g = gy[static_cast<size_t>(b) * K + j];
          gmm[static_cast<size_t>(i) * K + j] += yi * g;
          acc += g * mm[static_cast<size_t>(i) * K + j];
        }
        gy0[static_cast<size_t>(b) * K + i] = acc;
      }
  }
  // Through the basis (gzn = gy0 B) and the L2 normalisation.
  for (int b = 0; b < batch; ++b) {
    float* g = gz + static_cast<size_t>(b) * D;
    std::fill(g, g + D, 0.0f);
    for (int j = 0; j < K; ++j) {
      const float c = gy0[static_cast<size_t>(b) * K + j];
      const float* row = basis + static_cast<size_t>(j) * D;
      for (int i = 0; i < D; ++i) g[i] += c * row[i];
    }
    const float* z = zn + static_cast<size_t>(b) * D;
    double proj = 0.0;
    for (int i = 0; i < D; ++i) proj += static_cast<double>(z[i]) * g[i];
    // d(z/n)/dz = (I - zn zn^T)/n when n > eps; below eps the clamp makes it I/eps.
    const bool clamped = norms[b] <= 1e-12f;
    for (int i = 0; i < D; ++i) g[i] = (g[i] - (clamped ? 0.0f : z[i] * static_cast<float>(proj))) / norms[b];
  }
  if (pooled) adaptive_avgpool_backward(batch, head.c, head.h, head.w, head.pool, head.pool, gz, ga);
  else std::memcpy(ga, gz, sizeof(float) * bd);
  return static_cast<float>(loss);
}

}  // namespace edgeml::lls
