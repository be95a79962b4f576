// edgeml-finetune: on-device LLS fine-tuning without Python.
//   edgeml-finetune --pack IN --data DIR --out OUT [--blocks last:N] [--epochs E] [--batch B] [--lr LR]
//                   [--optimizer sgd|adamw] [--arena-bytes N] [--max-steps S] [--seed S] [--threads N] [--quiet]
// DIR holds uncompressed IDX files: train-images-idx3-ubyte + train-labels-idx1-ubyte (fine-tuning data) and,
// optionally, t10k-* (held-out data for the accuracy before/after; else the training data is used).
// --threads N: kernel threads (default: one per processor this process may use); a fixed N gives bit-identical
// weights run after run. Prints one JSON line with accuracy before/after, step latency, peak RSS, arena size,
// threads and the layers that run the int8 GEMM (packs with precision.frozen_compute int8); exit 2 on bad input.
#include <sys/resource.h>
#include <sys/stat.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "lls/data.h"
#include "lls/engine.h"

namespace {

using namespace edgeml::lls;

struct Args {
  std::string pack, data, out, blocks;
  int epochs = 1, batch = 32, max_steps = -1, threads = 0;
  unsigned seed = 0;
  float lr = -1.0f;
  std::string optimizer;
  size_t arena_bytes = 0;
  bool quiet = false;
};

const char kUsage[] =
    "usage: edgeml-finetune --pack IN --data DIR --out OUT [--blocks last:N] [--epochs E] [--batch B] [--lr LR] "
    "[--optimizer sgd|adamw] [--arena-bytes N] [--max-steps S] [--seed S] [--threads N (default: all processors)] "
    "[--quiet]";

// Error text on one line: control characters (a newline inside a hostile pack's tensor name) become '?'.
std::string one_line(const std::string& text) {
  std::string out(text);
  for (char& ch : out)
    if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7F) ch = '?';
  return out;
}

[[noreturn]] void fail(const std::string& problem) {
  std::fprintf(stderr, "edgeml-finetune: error: %s\n", one_line(problem).c_str());
  std::exit(2);
}

[[noreturn]] void usage(const std::string& problem) { fail(problem + " (" + kUsage + ")"); }

// The whole of `v` as an integer in [lo, hi] (std::stol alone accepts "12abc" and wraps "-1" for unsigned).
long parse_int(const std::string& k, const std::string& v, long lo, long hi) {
  size_t used = 0;
  long x = 0;
  try {
    x = std::stol(v, &used);
  } catch (const std::logic_error&) {
    used = 0;
  }
  if (used == 0 || used != v.size() || x < lo || x > hi)
    usage(k + " takes an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got '" + v + "'");
  return x;
}

float parse_positive(const std::string& k, const std::string& v) {
  size_t used = 0;
  float x = 0.0f;
  try {
    x = std::stof(v, &used);
  } catch (const std::logic_error&) {
    used = 0;
  }
  if (used == 0 || used != v.size() || !std::isfinite(x) || x <= 0.0f)
    usage(k + " takes a finite number > 0, got '" + v + "'");
  return x;
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (k == "--quiet") {
      a.quiet = true;
      continue;
    }
    if (k == "--help" || k == "-h") {
      std::printf("%s\n", kUsage);
      std::exit(0);
    }
    if (i + 1 >= argc) usage("missing value after " + k);
    const std::string v = argv[++i];
    if (k == "--pack") a.pack = v;
    else if (k == "--data") a.data = v;
    else if (k == "--out") a.out = v;
    else if (k == "--blocks") a.blocks = v;
    else if (k == "--epochs") a.epochs = static_cast<int>(parse_int(k, v, 1, 1000000));
    else if (k == "--batch") a.batch = static_cast<int>(parse_int(k, v, 1, 65536));
    else if (k == "--lr") a.lr = parse_positive(k, v);
    else if (k == "--optimizer") a.optimizer = v;
    else if (k == "--arena-bytes") a.arena_bytes = static_cast<size_t>(parse_int(k, v, 0, 1L << 40));
    else if (k == "--max-steps") a.max_steps = static_cast<int>(parse_int(k, v, 0, INT32_MAX));
    else if (k == "--seed") a.seed = static_cast<unsigned>(parse_int(k, v, 0, UINT32_MAX));
    else if (k == "--threads") a.threads = static_cast<int>(parse_int(k, v, 1, 1024));
    else usage("unknown option " + k);
  }
  if (a.pack.empty() || a.data.empty() || a.out.empty()) usage("--pack, --data and --out are required");
  if (!a.optimizer.empty() && a.optimizer != "sgd" && a.optimizer != "adamw")
    usage("--optimizer takes sgd or adamw, got '" + a.optimizer + "'");
  return a;
}

int parse_blocks(const std::string& spec) {
  if (spec.empty()) return -1;
  if (spec.rfind("last:", 0) != 0) usage("--blocks takes last:N, got '" + spec + "'");
  return static_cast<int>(parse_int("--blocks last:N", spec.substr(5), 1, 100000));
}

// The output must not be an input: the same path, the same inode (a hard link or a symlink to it), or a folder.
// Checked before anything is read or written, so a refused run leaves every file as it was.
void refuse_overwrite(const Args& a) {
  struct stat out_st;
  if (::stat(a.out.c_str(), &out_st) != 0) return;  // a new file: it cannot be an input
  if (S_ISDIR(out_st.st_mode)) fail(a.out + ": --out is a folder; give the path of the output pack");
  std::vector<std::string> inputs = {a.pack};
  for (const char* split : {"train", "t10k"})
    for (const char* kind : {"-images-idx3-ubyte", "-images-idx4-ubyte", "-labels-idx1-ubyte"})
      inputs.push_back(a.data + "/" + split + kind);
  char* out_real = ::realpath(a.out.c_str(), nullptr);
  for (const std::string& in : inputs) {
    struct stat in_st;
    if (::stat(in.c_str(), &in_st) != 0) continue;
    char* in_real = ::realpath(in.c_str(), nullptr);
    const bool same_path = out_real && in_real && std::strcmp(out_real, in_real) == 0;
    std::free(in_real);
    if (same_path || (in_st.st_dev == out_st.st_dev && in_st.st_ino == out_st.st_ino)) {
      std::free(out_real);
      fail(a.out + ": --out is the input " + in + "; write the output to another path");
    }
  }
  std::free(out_real);
}

// Peak RSS of this program: VmHWM (per address space, so a parent's memory before exec does not count),
// else getrusage's ru_maxrss.
long peak_rss_kb() {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (f) {
    char line[256];
    long kb = -1;
    while (std::fgets(line, sizeof line, f))
      if (std::sscanf(line, "VmHWM: %ld kB", &kb) == 1) break;
    std::fclose(f);
    if (kb > 0) return kb;
  }
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

void check_shape(const Engine& e, const ImageSet& s, const std::string& what) {
  const auto& in = e.input_shape();
  if (s.c != in[0] || s.h != in[1] || s.w != in[2])
    throw PackError(what + ": images are " + std::to_string(s.h) + "x" + std::to_string(s.w) + "x" +
                    std::to_string(s.c) + " (HxWxC) but the pack expects " + std::to_string(in[1]) + "x" +
                    std::to_string(in[2]) + "x" + std::to_string(in[0]) + "; resize the data to the net's input");
  for (int32_t l : s.labels)
    if (l >= e.classes())
      throw PackError(what + ": label " + std::to_string(l) + " but the net has " + std::to_string(e.classes()) +
                      " classes");
}

// Gathers images idx[0..n) into u8 staging, then normalises into x (both allocated before training).
void gather(const Engine& e, const ImageSet& s, const int* idx, int n, std::vector<uint8_t>& staging, float* x,
            int32_t* labels) {
  const size_t per = static_cast<size_t>(s.h) * s.w * s.c;
  for (int i = 0; i < n; ++i) {
    std::memcpy(staging.data() + i * per, s.pixels.data() + static_cast<size_t>(idx[i]) * per, per);
    if (labels) labels[i] = s.labels[static_cast<size_t>(idx[i])];
  }
  e.normalise(staging.data(), n, true, x);
}

double accuracy(Engine& e, const ImageSet& s, std::vector<uint8_t>& staging, std::vector<float>& x,
                std::vector<float>& logits) {
  std::vector<int> idx(static_cast<size_t>(s.n));
  std::iota(idx.begin(), idx.end(), 0);
  long correct = 0;
  for (int start = 0; start < s.n; start += e.batch()) {
    const int n = std::min(e.batch(), s.n - start);
    gather(e, s, idx.data() + start, n, staging, x.data(), nullptr);
    e.forward(x.data(), n, logits.data());
    for (int i = 0; i < n; ++i) {
      const float* row = logits.data() + static_cast<size_t>(i) * e.classes();
      const int pred = static_cast<int>(std::max_element(row, row + e.classes()) - row);
      correct += pred == s.labels[static_cast<size_t>(start + i)];
    }
  }
  return s.n ? static_cast<double>(correct) / s.n : 0.0;
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  refuse_overwrite(a);
  try {
    Pack pack = read_pack(a.pack);
    EngineOptions opt;
    opt.batch = a.batch;
    opt.arena_bytes = a.arena_bytes;
    opt.train_last = parse_blocks(a.blocks);
    opt.lr = a.lr;
    opt.optimizer = a.optimizer;
    opt.threads = a.threads;
    Engine engine(pack, opt);
    pack = Pack();  // the weights now live in the arena; drop the file image
    const ImageSet train = read_idx_split(a.data, "train");
    const bool held_out = idx_split_exists(a.data, "t10k");
    const ImageSet test = held_out ? read_idx_split(a.data, "t10k") : train;
    check_shape(engine, train, a.data + "/train");
    check_shape(engine, test, a.data + "/t10k");

    std::vector<uint8_t> staging(static_cast<size_t>(a.batch) * train.h * train.w * train.c);
    std::vector<float> x(static_cast<size_t>(a.batch) * engine.input_size());
    std::vector<float> logits(static_cast<size_t>(a.batch) * engine.classes());
    std::vector<int32_t> labels(static_cast<size_t>(a.batch));
    const double before = accuracy(engine, test, staging, x, logits);

    std::mt19937 rng(a.seed);
    std::vector<int> order(static_cast<size_t>(train.n));
    std::iota(order.begin(), order.end(), 0);
    const int per_epoch = (train.n + a.batch - 1) / a.batch;
    const int total = a.max_steps >= 0 ? std::min(a.max_steps, per_epoch * a.epochs) : per_epoch * a.epochs;
    double step_seconds = 0.0;
    std::vector<double> step_times(static_cast<size_t>(std::max(total, 1)));
    float first_loss = 0.0f, last_loss = 0.0f;
    int steps = 0;
    for (int ep = 0; ep < a.epochs && steps < total; ++ep) {
      std::shuffle(order.begin(), order.end(), rng);
      for (int start = 0; start < train.n && steps < total; start += a.batch) {
        const int n = std::min(a.batch, train.n - start);
        gather(engine, train, order.data() + start, n, staging, x.data(), labels.data());
        const auto t0 = std::chrono::steady_clock::now();
        const StepResult& r = engine.train_step(x.data(), labels.data(), n);
        const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        step_seconds += dt;
        step_times[static_cast<size_t>(steps)] = dt;
        last_loss = r.losses.empty() ? 0.0f : r.losses.back();
        if (steps == 0) first_loss = last_loss;
        ++steps;
        if (!a.quiet && (steps % 10 == 0 || steps == total)) {
          const int width = 30, done = steps * width / std::max(total, 1);
          std::fprintf(stderr, "\rfine-tuning [%.*s%*s] %d/%d steps  loss %.4f", done,
                       "##############################", width - done, "", steps, total, last_loss);
        }
      }
    }
    if (!a.quiet) std::fprintf(stderr, "\n");
    const double after = accuracy(engine, test, staging, x, logits);
    std::sort(step_times.begin(), step_times.begin() + steps);
    const double median = steps ? step_times[static_cast<size_t>(steps / 2)] : 0.0;
    engine.save(a.out);
    std::printf(
        "{\"steps\": %d, \"batch\": %d, \"accuracy_before\": %.6f, \"accuracy_after\": %.6f, \"held_out\": %s, "
        "\"step_ms\": %.4f, \"step_ms_median\": %.4f, \"loss_first\": %.6f, \"loss_last\": %.6f, \"peak_rss_kb\": %ld, \"arena_bytes\": %zu, "
        "\"trainable_tensors\": %zu, \"threads\": %d, \"int8_layers\": %d, \"int8_workspace_bytes\": %zu, "
        "\"out\": \"%s\"}\n",
        steps, a.batch, before, after, held_out ? "true" : "false", steps ? 1e3 * step_seconds / steps : 0.0, 1e3 * median,
        first_loss, last_loss, peak_rss_kb(), engine.arena_capacity(), engine.trainable_tensors().size(),
        engine.threads(), engine.int8_layers(), engine.int8_workspace_bytes(), a.out.c_str());
    return 0;
  } catch (const std::bad_alloc&) {
    fail("out of memory (the pack or the data is larger than this device can hold; try a smaller --batch)");
  } catch (const std::exception& e) {
    fail(e.what());
  }
}
