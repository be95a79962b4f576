// The on-device LLS fine-tuning engine: a chain of blocks read from a pack; a training step runs the frozen
// blocks forward only, and each trainable block forward -> local loss -> that block's weight gradient ->
// optimizer update, keeping one block's activations alive at a time. Every buffer lives in one arena
// sized at load; a step allocates nothing.
//
// Kernels: im2col + GEMM on Eigen's blocked kernel (lls/gemm.h) with its packing buffers in the arena, cut into
// `threads` parts (lls/parallel.h): for a fixed thread count two runs give bit-identical weights.
//
// Precision: float32, except frozen int8 layers. A pack may store the weights of FROZEN conv/linear layers as int8
// with one scale per output channel. With the header's precision.frozen_compute "int8" (what write_pack writes with
// quantize_frozen) those layers run an integer GEMM (lls/qgemm.h: activations quantised per tensor to uint8, int32
// sums, float32 output for the next op); with "float32" (or absent: packs written before) they are dequantised layer
// by layer into a scratch buffer and run the float32 GEMM. Depthwise convolutions and layers deeper than
// kInt8MaxDepth always take the float32 path. Trainable blocks are always float32 and updated in float32.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lls/arena.h"
#include "lls/local_loss.h"
#include "lls/ops.h"
#include "lls/optim.h"
#include "lls/parallel.h"
#include "lls/pack.h"
#include "lls/qgemm.h"

namespace edgeml::lls {

enum class OpKind { Conv2d, Linear, BatchNorm, LeakyReLU, MaxPool, AvgPool, AdaptiveAvgPool, Flatten };

struct Param {
  std::string name;
  long numel = 0;
  float* value = nullptr;       // float32 value (null for an int8 frozen weight)
  int8_t* q = nullptr;          // int8 storage (frozen only); with `shifted`, the uint8 values q + 128
  bool shifted = false;         // held for an int8 GEMM layer (lls/qgemm.h)
  float* qscale = nullptr;      // [rows]
  int rows = 0;
  bool trainable = false;
  float* grad = nullptr;
  float* state[2] = {nullptr, nullptr};
};

struct Op {
  OpKind kind = OpKind::Flatten;
  int in_c = 0, in_h = 1, in_w = 1, out_c = 0, out_h = 1, out_w = 1;  // per sample (linear: c = features)
  Conv2dShape conv{};
  Pool2dShape pool{};
  float slope = 0.01f, eps = 1e-5f;
  bool int8 = false;  // conv/linear of a frozen block that runs the int8 GEMM
  int param[4] = {-1, -1, -1, -1};  // conv/linear: weight, bias; bn: weight, bias, mean, var
  size_t in_size() const { return static_cast<size_t>(in_c) * in_h * in_w; }
  size_t out_size() const { return static_cast<size_t>(out_c) * out_h * out_w; }
};

struct Block {
  std::string name;
  std::vector<Op> ops;
  int tap = 0;
  LocalHead head;
  int m = -1, mm = -1;  // params of the modulation (lls_m: m[K]; lls_mxm: M[K,K])
  bool trainable = false;
  long steps = 0;
  float* basis = nullptr;  // [K, D] (trainable LLS blocks only)
  // Step buffers (carved at load): outputs of ops 0..tap, argmax of max pools.
  std::vector<float*> saved;
  std::vector<int32_t*> argmax;
};

// Reads a pack header's "optimizer" object into `spec` (absent fields keep spec's values), range-checking every
// field (name sgd|adamw, lr finite > 0, momentum/dampening in [0, 1], betas in [0, 1), eps > 0); throws
// std::runtime_error naming the field.
void read_optimizer(const Json& o, OptimizerSpec& spec);

struct EngineOptions {
  int batch = 32;             // largest batch a step/forward accepts
  size_t arena_bytes = 0;     // 0: exactly what the pack needs; else this size (too small -> ArenaError at load)
  int train_last = -1;        // -1: the pack's trainable flags; N >= 1: train exactly the last N blocks (0: error)
  float lr = -1.0f;           // < 0: the pack's optimizer lr; else finite > 0
  std::string optimizer;      // empty: the pack's optimizer; else "sgd" | "adamw"
  int threads = 0;            // 0: one per processor this process may use; N >= 1: N (results fixed for a given N)
};

struct StepResult {
  std::vector<float> losses;  // one per trainable block, in block order
};

class Engine {
 public:
  Engine(const Pack& pack, const EngineOptions& options);

  // x: [n, C, H, W] float32 (already normalised), labels: [n] in [0, classes). The result is owned by the
  // engine (its storage is reserved at load) and valid until the next step.
  const StepResult& train_step(const float* x, const int32_t* labels, int n);
  // logits: [n, classes]
  void forward(const float* x, int n, float* logits);

  int classes() const { return classes_; }
  int batch() const { return batch_; }
  int threads() const { return threads_; }
  const std::vector<long>& input_shape() const { return input_shape_; }
  size_t input_size() const { return static_cast<size_t>(input_shape_[0]) * input_shape_[1] * input_shape_[2]; }
  size_t required_bytes() const { return required_; }
  size_t arena_capacity() const { return arena_.capacity(); }
  size_t arena_peak() const { return arena_.peak(); }
  const std::vector<Block>& blocks() const { return blocks_; }
  // Conv/linear layers that run the int8 GEMM, and the bytes of its packing workspaces (allocated at load by
  // gemmlowp, outside the arena; a step allocates nothing).
  int int8_layers() const { return int8_layers_; }
  size_t int8_workspace_bytes() const { return int8_ ? int8_->bytes() * static_cast<size_t>(threads_) : 0; }
  std::vector<std::string> trainable_tensors() const;
  const OptimizerSpec& optimizer() const { return opt_; }

  // Copy a tensor out/in by pack name (float32 tensors only); throws when missing or of another size.
  std::vector<float> get(const std::string& name) const;
  // Optimizer state `which` of a trainable tensor (0: SGD momentum buffer / AdamW exp_avg, 1: AdamW exp_avg_sq).
  std::vector<float> state(const std::string& name, int which) const;
  void set(const std::string& name, const std::vector<float>& values);
  // Normalises uint8 images ([n,H,W,C] when hwc, else [n,C,H,W]) with the pack's input mean/std into out.
  void normalise(const uint8_t* images, int n, bool hwc, float* out) const;

  // The pack's data section with the current weights (header unchanged), and an atomic save of it.
  std::vector<uint8_t> data_section() const;
  void save(const std::string& path) const;

 private:
  void carve(Arena& arena);  // carves every buffer; with a sizing arena it only counts
  void plan_int8();  // marks frozen conv/linear layers with int8 weights for the int8 GEMM and sizes it
  static void shift_int8(Param& p);
  const float* weight(const Op& op, int which);
  void run_op(Block& blk, Op& op, int j, const float* in, float* out, int n);
  void train_block(Block& blk, const float* in, const int32_t* labels, int n, StepResult& res);

  std::string path_;
  std::string header_text_;
  std::vector<TensorInfo> table_;
  std::vector<long> input_shape_;
  std::vector<float> mean_, std_;
  float scale_ = 1.0f;
  int classes_ = 0;
  int batch_ = 0;
  int threads_ = 1;
  std::unique_ptr<ThreadPool> pool_;  // threads_ - 1 workers, started at load
  OptimizerSpec opt_;
  std::vector<Param> params_;
  std::vector<Block> blocks_;
  size_t required_ = 0;
  StepResult result_;
  Arena arena_;
  // Step buffers.
  float* act_[2] = {nullptr, nullptr};
  float* grad_[2] = {nullptr, nullptr};
  float* scratch_ = nullptr;  // im2col / col2im / GEMM packing / per-thread partial sums, for all threads
  float* deq_ = nullptr;      // dequantised int8 weight
  uint8_t* qact_ = nullptr;   // the quantised input of an int8 layer
  std::unique_ptr<Int8Gemm> int8_;
  int int8_layers_ = 0;
  size_t max_int8_ws_ = 0;
  float* loss_scratch_ = nullptr;
  size_t max_act_ = 0, max_scratch_ = 0, max_deq_ = 0, max_loss_ = 0, max_grad_ = 0;
};

}  // namespace edgeml::lls
