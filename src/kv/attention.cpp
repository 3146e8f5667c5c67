#include "persona/kv/attention.hpp"

#include "core/thread_scratch.hpp"
#include "kv/kernels/attention_kernel_table.hpp"
#include "persona/core/error.hpp"
#include "persona/core/threading.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <bit>
#include <cmath>
#include <vector>

namespace persona {
namespace {

// One batch of paged attention, validated: sequence i's queries are rows [first_query[i], +query_count[i])
// of q; work items are (sequence, KV head, chunk of at most kMaxAttentionRows query rows).
struct AttentionBatch {
  const PagedKvCache* cache;
  std::size_t layer;
  std::span<const SequenceId> sequences;
  std::span<const std::size_t> query_counts;  // empty: one query per sequence (decode)
  std::span<const std::size_t> first_query;   // prefill only
  TensorView<const float> q;
  TensorView<float> out;
  std::size_t group = 1;  // query heads per KV head
  float scale = 1.0f;
  std::size_t window = 0;  // 0: none

  // The first position a query at context length `context` (position context - 1) attends to.
  std::size_t window_start(std::size_t context) const noexcept {
    return window == 0 || context <= window ? 0 : context - window;
  }

  std::size_t queries(std::size_t i) const noexcept { return query_counts.empty() ? 1 : query_counts[i]; }
  std::size_t query_row(std::size_t i) const noexcept { return query_counts.empty() ? i : first_query[i]; }
};

// first_query: where the prefill's query offsets go (kept by the caller while the batch runs).
AttentionBatch validate_batch(const PagedKvCache& cache, std::size_t layer, std::span<const SequenceId> sequences,
                              std::span<const std::size_t> query_counts, bool prefill, TensorView<const float> q,
                              TensorView<float> out, const AttentionConfig& config, const char* function,
                              std::vector<std::size_t>* first_query = nullptr) {
  const KvCacheConfig& c = cache.config();
  AttentionBatch batch{&cache, layer, sequences, query_counts, {}, q, out};
  PERSONA_CHECK_AT(function, out_of_range, layer < c.layers, "layer {} of a cache with {} layers", layer, c.layers);
  PERSONA_CHECK_AT(function, invalid_argument, config.q_heads != 0 && config.q_heads % c.kv_heads == 0,
                   "q_heads is {}; expected a positive multiple of the cache's {} KV heads", config.q_heads,
                   c.kv_heads);
  PERSONA_CHECK_AT(function, invalid_argument, config.scale >= 0.0f && std::isfinite(config.scale),
                   "scale is {}; expected finite and >= 0 (0: 1/sqrt(head_dim))", config.scale);
  std::size_t total = sequences.size();
  if (prefill) {
    PERSONA_CHECK_AT(function, shape_mismatch, query_counts.size() == sequences.size(),
                     "{} query counts for {} sequences", query_counts.size(), sequences.size());
    total = 0;
    first_query->resize(sequences.size());
    for (std::size_t i = 0; i < sequences.size(); ++i) {
      (*first_query)[i] = total;
      total += query_counts[i];
    }
    batch.first_query = *first_query;
  }
  const auto expected = Shape{total, config.q_heads, c.head_dim};
  PERSONA_CHECK_AT(function, shape_mismatch, q.shape() == expected && q.is_contiguous(),
                   "q has shape {}; expected contiguous {}", q.shape().to_string(), expected.to_string());
  PERSONA_CHECK_AT(function, shape_mismatch, out.shape() == expected && out.is_contiguous(),
                   "out has shape {}; expected contiguous {}", out.shape().to_string(), expected.to_string());
  for (const float x : q.span()) {
    PERSONA_CHECK_AT(function, invalid_argument, std::isfinite(x), "q holds a NaN or infinite value");
  }
  for (std::size_t i = 0; i < sequences.size(); ++i) {
    const SequenceInfo info = cache.sequence_info(sequences[i]);
    const std::size_t written = cache.written_tokens(sequences[i], layer);
    const std::size_t n = batch.queries(i);
    PERSONA_CHECK_AT(function, out_of_range, info.length != 0 && n <= info.length,
                     "sequence {} (id {:#x}) has {} tokens; {} queries need at least {} and 1", i, sequences[i].value,
                     info.length, n, n);
    PERSONA_CHECK_AT(function, invalid_argument, written >= info.length,
                     "sequence {} (id {:#x}) has K/V written for {} of its {} positions in layer {}", i,
                     sequences[i].value, written, info.length, layer);
  }
  batch.group = config.q_heads / c.kv_heads;
  batch.scale = config.scale > 0.0f ? config.scale : 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  batch.window = config.window;
  return batch;
}

void run_paged(const AttentionBatch& batch) {
  const KvCacheConfig& c = batch.cache->config();
  const std::size_t kv_heads = c.kv_heads, group = batch.group;
  const detail::AttentionKernelTable& kernels = detail::attention_kernels(active_isa_level());
  const KvLayerView layer = batch.cache->layer_view(batch.layer);
  const auto shift = static_cast<std::size_t>(std::countr_zero(c.block_size));
  const float* q = batch.q.data();
  float* out = batch.out.data();
  const std::size_t q_heads = kv_heads * group, dim = c.head_dim;
  // Work item (sequence, KV head): its query rows are (query t, head g) pairs, t major.
  parallel_for(batch.sequences.size() * kv_heads, 1, [&](std::size_t begin, std::size_t end) {
    for (std::size_t item = begin; item < end; ++item) {
      const std::size_t i = item / kv_heads, head = item % kv_heads;
      const std::span<const BlockId> blocks = batch.cache->blocks(batch.sequences[i]);
      const std::size_t length = batch.cache->sequence_info(batch.sequences[i]).length;
      const std::size_t queries = batch.queries(i), first = batch.query_row(i);
      const detail::AttentionHead view{layer, blocks.data(), shift, head, batch.scale};
      const std::size_t rows_total = queries * group;
      for (std::size_t chunk = 0; chunk < rows_total; chunk += detail::kMaxAttentionRows) {
        detail::AttentionRows rows{};
        rows.count = std::min(detail::kMaxAttentionRows, rows_total - chunk);
        for (std::size_t r = 0; r < rows.count; ++r) {
          const std::size_t t = (chunk + r) / group, g = (chunk + r) % group;
          const std::size_t offset = ((first + t) * q_heads + head * group + g) * dim;
          rows.q[r] = q + offset;
          rows.out[r] = out + offset;
          rows.context[r] = length - queries + t + 1;
          rows.start[r] = batch.window_start(rows.context[r]);
        }
        kernels.attend(view, rows);
      }
    }
  });
}

void run_dense(const AttentionBatch& batch) {
  const KvCacheConfig& c = batch.cache->config();
  const std::size_t kv_heads = c.kv_heads, dim = c.head_dim, q_heads = kv_heads * batch.group;
  using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  for (std::size_t i = 0; i < batch.sequences.size(); ++i) {
    const std::size_t length = batch.cache->sequence_info(batch.sequences[i]).length;
    Tensor<float> k({length, kv_heads, dim}), v({length, kv_heads, dim});
    batch.cache->read_kv(batch.sequences[i], batch.layer, k, v, batch.cache->sequence_info(batch.sequences[i]).tenant);
    const std::size_t queries = batch.queries(i), first = batch.query_row(i);
    for (std::size_t head = 0; head < q_heads; ++head) {
      const std::size_t kv_head = head / batch.group;
      const Eigen::Map<const RowMajor, 0, Eigen::OuterStride<>> keys(
          k.data() + kv_head * dim, Eigen::Index(length), Eigen::Index(dim),
          Eigen::OuterStride<>(Eigen::Index(kv_heads * dim)));
      const Eigen::Map<const RowMajor, 0, Eigen::OuterStride<>> values(
          v.data() + kv_head * dim, Eigen::Index(length), Eigen::Index(dim),
          Eigen::OuterStride<>(Eigen::Index(kv_heads * dim)));
      for (std::size_t t = 0; t < queries; ++t) {
        const std::size_t context = length - queries + t + 1, start = batch.window_start(context);
        const auto span = Eigen::Index(context - start);
        const std::size_t offset = ((first + t) * q_heads + head) * dim;
        const Eigen::Map<const Eigen::VectorXf> query(batch.q.data() + offset, Eigen::Index(dim));
        const Eigen::VectorXd scores =
            (keys.middleRows(Eigen::Index(start), span).cast<double>() * query.cast<double>()) *
            static_cast<double>(batch.scale);
        const Eigen::VectorXd weights = (scores.array() - scores.maxCoeff()).exp();
        const Eigen::VectorXd result =
            values.middleRows(Eigen::Index(start), span).cast<double>().transpose() * weights / weights.sum();
        Eigen::Map<Eigen::VectorXf>(batch.out.data() + offset, Eigen::Index(dim)) = result.cast<float>();
      }
    }
  }
}

}  // namespace

void paged_decode_attention(const PagedKvCache& cache, std::size_t layer, std::span<const SequenceId> sequences,
                            TensorView<const float> q, TensorView<float> out, const AttentionConfig& config) {
  run_paged(validate_batch(cache, layer, sequences, {}, false, q, out, config, "paged_decode_attention"));
}

void paged_decode_attention_ref(const PagedKvCache& cache, std::size_t layer, std::span<const SequenceId> sequences,
                                TensorView<const float> q, TensorView<float> out, const AttentionConfig& config) {
  run_dense(validate_batch(cache, layer, sequences, {}, false, q, out, config, "paged_decode_attention_ref"));
}

void paged_prefill_attention(const PagedKvCache& cache, std::size_t layer, std::span<const SequenceId> sequences,
                             std::span<const std::size_t> query_counts, TensorView<const float> q,
                             TensorView<float> out, const AttentionConfig& config) {
  detail::ThreadScratch<std::vector<std::size_t>> first_query;  // a warm call allocates nothing
  run_paged(validate_batch(cache, layer, sequences, query_counts, true, q, out, config, "paged_prefill_attention",
                           &first_query.get()));
}

void paged_prefill_attention_ref(const PagedKvCache& cache, std::size_t layer, std::span<const SequenceId> sequences,
                                 std::span<const std::size_t> query_counts, TensorView<const float> q,
                                 TensorView<float> out, const AttentionConfig& config) {
  std::vector<std::size_t> first_query;
  run_dense(validate_batch(cache, layer, sequences, query_counts, true, q, out, config, "paged_prefill_attention_ref",
                           &first_query));
}

}  // namespace persona
