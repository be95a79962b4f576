#include "lls/engine.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <map>
#include <new>

namespace edgeml::lls {

namespace {

// Bounds of every number read from a pack header, checked before any arithmetic so that a hostile (but
// CRC-valid) pack is a PackError, never a division by zero, an integer overflow or a huge allocation.
constexpr long kMaxExtent = 1L << 24;           // one dimension, channel count, stride, padding, class count
constexpr long kMaxElements = 1L << 28;         // values of one sample's activation / im2col matrix / basis

long in_range(long v, long lo, long hi, const std::string& what) {
  if (v < lo || v > hi)
    throw std::runtime_error(what + " must lie in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " +
                             std::to_string(v));
  return v;
}

long int_field(const Json& j, const std::string& key, long fallback, long lo, long hi, const std::string& where) {
  return in_range(j.int_or(key, fallback), lo, hi, where + " '" + key + "'");
}

// A finite number in [lo, hi] (open at lo when lo_open).
double num_field(const Json& j, const std::string& key, double fallback, double lo, double hi, bool lo_open,
                 const std::string& where) {
  const double v = j.num_or(key, fallback);
  if (!std::isfinite(v) || v < lo || v > hi || (lo_open && v == lo))
    throw std::runtime_error(where + " '" + key + "' must be a finite number in " + (lo_open ? "(" : "[") +
                             std::to_string(lo) + ", " + std::to_string(hi) + "], got " + std::to_string(v));
  return v;
}

// a * b (* c), refused beyond kMaxElements (each factor is already within [0, kMaxExtent] or a checked product).
long elements(std::initializer_list<long> dims, const std::string& what) {
  long n = 1;
  for (long d : dims) {
    if (d < 0 || (d > 0 && n > kMaxElements / d))
      throw std::runtime_error(what + " is too large (more than " + std::to_string(kMaxElements) + " values)");
    n *= d;
  }
  return n;
}

OpKind parse_kind(const std::string& s) {
  if (s == "conv2d") return OpKind::Conv2d;
  if (s == "linear") return OpKind::Linear;
  if (s == "batchnorm") return OpKind::BatchNorm;
  if (s == "leaky_relu" || s == "relu") return OpKind::LeakyReLU;
  if (s == "maxpool") return OpKind::MaxPool;
  if (s == "avgpool") return OpKind::AvgPool;
  if (s == "adaptive_avgpool") return OpKind::AdaptiveAvgPool;
  if (s == "flatten") return OpKind::Flatten;
  throw std::runtime_error("unsupported op '" + s + "'");
}

std::vector<long> pair_of(const Json& j, const std::string& key, long fallback, long lo, long hi,
                          const std::string& where) {
  if (!j.has(key) || j[key].is_null()) return {fallback, fallback};
  std::vector<long> v = j[key].ints();
  if (v.size() == 1) v.push_back(v[0]);
  if (v.size() != 2) throw std::runtime_error(where + ": '" + key + "' must be one or two integers");
  for (long x : v) in_range(x, lo, hi, where + " '" + key + "'");
  return v;
}

// gb[c] = sum over batch and positions of gy[B, c, s] (a bias trained without its weight).
void bias_grad(int batch, int c, int s, const float* gy, float* gb) {
  std::fill(gb, gb + c, 0.0f);
  for (int b = 0; b < batch; ++b)
    for (int ch = 0; ch < c; ++ch)
      for (int i = 0; i < s; ++i) gb[ch] += gy[(static_cast<size_t>(b) * c + ch) * s + i];
}

}  // namespace

void read_optimizer(const Json& o, OptimizerSpec& spec) {
  const std::string where = "optimizer";
  spec.name = o.str_or("name", spec.name);
  if (spec.name != "sgd" && spec.name != "adamw")
    throw std::runtime_error("unknown optimizer '" + spec.name + "' (expected sgd or adamw)");
  spec.lr = static_cast<float>(num_field(o, "lr", spec.lr, 0.0, 1e6, true, where));
  spec.momentum = static_cast<float>(num_field(o, "momentum", spec.momentum, 0.0, 1.0, false, where));
  spec.dampening = static_cast<float>(num_field(o, "dampening", spec.dampening, 0.0, 1.0, false, where));
  spec.weight_decay = static_cast<float>(num_field(o, "weight_decay", spec.weight_decay, 0.0, 1e6, false, where));
  spec.eps = static_cast<float>(num_field(o, "eps", spec.eps, 0.0, 1.0, true, where));
  if (o.has("nesterov") && !o["nesterov"].is_null()) spec.nesterov = o["nesterov"].boolean();
  if (o.has("betas") && !o["betas"].is_null()) {
    const Json& betas = o["betas"];
    if (betas.kind() != Json::Kind::Array || betas.size() != 2)
      throw std::runtime_error("optimizer 'betas' must be two numbers");
    for (size_t i = 0; i < 2; ++i) {
      const double v = betas[i].num();
      if (!std::isfinite(v) || v < 0.0 || v >= 1.0)
        throw std::runtime_error("optimizer 'betas' must lie in [0, 1), got " + std::to_string(v));
    }
    spec.beta1 = static_cast<float>(betas[0].num());
    spec.beta2 = static_cast<float>(betas[1].num());
  }
  if (spec.nesterov && (spec.momentum == 0.0f || spec.dampening != 0.0f))
    throw std::runtime_error("optimizer: nesterov needs momentum > 0 and dampening 0 (as torch.optim.SGD)");
}

Engine::Engine(const Pack& pack, const EngineOptions& options) : path_(pack.path), header_text_(pack.header_text),
                                                                   table_(pack.tensors), batch_(options.batch) {
  if (batch_ <= 0) throw PackError("batch must be positive, got " + std::to_string(batch_));
  if (options.threads < 0 || options.threads > 1024)
    throw PackError("threads must lie in [0, 1024] (0: one per processor), got " + std::to_string(options.threads));
  threads_ = options.threads ? options.threads : available_threads();
  if (options.train_last == 0)
    throw PackError(path_ + ": training the last 0 blocks trains nothing; train at least the last block");
  std::map<std::string, int> by_name;
  for (size_t i = 0; i < table_.size(); ++i) {
    Param p;
    p.name = table_[i].name;
    p.numel = table_[i].numel();  // read_pack bounded it by the data section
    p.rows = table_[i].shape.empty() ? 1 : static_cast<int>(std::min<long>(table_[i].shape[0], INT_MAX));
    by_name[p.name] = static_cast<int>(i);
    params_.push_back(p);
  }
  const Json& h = pack.header;
  BasisSpec basis_spec;
  try {
    if (h.str_or("format", "") != "edgeml-lls-pack") throw std::runtime_error("header 'format' is not edgeml-lls-pack");
    const Json& in = h["input"];
    input_shape_ = in["shape"].ints();
    if (input_shape_.size() != 3) throw std::runtime_error("input.shape must be [C, H, W]");
    for (long d : input_shape_) in_range(d, 1, kMaxExtent, "input.shape");
    elements({input_shape_[0], input_shape_[1], input_shape_[2]}, "input.shape");
    scale_ = static_cast<float>(num_field(in, "scale", 1.0, 0.0, 1e6, true, "input"));
    for (long c = 0; c < input_shape_[0]; ++c) {
      const double mean = in.has("mean") ? in["mean"][static_cast<size_t>(c)].num() : 0.0;
      const double sd = in.has("std") ? in["std"][static_cast<size_t>(c)].num() : 1.0;
      if (!std::isfinite(mean) || !std::isfinite(sd) || !(std::fabs(sd) > 1e-12))
        throw std::runtime_error("input mean/std must be finite and std non-zero");
      mean_.push_back(static_cast<float>(mean));
      std_.push_back(static_cast<float>(sd));
    }
    classes_ = static_cast<int>(in_range(h["num_classes"].integer(), 1, 1L << 16, "num_classes"));
    const Json& b = h["basis"];
    basis_spec.k = classes_;
    basis_spec.waveform = b.str_or("waveform", "square");
    if (basis_spec.waveform != "square" && basis_spec.waveform != "sine")
      throw std::runtime_error("basis waveform '" + basis_spec.waveform + "' is not square or sine");
    basis_spec.f_min = num_field(b, "f_min", 50.0, -1e9, 1e9, false, "basis");
    basis_spec.f_max = num_field(b, "f_max", 512.0, -1e9, 1e9, false, "basis");
    basis_spec.n_offset = static_cast<int>(int_field(b, "n_offset", 0, 0, kMaxExtent, "basis"));
    // The pack's optimizer; absent fields take OptimizerSpec's defaults (the same as edgeml.lls.pack).
    if (h.has("optimizer") && !h["optimizer"].is_null()) read_optimizer(h["optimizer"], opt_);
    // How frozen int8 layers compute (packs written before the int8 GEMM existed say nothing: float32).
    const std::string frozen_compute = h.has("precision") && !h["precision"].is_null()
                                           ? h["precision"].str_or("frozen_compute", "float32")
                                           : "float32";
    if (frozen_compute != "float32" && frozen_compute != "int8")
      throw std::runtime_error("precision 'frozen_compute' must be float32 or int8, got '" + frozen_compute + "'");

    auto param_of = [&](const Json& j, const std::string& key) -> int {
      if (!j.has(key) || j[key].is_null()) return -1;
      auto it = by_name.find(j[key].str());
      if (it == by_name.end()) throw std::runtime_error("tensor '" + j[key].str() + "' is not in the pack");
      return it->second;
    };
    // Only conv/linear weights may be stored as int8; every other tensor is read as float32.
    auto float_param = [&](int p, const std::string& what) {
      if (p >= 0 && table_[p].dtype != DType::F32)
        throw std::runtime_error(what + " '" + params_[p].name + "' must be float32");
      return p;
    };
    auto expect_numel = [&](int p, long numel, const std::string& what) {
      if (p >= 0 && params_[p].numel != numel)
        throw std::runtime_error(what + " '" + params_[p].name + "' has " + std::to_string(params_[p].numel) +
                                 " values, the graph needs " + std::to_string(numel));
    };

    int c = static_cast<int>(input_shape_[0]), hh = static_cast<int>(input_shape_[1]),
        ww = static_cast<int>(input_shape_[2]);
    const Json& jb = h["blocks"];
    if (jb.kind() != Json::Kind::Array) throw std::runtime_error("'blocks' must be a list");
    for (size_t bi = 0; bi < jb.size(); ++bi) {
      const Json& jbk = jb[bi];
      Block blk;
      blk.name = jbk.str_or("name", "block" + std::to_string(bi));
      const Json& jops = jbk["ops"];
      if (jops.kind() != Json::Kind::Array) throw std::runtime_error(blk.name + ": 'ops' must be a list");
      for (size_t oi = 0; oi < jops.size(); ++oi) {
        const Json& jo = jops[oi];
        Op op;
        op.kind = parse_kind(jo["op"].str());
        op.in_c = c, op.in_h = hh, op.in_w = ww;
        const std::string where = blk.name + " op " + std::to_string(oi) + " (" + jo["op"].str() + ")";
        switch (op.kind) {
          case OpKind::Conv2d: {
            op.param[0] = param_of(jo, "weight");
            op.param[1] = float_param(param_of(jo, "bias"), where + " bias");
            if (op.param[0] < 0) throw std::runtime_error(where + ": missing weight");
            const std::vector<long>& ws = table_[op.param[0]].shape;
            if (ws.size() != 4) throw std::runtime_error(where + ": weight must be [out, in/groups, kh, kw]");
            for (long d : ws) in_range(d, 1, kMaxExtent, where + " weight shape");
            const auto st = pair_of(jo, "stride", 1, 1, kMaxExtent, where);
            const auto pd = pair_of(jo, "padding", 0, 0, kMaxExtent, where);
            const int groups = static_cast<int>(int_field(jo, "groups", 1, 1, kMaxExtent, where));
            if (c % groups || ws[0] % groups || ws[1] * groups != c)
              throw std::runtime_error(where + ": weight " + std::to_string(ws[1]) + " in-channels x " +
                                       std::to_string(groups) + " groups does not match the input's " +
                                       std::to_string(c) + " channels");
            if (hh + 2 * pd[0] < ws[2] || ww + 2 * pd[1] < ws[3])
              throw std::runtime_error(where + ": the kernel is larger than the padded input");
            op.conv = {c, static_cast<int>(ws[0]), hh, ww, static_cast<int>(ws[2]), static_cast<int>(ws[3]),
                       static_cast<int>(st[0]), static_cast<int>(st[1]), static_cast<int>(pd[0]),
                       static_cast<int>(pd[1]), groups};
            elements({ws[0], op.conv.ho(), op.conv.wo()}, where + " output");
            elements({ws[1], ws[2], ws[3], op.conv.ho(), op.conv.wo()}, where + " im2col matrix");
            expect_numel(op.param[1], ws[0], where + " bias");
            op.out_c = op.conv.cout, op.out_h = op.conv.ho(), op.out_w = op.conv.wo();
            break;
          }
          case OpKind::Linear: {
            op.param[0] = param_of(jo, "weight");
            op.param[1] = float_param(param_of(jo, "bias"), where + " bias");
            if (op.param[0] < 0) throw std::runtime_error(where + ": missing weight");
            const std::vector<long>& ws = table_[op.param[0]].shape;
            if (ws.size() != 2 || ws[1] != static_cast<long>(op.in_size()))
              throw std::runtime_error(where + ": weight must be [out, " + std::to_string(op.in_size()) + "]");
            in_range(ws[0], 1, kMaxElements, where + " weight rows");
            expect_numel(op.param[1], ws[0], where + " bias");
            op.out_c = static_cast<int>(ws[0]);
            break;
          }
          case OpKind::BatchNorm:
            op.param[0] = float_param(param_of(jo, "weight"), where + " tensor");
            op.param[1] = float_param(param_of(jo, "bias"), where + " tensor");
            op.param[2] = float_param(param_of(jo, "running_mean"), where + " tensor");
            op.param[3] = float_param(param_of(jo, "running_var"), where + " tensor");
            if (op.param[2] < 0 || op.param[3] < 0) throw std::runtime_error(where + ": needs running statistics");
            for (int k = 0; k < 4; ++k) expect_numel(op.param[k], c, where + " tensor");
            op.eps = static_cast<float>(num_field(jo, "eps", 1e-5, 0.0, 1.0, true, where));
            op.out_c = c, op.out_h = hh, op.out_w = ww;
            break;
          case OpKind::LeakyReLU:
            op.slope = jo["op"].str() == "relu" ? 0.0f
                                                : static_cast<float>(num_field(jo, "slope", 0.01, -1e6, 1e6, false, where));
            op.out_c = c, op.out_h = hh, op.out_w = ww;
            break;
          case OpKind::MaxPool:
          case OpKind::AvgPool: {
            const int k = static_cast<int>(in_range(jo["kernel"].integer(), 1, kMaxExtent, where + " 'kernel'"));
            const int s = jo.has("stride") && !jo["stride"].is_null()
                              ? static_cast<int>(in_range(jo["stride"].integer(), 1, kMaxExtent, where + " 'stride'"))
                              : k;
            if (jo.int_or("padding", 0) != 0) throw std::runtime_error(where + ": padded pooling is not supported");
            if (k > hh || k > ww) throw std::runtime_error(where + ": the kernel is larger than the input");
            op.pool = {c, hh, ww, k, s};
            op.out_c = c, op.out_h = op.pool.ho(), op.out_w = op.pool.wo();
            break;
          }
          case OpKind::AdaptiveAvgPool: {
            const auto sz = pair_of(jo, "size", 1, 1, kMaxExtent, where);
            // The bins are computed as i * in / out in int: keep those products in range.
            if (sz[0] * hh > INT_MAX / 2 || sz[1] * ww > INT_MAX / 2)
              throw std::runtime_error(where + ": output size too large for the input");
            op.out_c = c, op.out_h = static_cast<int>(sz[0]), op.out_w = static_cast<int>(sz[1]);
            break;
          }
          case OpKind::Flatten:
            op.out_c = c * hh * ww, op.out_h = 1, op.out_w = 1;
            break;
        }
        elements({op.out_c, op.out_h, op.out_w}, where + " output");
        c = op.out_c, hh = op.out_h, ww = op.out_w;
        max_act_ = std::max({max_act_, op.in_size(), op.out_size()});
        blk.ops.push_back(op);
      }
      if (blk.ops.empty()) throw std::runtime_error(blk.name + ": a block needs at least one op");
      blk.tap = static_cast<int>(jbk.int_or("tap", static_cast<long>(blk.ops.size()) - 1));
      if (blk.tap < 0 || blk.tap >= static_cast<int>(blk.ops.size()))
        throw std::runtime_error(blk.name + ": tap out of range");
      const Json& jl = jbk["local"];
      const Op& t = blk.ops[blk.tap];
      const std::string where = blk.name + " local";
      blk.head.mode = parse_mode(jl.str_or("mode", "lls"));
      blk.head.c = t.out_c, blk.head.h = t.out_h, blk.head.w = t.out_w;
      blk.head.pool = static_cast<int>(int_field(jl, "pool", 1, 0, kMaxExtent, where));
      blk.head.k = classes_;
      blk.head.temperature = static_cast<float>(num_field(jl, "temperature", 1.0, 0.0, 1e6, true, where));
      blk.head.label_smoothing = static_cast<float>(num_field(jl, "label_smoothing", 0.0, 0.0, 1.0, false, where));
      if (blk.head.mode == LocalMode::CE && static_cast<int>(t.out_size()) != classes_)
        throw std::runtime_error(blk.name + ": a 'ce' head needs " + std::to_string(classes_) + " outputs");
      if (blk.head.pool > 0 && t.out_h * t.out_w > 1 && (t.out_h < blk.head.pool || t.out_w < blk.head.pool))
        throw std::runtime_error(blk.name + ": local pool size larger than the block output");
      elements({classes_, blk.head.dim()}, blk.name + " local basis");
      blk.m = float_param(param_of(jl, "m"), blk.name + " m");
      blk.mm = float_param(param_of(jl, "M"), blk.name + " M");
      if (blk.head.mode == LocalMode::LLS_M && blk.m < 0) throw std::runtime_error(blk.name + ": lls_m needs m");
      if (blk.head.mode == LocalMode::LLS_MXM && blk.mm < 0) throw std::runtime_error(blk.name + ": lls_mxm needs M");
      expect_numel(blk.m, classes_, blk.name + " m");
      expect_numel(blk.mm, static_cast<long>(classes_) * classes_, blk.name + " M");
      blk.trainable = jbk.has("trainable") && !jbk["trainable"].is_null() && jbk["trainable"].boolean();
      blocks_.push_back(blk);
    }
    if (blocks_.empty()) throw std::runtime_error("the pack has no blocks");
    if (static_cast<long>(c) * hh * ww != classes_)
      throw std::runtime_error("the last block gives " + std::to_string(static_cast<long>(c) * hh * ww) +
                               " outputs, not num_classes");

    // Which tensors train: the pack's per-block "train" list (default: every parameter up to the tap).
    if (options.train_last >= 0) {
      if (options.train_last > static_cast<int>(blocks_.size()))
        throw std::runtime_error("cannot train the last " + std::to_string(options.train_last) + " blocks of " +
                                 std::to_string(blocks_.size()));
      for (size_t i = 0; i < blocks_.size(); ++i)
        blocks_[i].trainable = static_cast<int>(i) >= static_cast<int>(blocks_.size()) - options.train_last;
    }
    for (size_t bi = 0; bi < blocks_.size(); ++bi) {
      Block& blk = blocks_[bi];
      if (!blk.trainable) continue;
      const Json& jbk = jb[bi];
      std::vector<int> chosen;
      if (jbk.has("train") && !jbk["train"].is_null()) {
        for (size_t i = 0; i < jbk["train"].size(); ++i) {
          auto it = by_name.find(jbk["train"][i].str());
          if (it == by_name.end()) throw std::runtime_error(blk.name + ": trainable tensor not in the pack");
          chosen.push_back(it->second);
        }
      } else {
        for (int j = 0; j <= blk.tap; ++j)
          for (int k = 0; k < 2; ++k)
            if (blk.ops[j].param[k] >= 0) chosen.push_back(blk.ops[j].param[k]);
        if (blk.m >= 0) chosen.push_back(blk.m);
        if (blk.mm >= 0) chosen.push_back(blk.mm);
      }
      for (int p : chosen) {
        if (table_[p].dtype != DType::F32)
          throw std::runtime_error(blk.name + ": tensor '" + params_[p].name +
                                   "' is int8; trainable blocks need float32 weights (write the pack with "
                                   "quantize_frozen covering fewer blocks)");
        params_[p].trainable = true;
      }
      max_loss_ = std::max(max_loss_, blk.head.scratch(batch_));
      size_t g = 0;
      for (int j = 0; j <= blk.tap; ++j) g = std::max({g, blk.ops[j].in_size(), blk.ops[j].out_size()});
      max_grad_ = std::max(max_grad_, g);
    }
    if (!options.optimizer.empty()) {
      if (options.optimizer != "sgd" && options.optimizer != "adamw")
        throw std::runtime_error("unknown optimizer '" + options.optimizer + "' (expected sgd or adamw)");
      opt_.name = options.optimizer;
    }
    if (!(options.lr < 0.0f)) {  // a negative lr means "the pack's"; NaN is refused here
      if (!std::isfinite(options.lr) || options.lr <= 0.0f)
        throw std::runtime_error("the learning rate must be a finite number > 0, got " + std::to_string(options.lr));
      opt_.lr = options.lr;
    }
    for (size_t i = 0; i < table_.size(); ++i)
      if (table_[i].dtype == DType::I8) {
        auto it = by_name.find(table_[i].name + ".scale");
        if (it == by_name.end() || table_[it->second].dtype != DType::F32 ||
            params_[it->second].numel != params_[i].rows)
          throw std::runtime_error("int8 tensor '" + table_[i].name + "' has no matching float32 '.scale' tensor");
        if (table_[i].shape.empty() || table_[i].shape[0] > INT_MAX || params_[i].numel > kMaxElements)
          throw std::runtime_error("int8 tensor '" + table_[i].name + "' is too large to dequantise");
        // Symmetric int8 is [-127, 127] (what write_pack stores); -128 would break the int8 kernels' range.
        const int8_t* q = static_cast<const int8_t*>(pack.bytes(table_[i]));
        if (std::find(q, q + params_[i].numel, int8_t{-128}) != q + params_[i].numel)
          throw std::runtime_error("int8 tensor '" + table_[i].name + "' holds -128; symmetric int8 weights lie in "
                                   "[-127, 127]");
      }
    if (frozen_compute == "int8") plan_int8();
    // Kernel scratch (shared by all layers: the largest), and one buffer into which every int8 weight outside the
    // int8 GEMM is dequantised, layer by layer.
    for (const Block& blk : blocks_)
      for (const Op& op : blk.ops) {
        if (op.kind == OpKind::Conv2d)
          max_scratch_ = std::max(max_scratch_, op.int8 ? (conv2d_int8_scratch(op.conv, threads_) + 3) / 4
                                                        : op.conv.scratch(threads_));
        else if (op.kind == OpKind::Linear && !op.int8)
          max_scratch_ = std::max(max_scratch_, linear_scratch(batch_, static_cast<int>(op.in_size()), op.out_c,
                                                               threads_));
        if (!op.int8 && op.param[0] >= 0 && table_[op.param[0]].dtype == DType::I8)
          max_deq_ = std::max(max_deq_, static_cast<size_t>(params_[op.param[0]].numel));
      }
  } catch (const PackError&) {
    throw;
  } catch (const std::exception& e) {
    throw PackError(path_ + ": " + e.what());
  }

  result_.losses.reserve(blocks_.size());
  Arena sizing = Arena::sizing();
  try {
    carve(sizing);
  } catch (const ArenaError&) {
    throw PackError(path_ + ": the pack needs more engine memory than can be addressed (corrupt shapes?)");
  }
  required_ = sizing.used();
  const size_t capacity = options.arena_bytes ? options.arena_bytes : required_;
  try {
    arena_ = Arena(capacity);
  } catch (const std::bad_alloc&) {
    throw ArenaError("cannot allocate an arena of " + std::to_string(capacity) + " bytes (the pack needs " +
                     std::to_string(required_) + " for batch " + std::to_string(batch_) +
                     "); use a smaller batch or a smaller net");
  }
  carve(arena_);
  pool_ = std::make_unique<ThreadPool>(threads_);
  try {
    if (int8_layers_) int8_ = std::make_unique<Int8Gemm>(threads_, max_int8_ws_);
  } catch (const std::bad_alloc&) {
    throw ArenaError("cannot allocate the int8 GEMM's workspaces (" + std::to_string(threads_) + " x " +
                     std::to_string(max_int8_ws_) + " bytes); use fewer threads or a smaller batch");
  }

  // Fill: weights from the pack, zeroed optimizer state, the bases of trainable LLS heads.
  for (size_t i = 0; i < table_.size(); ++i) {
    Param& p = params_[i];
    const void* src = pack.bytes(table_[i]);
    if (p.q) {
      std::memcpy(p.q, src, static_cast<size_t>(p.numel));
      if (p.shifted) shift_int8(p);
    } else {
      std::memcpy(p.value, src, sizeof(float) * static_cast<size_t>(p.numel));
    }
    for (float* s : p.state)
      if (s) std::fill(s, s + p.numel, 0.0f);
  }
  for (size_t i = 0; i < table_.size(); ++i)
    if (params_[i].q) params_[i].qscale = params_[by_name[params_[i].name + ".scale"]].value;
  for (Block& blk : blocks_)
    if (blk.trainable && blk.head.mode != LocalMode::CE) {
      basis_spec.k = classes_;
      make_basis(basis_spec, blk.head.dim(), blk.basis);
    }
}

void Engine::carve(Arena& a) {
  const int opt_states = opt_.states();
  for (size_t i = 0; i < params_.size(); ++i) {
    Param& p = params_[i];
    const size_t n = static_cast<size_t>(p.numel);
    if (table_[i].dtype == DType::I8) {
      p.q = a.alloc<int8_t>(n, p.name.c_str());
    } else {
      p.value = a.alloc<float>(n, p.name.c_str());
    }
    if (p.trainable) {
      p.grad = a.alloc<float>(n, "gradients");
      for (int s = 0; s < opt_states; ++s) p.state[s] = a.alloc<float>(n, "optimizer state");
    }
  }
  for (Block& blk : blocks_)
    if (blk.trainable && blk.head.mode != LocalMode::CE)
      blk.basis = a.alloc<float>(static_cast<size_t>(blk.head.k) * blk.head.dim(), "local basis");
  const size_t bsz = static_cast<size_t>(batch_);
  act_[0] = a.alloc<float>(bsz * max_act_, "activations");
  act_[1] = a.alloc<float>(bsz * max_act_, "activations");
  scratch_ = a.alloc<float>(std::max<size_t>(max_scratch_, 1), "kernel scratch");
  if (max_deq_) deq_ = a.alloc<float>(max_deq_, "int8 dequantisation");
  if (int8_layers_) qact_ = a.alloc<uint8_t>(bsz * max_act_, "int8 activations");
  if (max_grad_) {
    grad_[0] = a.alloc<float>(bsz * max_grad_, "block gradients");
    grad_[1] = a.alloc<float>(bsz * max_grad_, "block gradients");
    loss_scratch_ = a.alloc<float>(max_loss_, "local loss");
  }
  // The saved activations of trainable blocks share one region: only one block is alive at a time.
  const size_t start = a.mark();
  size_t end = start;
  for (Block& blk : blocks_) {
    blk.saved.assign(blk.ops.size(), nullptr);
    blk.argmax.assign(blk.ops.size(), nullptr);
    if (!blk.trainable) continue;
    a.release(start);
    for (int j = 0; j <= blk.tap; ++j) {
      const Op& op = blk.ops[j];
      if (op.kind == OpKind::Flatten) continue;  // shares its input's buffer
      // LeakyReLU's backward needs only its own output and batch norm's backward only its input, so an
      // activation after a batch norm runs in place over the batch norm's output (one buffer fewer per pair).
      if (op.kind == OpKind::LeakyReLU && j > 0 && blk.ops[j - 1].kind == OpKind::BatchNorm) {
        blk.saved[j] = blk.saved[j - 1];
        continue;
      }
      blk.saved[j] = a.alloc<float>(bsz * op.out_size(), "block activations");
      if (op.kind == OpKind::MaxPool) blk.argmax[j] = a.alloc<int32_t>(bsz * op.out_size(), "max-pool indices");
    }
    end = std::max(end, a.mark());
  }
  a.reserve_to(end);
}

void Engine::plan_int8() {
  // A weight shared by two layers (never written by write_pack) keeps the float32 path: it is stored only once.
  std::vector<int> uses(params_.size(), 0);
  for (const Block& blk : blocks_)
    for (const Op& op : blk.ops)
      if (op.param[0] >= 0) ++uses[static_cast<size_t>(op.param[0])];
  for (Block& blk : blocks_) {
    if (blk.trainable) continue;
    for (Op& op : blk.ops) {
      const int w = op.param[0];
      if ((op.kind != OpKind::Conv2d && op.kind != OpKind::Linear) || w < 0 || table_[w].dtype != DType::I8 ||
          uses[static_cast<size_t>(w)] != 1)
        continue;
      if (op.kind == OpKind::Conv2d) {
        const Conv2dShape& s = op.conv;
        const int kk = s.cin / s.groups * s.kh * s.kw;
        if (s.depthwise() || kk > kInt8MaxDepth) continue;  // per-channel loops / an int32 sum that could overflow
        max_int8_ws_ = std::max(max_int8_ws_, Int8Gemm::workspace(s.cout / s.groups, s.ho() * s.wo(), kk));
      } else {
        const int in = static_cast<int>(op.in_size());
        if (in > kInt8MaxDepth) continue;
        // Every product a step may run: each part's share of the outputs (part_range: floor or ceil of
        // out / threads) for every batch size up to the engine's.
        for (int part : {op.out_c / threads_, (op.out_c + threads_ - 1) / threads_})
          for (int n = 1; part > 0 && n <= batch_; ++n)
            max_int8_ws_ = std::max(max_int8_ws_, Int8Gemm::workspace(part, n, in));
      }
      op.int8 = true;
      params_[w].shifted = true;
      ++int8_layers_;
    }
  }
}

void Engine::shift_int8(Param& p) {
  uint8_t* u = reinterpret_cast<uint8_t*>(p.q);
  for (long i = 0; i < p.numel; ++i) u[i] ^= 0x80;  // two's complement: q + 128 (and back)
}

const float* Engine::weight(const Op& op, int which) {
  const int idx = op.param[which];
  if (idx < 0) return nullptr;
  Param& p = params_[idx];
  if (!p.q) return p.value;
  dequantize_rows(p.rows, static_cast<int>(p.numel / p.rows), p.q, p.qscale, deq_);
  return deq_;
}

void Engine::run_op(Block& blk, Op& op, int j, const float* in, float* out, int n) {
  switch (op.kind) {
    case OpKind::Conv2d: {
      const float* bias = weight(op, 1);
      if (op.int8) {
        const Param& w = params_[op.param[0]];
        conv2d_forward_int8(op.conv, n, in, reinterpret_cast<const uint8_t*>(w.q), w.qscale, bias, out, qact_,
                            reinterpret_cast<uint8_t*>(scratch_), *int8_, threads_);
      } else {
        conv2d_forward(op.conv, n, in, weight(op, 0), bias, out, scratch_, threads_);
      }
      break;
    }
    case OpKind::Linear: {
      const float* bias = weight(op, 1);
      if (op.int8) {
        const Param& w = params_[op.param[0]];
        linear_forward_int8(n, static_cast<int>(op.in_size()), op.out_c, in, reinterpret_cast<const uint8_t*>(w.q),
                            w.qscale, bias, out, qact_, *int8_, threads_);
      } else {
        linear_forward(n, static_cast<int>(op.in_size()), op.out_c, in, weight(op, 0), bias, out, scratch_,
                       max_scratch_, threads_);
      }
      break;
    }
    case OpKind::BatchNorm:
      batchnorm_forward(n, op.in_c, op.in_h * op.in_w, in, weight(op, 0), weight(op, 1), weight(op, 2),
                        weight(op, 3), op.eps, out, threads_);
      break;
    case OpKind::LeakyReLU:
      leaky_relu_forward(static_cast<size_t>(n) * op.in_size(), in, op.slope, out, threads_);
      break;
    case OpKind::MaxPool:
      maxpool_forward(op.pool, n, in, out, blk.argmax[j], threads_);
      break;
    case OpKind::AvgPool:
      avgpool_forward(op.pool, n, in, out, threads_);
      break;
    case OpKind::AdaptiveAvgPool:
      adaptive_avgpool_forward(n, op.in_c, op.in_h, op.in_w, op.out_h, op.out_w, in, out, threads_);
      break;
    case OpKind::Flatten:
      break;
  }
}

void Engine::forward(const float* x, int n, float* logits) {
  if (n <= 0 || n > batch_)
    throw std::runtime_error("batch of " + std::to_string(n) + " samples; this engine was sized for 1.." +
                             std::to_string(batch_));
  PoolScope threads(pool_.get());
  const float* cur = x;
  for (Block& blk : blocks_)
    for (size_t j = 0; j < blk.ops.size(); ++j) {
      Op& op = blk.ops[j];
      if (op.kind == OpKind::Flatten) continue;
      float* out = cur == act_[0] ? act_[1] : act_[0];
      int32_t* keep = blk.argmax[j];
      blk.argmax[j] = nullptr;  // eval does not need the indices
      run_op(blk, op, static_cast<int>(j), cur, out, n);
      blk.argmax[j] = keep;
      cur = out;
    }
  std::memcpy(logits, cur, sizeof(float) * static_cast<size_t>(n) * classes_);
}

void Engine::train_block(Block& blk, const float* in, const int32_t* labels, int n, StepResult& res) {
  // Forward up to the tap, keeping every op output for the backward.
  const float* cur = in;
  for (int j = 0; j <= blk.tap; ++j) {
    Op& op = blk.ops[j];
    if (op.kind == OpKind::Flatten) {
      blk.saved[j] = const_cast<float*>(cur);
      continue;
    }
    run_op(blk, op, j, cur, blk.saved[j], n);
    cur = blk.saved[j];
  }
  Param* m = blk.m >= 0 ? &params_[blk.m] : nullptr;
  Param* mm = blk.mm >= 0 ? &params_[blk.mm] : nullptr;
  float* g = grad_[0];
  res.losses.push_back(local_loss_grad(blk.head, n, cur, labels, blk.basis, m ? m->value : nullptr,
                                       mm ? mm->value : nullptr, g, m && m->trainable ? m->grad : nullptr,
                                       mm && mm->trainable ? mm->grad : nullptr, loss_scratch_));
  // Backward from the tap to the block input (which is detached: no gradient leaves the block).
  for (int j = blk.tap; j >= 0; --j) {
    Op& op = blk.ops[j];
    const float* x = j == 0 ? in : blk.saved[j - 1];
    float* other = g == grad_[0] ? grad_[1] : grad_[0];
    Param* w = op.param[0] >= 0 ? &params_[op.param[0]] : nullptr;
    Param* b = op.param[1] >= 0 ? &params_[op.param[1]] : nullptr;
    float* gw = w && w->trainable ? w->grad : nullptr;
    float* gb = b && b->trainable ? b->grad : nullptr;
    switch (op.kind) {
      case OpKind::Conv2d:
        if (gw) conv2d_weight_grad(op.conv, n, x, g, gw, gb, scratch_, threads_);
        else if (gb) bias_grad(n, op.out_c, op.out_h * op.out_w, g, gb);
        if (j > 0) {
          conv2d_input_grad(op.conv, n, weight(op, 0), g, other, scratch_, threads_);
          g = other;
        }
        break;
      case OpKind::Linear:
        if (gw)
          linear_weight_grad(n, static_cast<int>(op.in_size()), op.out_c, x, g, gw, gb, scratch_, max_scratch_,
                             threads_);
        else if (gb) bias_grad(n, op.out_c, 1, g, gb);
        if (j > 0) {
          linear_input_grad(n, static_cast<int>(op.in_size()), op.out_c, weight(op, 0), g, other, scratch_,
                            max_scratch_, threads_);
          g = other;
        }
        break;
      case OpKind::BatchNorm:
        batchnorm_backward(n, op.in_c, op.in_h * op.in_w, x, g, weight(op, 0), weight(op, 2), weight(op, 3), op.eps,
                           j > 0 ? g : nullptr, gw, gb, threads_);
        break;
      case OpKind::LeakyReLU:
        leaky_relu_backward(static_cast<size_t>(n) * op.out_size(), blk.saved[j], g, op.slope, g, threads_);
        break;
      case OpKind::MaxPool:
        if (j > 0) maxpool_backward(op.pool, n, g, blk.argmax[j], other, threads_), g = other;
        break;
      case OpKind::AvgPool:
        if (j > 0) avgpool_backward(op.pool, n, g, other, threads_), g = other;
        break;
      case OpKind::AdaptiveAvgPool:
        if (j > 0)
          adaptive_avgpool_backward(n, op.in_c, op.in_h, op.in_w, op.out_h, op.out_w, g, other, threads_), g = other;
        break;
      case OpKind::Flatten:
        break;
    }
  }
  // The update, after this block's output was computed with the old weights (as the PyTorch step does).
  ++blk.steps;
  auto update = [&](int idx) {
    if (idx < 0) return;
    Param& p = params_[idx];
    if (!p.trainable || !p.grad) return;
    optimizer_update(opt_, blk.steps, static_cast<size_t>(p.numel), p.value, p.grad, p.state[0], p.state[1]);
  };
  for (int j = 0; j <= blk.tap; ++j)
    for (int k = 0; k < 2; ++k) update(blk.ops[j].param[k]);
  update(blk.m);
  update(blk.mm);
}

const StepResult& Engine::train_step(const float* x, const int32_t* labels, int n) {
  if (n <= 0 || n > batch_)
    throw std::runtime_error("batch of " + std::to_string(n) + " samples; this engine was sized for 1.." +
                             std::to_string(batch_));
  for (int i = 0; i < n; ++i)
    if (labels[i] < 0 || labels[i] >= classes_)
      throw std::runtime_error("label " + std::to_string(labels[i]) + " at index " + std::to_string(i) +
                               " is outside [0, " + std::to_string(classes_) + ")");
  int last = -1;
  for (size_t i = 0; i < blocks_.size(); ++i)
    if (blocks_[i].trainable) last = static_cast<int>(i);
  if (last < 0) throw std::runtime_error("no block is trainable: a step would train nothing (pass train_last >= 1)");
  PoolScope threads(pool_.get());
  StepResult& res = result_;
  res.losses.clear();  // capacity reserved at load: no allocation here
  const float* cur = x;
  for (int bi = 0; bi <= last; ++bi) {
    Block& blk = blocks_[bi];
    if (!blk.trainable) {
      for (size_t j = 0; j < blk.ops.size(); ++j) {
        if (blk.ops[j].kind == OpKind::Flatten) continue;
        float* out = cur == act_[0] ? act_[1] : act_[0];
        run_op(blk, blk.ops[j], static_cast<int>(j), cur, out, n);
        cur = out;
      }
      continue;
    }
    train_block(blk, cur, labels, n, res);
    if (bi == last) break;
    // The block's output (old weights) feeds the next block; ops after the tap run on the saved tap output.
    const float* out_cur = blk.saved[blk.tap];
    for (size_t j = static_cast<size_t>(blk.tap) + 1; j < blk.ops.size(); ++j) {
      if (blk.ops[j].kind == OpKind::Flatten) continue;
      float* out = out_cur == act_[0] ? act_[1] : act_[0];
      run_op(blk, blk.ops[j], static_cast<int>(j), out_cur, out, n);
      out_cur = out;
    }
    if (out_cur != act_[0] && out_cur != act_[1]) {
      // Still in the shared saved region, which the next trainable block reuses: move it out.
      float* dst = cur == act_[0] ? act_[1] : act_[0];
      std::memcpy(dst, out_cur, sizeof(float) * static_cast<size_t>(n) * blk.ops.back().out_size());
      out_cur = dst;
    }
    cur = out_cur;
  }
  return res;
}

std::vector<std::string> Engine::trainable_tensors() const {
  std::vector<std::string> out;
  for (const Param& p : params_)
    if (p.trainable) out.push_back(p.name);
  return out;
}

std::vector<float> Engine::get(const std::string& name) const {
  for (const Param& p : params_)
    if (p.name == name) {
      if (!p.value) throw std::runtime_error("tensor '" + name + "' is int8");
      return std::vector<float>(p.value, p.value + p.numel);
    }
  throw std::runtime_error("no tensor '" + name + "' in the pack");
}

std::vector<float> Engine::state(const std::string& name, int which) const {
  if (which < 0 || which >= opt_.states())
    throw std::runtime_error("optimizer '" + opt_.name + "' keeps " + std::to_string(opt_.states()) +
                             " state buffer(s), not " + std::to_string(which + 1));
  for (const Param& p : params_)
    if (p.name == name) {
      if (!p.state[which]) throw std::runtime_error("tensor '" + name + "' is not trainable");
      return std::vector<float>(p.state[which], p.state[which] + p.numel);
    }
  throw std::runtime_error("no tensor '" + name + "' in the pack");
}

void Engine::set(const std::string& name, const std::vector<float>& values) {
  for (Param& p : params_)
    if (p.name == name) {
      if (!p.value) throw std::runtime_error("tensor '" + name + "' is int8");
      if (static_cast<long>(values.size()) != p.numel)
        throw std::runtime_error("tensor '" + name + "' has " + std::to_string(p.numel) + " values, got " +
                                 std::to_string(values.size()));
      std::copy(values.begin(), values.end(), p.value);
      return;
    }
  throw std::runtime_error("no tensor '" + name + "' in the pack");
}

void Engine::normalise(const uint8_t* images, int n, bool hwc, float* out) const {
  const int c = static_cast<int>(input_shape_[0]), hw = static_cast<int>(input_shape_[1] * input_shape_[2]);
  for (int b = 0; b < n; ++b)
    for (int ch = 0; ch < c; ++ch) {
      const float inv = 1.0f / std_[ch];
      float* o = out + (static_cast<size_t>(b) * c + ch) * hw;
      for (int i = 0; i < hw; ++i) {
        const uint8_t v = hwc ? images[(static_cast<size_t>(b) * hw + i) * c + ch]
                              : images[(static_cast<size_t>(b) * c + ch) * hw + i];
        o[i] = (static_cast<float>(v) * scale_ - mean_[ch]) * inv;
      }
    }
}

std::vector<uint8_t> Engine::data_section() const {
  size_t len = 0;
  for (const TensorInfo& t : table_) len = std::max<size_t>(len, t.offset + t.nbytes);
  len = (len + kPackAlign - 1) / kPackAlign * kPackAlign;
  std::vector<uint8_t> data(len, 0);
  for (size_t i = 0; i < table_.size(); ++i) {
    const Param& p = params_[i];
    const void* src = p.q ? static_cast<const void*>(p.q) : static_cast<const void*>(p.value);
    uint8_t* dst = data.data() + table_[i].offset;
    std::memcpy(dst, src, table_[i].nbytes);
    if (p.shifted)
      for (uint64_t k = 0; k < table_[i].nbytes; ++k) dst[k] ^= 0x80;  // back to int8
  }
  return data;
}

void Engine::save(const std::string& path) const {
  Pack shell;
  shell.header_text = header_text_;
  write_pack_data(path, shell, data_section());
}

}  // namespace edgeml::lls
