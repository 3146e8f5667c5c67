// The KV cache's block allocator: a fixed set of blocks with reference counts, a free list of blocks that
// hold nothing, and a least-recently-used list of unreferenced blocks that still hold a cached prefix.
// Allocate, retain, release and touch are O(1) (intrusive lists) and never allocate memory.
#pragma once

#include "persona/kv/kv_layer_view.hpp"

#include <cstddef>
#include <cstdint>
#include <vector>

namespace persona::detail {

class BlockPool {
 public:
  explicit BlockPool(std::size_t num_blocks);

  struct Allocation {
    BlockId block = kNoBlock;  // kNoBlock when every block is referenced
    bool evicted = false;      // the block came from the cached list: its old contents are gone
  };
  // A block with reference count 1: a free one if any, else the least recently used cached one.
  Allocation allocate() noexcept;
  // One more reference; a cached block (count 0) leaves the cached list (a prefix-cache hit).
  void retain(BlockId block) noexcept;
  // One reference less. At zero the block goes to the cached list (most recently used end) if it is
  // cacheable, else to the free list. Returns the new count.
  std::uint32_t release(BlockId block) noexcept;
  // Whether a block at count zero stays cached (evictable) rather than free.
  void set_cacheable(BlockId block, bool cacheable) noexcept;
  // Moves an unreferenced cached block back to the free list (its cached contents were dropped).
  void uncache(BlockId block) noexcept;

  std::uint32_t ref_count(BlockId block) const noexcept { return nodes_[index(block)].refs; }
  bool cacheable(BlockId block) const noexcept { return nodes_[index(block)].cacheable; }
  std::size_t size() const noexcept { return nodes_.size(); }
  std::size_t used() const noexcept { return used_; }
  std::size_t free() const noexcept { return free_; }
  std::size_t cached() const noexcept { return nodes_.size() - used_ - free_; }
  // Blocks an allocation can get: free plus cached.
  std::size_t available() const noexcept { return nodes_.size() - used_; }

 private:
  struct Node {
    std::uint32_t refs = 0;
    BlockId prev = kNoBlock;  // list links: free list (next only) or cached list (both)
    BlockId next = kNoBlock;
    bool cacheable = false;
  };
  static std::size_t index(BlockId block) noexcept { return static_cast<std::size_t>(block); }
  void push_free(BlockId block) noexcept;
  void push_cached(BlockId block) noexcept;
  void unlink_cached(BlockId block) noexcept;

  std::vector<Node> nodes_;
  BlockId free_head_ = kNoBlock;
  BlockId lru_head_ = kNoBlock;  // least recently used cached block: evicted first
  BlockId lru_tail_ = kNoBlock;
  std::size_t used_ = 0;
  std::size_t free_ = 0;
};

}  // namespace persona::detail
