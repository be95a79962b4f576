// C++ tests of the LLS engine (no Python): run natively by tests/lls_engine and under qemu-aarch64 by
// csrc/lls/cross_test.sh. Prints one line per test; exit status = number of failures.
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "lls/engine.h"
#include "lls/gemm.h"
#include "lls/json.h"
#include "lls/parallel.h"
#include "lls/qgemm.h"

using namespace edgeml::lls;

#if defined(__GNUC__) && !defined(__clang__)
// operator new below is malloc, so free in operator delete matches; GCC cannot see that through inlining.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
// Every C++ heap allocation of this program goes through here, so a test can prove a training step makes none.
static long g_allocations = 0;
static bool g_counting = false;
void* operator new(size_t n) {
  if (g_counting) ++g_allocations;
  void* p = std::malloc(n ? n : 1);
  if (!p) throw std::bad_alloc();
  return p;
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
// gemmlowp's workspaces (the int8 GEMM) come from posix_memalign: counted too.
static long g_aligned = 0;
extern "C" int posix_memalign(void** out, size_t alignment, size_t size) noexcept {
  if (g_counting) ++g_allocations, ++g_aligned;
  void* p = std::aligned_alloc(alignment, (size + alignment - 1) / alignment * alignment);
  if (!p) return ENOMEM;
  *out = p;
  return 0;
}

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
  if (!ok) {
    ++failures;
    std::printf("  FAILED: %s\n", what.c_str());
  }
}

template <typename E>
void expect_throw(const std::function<void()>& f, const std::string& needle, const std::string& what) {
  try {
    f();
    check(false, what + " (no exception)");
  } catch (const E& e) {
    check(std::string(e.what()).find(needle) != std::string::npos, what + ": message '" + e.what() + "'");
  } catch (const std::exception& e) {
    check(false, what + ": wrong exception type: " + e.what());
  }
}

std::vector<float> randn(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

double dotd(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

double max_rel(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 1e-12;
  for (size_t i = 0; i < a.size(); ++i) {
    num = std::max(num, std::fabs(static_cast<double>(a[i]) - b[i]));
    den = std::max(den, std::fabs(static_cast<double>(b[i])));
  }
  return num / den;
}

std::string tmp_path(const std::string& name) {
  const char* dir = std::getenv("TMPDIR");
  return std::string(dir ? dir : "/tmp") + "/edgeml_lls_test_" + std::to_string(::getpid()) + "_" + name;
}

void test_json() {
  Json j = Json::parse(R"({"a": [1, 2.5, -3e2], "b": {"c": "x\"y"}, "d": null, "e": true})");
  check(j["a"][2].num() == -300.0 && j["b"]["c"].str() == "x\"y" && j["d"].is_null() && j["e"].boolean(),
        "json values");
  expect_throw<std::runtime_error>([] { Json::parse("{\"a\": [1, 2}"); }, "at byte", "json error offset");
}

void test_crc() {
  const char* s = "123456789";
  check(crc32(reinterpret_cast<const uint8_t*>(s), 9) == 0xCBF43926u, "crc32 check value");
}

// conv: <conv(x, w), G> is linear in w and x, so its exact gradients are weight_grad / input_grad.
void test_conv_gradients(int groups, int stride, int pad, int cin, int cout) {
  std::mt19937 rng(1);
  Conv2dShape s{cin, cout, 7, 6, 3, 3, stride, stride, pad, pad, groups};
  const int batch = 2;
  auto x = randn(static_cast<size_t>(batch) * cin * s.h * s.w, rng);
  auto w = randn(static_cast<size_t>(cout) * (cin / groups) * 9, rng);
  auto bias = randn(cout, rng);
  auto g = randn(static_cast<size_t>(batch) * cout * s.ho() * s.wo(), rng);
  std::vector<float> y(g.size()), scratch(std::max<size_t>(s.scratch(), 1)), gw(w.size()), gb(cout), gx(x.size());
  conv2d_weight_grad(s, batch, x.data(), g.data(), gw.data(), gb.data(), scratch.data());
  conv2d_input_grad(s, batch, w.data(), g.data(), gx.data(), scratch.data());
  auto loss = [&](const std::vector<float>& xx, const std::vector<float>& ww, const std::vector<float>& bb) {
    conv2d_forward(s, batch, xx.data(), ww.data(), bb.data(), y.data(), scratch.data());
    return dotd(y, g);
  };
  const double base = loss(x, w, bias);
  double worst = 0;
  for (size_t i = 0; i < w.size(); i += 7) {
    auto w2 = w;
    w2[i] += 0.5f;
    worst = std::max(worst, std::fabs((loss(x, w2, bias) - base) / 0.5 - gw[i]) / (1 + std::fabs(gw[i])));
  }
  for (size_t i = 0; i < x.size(); i += 5) {
    auto x2 = x;
    x2[i] += 0.5f;
    worst = std::max(worst, std::fabs((loss(x2, w, bias) - base) / 0.5 - gx[i]) / (1 + std::fabs(gx[i])));
  }
  auto b2 = bias;
  b2[0] += 0.5f;
  worst = std::max(worst, std::fabs((loss(x, w, b2) - base) / 0.5 - gb[0]) / (1 + std::fabs(gb[0])));
  check(worst < 1e-3, "conv gradients (groups " + std::to_string(groups) + ", stride " + std::to_string(stride) +
                          "): worst " + std::to_string(worst));
}

// The GEMM wrapper against a double-precision loop, for every transpose, with and without accumulation, in
// the blocked path and in a workspace too small for Eigen's preferred blocks.
void test_gemm() {
  std::mt19937 rng(7);
  double worst = 0;
  for (int trial = 0; trial < 24; ++trial) {
    const int m = 1 + static_cast<int>(rng() % 70), n = 1 + static_cast<int>(rng() % 90),
              k = 1 + static_cast<int>(rng() % 80);
    const bool ta = trial & 1, tb = trial & 2, acc = trial & 4, small = trial & 8;
    const int lda = (ta ? m : k) + 1, ldb = (tb ? k : n) + 2, ldc = n + 3;
    auto a = randn(static_cast<size_t>(lda) * (ta ? k : m), rng), b = randn(static_cast<size_t>(ldb) * (tb ? n : k), rng);
    auto c = randn(static_cast<size_t>(ldc) * m, rng);
    const auto c0 = c;
    const size_t capacity = small ? 64 : gemm_workspace(m, n, k);
    std::vector<float> ws(capacity + 16);
    float* aligned = ws.data() + (16 - reinterpret_cast<uintptr_t>(ws.data()) / 4 % 16) % 16;
    gemm(ta, tb, m, n, k, a.data(), lda, b.data(), ldb, acc, c.data(), ldc, aligned, capacity);
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) {
        double s = acc ? c0[static_cast<size_t>(i) * ldc + j] : 0.0;
        for (int p = 0; p < k; ++p)
          s += static_cast<double>(ta ? a[static_cast<size_t>(p) * lda + i] : a[static_cast<size_t>(i) * lda + p]) *
               (tb ? b[static_cast<size_t>(j) * ldb + p] : b[static_cast<size_t>(p) * ldb + j]);
        worst = std::max(worst, std::fabs(s - c[static_cast<size_t>(i) * ldc + j]) / (1.0 + std::fabs(s)));
      }
  }
  check(worst < 1e-4, "gemm matches a double loop: worst " + std::to_string(worst));
}

// Every part runs exactly once, whichever thread claims it, over many back-to-back jobs.
void test_thread_pool() {
  ThreadPool pool(3);
  std::vector<int> hits(37, 0);
  struct Ctx {
    std::vector<int>* hits;
  } ctx{&hits};
  for (int job = 0; job < 2000; ++job)
    pool.run(37, [](void* c, int t) { ++(*static_cast<Ctx*>(c)->hits)[static_cast<size_t>(t)]; }, &ctx);
  bool ok = true;
  for (int h : hits) ok = ok && h == 2000;
  check(ok, "thread pool runs every part of every job exactly once");
}

// Pools are linear: backward must be the adjoint of forward (<P x, g> == <x, P^T g>).
void test_pool_adjoints() {
  std::mt19937 rng(2);
  const int b = 2, c = 3, h = 7, w = 6;
  auto x = randn(static_cast<size_t>(b) * c * h * w, rng);
  Pool2dShape p{c, h, w, 2, 2};
  auto g = randn(static_cast<size_t>(b) * c * p.ho() * p.wo(), rng);
  std::vector<float> y(g.size()), gx(x.size());
  avgpool_forward(p, b, x.data(), y.data());
  avgpool_backward(p, b, g.data(), gx.data());
  check(std::fabs(dotd(y, g) - dotd(x, gx)) < 1e-4, "avgpool adjoint");
  std::vector<int32_t> arg(y.size());
  maxpool_forward(p, b, x.data(), y.data(), arg.data());
  maxpool_backward(p, b, g.data(), arg.data(), gx.data());
  check(std::fabs(dotd(y, g) - dotd(x, gx)) < 1e-4, "maxpool adjoint (piecewise linear)");
  auto ga = randn(static_cast<size_t>(b) * c * 3 * 3, rng);
  std::vector<float> ya(ga.size());
  adaptive_avgpool_forward(b, c, h, w, 3, 3, x.data(), ya.data());
  adaptive_avgpool_backward(b, c, h, w, 3, 3, ga.data(), gx.data());
  check(std::fabs(dotd(ya, ga) - dotd(x, gx)) < 1e-4, "adaptive avgpool adjoint (overlapping bins)");
}

void test_basis() {
  BasisSpec spec;
  spec.k = 10;
  std::vector<float> b(10 * 64);
  make_basis(spec, 64, b.data());
  bool ok = true;
  for (int k = 0; k < 10; ++k) ok = ok && b[static_cast<size_t>(k) * 64] == 0.0f;
  for (float v : b) ok = ok && (v == 0.0f || v == 1.0f || v == -1.0f);
  check(ok, "square basis values in {-1, 0, 1}, column 0 zero");
  spec.waveform = "sine";
  make_basis(spec, 64, b.data());
  check(std::fabs(b[1 * 64 + 3] - static_cast<float>(std::sin((50.0 + 462.0 / 9.0) * 3.0))) < 1e-7, "sine closed form");
}

// The local loss gradient against central finite differences of the loss, in each mode.
void test_local_loss(LocalMode mode) {
  std::mt19937 rng(3);
  LocalHead head;
  head.mode = mode;
  head.c = 3, head.h = 5, head.w = 5, head.pool = 2, head.k = 4, head.temperature = 0.5f,
  head.label_smoothing = 0.1f;
  const int batch = 3, d = head.dim();
  BasisSpec spec;
  spec.k = head.k;
  spec.waveform = "sine";
  std::vector<float> basis(static_cast<size_t>(head.k) * d);
  make_basis(spec, d, basis.data());
  auto a = randn(static_cast<size_t>(batch) * 75, rng);
  auto m = randn(4, rng), mm = randn(16, rng);
  std::vector<int32_t> labels = {0, 3, 1};
  std::vector<float> ga(a.size()), gm(4), gmm(16), scratch(head.scratch(batch)), junk(a.size()), j4(4), j16(16);
  local_loss_grad(head, batch, a.data(), labels.data(), basis.data(), m.data(), mm.data(), ga.data(), gm.data(),
                  gmm.data(), scratch.data());
  auto loss = [&](const std::vector<float>& aa, const std::vector<float>& mv, const std::vector<float>& mmv) {
    return static_cast<double>(local_loss_grad(head, batch, aa.data(), labels.data(), basis.data(), mv.data(),
                                               mmv.data(), junk.data(), j4.data(), j16.data(), scratch.data()));
  };
  const float h = 1e-2f;
  double worst = 0;
  for (size_t i = 0; i < a.size(); i += 3) {
    auto p = a, q = a;
    p[i] += h, q[i] -= h;
    worst = std::max(worst, std::fabs((loss(p, m, mm) - loss(q, m, mm)) / (2 * h) - ga[i]));
  }
  if (mode == LocalMode::LLS_M)
    for (size_t i = 0; i < 4; ++i) {
      auto p = m, q = m;
      p[i] += h, q[i] -= h;
      worst = std::max(worst, std::fabs((loss(a, p, mm) - loss(a, q, mm)) / (2 * h) - gm[i]));
    }
  if (mode == LocalMode::LLS_MXM)
    for (size_t i = 0; i < 16; ++i) {
      auto p = mm, q = mm;
      p[i] += h, q[i] -= h;
      worst = std::max(worst, std::fabs((loss(a, m, p) - loss(a, m, q)) / (2 * h) - gmm[i]));
    }
  check(worst < 2e-3, "local loss gradient vs finite differences (mode " + std::to_string(static_cast<int>(mode)) +
                          "): worst abs err " + std::to_string(worst));
}

// A two-block net (conv+BN+LeakyReLU -> maxpool -> flatten; linear classifier) as a pack, via the C++ writer.
std::string tiny_pack(const std::string& mode) {
  std::mt19937 rng(4);
  auto w = randn(4 * 1 * 9, rng, 0.3f), b = randn(4, rng, 0.1f);
  std::vector<float> gamma(4, 1.0f), beta(4, 0.0f), mean(4, 0.0f), var(4, 1.0f);
  auto fc = randn(3 * 4 * 3 * 3, rng, 0.1f), fb = randn(3, rng, 0.1f);
  auto m = randn(3, rng, 0.5f), mm = randn(9, rng, 0.5f);
  const std::string head = mode == "lls_m" ? R"(, "m": "m")" : mode == "lls_mxm" ? R"(, "M": "M")" : "";
  const std::string header =
      R"({"format": "edgeml-lls-pack", "version": 1, "input": {"shape": [1, 6, 6]}, "num_classes": 3,
          "basis": {"waveform": "square"}, "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
          "blocks": [
            {"name": "b0", "trainable": true, "tap": 2, "local": {"mode": ")" + mode + R"(", "pool": 2,
             "temperature": 0.5)" + head + R"(},
             "ops": [{"op": "conv2d", "weight": "w", "bias": "b", "stride": [1, 1], "padding": [1, 1], "groups": 1},
                     {"op": "batchnorm", "weight": "g", "bias": "be", "running_mean": "mu", "running_var": "var"},
                     {"op": "leaky_relu", "slope": 0.01}, {"op": "maxpool", "kernel": 2, "stride": 2},
                     {"op": "flatten"}]},
            {"name": "classifier", "trainable": true, "tap": 0, "local": {"mode": "ce"},
             "ops": [{"op": "linear", "weight": "fc", "bias": "fb"}]}]})";
  const std::string path = tmp_path(mode + ".pack");
  write_pack(path, header,
             {{"w", DType::F32, {4, 1, 3, 3}, w.data()}, {"b", DType::F32, {4}, b.data()},
              {"g", DType::F32, {4}, gamma.data()}, {"be", DType::F32, {4}, beta.data()},
              {"mu", DType::F32, {4}, mean.data()}, {"var", DType::F32, {4}, var.data()},
              {"fc", DType::F32, {3, 36}, fc.data()}, {"fb", DType::F32, {3}, fb.data()},
              {"m", DType::F32, {3}, m.data()}, {"M", DType::F32, {3, 3}, mm.data()}});
  return path;
}

void test_engine_learns(const std::string& mode, int threads = 1) {
  const std::string path = tiny_pack(mode);
  Engine e(read_pack(path), EngineOptions{8, 0, -1, -1.0f, "", threads});
  std::mt19937 rng(5);
  auto x = randn(8 * 36, rng);
  std::vector<int32_t> labels = {0, 1, 2, 0, 1, 2, 0, 1};
  const size_t peak_after_load = e.arena_peak();
  const float first = e.train_step(x.data(), labels.data(), 8).losses[0];
  float last = first;
  g_allocations = 0;
  g_counting = true;
  for (int i = 0; i < 40; ++i) last = e.train_step(x.data(), labels.data(), 8).losses[0];
  g_counting = false;
  check(g_allocations == 0, mode + ": " + std::to_string(g_allocations) + " heap allocations in 40 training steps");
  check(last < first, mode + ": local loss falls on a fixed batch (" + std::to_string(first) + " -> " +
                          std::to_string(last) + ")");
  check(e.arena_peak() == peak_after_load && e.arena_capacity() == e.required_bytes(),
        mode + ": steps use only the arena carved at load");
  // Saved packs round-trip, and the input pack is untouched.
  const std::string out = tmp_path(mode + ".out.pack");
  e.save(out);
  Pack again = read_pack(out);
  Engine e2(again, EngineOptions{8, 0, -1, -1.0f, ""});
  check(max_rel(e2.get("w"), e.get("w")) == 0.0 && max_rel(e2.get("fc"), e.get("fc")) == 0.0,
        mode + ": saved pack holds the updated weights");
  Engine e0(read_pack(path), EngineOptions{8, 0, -1, -1.0f, "", threads});
  check(max_rel(e0.get("w"), e.get("w")) > 0.0, mode + ": the input pack was not modified");
  // The same steps on a fresh engine with the same thread count: bit-identical weights.
  e0.train_step(x.data(), labels.data(), 8);
  for (int i = 0; i < 40; ++i) e0.train_step(x.data(), labels.data(), 8);
  check(e0.get("w") == e.get("w") && e0.get("fc") == e.get("fc"),
        mode + ": a rerun with " + std::to_string(threads) + " thread(s) gives bit-identical weights");
  std::remove(out.c_str());
  std::remove(path.c_str());
}

void test_bad_packs() {
  const std::string path = tiny_pack("lls");
  std::ifstream in(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto write = [](const std::string& p, const std::vector<char>& b) {
    std::ofstream o(p, std::ios::binary);
    o.write(b.data(), static_cast<long>(b.size()));
  };
  const std::string bad = tmp_path("bad.pack");
  write(bad, std::vector<char>(bytes.begin(), bytes.end() - 100));
  expect_throw<PackError>([&] { read_pack(bad); }, "truncated", "truncated pack");
  auto tampered = bytes;
  tampered[tampered.size() - 50] ^= 0x01;
  write(bad, tampered);
  expect_throw<PackError>([&] { read_pack(bad); }, "checksum", "tampered pack");
  auto newer = bytes;
  newer[8] = 2;
  write(bad, newer);
  expect_throw<PackError>([&] { read_pack(bad); }, "newer", "newer format version");
  expect_throw<PackError>([&] { read_pack(tmp_path("missing.pack")); }, "cannot open", "missing pack");
  expect_throw<ArenaError>([&] { Engine(read_pack(path), EngineOptions{8, 4096, -1, -1.0f, ""}); }, "arena too small",
                           "arena too small");
  Engine e(read_pack(path), EngineOptions{4, 0, -1, -1.0f, ""});
  std::vector<float> x(5 * 36, 0.0f);
  std::vector<int32_t> labels(5, 0);
  expect_throw<std::runtime_error>([&] { e.train_step(x.data(), labels.data(), 5); }, "sized for",
                                   "batch larger than the arena's");
  labels[0] = 7;
  expect_throw<std::runtime_error>([&] { e.train_step(x.data(), labels.data(), 4); }, "outside",
                                   "label out of range");
  std::remove(bad.c_str());
  std::remove(path.c_str());
}


// The int8 GEMM against an integer loop, exactly: both orientations (m < n runs transposed), both layouts, padded
// leading dimensions, depths across gemmlowp's blocking. Under qemu this checks the aarch64 NEON kernels.
void test_int8_gemm() {
  std::mt19937 rng(11);
  bool exact = true;
  for (int trial = 0; trial < 24; ++trial) {
    const int m = 1 + static_cast<int>(rng() % 40), n = 1 + static_cast<int>(rng() % 40),
              k = 1 + static_cast<int>(rng() % (trial < 20 ? 90 : 700));
    const bool col = trial & 1;
    const int ldb = (col ? k : n) + 3, ldc = (col ? m : n) + 2, zero = 1 + static_cast<int>(rng() % 255);
    std::vector<uint8_t> a(static_cast<size_t>(m) * k), b(static_cast<size_t>(ldb) * (col ? n : k));
    for (auto& v : a) v = static_cast<uint8_t>(1 + rng() % 255);
    for (auto& v : b) v = static_cast<uint8_t>(1 + rng() % 255);
    std::vector<int32_t> c(static_cast<size_t>(ldc) * (col ? n : m), 7);
    Int8Gemm gemm(1, Int8Gemm::workspace(m, n, k));
    gemm.run(0, m, n, k, a.data(), b.data(), ldb, zero, c.data(), ldc, col);
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) {
        long s = 0;
        for (int p = 0; p < k; ++p)
          s += (static_cast<long>(a[static_cast<size_t>(i) * k + p]) - 128) *
               (static_cast<long>(b[col ? static_cast<size_t>(j) * ldb + p : static_cast<size_t>(p) * ldb + j]) - zero);
        exact = exact && c[col ? static_cast<size_t>(j) * ldc + i : static_cast<size_t>(i) * ldc + j] == s;
      }
  }
  check(exact, "int8 gemm equals an integer loop");
}

// A frozen int8 conv block (int8 weights, precision.frozen_compute) before a trainable float32 classifier (or, with
// `frozen`, a frozen int8 one: every layer on the int8 path).
std::string int8_pack(const std::string& compute, std::vector<int8_t>& q, bool frozen = false) {
  std::mt19937 rng(6);
  q.resize(8 * 2 * 9);
  for (auto& v : q) v = static_cast<int8_t>(static_cast<int>(rng() % 255) - 127);
  std::vector<float> scale = {0.01f, 0.02f, 0.005f, 0.03f, 0.01f, 0.015f, 0.02f, 0.01f};
  auto b = randn(8, rng, 0.1f), fc = randn(3 * 8 * 3 * 3, rng, 0.1f), fb = randn(3, rng, 0.1f);
  std::vector<int8_t> fq(fc.size());
  for (size_t i = 0; i < fc.size(); ++i) fq[i] = static_cast<int8_t>(std::lround(fc[i] * 400.0f) % 128);
  std::vector<float> fscale(3, 0.0025f);
  const std::string header =
      R"({"format": "edgeml-lls-pack", "version": 1, "input": {"shape": [2, 6, 6]}, "num_classes": 3,
          "basis": {"waveform": "square"}, "optimizer": {"name": "sgd", "lr": 0.1},
          "precision": {"frozen_compute": ")" + compute + R"("},
          "blocks": [
            {"name": "b0", "trainable": false, "tap": 1, "local": {"mode": "lls", "pool": 2},
             "ops": [{"op": "conv2d", "weight": "w", "bias": "b", "stride": [1, 1], "padding": [1, 1], "groups": 1},
                     {"op": "leaky_relu", "slope": 0.01}, {"op": "maxpool", "kernel": 2, "stride": 2},
                     {"op": "flatten"}]},
            {"name": "classifier", "trainable": )" + (frozen ? "false" : "true") + R"(, "tap": 0, "local": {"mode": "ce"},
             "ops": [{"op": "linear", "weight": "fc", "bias": "fb"}]}]})";
  const std::string path = tmp_path("int8_" + compute + (frozen ? "_frozen" : "") + ".pack");
  std::vector<TensorBlob> tensors = {{"w", DType::I8, {8, 2, 3, 3}, q.data()},
                                     {"w.scale", DType::F32, {8}, scale.data()},
                                     {"b", DType::F32, {8}, b.data()},
                                     {"fb", DType::F32, {3}, fb.data()}};
  if (frozen)
    tensors.push_back({"fc", DType::I8, {3, 72}, fq.data()}), tensors.push_back({"fc.scale", DType::F32, {3}, fscale.data()});
  else
    tensors.push_back({"fc", DType::F32, {3, 72}, fc.data()});
  write_pack(path, header, tensors);
  return path;
}

void test_int8_engine() {
  std::vector<int8_t> q;
  const std::string path = int8_pack("int8", q), fpath = int8_pack("float32", q);
  std::mt19937 rng(8);
  auto x = randn(8 * 72, rng);
  std::vector<int32_t> labels = {0, 1, 2, 0, 1, 2, 0, 1};
  Engine e(read_pack(path), EngineOptions{8, 0, -1, -1.0f, "", 2});
  check(e.int8_layers() == 1 && e.int8_workspace_bytes() > 0, "int8: the frozen conv runs the int8 GEMM");
  const size_t peak_after_load = e.arena_peak();
  std::vector<float> logits(8 * 3), again(8 * 3), single(8 * 3), fp(8 * 3);
  e.train_step(x.data(), labels.data(), 8);
  g_allocations = 0;
  g_counting = true;
  for (int i = 0; i < 20; ++i) e.train_step(x.data(), labels.data(), 8);
  e.forward(x.data(), 8, logits.data());
  e.forward(x.data(), 3, logits.data());  // a smaller batch: smaller products, still no allocation
  g_counting = false;
  check(g_allocations == 0, "int8: " + std::to_string(g_allocations) + " heap allocations in 20 steps + 2 forwards");
  check(e.arena_peak() == peak_after_load, "int8: steps use only the arena carved at load");
  g_aligned = 0;
  g_counting = true;
  { Int8Gemm probe(1, 4096); }
  g_counting = false;
  check(g_aligned == 1, "int8: the allocation count sees gemmlowp's workspaces (" + std::to_string(g_aligned) + ")");
  // Integer sums: the int8 layers give the same output for any thread count (a net of int8 layers only; float32
  // GEMMs may round differently when cut differently); a rerun gives bit-identical weights.
  std::vector<int8_t> unused;
  const std::string all = int8_pack("int8", unused, true);
  Engine a1(read_pack(all), EngineOptions{8, 0, -1, -1.0f, "", 1}), a3(read_pack(all), EngineOptions{8, 0, -1, -1.0f, "", 3});
  check(a1.int8_layers() == 2, "int8: conv and linear on the int8 GEMM");
  a1.forward(x.data(), 8, single.data());
  a3.forward(x.data(), 8, again.data());
  check(single == again, "int8: forward is identical on 1 and 3 threads");
  std::remove(all.c_str());
  Engine e1(read_pack(path), EngineOptions{8, 0, -1, -1.0f, "", 1});
  e1.forward(x.data(), 8, single.data());
  Engine e2(read_pack(path), EngineOptions{8, 0, -1, -1.0f, "", 2});
  for (int i = 0; i < 21; ++i) e2.train_step(x.data(), labels.data(), 8);
  check(e2.get("fc") == e.get("fc"), "int8: a rerun with 2 threads gives bit-identical weights");
  // Close to the same weights computed in float32 (activation quantisation only: ~1/254 of the range).
  Engine f(read_pack(fpath), EngineOptions{8, 0, -1, -1.0f, "", 1});
  check(f.int8_layers() == 0, "float32 compute: no int8 layer");
  f.forward(x.data(), 8, fp.data());
  check(max_rel(single, fp) < 0.02 && max_rel(single, fp) > 0.0,
        "int8 forward within 2% of the float32 one: " + std::to_string(max_rel(single, fp)));
  // The saved pack holds the int8 weights exactly as read (stored shifted by 128 in the engine).
  const std::string out = tmp_path("int8.out.pack");
  e.save(out);
  Pack saved = read_pack(out);
  const int8_t* w = static_cast<const int8_t*>(saved.bytes(saved.tensor("w")));
  check(std::equal(q.begin(), q.end(), w), "int8: the saved pack keeps the int8 weights");
  std::remove(out.c_str());
  std::remove(path.c_str());
  std::remove(fpath.c_str());
}
}  // namespace

int main() {
  const std::vector<std::pair<std::string, std::function<void()>>> tests = {
      {"json", test_json},
      {"crc32", test_crc},
      {"conv gradients", [] { test_conv_gradients(1, 1, 1, 3, 4); }},
      {"conv gradients, stride 2", [] { test_conv_gradients(1, 2, 1, 2, 3); }},
      {"grouped conv gradients", [] { test_conv_gradients(2, 1, 0, 4, 6); }},
      {"depthwise conv gradients", [] { test_conv_gradients(3, 2, 1, 3, 3); }},
      {"depthwise conv gradients, stride 1", [] { test_conv_gradients(3, 1, 1, 3, 3); }},
      {"depthwise conv gradients, no padding", [] { test_conv_gradients(4, 1, 0, 4, 4); }},
      {"pool adjoints", test_pool_adjoints},
      {"basis", test_basis},
      {"local loss lls", [] { test_local_loss(LocalMode::LLS); }},
      {"local loss lls_m", [] { test_local_loss(LocalMode::LLS_M); }},
      {"local loss lls_mxm", [] { test_local_loss(LocalMode::LLS_MXM); }},
      {"engine lls", [] { test_engine_learns("lls"); }},
      {"engine lls_m", [] { test_engine_learns("lls_m"); }},
      {"engine lls_mxm", [] { test_engine_learns("lls_mxm"); }},
      {"engine lls, 2 threads", [] { test_engine_learns("lls", 2); }},
      {"gemm", test_gemm},
      {"thread pool", test_thread_pool},
      {"bad packs", test_bad_packs},
      {"int8 gemm", test_int8_gemm},
      {"int8 engine", test_int8_engine},
  };
  for (const auto& [name, fn] : tests) {
    const int before = failures;
    try {
      fn();
    } catch (const std::exception& e) {
      check(false, name + " threw: " + e.what());
    }
    std::printf("%s %s\n", failures == before ? "ok  " : "FAIL", name.c_str());
  }
  std::printf("%d failure(s)\n", failures);
  return failures;
}
