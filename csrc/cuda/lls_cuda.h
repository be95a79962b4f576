// Host entry points of the CUDA twins of the LLS engine's heavy kernels (conv forward, local-loss gradient,
// optimizer update). Same contracts as the CPU functions in csrc/lls; they take host buffers, run on the current
// device and copy results back. Errors throw std::runtime_error with the CUDA error text.
#pragma once
#include <cstddef>
#include <cstdint>

#include "lls/local_loss.h"
#include "lls/ops.h"
#include "lls/optim.h"

namespace edgeml::cuda {

// As edgeml::lls::conv2d_forward (bias may be null).
void lls_conv2d_forward(const lls::Conv2dShape& s, int batch, const float* x, const float* w, const float* bias,
                        float* y);

// As edgeml::lls::local_loss_grad for the modes lls / lls_m / lls_mxm (gm / gmm may be null when unused).
float lls_local_loss_grad(const lls::LocalHead& head, int batch, const float* a, const int32_t* labels,
                          const float* basis, const float* m, const float* mm, float* ga, float* gm, float* gmm);

// As edgeml::lls::optimizer_update (p, s0, s1 are updated in place).
void lls_optimizer_update(const lls::OptimizerSpec& o, long step, size_t n, float* p, const float* g, float* s0,
                          float* s1);

}  // namespace edgeml::cuda
