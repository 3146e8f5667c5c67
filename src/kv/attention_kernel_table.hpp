// The attention kernel one SIMD level provides: up to kMaxAttentionRows query rows attend to one KV head
// of one sequence, block by block, with an online softmax. Over validated input only.
#pragma once

#include "persona/core/cpu_features.hpp"
#include "persona/kv/kv_cache_config.hpp"
#include "persona/kv/kv_layer_view.hpp"

#include <cstddef>
#include <cstdint>

namespace persona::detail {

inline constexpr std::size_t kMaxAttentionRows = 16;
// Tokens scored at once.
inline constexpr std::size_t kAttentionTile = 32;

// One KV head of one sequence in one layer.
struct AttentionHead {
  KvLayerView layer;
  const BlockId* blocks;    // [ceil(max context / block_size)]: the sequence's blocks in token order
  std::size_t block_shift;  // log2(block_size)
  std::size_t head;         // KV head
  float scale;              // multiplies q . k
};

// Query rows that share the head; row r attends to positions [0, context[r]), context[r] >= 1.
struct AttentionRows {
  std::size_t count;
  const float* q[kMaxAttentionRows];  // [head_dim] each
  float* out[kMaxAttentionRows];      // [head_dim] each; overwritten
  std::size_t context[kMaxAttentionRows];
};

struct AttentionKernelTable {
  void (*attend)(const AttentionHead& head, const AttentionRows& rows) noexcept;
};

const AttentionKernelTable& reference_attention_kernels() noexcept;
const AttentionKernelTable& attention_kernels(IsaLevel level) noexcept;

}  // namespace persona::detail
