// PagedKvCache: keys and values of many sequences in fixed-size blocks from one pool allocated up front
// (vLLM's PagedAttention layout), with copy-on-write forks, rollback, tenant-aware prefix caching, pinned
// prefixes and per-tenant quotas. Layout and hashing: docs/formats.md; usage: docs/api.md.
#pragma once

#include "persona/core/ids.hpp"
#include "persona/core/tensor.hpp"
#include "persona/kv/kv_cache_config.hpp"
#include "persona/kv/kv_layer_view.hpp"
#include "persona/kv/page_table.hpp"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string_view>

namespace persona {

struct SequenceSpec {
  // The owner (required: create_sequence refuses a spec without one). Its private blocks are cached under
  // its key and reused only by its own sequences.
  std::optional<TenantId> tenant = std::nullopt;
  // The adapter version the K/V are computed with (AdapterHandle::version_id(); {} for the base model):
  // part of the prefix-cache key, so K/V computed with an older version of the adapter are never reused.
  AdapterVersionId adapter = {};
  // Prompt tokens, appended at creation. Full blocks found in the prefix cache are reused (their K/V need
  // no computing); at most prompt.size() - 1 tokens come from the cache, so the last token is always
  // computed (its logits start decoding). sequence_info().cached_tokens says how many were found.
  std::span<const std::int32_t> prompt = {};
  // The first shared_prefix_tokens tokens of the prompt are a declared public prefix (a common system
  // prompt): blocks that lie wholly inside it are cached without the tenant's key and shared by every
  // tenant. Their K/V must not depend on the tenant: the caller computes them with
  // shared_prefix_adapter (a public adapter's version, or {} for the base model), which keys them
  // instead. Clamped to the prompt's length, and to the sequence's length by truncate.
  std::size_t shared_prefix_tokens = 0;
  AdapterVersionId shared_prefix_adapter = {};
  // vLLM's cache_salt: a sequence reuses cached blocks only from sequences with the same salt, the
  // declared public prefix included, so that users who must not learn of each other's prompts through
  // cache timing never share blocks. Empty: no salt.
  std::string_view cache_salt = {};
  // Reserves room for this many tokens (at most the pool's), so that appends up to it never allocate.
  std::size_t max_tokens = 0;
};

struct SequenceInfo {
  TenantId tenant = kPublicTenant;
  AdapterVersionId adapter = {};
  std::size_t length = 0;         // tokens appended (the positions 0..length-1)
  std::size_t cached_tokens = 0;  // of the prompt, found in the prefix cache at creation
  bool pinned = false;            // a pin made by pin_prefix
};

struct TenantUsage {
  // Blocks the tenant's sequences and pins hold. A block several tenants hold (a shared public prefix)
  // counts for each of them, and for none once they let go: what another tenant keeps or pins is never
  // charged to this one.
  std::size_t blocks = 0;
  std::size_t quota = 0;  // 0: no limit
};

struct KvCacheStats {
  std::size_t total_blocks = 0;
  std::size_t used_blocks = 0;    // referenced by a sequence or a pin
  std::size_t free_blocks = 0;    // hold nothing
  std::size_t cached_blocks = 0;  // unreferenced but holding a cached prefix (evicted least recently used)
  std::size_t block_size = 0;
  std::size_t sequences = 0;      // pins not counted
  std::size_t tokens = 0;         // sum of sequence lengths
  std::size_t wasted_slots = 0;   // unused token slots in used, partly filled blocks
  std::size_t prompt_tokens = 0;  // prompt tokens looked up in the prefix cache
  std::size_t hit_tokens = 0;     // of those, found
  std::size_t evictions = 0;      // cached blocks reused for other contents
  std::size_t bytes = 0;          // the pool's storage
  double hit_rate() const noexcept {
    return prompt_tokens == 0 ? 0.0 : static_cast<double>(hit_tokens) / static_cast<double>(prompt_tokens);
  }
  // Wasted slots as a share of the slots in used blocks (vLLM's "memory waste").
  double waste() const noexcept;
};

class PagedKvCache {
 public:
  // Allocates (and zeroes) the whole pool; Error invalid_argument for a bad config, capacity_exhausted
  // when the memory is not there.
  explicit PagedKvCache(const KvCacheConfig& config);
  ~PagedKvCache();
  PagedKvCache(PagedKvCache&&) noexcept;
  PagedKvCache& operator=(PagedKvCache&&) noexcept;

  const KvCacheConfig& config() const noexcept;
  std::size_t num_blocks() const noexcept;

  // A new sequence; its prompt (if any) is appended, reusing cached blocks. Error invalid_argument for a
  // spec without a tenant, capacity_exhausted when the blocks or the tenant's quota run out (the cache is
  // then unchanged).
  SequenceId create_sequence(const SequenceSpec& spec);

  // The calls that share, hand out or end a sequence name the tenant they act for: Error not_found for an
  // unknown or freed id, permission_denied for another tenant's sequence (nothing is changed or read).
  //
  // A new sequence sharing every block of `parent` (copy-on-write: the first write to a shared, partly
  // filled block by either side copies it). The fork has the parent's tenant and adapter.
  SequenceId fork(SequenceId parent, TenantId tenant);
  // Holds the full blocks covering the first `tokens` tokens of `source` (rounded down to whole blocks)
  // until the returned pin is freed with free_sequence: eviction never takes them. The pin is a
  // sequence of the same tenant that cannot be appended to; its blocks count in the tenant's usage.
  SequenceId pin_prefix(SequenceId source, std::size_t tokens, TenantId tenant);
  void free_sequence(SequenceId sequence, TenantId tenant);

  // Reserves the next tokens.size() positions (allocating blocks; a last block that others share is
  // copied first, one only in the prefix cache leaves it) and returns the first new position. Their K/V must then be
  // written with write_kv in every layer.
  std::size_t append_tokens(SequenceId sequence, std::span<const std::int32_t> tokens);
  // Writes the K and V of the next k.dim(0) positions of `layer` not yet written: k and v are contiguous
  // [tokens, kv_heads, head_dim], finite and within the storage type's range (|x| <= 65504 for f16). A
  // full block enters the prefix cache once all its layers are written.
  void write_kv(SequenceId sequence, std::size_t layer, TensorView<const float> k, TensorView<const float> v);
  // append_tokens, then write_kv for each layer: k and v are contiguous [layers, tokens, kv_heads,
  // head_dim]. Every check runs first: a refused append changes nothing.
  void append(SequenceId sequence, std::span<const std::int32_t> tokens, TensorView<const float> k,
              TensorView<const float> v);
  // Rolls back the last `tokens` tokens (rejected speculative tokens); Error out_of_range past the start.
  void truncate(SequenceId sequence, std::size_t tokens);

  SequenceInfo sequence_info(SequenceId sequence) const;
  bool contains(SequenceId sequence) const noexcept;
  // Positions of `layer` whose K/V are written (<= length).
  std::size_t written_tokens(SequenceId sequence, std::size_t layer) const;
  // The sequence's blocks in token order (valid until the next call that changes the sequence).
  std::span<const BlockId> blocks(SequenceId sequence) const;
  // Token ids of positions [0, length); for the sequence's tenant only (as fork).
  std::vector<std::int32_t> tokens(SequenceId sequence, TenantId tenant) const;
  // The block lists of a batch in FlashInfer's CSR form.
  PageTable page_table(std::span<const SequenceId> sequences) const;
  // The K and V of positions [0, length) of one layer, as f32 (int8 and 16-bit storage dequantized):
  // k and v are [length, kv_heads, head_dim]. For the sequence's tenant only (as fork).
  void read_kv(SequenceId sequence, std::size_t layer, TensorView<float> k, TensorView<float> v, TenantId tenant) const;
  KvLayerView layer_view(std::size_t layer) const;

  // Caps the blocks a tenant may hold (0: no cap). Lowering it below current use refuses new blocks only.
  void set_tenant_quota(TenantId tenant, std::size_t max_blocks);
  TenantUsage tenant_usage(TenantId tenant) const;
  KvCacheStats stats() const;
  // Advanced (tests and tools): how many sequences and pins hold `block`; 0 for a free or merely cached
  // block. Error out_of_range for a block outside the pool.
  std::uint32_t block_ref_count(BlockId block) const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace persona
