// One layer of a PagedKvCache's pool as plain pointers and sizes: what the attention kernels read.
#pragma once

#include "persona/core/dtype.hpp"
#include "persona/kv/kv_cache_config.hpp"

#include <cstddef>
#include <cstdint>

namespace persona {

// A block of a PagedKvCache's pool, by index; kNoBlock where there is none.
using BlockId = std::int32_t;
inline constexpr BlockId kNoBlock = -1;

// What the attention kernels read: one layer's pool. Shapes per layer, by layout:
//   k, v      nhd [num_blocks, block_size, kv_heads, head_dim], hnd [num_blocks, kv_heads, block_size,
//             head_dim] of `storage`
//   k_scale, v_scale  the same without head_dim, f32, int8 storage only (else null)
struct KvLayerView {
  const std::byte* k = nullptr;
  const std::byte* v = nullptr;
  const float* k_scale = nullptr;
  const float* v_scale = nullptr;
  DType storage = DType::f32;
  KvLayout layout = KvLayout::nhd;
  std::size_t block_size = 0;
  std::size_t kv_heads = 0;
  std::size_t head_dim = 0;

  // Index of the row (of head_dim elements; also of its int8 scale) of the token at `offset` in `block`,
  // KV head `head`, among the layer's rows.
  std::size_t row_index(std::size_t block, std::size_t offset, std::size_t head) const noexcept {
    return layout == KvLayout::nhd ? (block * block_size + offset) * kv_heads + head
                                   : (block * kv_heads + head) * block_size + offset;
  }
};

}  // namespace persona
