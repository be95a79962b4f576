#include "lls/optim.h"

#include <cmath>
#include <stdexcept>

namespace edgeml::lls {

void optimizer_update(const OptimizerSpec& o, long step, size_t n, float* p, const float* g, float* s0, float* s1) {
  if (o.name == "sgd") {
    for (size_t i = 0; i < n; ++i) {
      float d = g[i];
      if (o.weight_decay != 0.0f) d += o.weight_decay * p[i];
      if (o.momentum != 0.0f) {
        s0[i] = step == 1 ? d : o.momentum * s0[i] + (1.0f - o.dampening) * d;
        d = o.nesterov ? d + o.momentum * s0[i] : s0[i];
      }
      p[i] -= o.lr * d;
    }
  } else if (o.name == "adamw") {
    const double bc1 = 1.0 - std::pow(static_cast<double>(o.beta1), static_cast<double>(step));
    const double bc2 = 1.0 - std::pow(static_cast<double>(o.beta2), static_cast<double>(step));
    const float step_size = static_cast<float>(o.lr / bc1);
    const float bc2_sqrt = static_cast<float>(std::sqrt(bc2));
    const float decay = 1.0f - o.lr * o.weight_decay;
    for (size_t i = 0; i < n; ++i) {
      p[i] *= decay;
      s0[i] += (g[i] - s0[i]) * (1.0f - o.beta1);  // torch: exp_avg.lerp_(grad, 1 - beta1)
      s1[i] = s1[i] * o.beta2 + (1.0f - o.beta2) * g[i] * g[i];
      const float denom = std::sqrt(s1[i]) / bc2_sqrt + o.eps;
      p[i] -= step_size * s0[i] / denom;
    }
  } else {
    throw std::runtime_error("unknown optimizer '" + o.name + "' (expected sgd or adamw)");
  }
}

}  // namespace edgeml::lls
