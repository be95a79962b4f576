#include "lls/parallel.h"

#ifdef __linux__
#include <sched.h>
#endif

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define EDGEML_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define EDGEML_PAUSE() asm volatile("yield")
#else
#define EDGEML_PAUSE() ((void)0)
#endif

namespace edgeml::lls {

namespace {

// How long a thread polls before it sleeps (a worker between kernels) or yields (the caller waiting for a part
// a worker still runs): long enough to bridge the gaps inside a step, short enough not to steal a busy
// machine's CPU from the thread it is waiting for.
constexpr int kSpins = 4000;

thread_local ThreadPool* t_pool = nullptr;

}  // namespace

int available_threads() {
#ifdef __linux__
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
#endif
  return std::max(1u, std::thread::hardware_concurrency());
}

ThreadPool::ThreadPool(int threads) {
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this, i] { worker(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (std::thread& w : workers_) w.join();
}

bool ThreadPool::claim_and_run(uint32_t generation, int home) {
  // The wave's fields were published before state_ moved to `generation`, and stay until all its parts are done.
  // The generation and the claimed bits are one atomic word, and a wave starts with the bits of the parts it does
  // not have already set: a wave is claimable until its last part is claimed, and a claim succeeds only while its
  // generation is current, so a late worker never runs a part twice or of the wrong wave (the fields it may have
  // read from the next wave are never used). The home part first, else the lowest unclaimed one.
  const int base = base_.load(std::memory_order_acquire);
  void (*fn)(void*, int) = fn_.load(std::memory_order_acquire);
  void* ctx = ctx_.load(std::memory_order_acquire);
  uint64_t cur = state_.load(std::memory_order_acquire);
  int part;
  for (;;) {
    const uint32_t claimed = static_cast<uint32_t>(cur);
    if (static_cast<uint32_t>(cur >> 32) != generation || claimed == 0xffffffffu) return false;
    part = home < kWave && !(claimed >> home & 1u) ? home : __builtin_ctz(~claimed);
    if (state_.compare_exchange_weak(cur, cur | (uint64_t{1} << part), std::memory_order_acq_rel)) break;
  }
  fn(ctx, base + part);
  done_.fetch_add(1, std::memory_order_acq_rel);
  return true;
}

void ThreadPool::run(int parts, void (*fn)(void*, int), void* ctx) {
  if (workers_.empty() || parts <= 1) {
    for (int t = 0; t < parts; ++t) fn(ctx, t);
    return;
  }
  for (int base = 0; base < parts; base += kWave) run_wave(base, std::min(kWave, parts - base), fn, ctx);
}

void ThreadPool::run_wave(int base, int parts, void (*fn)(void*, int), void* ctx) {
  const uint32_t generation = static_cast<uint32_t>(state_.load(std::memory_order_acquire) >> 32) + 1;
  base_.store(base, std::memory_order_release);
  fn_.store(fn, std::memory_order_release);
  ctx_.store(ctx, std::memory_order_release);
  done_.store(0, std::memory_order_release);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    const uint32_t absent = parts >= kWave ? 0u : ~((1u << parts) - 1u);  // claimed from the start
    state_.store(static_cast<uint64_t>(generation) << 32 | absent, std::memory_order_release);
  }
  wake_.notify_all();
  while (claim_and_run(generation, 0)) {
  }
  for (int spins = 0; done_.load(std::memory_order_acquire) < parts; ++spins) {
    if (spins < kSpins) EDGEML_PAUSE();
    else std::this_thread::yield();
  }
}

void ThreadPool::worker(int home) {
  uint32_t seen = 0;
  for (;;) {
    uint32_t generation = static_cast<uint32_t>(state_.load(std::memory_order_acquire) >> 32);
    for (int spins = 0; generation == seen && spins < kSpins; ++spins) {
      EDGEML_PAUSE();
      generation = static_cast<uint32_t>(state_.load(std::memory_order_acquire) >> 32);
    }
    if (generation == seen) {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] {
        return stop_ || static_cast<uint32_t>(state_.load(std::memory_order_acquire) >> 32) != seen;
      });
      if (stop_) return;
      generation = static_cast<uint32_t>(state_.load(std::memory_order_acquire) >> 32);
    }
    seen = generation;
    while (claim_and_run(generation, home)) {
    }
  }
}

ThreadPool* current_pool() { return t_pool; }

PoolScope::PoolScope(ThreadPool* pool) : previous_(t_pool) { t_pool = pool; }
PoolScope::~PoolScope() { t_pool = previous_; }

}  // namespace edgeml::lls
