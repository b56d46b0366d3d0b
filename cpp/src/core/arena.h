// A fixed arena: the buffers of a Session are laid out once, allocated in one block, and never
// grow. Use: call layout(fn) where fn(arena) requests every buffer with take<T>(n); the arena runs fn
// twice (measure, then hand out pointers into one 64-byte aligned block).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

namespace diffrt {

class Arena {
 public:
  Arena() = default;
  ~Arena() { std::free(base_); }
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  template <class Fn>
  void layout(Fn&& fn) {
    std::free(base_);
    base_ = nullptr;
    used_ = 0;
    fn(*this);  // measure
    size_ = used_ ? used_ : 64;
    base_ = static_cast<uint8_t*>(std::aligned_alloc(64, (size_ + 63) / 64 * 64));
    if (!base_) throw std::bad_alloc();
    std::memset(base_, 0, size_);
    used_ = 0;
    fn(*this);  // hand out
  }

  template <class T>
  T* take(size_t n) {
    size_t at = used_;
    used_ += (n * sizeof(T) + 63) / 64 * 64;
    return base_ ? reinterpret_cast<T*>(base_ + at) : nullptr;
  }

  size_t bytes() const { return size_; }

 private:
  uint8_t* base_ = nullptr;
  size_t used_ = 0, size_ = 0;
};

}  // namespace diffrt
