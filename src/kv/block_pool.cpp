#include "kv/block_pool.hpp"

#include "persona/core/error.hpp"

#include <limits>

namespace persona::detail {

BlockPool::BlockPool(std::size_t num_blocks) : nodes_(num_blocks) {
  PERSONA_CHECK(num_blocks > 0 && num_blocks <= static_cast<std::size_t>(std::numeric_limits<BlockId>::max()),
                "num_blocks is {}; expected 1..{}", num_blocks, std::numeric_limits<BlockId>::max());
  // Pushed in reverse so that allocation hands out blocks 0, 1, 2, ... (tests and dumps read easier).
  for (std::size_t i = num_blocks; i-- > 0;) push_free(static_cast<BlockId>(i));
}

void BlockPool::push_free(BlockId block) noexcept {
  nodes_[index(block)].next = free_head_;
  free_head_ = block;
  ++free_;
}

void BlockPool::push_cached(BlockId block) noexcept {
  Node& node = nodes_[index(block)];
  node.prev = lru_tail_;
  node.next = kNoBlock;
  if (lru_tail_ != kNoBlock) {
    nodes_[index(lru_tail_)].next = block;
  } else {
    lru_head_ = block;
  }
  lru_tail_ = block;
}

void BlockPool::unlink_cached(BlockId block) noexcept {
  Node& node = nodes_[index(block)];
  if (node.prev != kNoBlock) {
    nodes_[index(node.prev)].next = node.next;
  } else {
    lru_head_ = node.next;
  }
  if (node.next != kNoBlock) {
    nodes_[index(node.next)].prev = node.prev;
  } else {
    lru_tail_ = node.prev;
  }
  node.prev = node.next = kNoBlock;
}

BlockPool::Allocation BlockPool::allocate() noexcept {
  Allocation result;
  if (free_head_ != kNoBlock) {
    result.block = free_head_;
    free_head_ = nodes_[index(result.block)].next;
    --free_;
  } else if (lru_head_ != kNoBlock) {
    result.block = lru_head_;
    result.evicted = true;
    unlink_cached(result.block);
  } else {
    return result;
  }
  Node& node = nodes_[index(result.block)];
  node.refs = 1;
  node.next = kNoBlock;
  node.cacheable = false;
  ++used_;
  return result;
}

void BlockPool::retain(BlockId block) noexcept {
  Node& node = nodes_[index(block)];
  if (node.refs++ == 0) {
    PERSONA_ASSERT(node.cacheable);  // only cached blocks are found while unreferenced
    unlink_cached(block);
    ++used_;
  }
}

std::uint32_t BlockPool::release(BlockId block) noexcept {
  Node& node = nodes_[index(block)];
  PERSONA_ASSERT(node.refs > 0);
  if (--node.refs == 0) {
    --used_;
    if (node.cacheable) {
      push_cached(block);
    } else {
      push_free(block);
    }
  }
  return node.refs;
}

void BlockPool::set_cacheable(BlockId block, bool cacheable) noexcept {
  PERSONA_ASSERT(nodes_[index(block)].refs > 0);
  nodes_[index(block)].cacheable = cacheable;
}

void BlockPool::uncache(BlockId block) noexcept {
  Node& node = nodes_[index(block)];
  PERSONA_ASSERT(node.refs == 0 && node.cacheable);
  unlink_cached(block);
  node.cacheable = false;
  push_free(block);
}

}  // namespace persona::detail
