// Tests of paged attention: decode and prefill over fragmented block tables against the dense reference
// at every SIMD level and thread count, for every storage type and layout, and bad input.
#include "test_support.hpp"

#include <persona/core/error.hpp>
#include <persona/kv/attention.hpp>
#include <persona/kv/paged_kv_cache.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

using namespace persona;
using persona::test::for_each_level_and_threads;
using persona::test::iota_tokens;
using persona::test::random_tensor;

namespace {

struct AttentionCase {
  std::size_t block_size, kv_heads, group, head_dim;
  DType storage;
  KvLayout layout = KvLayout::nhd;
};

// A cache whose sequences (one per context length) were appended round-robin in uneven steps, so their
// blocks interleave across the pool: a fragmented page table.
PagedKvCache fragmented_cache(const AttentionCase& c, const std::vector<std::size_t>& contexts,
                              std::vector<SequenceId>& ids, std::uint32_t seed) {
  std::size_t total = 0;
  for (std::size_t n : contexts) total += (n + c.block_size - 1) / c.block_size + 1;
  PagedKvCache cache(KvCacheConfig{1, c.kv_heads, c.head_dim, c.block_size, total + 4, 0, c.storage, c.layout});
  std::mt19937 rng(seed);
  ids.clear();
  std::vector<std::size_t> done(contexts.size(), 0);
  for (std::size_t i = 0; i < contexts.size(); ++i) ids.push_back(cache.create_sequence({1, i}));
  for (bool more = true; more;) {
    more = false;
    for (std::size_t i = 0; i < contexts.size(); ++i) {
      const std::size_t step = std::min(contexts[i] - done[i], 1 + rng() % (2 * c.block_size + 5));
      if (step == 0) continue;
      more = true;
      const Tensor<float> k = random_tensor({1, step, c.kv_heads, c.head_dim}, static_cast<std::uint32_t>(rng()));
      const Tensor<float> v = random_tensor({1, step, c.kv_heads, c.head_dim}, static_cast<std::uint32_t>(rng()));
      cache.append(ids[i], std::vector<std::int32_t>(step, 3), k, v);
      done[i] += step;
    }
  }
  return cache;
}

float max_abs_difference(const Tensor<float>& a, const Tensor<float>& b) {
  float worst = 0.0f;
  for (std::size_t i = 0; i < a.numel(); ++i) worst = std::max(worst, std::fabs(a.data()[i] - b.data()[i]));
  return worst;
}

}  // namespace

TEST_CASE("Paged decode attention equals dense attention over a contiguous copy", "[kv]") {
  const std::vector<std::size_t> contexts{1, 2, 15, 16, 17, 33, 100, 513, 4096};
  std::vector<AttentionCase> cases;
  for (std::size_t block_size : {1u, 16u, 32u}) {
    for (std::size_t group : {1u, 4u, 8u}) {
      for (DType storage : {DType::f32, DType::i8}) cases.push_back({block_size, 2, group, 128, storage});
    }
  }
  cases.push_back({16, 2, 4, 128, DType::f16});
  cases.push_back({16, 2, 4, 128, DType::bf16});
  cases.push_back({16, 1, 32, 20, DType::f32});  // 32 query heads on one KV head: two row chunks; dim tails
  cases.push_back({4, 3, 2, 13, DType::i8});
  // The head-major layout: a head's rows of a block contiguous.
  cases.push_back({16, 2, 4, 128, DType::f32, KvLayout::hnd});
  cases.push_back({1, 2, 8, 128, DType::i8, KvLayout::hnd});
  cases.push_back({32, 3, 2, 13, DType::bf16, KvLayout::hnd});
  cases.push_back({4, 2, 4, 20, DType::f16, KvLayout::hnd});
  std::uint32_t seed = 1;
  for (const AttentionCase& c : cases) {
    DYNAMIC_SECTION("block " << c.block_size << ", gqa " << c.group << ", dim " << c.head_dim << ", "
                             << name_of(c.storage) << (c.layout == KvLayout::nhd ? ", nhd" : ", hnd")) {
      std::vector<SequenceId> ids;
      const PagedKvCache cache = fragmented_cache(c, contexts, ids, ++seed);
      const AttentionConfig config{c.kv_heads * c.group};
      const Tensor<float> q = random_tensor({ids.size(), config.q_heads, c.head_dim}, ++seed);
      Tensor<float> expected(q.shape());
      paged_decode_attention_ref(cache, 0, ids, q, expected, config);
      for_each_level_and_threads([&](IsaLevel, int) {
        Tensor<float> out(q.shape());
        paged_decode_attention(cache, 0, ids, q, out, config);
        CHECK(max_abs_difference(out, expected) < 2e-5f);
      });
    }
  }
}

TEST_CASE("Paged prefill attention is causal over the cached prefix and the new tokens", "[kv]") {
  for (const auto& [storage, layout] : {std::pair{DType::f32, KvLayout::nhd}, std::pair{DType::i8, KvLayout::hnd}}) {
    DYNAMIC_SECTION(name_of(storage)) {
      const AttentionCase c{16, 2, 4, 64, storage, layout};
      std::vector<SequenceId> ids;
      const std::vector<std::size_t> contexts{5, 40, 300};
      const PagedKvCache cache = fragmented_cache(c, contexts, ids, 99);
      const std::vector<std::size_t> queries{5, 17, 33};  // the first: a prompt with no cached prefix
      const AttentionConfig config{8, 0.2f};
      const Tensor<float> q = random_tensor({55, 8, 64}, 5);
      Tensor<float> expected(q.shape());
      paged_prefill_attention_ref(cache, 0, ids, queries, q, expected, config);
      // Causality: the first query of a sequence with no prefix sees one position: its V row exactly.
      Tensor<float> k({5, 2, 64}), v({5, 2, 64});
      cache.read_kv(ids[0], 0, k, v, 1);
      for (std::size_t d = 0; d < 64; ++d) CHECK(expected(0, 0, d) == Approx(v(0, 0, d)).margin(1e-6));
      for_each_level_and_threads([&](IsaLevel, int) {
        Tensor<float> out(q.shape());
        paged_prefill_attention(cache, 0, ids, queries, q, out, config);
        CHECK(max_abs_difference(out, expected) < 2e-5f);
        // The last query of each sequence is its decode query.
        Tensor<float> last({3, 8, 64}), decoded({3, 8, 64});
        std::size_t row = 0;
        for (std::size_t i = 0; i < 3; ++i) {
          row += queries[i];
          std::copy_n(&q(row - 1, 0, 0), 8 * 64, &last(i, 0, 0));
        }
        paged_decode_attention(cache, 0, ids, last, decoded, config);
        row = 0;
        for (std::size_t i = 0; i < 3; ++i) {
          row += queries[i];
          for (std::size_t j = 0; j < 8 * 64; ++j) CHECK((&decoded(i, 0, 0))[j] == (&out(row - 1, 0, 0))[j]);
        }
      });
    }
  }
}

TEST_CASE("Sliding-window attention sees only the last window positions", "[kv]") {
  for (const auto& [storage, layout] : {std::pair{DType::f32, KvLayout::nhd}, std::pair{DType::i8, KvLayout::hnd}}) {
    DYNAMIC_SECTION(name_of(storage)) {
      const AttentionCase c{4, 2, 2, 24, storage, layout};
      std::vector<SequenceId> ids;
      const std::vector<std::size_t> contexts{3, 21, 70};
      const PagedKvCache cache = fragmented_cache(c, contexts, ids, 7);
      for (const std::size_t window : {1u, 5u, 16u, 40u}) {
        const AttentionConfig config{4, 0.0f, window};
        const std::vector<std::size_t> queries{3, 9, 37};
        const Tensor<float> q = random_tensor({49, 4, 24}, static_cast<std::uint32_t>(window));
        Tensor<float> expected(q.shape());
        paged_prefill_attention_ref(cache, 0, ids, queries, q, expected, config);
        // An independent oracle: each query attends without a window to a cache holding only its window.
        std::size_t row = 0;
        for (std::size_t i = 0; i < ids.size(); ++i) {
          Tensor<float> k({contexts[i], 2, 24}), v({contexts[i], 2, 24});
          cache.read_kv(ids[i], 0, k, v, 1);
          for (std::size_t t = 0; t < queries[i]; ++t, ++row) {
            const std::size_t context = contexts[i] - queries[i] + t + 1;
            const std::size_t start = context > window ? context - window : 0, n = context - start;
            PagedKvCache alone(KvCacheConfig{1, 2, 24, 4, n / 4 + 2, 0, DType::f32, KvLayout::nhd});
            const SequenceId id = alone.create_sequence({1});
            alone.append(id, std::vector<std::int32_t>(n, 3), TensorView<const float>(&k(start, 0, 0), {1, n, 2, 24}),
                         TensorView<const float>(&v(start, 0, 0), {1, n, 2, 24}));
            Tensor<float> one({1, 4, 24});
            paged_decode_attention_ref(alone, 0, std::vector<SequenceId>{id},
                                       TensorView<const float>(&q(row, 0, 0), {1, 4, 24}), one, AttentionConfig{4});
            for (std::size_t j = 0; j < 4 * 24; ++j)
              CHECK(one.data()[j] == Approx((&expected(row, 0, 0))[j]).margin(1e-5));
          }
        }
        for_each_level_and_threads([&](IsaLevel, int) {
          Tensor<float> out(q.shape());
          paged_prefill_attention(cache, 0, ids, queries, q, out, config);
          CHECK(max_abs_difference(out, expected) < 2e-5f);
          Tensor<float> last({3, 4, 24}), decoded({3, 4, 24}), decoded_ref({3, 4, 24});
          std::size_t end = 0;
          for (std::size_t i = 0; i < 3; ++i) {
            end += queries[i];
            std::copy_n(&q(end - 1, 0, 0), 4 * 24, &last(i, 0, 0));
          }
          paged_decode_attention(cache, 0, ids, last, decoded, config);
          paged_decode_attention_ref(cache, 0, ids, last, decoded_ref, config);
          CHECK(max_abs_difference(decoded, decoded_ref) < 2e-5f);
        });
      }
    }
  }
}

TEST_CASE("Bad input to attention is a clear Error", "[kv]") {
  PagedKvCache cache(KvCacheConfig{1, 2, 8, 4, 8});
  const SequenceId s = cache.create_sequence({1, {}, iota_tokens(3, 0)});
  const std::vector<SequenceId> ids{s};
  Tensor<float> q({1, 4, 8}), out({1, 4, 8});
  PERSONA_REQUIRE_ERROR(paged_decode_attention(cache, 0, ids, q, out, {4}), invalid_argument,
                        "K/V written for 0 of its 3 positions in layer 0");
  Tensor<float> kv({3, 2, 8});
  cache.write_kv(s, 0, kv, kv);
  CHECK_NOTHROW(paged_decode_attention(cache, 0, ids, q, out, {4}));
  PERSONA_REQUIRE_ERROR(paged_decode_attention(cache, 0, ids, q, out, {3}), invalid_argument,
                        "q_heads is 3; expected a positive multiple of the cache's 2 KV heads");
  PERSONA_REQUIRE_ERROR(paged_decode_attention(cache, 1, ids, q, out, {4}), out_of_range, "layer 1 of a cache");
  Tensor<float> wide({1, 4, 9});
  PERSONA_REQUIRE_ERROR(paged_decode_attention(cache, 0, ids, wide, out, {4}), shape_mismatch,
                        "q has shape [1, 4, 9]; expected contiguous [1, 4, 8]");
  q(0, 1, 1) = INFINITY;
  PERSONA_REQUIRE_ERROR(paged_decode_attention(cache, 0, ids, q, out, {4}), invalid_argument, "q holds a NaN");
  q(0, 1, 1) = 0.0f;
  const std::vector<std::size_t> too_many{4};
  Tensor<float> q4({4, 4, 8}), out4({4, 4, 8});
  PERSONA_REQUIRE_ERROR(paged_prefill_attention(cache, 0, ids, too_many, q4, out4, {4}), out_of_range,
                        "has 3 tokens; 4 queries");
  const SequenceId empty = cache.create_sequence({1, {}, {}});
  const std::vector<SequenceId> with_empty{empty};
  PERSONA_REQUIRE_ERROR(paged_decode_attention(cache, 0, with_empty, q, out, {4}), out_of_range, "has 0 tokens");
  cache.free_sequence(empty, 1);
  PERSONA_REQUIRE_ERROR(paged_decode_attention(cache, 0, with_empty, q, out, {4}), not_found, "unknown or freed");
  // An empty batch does nothing.
  Tensor<float> none({0, 4, 8});
  CHECK_NOTHROW(paged_decode_attention(cache, 0, {}, none, none, {4}));
}
