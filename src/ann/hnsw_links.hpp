// The HNSW graph's link lists as inserts and searches share them: slot ids, the size limits, lock-free
// reads and writes of single entries, and the per-node spin lock that serializes rewrites of one node.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace persona::detail {

using Slot = std::uint32_t;             // a node's index in the index's arrays
constexpr std::size_t kMaxLevel = 15;   // a node's highest layer; levels are stored as u8
constexpr std::size_t kMaxLinks = 256;  // 2 M for the largest M

// A list is [count, slot...]. Link lists are read without locks while inserts rewrite them: every entry
// is an atomic word, read with acquire and written with release (plain moves on x86), so a reader sees
// old or new slots, each valid, and the vector of every slot it reads is already written.
inline Slot load_link(const Slot* p) noexcept {
  return std::atomic_ref<Slot>(*const_cast<Slot*>(p)).load(std::memory_order_acquire);
}
inline void store_link(Slot* p, Slot value) noexcept {
  std::atomic_ref<Slot>(*p).store(value, std::memory_order_release);
}

// A node's lock: serializes the inserts that rewrite its link lists. Held for a few hundred distances at
// most, so spinning beats parking the thread.
class SpinLock {
 public:
  void lock() noexcept {
    while (flag_.exchange(true, std::memory_order_acquire)) {
      while (flag_.load(std::memory_order_relaxed)) {
      }
    }
  }
  void unlock() noexcept { flag_.store(false, std::memory_order_release); }

 private:
  std::atomic<bool> flag_{false};
};

}  // namespace persona::detail
