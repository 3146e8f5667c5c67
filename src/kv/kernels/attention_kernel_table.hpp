// The attention kernel one SIMD level provides: up to kMaxAttentionRows query rows attend to one KV head
// of one sequence, block by block, with an online softmax. Over validated input only. The generic kernel
// is in attention_kernels.hpp, the oracle in attention_reference.cpp (this folder).
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

// Query rows that share the head; row r attends to positions [start[r], context[r]), start < context.
struct AttentionRows {
  std::size_t count;
  const float* q[kMaxAttentionRows];  // [head_dim] each
  float* out[kMaxAttentionRows];      // [head_dim] each; overwritten
  std::size_t context[kMaxAttentionRows];
  std::size_t start[kMaxAttentionRows];
};

struct AttentionKernelTable {
  void (*attend)(const AttentionHead& head, const AttentionRows& rows) noexcept;
};

// The oracle, which the scalar level runs.
const AttentionKernelTable& reference_attention_kernels() noexcept;
// The kernel of one level (attention_dispatch.cpp); the level must be in supported_isa_levels().
const AttentionKernelTable& attention_kernels(IsaLevel level) noexcept;

// The table of each level, for attention_dispatch.cpp: the oracle (attention_reference.cpp) and one per
// attention_<level>.cpp, of which only the levels this build compiles exist. No VNNI table: the
// avx512_vnni level runs the avx512 one.
extern const AttentionKernelTable kAttentionReferenceKernels;
extern const AttentionKernelTable kAttentionAvx2Kernels;
extern const AttentionKernelTable kAttentionAvx512Kernels;

}  // namespace persona::detail
