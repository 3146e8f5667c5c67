// What a PagedKvCache holds: the model's KV shape (layers, KV heads, head dim), the block size, how many
// blocks (or a byte budget that sets the count) and the element type the keys and values are stored in.
#pragma once

#include "persona/core/dtype.hpp"

#include <cstddef>
#include <cstdint>

namespace persona {

// Where one token's row of one KV head sits in a layer's K (or V) array:
//   nhd: [num_blocks, block_size, kv_heads, head_dim] (vLLM's and FlashInfer's default)
//   hnd: [num_blocks, kv_heads, block_size, head_dim] (FlashInfer's HND): a head's rows of one block are
//        contiguous, which attention on a CPU reads at a higher rate (docs/performance.md).
enum class KvLayout : std::uint8_t { nhd, hnd };

struct KvCacheConfig {
  std::size_t layers = 0;
  std::size_t kv_heads = 0;
  std::size_t head_dim = 0;  // at most kMaxHeadDim
  // Tokens per block; a power of two, so that a position splits into (block, slot) by shift and mask.
  std::size_t block_size = 16;
  // The pool's size: num_blocks if non-zero, else as many blocks as fit in byte_budget.
  std::size_t num_blocks = 0;
  std::size_t byte_budget = 0;
  // f32, f16, bf16, or i8 (codes with one f32 scale per token and KV head: absmax / 127).
  DType storage = DType::f32;
  KvLayout layout = KvLayout::nhd;

  // Bytes one block takes over all layers, keys and values (and int8 scales): the unit of byte_budget.
  std::size_t block_bytes() const noexcept;
  // Throws Error(invalid_argument) naming the first field out of range.
  void validate() const;
};

inline constexpr std::size_t kMaxHeadDim = 512;

}  // namespace persona
