// One layer of a PagedKvCache's pool as plain pointers and sizes: what the attention kernels read.
#pragma once

#include "persona/core/dtype.hpp"

#include <cstddef>

namespace persona::kv {

// What the attention kernels read: one layer's pool. Shapes per layer:
//   k, v      [num_blocks, block_size, kv_heads, head_dim] of `storage`
//   k_scale, v_scale  [num_blocks, block_size, kv_heads] f32, int8 storage only (else null)
struct KvLayerView {
  const std::byte* k = nullptr;
  const std::byte* v = nullptr;
  const float* k_scale = nullptr;
  const float* v_scale = nullptr;
  DType storage = DType::f32;
  std::size_t block_size = 0;
  std::size_t kv_heads = 0;
  std::size_t head_dim = 0;
};

}  // namespace persona::kv
