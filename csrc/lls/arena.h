// A static arena: one allocation made at load time; every buffer of a training step is carved from it,
// so a step never calls malloc. Too small an arena is reported with the size it needs.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>

namespace edgeml::lls {

struct ArenaError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Arena {
 public:
  static constexpr size_t kAlign = 64;
  Arena() = default;
  explicit Arena(size_t capacity) : capacity_(capacity) {
    if (capacity_ > static_cast<size_t>(-1) / 4) throw std::bad_alloc();  // capacity_ + kAlign must not wrap
    if (capacity_ > 0) {
      buf_.reset(static_cast<uint8_t*>(::operator new(capacity_ + kAlign)));
      base_ = buf_.get() + (kAlign - reinterpret_cast<uintptr_t>(buf_.get()) % kAlign) % kAlign;
    }
  }

  // An arena that only counts: alloc returns null and records how much a real arena would need.
  static Arena sizing() {
    Arena a;
    a.capacity_ = static_cast<size_t>(-1) / 2;
    return a;
  }

  template <typename T>
  T* alloc(size_t count, const char* what) {
    const size_t bytes = (count * sizeof(T) + kAlign - 1) / kAlign * kAlign;
    if (used_ + bytes > capacity_)
      throw ArenaError(std::string("arena too small: ") + what + " needs " + std::to_string(bytes) +
                       " more bytes beyond " + std::to_string(used_) + " of " + std::to_string(capacity_) +
                       " (give at least the engine's required_bytes, or leave arena_bytes at 0 to size it)");
    T* p = base_ ? reinterpret_cast<T*>(base_ + used_) : nullptr;
    used_ += bytes;
    if (used_ > peak_) peak_ = used_;
    return p;
  }
  size_t mark() const { return used_; }
  void release(size_t mark) { used_ = mark; }  // frees everything carved after `mark`
  void reserve_to(size_t mark) {  // keeps [0, mark) carved (after carving overlapping regions from one mark)
    used_ = mark;
    if (used_ > peak_) peak_ = used_;
  }
  size_t capacity() const { return capacity_; }
  size_t used() const { return used_; }
  size_t peak() const { return peak_; }

  // Rounds a request like alloc does (for sizing the arena before creating it).
  static size_t rounded(size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

 private:
  struct Free {
    void operator()(uint8_t* p) const { ::operator delete(p); }
  };
  std::unique_ptr<uint8_t, Free> buf_;
  uint8_t* base_ = nullptr;
  size_t capacity_ = 0, used_ = 0, peak_ = 0;
};

}  // namespace edgeml::lls
