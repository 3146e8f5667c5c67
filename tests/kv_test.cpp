// Tests of the paged KV cache: the block pool, random operation sequences against a simple model,
// prefix caching with tenant and adapter-version isolation, quotas, pins and bad input. Paged attention:
// kv_attention_test.cpp.
#include "allocation_counter.hpp"
#include "kv/paged_kv_cache_state.hpp"  // the prefix match and salt digest, tested directly
#include "test_support.hpp"

#include <persona/core/error.hpp>
#include <persona/kv/paged_kv_cache.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

using namespace persona;
using persona::test::CountAllocations;
using persona::test::for_each_level_and_threads;
using persona::test::iota_tokens;
using persona::test::random_tensor;

namespace {

// The K/V a model would compute at a position: a function of the tokens up to it and of the key its
// block is cached under (the tenant and adapter, or public, and the cache salt). A block served to the
// wrong sequence, tenant or salt therefore reads back wrong values.
struct ModelSequence {
  SequenceId id;
  TenantId tenant = 0;
  AdapterVersionId adapter = {};
  std::size_t shared = 0;
  std::vector<std::int32_t> tokens;
  bool pinned = false;
  std::string salt = {};
};

float model_value(const ModelSequence& s, std::size_t position, std::size_t block_size, std::size_t layer,
                  std::size_t head, std::size_t d, bool is_value) {
  const bool is_public = (position / block_size + 1) * block_size <= s.shared;
  std::uint64_t h = is_public ? 77 : (s.tenant * 1000003u + s.adapter.key * 7919u + s.adapter.version * 104729u + 13);
  for (const char ch : s.salt) h = (h ^ static_cast<unsigned char>(ch)) * 0x100000001b3ull;
  for (std::size_t p = 0; p <= position; ++p) h = (h ^ static_cast<std::uint32_t>(s.tokens[p])) * 0x100000001b3ull;
  h = (h ^ (layer * 131 + head * 17 + d * 3 + (is_value ? 1 : 0))) * 0x9e3779b97f4a7c15ull;
  return static_cast<float>(static_cast<int>((h >> 40) % 2001) - 1000) / 100.0f;
}

void write_model_kv(PagedKvCache& cache, const ModelSequence& s, std::size_t first) {
  const KvCacheConfig& c = cache.config();
  const std::size_t n = s.tokens.size() - first;
  for (std::size_t l = 0; l < c.layers; ++l) {
    Tensor<float> k({n, c.kv_heads, c.head_dim}), v({n, c.kv_heads, c.head_dim});
    for (std::size_t t = 0; t < n; ++t) {
      for (std::size_t h = 0; h < c.kv_heads; ++h) {
        for (std::size_t d = 0; d < c.head_dim; ++d) {
          k(t, h, d) = model_value(s, first + t, c.block_size, l, h, d, false);
          v(t, h, d) = model_value(s, first + t, c.block_size, l, h, d, true);
        }
      }
    }
    cache.write_kv(s.id, l, k, v);
  }
}

// Everything the model says must hold of the cache.
void check_against_model(const PagedKvCache& cache, const std::vector<ModelSequence>& model) {
  const KvCacheConfig& c = cache.config();
  const float tolerance = c.storage == DType::i8 ? 10.0f / 127.0f * 0.51f : 0.0f;
  std::vector<std::uint32_t> refs(cache.num_blocks(), 0);
  std::map<BlockId, std::vector<std::pair<const ModelSequence*, std::size_t>>> holders;
  std::map<TenantId, std::set<BlockId>> held;  // by each tenant's sequences and pins
  for (const ModelSequence& s : model) {
    REQUIRE(cache.contains(s.id));
    REQUIRE(cache.tokens(s.id, s.tenant) == s.tokens);
    const std::span<const BlockId> blocks = cache.blocks(s.id);
    REQUIRE(blocks.size() == (s.tokens.size() + c.block_size - 1) / c.block_size);
    for (std::size_t i = 0; i < blocks.size(); ++i) {
      ++refs[static_cast<std::size_t>(blocks[i])];
      holders[blocks[i]].emplace_back(&s, i);
      held[s.tenant].insert(blocks[i]);
    }
    const std::size_t n = s.tokens.size();
    std::size_t wrong = 0;
    for (std::size_t l = 0; l < c.layers; ++l) {
      Tensor<float> k({n, c.kv_heads, c.head_dim}), v({n, c.kv_heads, c.head_dim});
      cache.read_kv(s.id, l, k, v, s.tenant);
      for (std::size_t t = 0; t < n; ++t) {
        for (std::size_t h = 0; h < c.kv_heads; ++h) {
          for (std::size_t d = 0; d < c.head_dim; ++d) {
            wrong += std::fabs(k(t, h, d) - model_value(s, t, c.block_size, l, h, d, false)) <= tolerance ? 0 : 1;
            wrong += std::fabs(v(t, h, d) - model_value(s, t, c.block_size, l, h, d, true)) <= tolerance ? 0 : 1;
          }
        }
      }
    }
    REQUIRE(wrong == 0);
  }
  std::size_t used = 0;
  for (std::size_t b = 0; b < cache.num_blocks(); ++b) {
    REQUIRE(cache.block_ref_count(static_cast<BlockId>(b)) == refs[b]);
    used += refs[b] > 0 ? 1 : 0;
  }
  const KvCacheStats stats = cache.stats();
  REQUIRE(stats.used_blocks == used);
  REQUIRE(stats.used_blocks + stats.free_blocks + stats.cached_blocks == stats.total_blocks);
  // Each tenant is charged exactly the blocks its own sequences and pins hold, shared ones included.
  for (TenantId t = 0; t < 8; ++t) REQUIRE(cache.tenant_usage(t).blocks == held[t].size());
  // A block two sequences reach sits at the same index in both, over equal tokens, and is either theirs
  // alike (same tenant and adapter) or wholly inside both declared public prefixes.
  for (const auto& [block, list] : holders) {
    for (std::size_t a = 1; a < list.size(); ++a) {
      const ModelSequence& x = *list[0].first;
      const ModelSequence& y = *list[a].first;
      const std::size_t index = list[0].second;
      REQUIRE(list[a].second == index);
      const std::size_t end = std::min({x.tokens.size(), y.tokens.size(), (index + 1) * c.block_size});
      REQUIRE(std::equal(x.tokens.begin(), x.tokens.begin() + static_cast<std::ptrdiff_t>(end), y.tokens.begin()));
      const bool same_owner = x.tenant == y.tenant && x.adapter == y.adapter;
      const bool both_public = (index + 1) * c.block_size <= std::min(x.shared, y.shared);
      REQUIRE((same_owner || both_public));
      REQUIRE(x.salt == y.salt);
    }
  }
}

}  // namespace

TEST_CASE("KvCacheConfig errors name the field", "[kv]") {
  KvCacheConfig c{2, 2, 8, 16, 4};
  CHECK_NOTHROW(PagedKvCache(c));
  auto bad = c;
  bad.block_size = 0;
  PERSONA_REQUIRE_ERROR(PagedKvCache(bad), invalid_argument, "block_size is 0; expected a power of two");
  bad.block_size = 12;
  PERSONA_REQUIRE_ERROR(PagedKvCache(bad), invalid_argument, "block_size is 12");
  bad = c;
  bad.head_dim = 0;
  PERSONA_REQUIRE_ERROR(PagedKvCache(bad), invalid_argument, "head_dim is 0");
  bad = c;
  bad.storage = DType::u8;
  PERSONA_REQUIRE_ERROR(PagedKvCache(bad), invalid_argument, "storage is u8");
  bad = c;
  bad.num_blocks = 0;
  PERSONA_REQUIRE_ERROR(PagedKvCache(bad), invalid_argument, "neither num_blocks nor a byte_budget");
  bad.byte_budget = 3 * c.block_bytes() + 5;
  CHECK(PagedKvCache(bad).num_blocks() == 3);
  bad = c;
  bad.storage = DType::i8;
  CHECK(bad.block_bytes() == 2 * 2 * 16 * 2 * (8 + 4));
}

TEST_CASE("Random operation sequences keep the cache equal to a simple model", "[kv]") {
  for (const auto& [storage, layout] : {std::pair{DType::f32, KvLayout::nhd}, std::pair{DType::i8, KvLayout::nhd},
                                        std::pair{DType::f32, KvLayout::hnd}, std::pair{DType::i8, KvLayout::hnd}}) {
    for (const std::size_t block_size : {1u, 4u, 16u}) {
      DYNAMIC_SECTION(name_of(storage) << (layout == KvLayout::nhd ? ", nhd" : ", hnd") << ", block size "
                                       << block_size) {
        PagedKvCache cache(KvCacheConfig{2, 2, 3, block_size, 112 / block_size + 12, 0, storage, layout});
        const std::vector<std::int32_t> system = iota_tokens(2 * block_size + 1, 1000);
        std::vector<ModelSequence> model;
        std::mt19937 rng(static_cast<std::uint32_t>(block_size * 31 + (storage == DType::i8 ? 7 : 0)));
        auto pick = [&](std::size_t n) { return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng); };
        std::size_t hits = 0, forks = 0, capacity_errors = 0;
        for (int step = 0; step < 400; ++step) {
          const std::size_t op = pick(model.empty() ? 1 : 7);
          const KvCacheStats before = cache.stats();
          try {
            if (op == 0) {  // create: a public system prompt, a tenant prompt, a random tail
              ModelSequence s;
              s.tenant = pick(3);
              const std::size_t adapter = pick(4);  // two adapters, two versions each
              s.adapter = AdapterVersionId{adapter / 2, adapter % 2 + 1};
              const std::size_t declared = std::array<std::size_t, 3>{system.size(), 0, 1000}[pick(3)];
              s.tokens = system;
              const auto own = iota_tokens(pick(2) * block_size, static_cast<std::int32_t>(s.tenant * 100));
              s.tokens.insert(s.tokens.end(), own.begin(), own.end());
              for (std::size_t i = pick(block_size + 2); i > 0; --i)
                s.tokens.push_back(static_cast<std::int32_t>(pick(5)));
              s.shared = std::min(declared, s.tokens.size());  // the cache clamps it to the prompt
              s.salt = pick(4) == 0 ? "user-7" : "";
              s.id = cache.create_sequence(SequenceSpec{.tenant = s.tenant,
                                                        .adapter = s.adapter,
                                                        .prompt = s.tokens,
                                                        .shared_prefix_tokens = declared,
                                                        .cache_salt = s.salt});
              const std::size_t cached = cache.sequence_info(s.id).cached_tokens;
              REQUIRE(cached % block_size == 0);
              REQUIRE(cached < s.tokens.size());
              hits += cached > 0 ? 1 : 0;
              write_model_kv(cache, s, cached);
              model.push_back(s);
            } else {
              ModelSequence& s = model[pick(model.size())];
              if (op <= 2 && !s.pinned) {  // append, written in every layer
                const std::size_t first = s.tokens.size();
                std::vector<std::int32_t> added;
                for (std::size_t i = 1 + pick(block_size + 3); i > 0; --i)
                  added.push_back(static_cast<std::int32_t>(pick(5)));
                cache.append_tokens(s.id, added);
                s.tokens.insert(s.tokens.end(), added.begin(), added.end());
                write_model_kv(cache, s, first);
              } else if (op == 3 && !s.pinned) {
                ModelSequence child = s;
                child.id = cache.fork(s.id, s.tenant);
                model.push_back(child);
                ++forks;
              } else if (op == 4 && !s.pinned) {
                // Not into the declared public prefix: the model ties each value to its block's key at
                // write time (a dedicated test covers rolling back into it).
                const std::size_t n = pick(s.tokens.size() - s.shared + 1);
                cache.truncate(s.id, n);
                s.tokens.resize(s.tokens.size() - n);
              } else if (op == 5 && !s.pinned) {
                ModelSequence pin = s;
                pin.pinned = true;
                pin.id = cache.pin_prefix(s.id, pick(s.tokens.size() + 1), s.tenant);
                pin.tokens.resize(cache.sequence_info(pin.id).length);
                model.push_back(pin);
              } else {
                const std::size_t i = static_cast<std::size_t>(&s - model.data());
                cache.free_sequence(s.id, s.tenant);
                REQUIRE_FALSE(cache.contains(s.id));
                model.erase(model.begin() + static_cast<std::ptrdiff_t>(i));
              }
            }
          } catch (const Error& e) {
            REQUIRE(e.code() == ErrorCode::capacity_exhausted);
            ++capacity_errors;
            const KvCacheStats after = cache.stats();
            REQUIRE(after.used_blocks == before.used_blocks);  // a refused operation changes nothing
            REQUIRE(after.cached_blocks == before.cached_blocks);
            REQUIRE(after.sequences == before.sequences);
          }
          check_against_model(cache, model);
        }
        // The run exercised what it claims to.
        INFO("hits " << hits << " forks " << forks << " refusals " << capacity_errors << " evictions "
                     << cache.stats().evictions);
        CHECK(hits > 5);
        CHECK(forks > 5);
        CHECK(capacity_errors > 0);
        INFO("evictions " << cache.stats().evictions);
        CHECK(cache.stats().evictions > 0);
      }
    }
  }
}

TEST_CASE("Writing to a fork never changes its parent (copy-on-write of the shared last block)", "[kv]") {
  PagedKvCache cache(KvCacheConfig{1, 2, 2, 4, 8, 0, DType::f32, KvLayout::hnd});
  ModelSequence parent{
      cache.create_sequence({1, {}, std::vector<std::int32_t>{1, 2, 3, 4, 5, 6}}), 1, {}, 0, {1, 2, 3, 4, 5, 6}};
  write_model_kv(cache, parent, 0);
  ModelSequence child = parent;
  child.id = cache.fork(parent.id, 1);
  CHECK(std::ranges::equal(cache.blocks(child.id), cache.blocks(parent.id)));
  CHECK(cache.block_ref_count(cache.blocks(parent.id)[1]) == 2);
  // The child writes into the shared, partly filled block: it gets a copy; the parent keeps its own.
  cache.append_tokens(child.id, std::vector<std::int32_t>{9});
  child.tokens.push_back(9);
  write_model_kv(cache, child, 6);
  CHECK(cache.blocks(child.id)[0] == cache.blocks(parent.id)[0]);  // full blocks stay shared
  CHECK(cache.blocks(child.id)[1] != cache.blocks(parent.id)[1]);
  check_against_model(cache, {parent, child});
  // Now the parent's block is its own again: appending writes in place.
  const BlockId last = cache.blocks(parent.id)[1];
  cache.append_tokens(parent.id, std::vector<std::int32_t>{7});
  parent.tokens.push_back(7);
  write_model_kv(cache, parent, 6);
  CHECK(cache.blocks(parent.id)[1] == last);
  check_against_model(cache, {parent, child});
  PERSONA_REQUIRE_ERROR(cache.fork(SequenceId{12345}, 1), not_found, "unknown or freed sequence id 0x3039");
  // A fork needs every appended position written.
  cache.append_tokens(parent.id, std::vector<std::int32_t>{8});
  PERSONA_REQUIRE_ERROR(cache.fork(parent.id, 1), invalid_argument, "K/V written for only 7");
}

TEST_CASE("Prefix caching: tenants never share blocks unless the prefix is declared public", "[kv]") {
  PagedKvCache cache(KvCacheConfig{1, 1, 2, 4, 64});
  const std::vector<std::int32_t> prompt = iota_tokens(13, 1);  // 3 full blocks and one token
  auto run = [&](TenantId tenant, AdapterVersionId adapter, std::size_t shared) {
    ModelSequence s{cache.create_sequence({tenant, adapter, prompt, shared}), tenant, adapter, shared, prompt};
    write_model_kv(cache, s, cache.sequence_info(s.id).cached_tokens);
    return s;
  };
  const ModelSequence a1 = run(1, {}, 0);
  CHECK(cache.sequence_info(a1.id).cached_tokens == 0);
  const ModelSequence a2 = run(1, {}, 0);  // same tenant, same adapter: every full block reused
  CHECK(cache.sequence_info(a2.id).cached_tokens == 12);
  const ModelSequence b = run(2, {}, 0);  // same prompt, other tenant: nothing
  CHECK(cache.sequence_info(b.id).cached_tokens == 0);
  const ModelSequence a3 = run(1, {5, 1}, 0);  // same tenant, other adapter: nothing
  CHECK(cache.sequence_info(a3.id).cached_tokens == 0);
  for (std::size_t i = 0; i < 3; ++i) {
    CHECK(cache.blocks(a1.id)[i] == cache.blocks(a2.id)[i]);
    CHECK(cache.blocks(a1.id)[i] != cache.blocks(b.id)[i]);
    CHECK(cache.blocks(a1.id)[i] != cache.blocks(a3.id)[i]);
  }
  // A declared public prefix of 9 tokens: blocks 0 and 1 lie inside it and are shared by every tenant;
  // block 2 (tokens 8..11) straddles its end and stays the tenant's own.
  const ModelSequence p1 = run(3, {}, 9);
  CHECK(cache.sequence_info(p1.id).cached_tokens == 0);
  const ModelSequence p2 = run(4, {1, 1}, 9);
  CHECK(cache.sequence_info(p2.id).cached_tokens == 8);
  CHECK(cache.blocks(p1.id)[1] == cache.blocks(p2.id)[1]);
  CHECK(cache.blocks(p1.id)[2] != cache.blocks(p2.id)[2]);
  check_against_model(cache, {a1, a2, b, a3, p1, p2});
  const KvCacheStats stats = cache.stats();
  CHECK(stats.prompt_tokens == 6 * 13);
  CHECK(stats.hit_tokens == 20);
  CHECK(stats.hit_rate() == Approx(20.0 / 78.0));
  // A prompt of exactly one full block: the last token is always computed, so nothing is reused.
  const std::vector<std::int32_t> four = iota_tokens(4, 1);
  const SequenceId whole = cache.create_sequence({1, {}, four});
  CHECK(cache.sequence_info(whole).cached_tokens == 0);
}

TEST_CASE("Prefix-cache blocks are keyed by the adapter's version: K/V of an old version are never reused", "[kv]") {
  PagedKvCache cache(KvCacheConfig{1, 1, 2, 4, 64});
  const std::vector<std::int32_t> prompt = iota_tokens(13, 1);  // 3 full blocks and one token
  auto run = [&](TenantId tenant, AdapterVersionId adapter, std::size_t shared) {
    ModelSequence s{cache.create_sequence({.tenant = tenant,
                                           .adapter = adapter,
                                           .prompt = prompt,
                                           .shared_prefix_tokens = shared,
                                           .shared_prefix_adapter = shared > 0 ? adapter : AdapterVersionId{}}),
                    tenant, adapter, shared, prompt};
    write_model_kv(cache, s, cache.sequence_info(s.id).cached_tokens);
    return s;
  };
  // What AdapterHandle::version_id() names before and after a put of a new version of adapter 7.
  const AdapterVersionId v1{7, 1}, v2{7, 2};
  const ModelSequence old1 = run(1, v1, 0);
  const ModelSequence old2 = run(1, v1, 0);
  CHECK(cache.sequence_info(old2.id).cached_tokens == 12);  // the same version: reused
  const ModelSequence new1 = run(1, v2, 0);
  CHECK(cache.sequence_info(new1.id).cached_tokens == 0);  // a new version: computed afresh
  CHECK(cache.sequence_info(new1.id).adapter == v2);
  const ModelSequence new2 = run(1, v2, 0);
  CHECK(cache.sequence_info(new2.id).cached_tokens == 12);
  for (std::size_t i = 0; i < 3; ++i) {
    CHECK(cache.blocks(new1.id)[i] != cache.blocks(old1.id)[i]);
    CHECK(cache.blocks(new2.id)[i] == cache.blocks(new1.id)[i]);
  }
  // The old version's blocks, once unreferenced, stay cached but are still never served for v2.
  cache.free_sequence(old1.id, 1);
  cache.free_sequence(old2.id, 1);
  const ModelSequence new3 = run(1, v2, 0);
  for (std::size_t i = 0; i < 3; ++i) CHECK(cache.blocks(new3.id)[i] == cache.blocks(new1.id)[i]);
  // A public prefix computed with a public adapter's old version is not shared with one computed with
  // its new version either.
  const ModelSequence p1 = run(2, {9, 1}, 9);
  const ModelSequence p2 = run(3, {9, 2}, 9);
  CHECK(cache.sequence_info(p2.id).cached_tokens == 0);
  const ModelSequence p3 = run(4, {9, 2}, 9);
  CHECK(cache.sequence_info(p3.id).cached_tokens == 8);
  check_against_model(cache, {new1, new2, new3, p1, p2, p3});
}

TEST_CASE("Only declared prompt tokens are public, keyed by the adapter that computed them", "[kv]") {
  PagedKvCache cache(KvCacheConfig{1, 1, 1, 4, 64});
  const std::vector<std::int32_t> prompt = iota_tokens(5, 1);
  // A public prefix declared longer than the prompt covers the prompt only: tokens the tenant appends
  // later (its own text) stay private.
  const SequenceId a = cache.create_sequence({.tenant = 1, .prompt = prompt, .shared_prefix_tokens = 64});
  Tensor<float> kv({5, 1, 1});
  cache.write_kv(a, 0, kv, kv);
  cache.append(a, iota_tokens(8, 100), Tensor<float>({1, 8, 1, 1}), Tensor<float>({1, 8, 1, 1}));
  std::vector<std::int32_t> same = cache.tokens(a, 1);
  same.push_back(7);
  const SequenceId b = cache.create_sequence({.tenant = 2, .prompt = same, .shared_prefix_tokens = 64});
  CHECK(cache.sequence_info(b).cached_tokens == 4);  // block 0 only: blocks 1..2 hold tenant 1's tokens
  // Rolled back below the declared prefix, the sequence's new tokens are private too.
  const SequenceId c = cache.create_sequence({.tenant = 3, .prompt = iota_tokens(9, 50), .shared_prefix_tokens = 8});
  Tensor<float> kv9({9, 1, 1});
  cache.write_kv(c, 0, kv9, kv9);
  cache.truncate(c, 3);  // 6 tokens: the declared prefix shrinks to 6, block 1 is no longer public
  cache.append(c, iota_tokens(2, 900), Tensor<float>({1, 2, 1, 1}), Tensor<float>({1, 2, 1, 1}));
  std::vector<std::int32_t> rolled = cache.tokens(c, 3);
  rolled.push_back(1);
  const SequenceId d = cache.create_sequence({.tenant = 4, .prompt = rolled, .shared_prefix_tokens = 8});
  CHECK(cache.sequence_info(d).cached_tokens == 4);
  // The public key carries the adapter the prefix was computed with.
  const std::vector<std::int32_t> system = iota_tokens(9, 300);
  const auto with_adapter = [&](TenantId tenant, AdapterKey adapter) {
    const SequenceId id = cache.create_sequence({.tenant = tenant,
                                                 .prompt = system,
                                                 .shared_prefix_tokens = 8,
                                                 .shared_prefix_adapter = {adapter, adapter == 0 ? 0u : 1u}});
    Tensor<float> rows({9 - cache.sequence_info(id).cached_tokens, 1, 1});
    cache.write_kv(id, 0, rows, rows);
    return cache.sequence_info(id).cached_tokens;
  };
  CHECK(with_adapter(10, 0) == 0);
  CHECK(with_adapter(11, 0) == 8);  // another tenant, same prefix adapter: shared
  CHECK(with_adapter(12, 5) == 0);  // computed with another adapter: not
  CHECK(with_adapter(13, 5) == 8);
}

TEST_CASE("K/V must fit the storage type, a refused append changes nothing", "[kv]") {
  PagedKvCache f16(KvCacheConfig{2, 1, 2, 4, 8, 0, DType::f16});
  const SequenceId s = f16.create_sequence({.tenant = 1});
  Tensor<float> k({2, 1, 1, 2}), v({2, 1, 1, 2});
  v(1, 0, 0, 1) = 1e5f;  // finite in f32, infinite in f16
  PERSONA_REQUIRE_ERROR(f16.append(s, iota_tokens(1, 0), k, v), invalid_argument,
                        "V of layer 1 at token 0, head 0, element 1 is 100000: not finite or beyond f16 storage");
  CHECK(f16.sequence_info(s).length == 0);  // layer 1 was bad: nothing was appended
  CHECK(f16.stats().used_blocks == 0);
  v(1, 0, 0, 1) = 65504.0f;
  f16.append(s, iota_tokens(1, 0), k, v);
  CHECK(f16.sequence_info(s).length == 1);
  PagedKvCache bf16(KvCacheConfig{1, 1, 2, 4, 8, 0, DType::bf16});
  const SequenceId t = bf16.create_sequence({.tenant = 1, .prompt = iota_tokens(1, 0)});
  Tensor<float> big({1, 1, 2});
  big(0, 0, 0) = 1e30f;
  bf16.write_kv(t, 0, big, big);
  Tensor<float> back({1, 1, 2}), back_v({1, 1, 2});
  bf16.read_kv(t, 0, back, back_v, 1);
  CHECK(back(0, 0, 0) == Approx(1e30f).epsilon(0.01));
  CHECK_NOTHROW(f16.append(s, {}, Tensor<float>({2, 0, 1, 2}), Tensor<float>({2, 0, 1, 2})));  // empty
}

TEST_CASE("Rolling back into a cached block needs no spare block or quota", "[kv]") {
  PagedKvCache cache(KvCacheConfig{1, 1, 1, 4, 2});
  cache.set_tenant_quota(1, 2);
  const SequenceId s = cache.create_sequence({.tenant = 1, .prompt = iota_tokens(8, 0)});
  Tensor<float> kv({8, 1, 1});
  cache.write_kv(s, 0, kv, kv);  // both blocks full and in the prefix cache
  cache.truncate(s, 1);
  CHECK(cache.append_tokens(s, iota_tokens(1, 9)) == 7);  // written in place: pool and quota are full
  CHECK(cache.tenant_usage(1).blocks == 2);
  // The block left the prefix cache: a new request finds block 0 only.
  const SequenceId id = cache.create_sequence({.tenant = 1});
  CHECK(cache.sequence_info(id).length == 0);
}

TEST_CASE("1,000 tenants with identical prompts share only the declared public prefix", "[kv]") {
  PagedKvCache cache(KvCacheConfig{1, 1, 1, 16, 4096});
  const std::vector<std::int32_t> prompt = iota_tokens(64, 7);  // 32 public tokens, then 32 of the tenant's
  std::map<BlockId, std::set<std::uint64_t>> tenants_of;
  std::set<BlockId> public_blocks;
  for (std::uint64_t tenant = 0; tenant < 1000; ++tenant) {
    for (int repeat = 0; repeat < 2; ++repeat) {
      const SequenceId id = cache.create_sequence({tenant, {}, prompt, 32});
      // The first tenant computes everything; later ones find the public blocks 0 and 1, and a tenant's
      // second request also its own block 2 (block 3 holds the last token: always computed).
      CHECK(cache.sequence_info(id).cached_tokens == (repeat == 1 ? 48u : (tenant == 0 ? 0u : 32u)));
      Tensor<float> k({64 - cache.sequence_info(id).cached_tokens, 1, 1});
      cache.write_kv(id, 0, k, k);
      const auto blocks = cache.blocks(id);
      for (std::size_t i = 0; i < blocks.size(); ++i) {
        if (i < 2) {
          public_blocks.insert(blocks[i]);
        } else {
          tenants_of[blocks[i]].insert(tenant);
        }
      }
    }
  }
  CHECK(public_blocks.size() == 2);  // one copy of the public prompt for all 1,000 tenants
  CHECK(tenants_of.size() == 3000);  // blocks 2 (shared by a tenant's two requests), 3 and its recomputed twin
  for (const auto& [block, owners] : tenants_of) {
    CHECK(owners.size() == 1);  // no block between two tenants
    CHECK(public_blocks.count(block) == 0);
  }
}

TEST_CASE("Eviction takes the least recently used cached blocks, pinned prefixes survive any pressure", "[kv]") {
  PagedKvCache cache(KvCacheConfig{1, 1, 1, 2, 8});
  auto create = [&](std::uint64_t tenant, std::int32_t first) {
    const std::vector<std::int32_t> prompt = iota_tokens(5, first);  // 2 full blocks + 1
    const SequenceId id = cache.create_sequence({tenant, {}, prompt});
    Tensor<float> k({5 - cache.sequence_info(id).cached_tokens, 1, 1});
    cache.write_kv(id, 0, k, k);
    return id;
  };
  const SequenceId a = create(1, 100);
  const SequenceId pin = cache.pin_prefix(a, 4, 1);
  CHECK(cache.sequence_info(pin).pinned);
  CHECK(cache.sequence_info(pin).length == 4);
  PERSONA_REQUIRE_ERROR(cache.append_tokens(pin, std::vector<std::int32_t>{1}), invalid_argument, "is a pin");
  cache.free_sequence(a, 1);
  const SequenceId b = create(2, 200);
  cache.free_sequence(b, 2);  // b's two full blocks are cached, a's are pinned
  CHECK(cache.stats().cached_blocks == 2);
  // Fill the pool: b's cached blocks go, a's pinned ones stay.
  std::vector<SequenceId> fill;
  for (std::int32_t i = 0; i < 2; ++i) fill.push_back(create(3, 300 + 10 * i));
  CHECK(cache.stats().evictions == 2);
  PERSONA_REQUIRE_ERROR(create(3, 400), capacity_exhausted, "of 8 are available");
  for (const SequenceId id : fill) cache.free_sequence(id, 3);
  const SequenceId again = create(1, 100);
  CHECK(cache.sequence_info(again).cached_tokens == 4);  // the pinned prefix was never evicted
  const SequenceId b_again = create(2, 200);
  CHECK(cache.sequence_info(b_again).cached_tokens == 0);  // evicted
  cache.free_sequence(pin, 1);
  CHECK_FALSE(cache.contains(pin));
}

TEST_CASE("Tenant quotas are enforced at allocation and refusals change nothing", "[kv]") {
  PagedKvCache cache(KvCacheConfig{1, 1, 1, 4, 32});
  cache.set_tenant_quota(7, 3);
  const SequenceId s = cache.create_sequence({7, {}, iota_tokens(9, 0)});  // 3 blocks
  CHECK(cache.tenant_usage(7).blocks == 3);
  CHECK(cache.tenant_usage(7).quota == 3);
  const KvCacheStats before = cache.stats();
  PERSONA_REQUIRE_ERROR(cache.append_tokens(s, iota_tokens(4, 0)), capacity_exhausted,
                        "tenant 7 holds 3 blocks and needs 1 more: over its quota of 3");
  PERSONA_REQUIRE_ERROR(cache.create_sequence({7, {}, iota_tokens(1, 0)}), capacity_exhausted, "quota of 3");
  CHECK(cache.stats().used_blocks == before.used_blocks);
  CHECK(cache.sequence_info(s).length == 9);
  CHECK(cache.append_tokens(s, iota_tokens(3, 0)) == 9);  // fits the last block
  // Other tenants are not limited by tenant 7's quota, only by the pool.
  const SequenceId other = cache.create_sequence({8, {}, iota_tokens(100, 0)});
  CHECK(cache.tenant_usage(8).blocks == 25);
  PERSONA_REQUIRE_ERROR(cache.create_sequence({9, {}, iota_tokens(20, 0)}), capacity_exhausted,
                        "5 more blocks needed but 4 of 32 are available (28 used); tenant 9 holds 0 blocks (quota "
                        "none)");
  cache.free_sequence(other, 8);
  CHECK(cache.tenant_usage(8).blocks == 0);
  cache.set_tenant_quota(7, 0);
  CHECK_NOTHROW(cache.append_tokens(s, iota_tokens(4, 0)));
  CHECK(cache.tenant_usage(99).blocks == 0);
}

TEST_CASE("A tenant is charged for the blocks it holds, never for what another tenant keeps or pins", "[kv]") {
  PagedKvCache cache(KvCacheConfig{1, 1, 1, 4, 32});
  const std::vector<std::int32_t> prompt = iota_tokens(9, 0);  // two full blocks (declared public) and one
  const auto create = [&](TenantId tenant) {
    const SequenceId id = cache.create_sequence({.tenant = tenant, .prompt = prompt, .shared_prefix_tokens = 8});
    Tensor<float> kv({9 - cache.sequence_info(id).cached_tokens, 1, 1});
    cache.write_kv(id, 0, kv, kv);
    return id;
  };
  cache.set_tenant_quota(1, 3);
  const SequenceId a = create(1);
  const SequenceId b = create(2);  // reuses a's two public blocks
  CHECK(cache.sequence_info(b).cached_tokens == 8);
  CHECK(cache.tenant_usage(1).blocks == 3);
  CHECK(cache.tenant_usage(2).blocks == 3);  // the shared blocks count for both
  const SequenceId pin = cache.pin_prefix(b, 8, 2);
  CHECK(cache.tenant_usage(2).blocks == 3);  // a pin of blocks it holds already adds nothing
  cache.free_sequence(a, 1);
  // Tenant 2 still holds and pins the blocks tenant 1 brought in; tenant 1 pays for none of them and its
  // whole quota is free again.
  CHECK(cache.tenant_usage(1).blocks == 0);
  CHECK(cache.tenant_usage(2).blocks == 3);
  const SequenceId own = cache.create_sequence({.tenant = 1, .prompt = iota_tokens(12, 500)});
  CHECK(cache.tenant_usage(1).blocks == 3);
  cache.free_sequence(b, 2);
  CHECK(cache.tenant_usage(2).blocks == 2);  // the pin's
  cache.free_sequence(pin, 2);
  CHECK(cache.tenant_usage(2).blocks == 0);
  // Reusing cached blocks counts against the quota as allocating them would.
  cache.free_sequence(own, 1);
  cache.set_tenant_quota(3, 2);
  PERSONA_REQUIRE_ERROR(create(3), capacity_exhausted, "tenant 3 holds 0 blocks and needs 3 more: over its quota of 2");
  CHECK(cache.tenant_usage(3).blocks == 0);
}

TEST_CASE("Sequence operations act for the sequence's tenant only", "[kv]") {
  PagedKvCache cache(KvCacheConfig{1, 1, 2, 4, 16});
  PERSONA_REQUIRE_ERROR(cache.create_sequence({.prompt = iota_tokens(5, 0)}), invalid_argument,
                        "the sequence has no tenant");
  CHECK(cache.stats().used_blocks == 0);
  const SequenceId s = cache.create_sequence({.tenant = 1, .prompt = iota_tokens(5, 0)});
  Tensor<float> kv({5, 1, 2});
  cache.write_kv(s, 0, kv, kv);
  const KvCacheStats before = cache.stats();
  const std::string theirs = fmt::format("sequence {:#x} is not tenant 2's", s.value);
  PERSONA_REQUIRE_ERROR(cache.fork(s, 2), permission_denied, theirs);
  PERSONA_REQUIRE_ERROR(cache.pin_prefix(s, 4, 2), permission_denied, theirs);
  PERSONA_REQUIRE_ERROR(cache.free_sequence(s, 2), permission_denied, theirs);
  PERSONA_REQUIRE_ERROR(cache.tokens(s, 2), permission_denied, theirs);
  Tensor<float> k({5, 1, 2}), v({5, 1, 2});
  PERSONA_REQUIRE_ERROR(cache.read_kv(s, 0, k, v, 2), permission_denied, theirs);
  PERSONA_REQUIRE_ERROR(cache.tokens(s, kPublicTenant), permission_denied, "is not tenant 0's");
  CHECK(cache.contains(s));
  CHECK(cache.stats().sequences == before.sequences);
  CHECK(cache.stats().used_blocks == before.used_blocks);
  CHECK(cache.tenant_usage(2).blocks == 0);
  CHECK(cache.tokens(s, 1) == iota_tokens(5, 0));
  const SequenceId child = cache.fork(s, 1);
  CHECK(cache.sequence_info(child).tenant == 1);
  cache.free_sequence(child, 1);
  cache.free_sequence(s, 1);
  CHECK(cache.stats().used_blocks == 0);
}

TEST_CASE("A cache salt keeps otherwise equal prompts apart, the public prefix included", "[kv]") {
  PagedKvCache cache(KvCacheConfig{1, 1, 1, 4, 64});
  const std::vector<std::int32_t> prompt = iota_tokens(13, 1);  // 3 full blocks and one token
  const auto run = [&](TenantId tenant, std::string_view salt, std::size_t shared) {
    const SequenceId id =
        cache.create_sequence({.tenant = tenant, .prompt = prompt, .shared_prefix_tokens = shared, .cache_salt = salt});
    const std::size_t cached = cache.sequence_info(id).cached_tokens;
    Tensor<float> kv({13 - cached, 1, 1});
    cache.write_kv(id, 0, kv, kv);
    return cached;
  };
  CHECK(run(1, "", 0) == 0);
  CHECK(run(1, "alice", 0) == 0);  // a salt never meets unsalted blocks
  CHECK(run(1, "bob", 0) == 0);    // nor another salt
  CHECK(run(1, "alice", 0) == 12);
  CHECK(run(1, "", 0) == 12);
  CHECK(run(2, "alice", 0) == 0);  // a salt never joins tenants
  // A declared public prefix is shared across tenants only among equal salts.
  CHECK(run(3, "", 8) == 0);
  CHECK(run(4, "", 8) == 8);
  CHECK(run(5, "carol", 8) == 0);
  CHECK(run(6, "carol", 8) == 8);
  CHECK(run(7, "dave", 8) == 0);
  // Salts that differ only after their first 8 bytes, or in length, are different salts.
  CHECK(run(8, "carol-and-1", 8) == 0);
  CHECK(run(9, "carol-and-2", 8) == 0);
  CHECK(run(9, std::string_view("carol\0\0\0", 8), 8) == 0);
}

TEST_CASE("A block computed again behind a rewritten prefix takes over the entry its old copy left", "[kv]") {
  // The old copy of the second block stays cached but follows a first block that was rolled back and
  // rewritten (a new context): no lookup reaches it, and the block computed again must replace it, or
  // that prompt's later blocks could never be cached again.
  PagedKvCache cache(KvCacheConfig{1, 1, 1, 4, 16});
  const std::vector<std::int32_t> prompt = iota_tokens(9, 0);
  const SequenceId s = cache.create_sequence({.tenant = 1, .prompt = prompt});
  Tensor<float> kv({9, 1, 1});
  cache.write_kv(s, 0, kv, kv);
  cache.truncate(s, 6);  // 3 tokens: the second block is released (still cached), the first rolled back
  const std::vector<std::int32_t> rest(prompt.begin() + 3, prompt.end());
  cache.append(s, rest, Tensor<float>({1, 6, 1, 1}), Tensor<float>({1, 6, 1, 1}));  // the same tokens again
  const SequenceId again = cache.create_sequence({.tenant = 1, .prompt = prompt});
  CHECK(cache.sequence_info(again).cached_tokens == 8);
  CHECK(cache.blocks(again)[1] == cache.blocks(s)[1]);
  cache.free_sequence(again, 1);
  cache.free_sequence(s, 1);
  CHECK(cache.stats().used_blocks == 0);
  CHECK(cache.stats().cached_blocks + cache.stats().free_blocks == 16);
}

TEST_CASE("A prefix match checks the block's whole context, not only hashes", "[kv]") {
  // Two blocks with equal tokens and key whose parents' hashes might collide: the match is decided by the
  // parent's context number, which only an exactly equal prefix shares.
  detail::BlockMeta m;
  const std::vector<std::int32_t> tokens = iota_tokens(4, 10);
  m.context = 5;
  m.parent_context = 3;
  m.key = detail::BlockKey{false, 1, {2, 1}, 0};
  CHECK(detail::same_context(m, tokens.data(), 3, m.key, tokens));
  CHECK_FALSE(detail::same_context(m, tokens.data(), 4, m.key, tokens));  // another prefix before it
  CHECK_FALSE(detail::same_context(m, tokens.data(), 3, detail::BlockKey{false, 2, {2, 1}, 0}, tokens));
  CHECK_FALSE(detail::same_context(m, tokens.data(), 3, detail::BlockKey{false, 1, {2, 1}, 9}, tokens));
  CHECK_FALSE(detail::same_context(m, tokens.data(), 3, m.key, iota_tokens(4, 11)));
  m.context = 0;  // never hashed
  CHECK_FALSE(detail::same_context(m, tokens.data(), 3, m.key, tokens));
  // Salt digests: none is 0, and a salt is never mistaken for none or for another.
  CHECK(detail::salt_digest("", 1) == 0);
  CHECK(detail::salt_digest("a", 1) != 0);
  CHECK(detail::salt_digest("a", 1) != detail::salt_digest("b", 1));
  CHECK(detail::salt_digest("a", 1) != detail::salt_digest(std::string_view("a\0", 2), 1));
  CHECK(detail::salt_digest("a", 1) != detail::salt_digest("a", 2));  // seeded per cache
}

TEST_CASE("Truncate rolls back tokens and never disturbs a cached block another sequence holds", "[kv]") {
  PagedKvCache cache(KvCacheConfig{1, 1, 2, 4, 16});
  ModelSequence a{cache.create_sequence({1, {}, iota_tokens(9, 0)}), 1, {}, 0, iota_tokens(9, 0)};
  write_model_kv(cache, a, 0);
  ModelSequence b{cache.create_sequence({1, {}, iota_tokens(9, 0)}), 1, {}, 0, iota_tokens(9, 0)};
  CHECK(cache.sequence_info(b.id).cached_tokens == 8);
  write_model_kv(cache, b, 8);
  cache.truncate(a.id, 3);  // into block 1, which is full, cached, and b's too
  a.tokens.resize(6);
  CHECK(cache.blocks(a.id).size() == 2);
  const BlockId shared_block = cache.blocks(a.id)[1];
  CHECK(cache.blocks(b.id)[1] == shared_block);
  cache.append_tokens(a.id, std::vector<std::int32_t>{42, 43});
  a.tokens.insert(a.tokens.end(), {42, 43});
  write_model_kv(cache, a, 6);
  CHECK(cache.blocks(a.id)[1] != shared_block);  // copied before the write
  CHECK(cache.blocks(b.id)[1] == shared_block);
  // The original block still serves its prefix to a new sequence.
  ModelSequence c{cache.create_sequence({1, {}, iota_tokens(9, 0)}), 1, {}, 0, iota_tokens(9, 0)};
  CHECK(cache.sequence_info(c.id).cached_tokens == 8);
  write_model_kv(cache, c, 8);
  CHECK(cache.blocks(c.id)[1] == shared_block);
  check_against_model(cache, {a, b, c});
  PERSONA_REQUIRE_ERROR(cache.truncate(a.id, 9), out_of_range, "truncate of 9 tokens but sequence");
  cache.truncate(a.id, 8);
  CHECK(cache.sequence_info(a.id).length == 0);
  CHECK(cache.blocks(a.id).empty());
}

TEST_CASE("Bad input to the cache is a clear Error", "[kv]") {
  PagedKvCache cache(KvCacheConfig{2, 2, 4, 4, 8});
  const SequenceId s = cache.create_sequence({1, {}, iota_tokens(3, 0)});
  Tensor<float> good({3, 2, 4}), wrong({3, 2, 5});
  PERSONA_REQUIRE_ERROR(cache.write_kv(s, 0, wrong, wrong), shape_mismatch, "expected contiguous [tokens, 2, 4]");
  PERSONA_REQUIRE_ERROR(cache.write_kv(s, 2, good, good), out_of_range, "layer 2 of a cache with 2 layers");
  Tensor<float> four({4, 2, 4});
  PERSONA_REQUIRE_ERROR(cache.write_kv(s, 0, four, four), out_of_range, "positions 0..4 of layer 0");
  good(1, 1, 2) = std::nanf("");
  PERSONA_REQUIRE_ERROR(cache.write_kv(s, 0, good, good), invalid_argument,
                        "K of layer 0 at token 1, head 1, element 2 is nan: not finite");
  Tensor<float> all({2, 1, 2, 4});
  PERSONA_REQUIRE_ERROR(cache.append(s, iota_tokens(2, 0), all, all), shape_mismatch,
                        "expected contiguous [2, 2, 2, 4]");
  const SequenceId freed = cache.create_sequence({1, {}, {}});
  cache.free_sequence(freed, 1);
  PERSONA_REQUIRE_ERROR(cache.append_tokens(freed, iota_tokens(1, 0)), not_found, "unknown or freed sequence id");
  PERSONA_REQUIRE_ERROR(cache.free_sequence(freed, 1), not_found, "unknown or freed");
  PERSONA_REQUIRE_ERROR(cache.fork(freed, 1), not_found, "unknown or freed");
  // A freed slot is reused under a new id; the old id stays unknown.
  const SequenceId reused = cache.create_sequence({1, {}, {}});
  CHECK((reused.value & 0xffffffffu) == (freed.value & 0xffffffffu));
  CHECK_FALSE(cache.contains(freed));
  PERSONA_REQUIRE_ERROR(cache.pin_prefix(s, 3, 1), out_of_range, "pin of 3 tokens but sequence");
  PERSONA_REQUIRE_ERROR(cache.block_ref_count(8), out_of_range, "block 8 of a pool of 8");
  Tensor<float> k({3, 2, 4}), v({2, 2, 4});
  PERSONA_REQUIRE_ERROR(cache.read_kv(s, 0, v, v, 1), shape_mismatch, "expected contiguous [3, 2, 4]");
}

TEST_CASE("Page tables in CSR form and statistics of waste", "[kv]") {
  PagedKvCache cache(KvCacheConfig{1, 1, 1, 4, 16});
  const SequenceId a = cache.create_sequence({1, {}, iota_tokens(5, 0)});
  const SequenceId b = cache.create_sequence({2, {}, iota_tokens(8, 0)});
  const SequenceId c = cache.create_sequence({3, {}, {}});
  const PageTable table = cache.page_table(std::vector<SequenceId>{a, b, c});
  CHECK(table.indptr == std::vector<std::int32_t>{0, 2, 4, 4});
  CHECK(table.indices == std::vector<std::int32_t>{0, 1, 2, 3});
  CHECK(table.last_page_len == std::vector<std::int32_t>{1, 4, 0});
  KvCacheStats stats = cache.stats();
  CHECK(stats.used_blocks == 4);
  CHECK(stats.tokens == 13);
  CHECK(stats.wasted_slots == 3);
  CHECK(stats.waste() == Approx(3.0 / 16.0));
  CHECK(stats.sequences == 3);
  CHECK(stats.bytes == 2 * 16 * 4 * sizeof(float));
}

TEST_CASE("Decode appends allocate nothing once a sequence reserved its length", "[kv]") {
  PagedKvCache cache(KvCacheConfig{2, 2, 8, 16, 64});
  const SequenceId s = cache.create_sequence({.tenant = 1, .prompt = iota_tokens(5, 0), .max_tokens = 200});
  Tensor<float> k({2, 5, 2, 8}), one({2, 1, 2, 8});
  for (std::size_t l = 0; l < 2; ++l) {
    cache.write_kv(s, l, TensorView<const float>(&k(l, 0, 0, 0), Shape{5, 2, 8}),
                   TensorView<const float>(&k(l, 0, 0, 0), Shape{5, 2, 8}));
  }
  const std::vector<std::int32_t> token{1};
  {
    CountAllocations counter;
    for (int step = 0; step < 100; ++step) cache.append(s, token, one, one);  // crosses 6 block boundaries
    CHECK(counter.count() == 0);
  }
  CHECK(cache.sequence_info(s).length == 105);
}
