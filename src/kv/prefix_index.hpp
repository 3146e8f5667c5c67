// The prefix cache's map from a full block's chain hash to the block that holds it: open addressing with
// linear probing, sized once for the pool (at most one entry per block), so inserts never allocate.
#pragma once

#include "persona/kv/kv_layer_view.hpp"

#include <bit>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace persona::detail {

class PrefixIndex {
 public:
  explicit PrefixIndex(std::size_t num_blocks) : entries_(std::bit_ceil(2 * num_blocks)), mask_(entries_.size() - 1) {}

  BlockId find(std::uint64_t hash) const noexcept {
    for (std::size_t i = home(hash);; i = (i + 1) & mask_) {
      if (entries_[i].block == kNoBlock) return kNoBlock;
      if (entries_[i].hash == hash) return entries_[i].block;
    }
  }
  // False (and nothing changes) when the hash is already present.
  bool insert(std::uint64_t hash, BlockId block) noexcept {
    std::size_t i = home(hash);
    for (; entries_[i].block != kNoBlock; i = (i + 1) & mask_) {
      if (entries_[i].hash == hash) return false;
    }
    entries_[i] = {hash, block};
    return true;
  }
  // Removes the entry (which must exist), shifting later entries of the probe run back into the gap.
  void erase(std::uint64_t hash) noexcept {
    std::size_t gap = home(hash);
    while (entries_[gap].hash != hash || entries_[gap].block == kNoBlock) gap = (gap + 1) & mask_;
    for (std::size_t i = (gap + 1) & mask_; entries_[i].block != kNoBlock; i = (i + 1) & mask_) {
      // An entry may move into the gap only if its home does not lie cyclically in (gap, i].
      const std::size_t distance_to_home = (i - home(entries_[i].hash)) & mask_;
      if (distance_to_home >= ((i - gap) & mask_)) {
        entries_[gap] = entries_[i];
        gap = i;
      }
    }
    entries_[gap] = {0, kNoBlock};
  }

 private:
  struct Entry {
    std::uint64_t hash = 0;
    BlockId block = kNoBlock;
  };
  std::size_t home(std::uint64_t hash) const noexcept { return static_cast<std::size_t>(hash >> 17) & mask_; }

  std::vector<Entry> entries_;
  std::size_t mask_;
};

}  // namespace persona::detail
