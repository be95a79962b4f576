// Per-block optimizers with PyTorch's update formulas (torch.optim.SGD with momentum, torch.optim.AdamW).
#pragma once
#include <cstddef>
#include <string>

namespace edgeml::lls {

// The defaults are the pack schema's (edgeml.lls.pack.DEFAULT_OPTIMIZER; a test keeps the two equal): a pack
// whose header leaves a field out trains the same in Python and C++.
struct OptimizerSpec {
  std::string name = "adamw";  // "sgd" | "adamw"
  float lr = 1e-3f, momentum = 0.9f, dampening = 0.0f, weight_decay = 0.0f;
  bool nesterov = false;
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  int states() const { return name == "adamw" ? 2 : (momentum != 0.0f ? 1 : 0); }  // state buffers per tensor
};

// One optimizer step on n values; `step` counts from 1 (SGD uses it to seed the momentum buffer with the
// first gradient, AdamW for the bias corrections). s0/s1 are the state buffers (s1 only for AdamW).
void optimizer_update(const OptimizerSpec& o, long step, size_t n, float* p, const float* g, float* s0, float* s1);

}  // namespace edgeml::lls
