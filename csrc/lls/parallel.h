// Threads of the LLS engine. Work is cut into a fixed number of parts (the engine's thread count); each part
// owns disjoint outputs or a partial sum that is reduced in part order, so a result depends on the number of
// parts and never on which thread ran a part or when. A pool of persistent workers (one engine, one pool)
// claims the parts; the calling thread claims them too, so on a busy machine where a worker is not scheduled
// the caller simply does the work itself instead of waiting for it. Each thread first claims its own "home"
// part (caller: part 0, worker i: part i): consecutive kernels cut the same tensors the same way, so a thread
// finds the slice it wrote in its own core's cache. No allocation when running a job.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace edgeml::lls {

// [lo, hi) of part `t` of `total` items cut into `parts` near-equal contiguous ranges.
inline void part_range(long total, int parts, int t, long& lo, long& hi) {
  lo = total * t / parts;
  hi = total * (t + 1) / parts;
}

// The processors this process may run on (its affinity mask), at least 1.
int available_threads();

class ThreadPool {
 public:
  explicit ThreadPool(int threads);  // threads - 1 workers; the caller of run() is the last thread
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  int threads() const { return static_cast<int>(workers_.size()) + 1; }
  // fn(ctx, t) for every t in [0, parts); returns when all are done. Not reentrant (one job at a time).
  void run(int parts, void (*fn)(void*, int), void* ctx);

 private:
  static constexpr int kWave = 32;  // parts per job at most (one bit each); run() cuts more into waves
  void run_wave(int base, int parts, void (*fn)(void*, int), void* ctx);
  void worker(int home);
  bool claim_and_run(uint32_t generation, int home);

  std::vector<std::thread> workers_;
  // (generation << 32) | bit mask of the current wave's claimed parts.
  std::atomic<uint64_t> state_{0};
  std::atomic<int> base_{0};
  std::atomic<int> done_{0};
  std::atomic<void (*)(void*, int)> fn_{nullptr};
  std::atomic<void*> ctx_{nullptr};
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
};

// The pool kernels run on (null: the calling thread alone) while an Engine call is in progress; set by
// PoolScope for the current thread only.
ThreadPool* current_pool();
class PoolScope {
 public:
  explicit PoolScope(ThreadPool* pool);
  ~PoolScope();
  PoolScope(const PoolScope&) = delete;
  PoolScope& operator=(const PoolScope&) = delete;

 private:
  ThreadPool* previous_;
};

// Calls fn(t) for every part t in [0, parts): on the current pool when `worth_it` (enough work to pay for
// waking a worker), else in order on this thread. The parts are the same either way, so the result is too.
template <typename F>
void for_parts(int parts, bool worth_it, F&& fn) {
  ThreadPool* pool = current_pool();
  if (worth_it && pool && pool->threads() > 1 && parts > 1) {
    pool->run(parts, [](void* f, int t) { (*static_cast<F*>(f))(t); }, const_cast<void*>(static_cast<const void*>(&fn)));
    return;
  }
  for (int t = 0; t < parts; ++t) fn(t);
}

}  // namespace edgeml::lls
