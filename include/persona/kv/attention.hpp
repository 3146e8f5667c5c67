// Attention over a PagedKvCache: decode (one new token per sequence) and prefill (a sequence's newest
// tokens, causal), grouped-query heads, online softmax over the blocks, SIMD over head_dim and threads
// over (sequence, KV head). The *_ref versions copy each sequence's K/V out contiguously and compute
// softmax(q K^T * scale) V densely with Eigen: the oracle the tests hold the paged kernels to.
#pragma once

#include "persona/core/tensor.hpp"
#include "persona/kv/paged_kv_cache.hpp"

#include <cstddef>
#include <span>

namespace persona {

struct AttentionConfig {
  std::size_t q_heads = 0;  // a multiple of the cache's kv_heads; query head h reads KV head h / (q_heads / kv_heads)
  float scale = 0.0f;       // 0: 1 / sqrt(head_dim)
  // Sliding-window attention (Mistral, Qwen2 sliding layers): the query at position p attends to the last
  // `window` positions, p - window + 1 .. p, as transformers' sliding_window mask. 0: all positions.
  std::size_t window = 0;
};

// For sequence i, q[i] ([q_heads, head_dim]) attends to all of the sequence's positions in `layer`
// (whose K/V must be written); out is [batch, q_heads, head_dim]. An empty batch does nothing.
void paged_decode_attention(const PagedKvCache& cache, std::size_t layer, std::span<const SequenceId> sequences,
                            TensorView<const float> q, TensorView<float> out, const AttentionConfig& config);
void paged_decode_attention_ref(const PagedKvCache& cache, std::size_t layer, std::span<const SequenceId> sequences,
                                TensorView<const float> q, TensorView<float> out, const AttentionConfig& config);

// Causal prefill: the queries of sequence i are its last query_counts[i] positions, in order, stacked
// over the batch in q ([sum of query_counts, q_heads, head_dim]; out alike). The query at position p
// attends to positions 0..p: the cached prefix and the new tokens up to itself.
void paged_prefill_attention(const PagedKvCache& cache, std::size_t layer, std::span<const SequenceId> sequences,
                             std::span<const std::size_t> query_counts, TensorView<const float> q,
                             TensorView<float> out, const AttentionConfig& config);
void paged_prefill_attention_ref(const PagedKvCache& cache, std::size_t layer, std::span<const SequenceId> sequences,
                                 std::span<const std::size_t> query_counts, TensorView<const float> q,
                                 TensorView<float> out, const AttentionConfig& config);

}  // namespace persona
