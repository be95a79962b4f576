// The LLS local loss of one block (docs/architecture.md §5) and its gradient w.r.t. the block output.
//   z  = adaptive_avg_pool(a, p x p).flatten()      [B, D]   (a is [B,C,H,W]; a [B,N] output is taken as is)
//   zn = z / max(||z||_2, 1e-12)
//   y0 = zn B^T                                      [B, K]   B[k,n] = sin(f_k * n), f = linspace(f_min, f_max, K)
//   y  = y0 (lls) | y0 * m (lls_m) | y0 M (lls_mxm)
//   L  = CE(y / T, label) with label smoothing, mean over the batch
// The classifier head uses loss "ce": L = CE(a, label) on the logits a [B, K] directly.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace edgeml::lls {

enum class LocalMode { LLS, LLS_M, LLS_MXM, CE };

LocalMode parse_mode(const std::string& name);  // "lls" | "lls_m" | "lls_mxm" | "ce"

struct BasisSpec {
  int k = 10;
  std::string waveform = "square";  // "square" | "sine"
  double f_min = 50.0, f_max = 512.0;
  int n_offset = 0;  // n runs over n_offset .. n_offset + D - 1
};

// basis[K, D] in float32: the float64 closed form of edgeml.lls.basis rounded once (bit-identical to it).
void make_basis(const BasisSpec& spec, int d, float* basis);

struct LocalHead {
  LocalMode mode = LocalMode::LLS;
  int c = 0, h = 1, w = 1;  // block output [B, c, h, w] (h = w = 1 for a linear output)
  int pool = 1;             // p; 0 = no pooling (the flattened output as is)
  int k = 10;               // classes = basis vectors
  float temperature = 1.0f;
  float label_smoothing = 0.0f;
  int dim() const { return mode == LocalMode::CE ? c : (pool > 0 && h * w > 1 ? c * pool * pool : c * h * w); }
  size_t scratch(int batch) const;  // floats of scratch needed by local_loss_grad
};

// Returns the mean loss; writes ga[B,c,h,w] = dL/da, and gm[K] / gM[K,K] for the modulation (overwritten).
// labels must lie in [0, k): callers check.
float local_loss_grad(const LocalHead& head, int batch, const float* a, const int32_t* labels, const float* basis,
                      const float* m, const float* mm, float* ga, float* gm, float* gmm, float* scratch);

}  // namespace edgeml::lls
