// The state behind a PagedKvCache: the pool's storage, the block allocator and prefix index, the
// sequences and the tenants' block accounting, and the operations the public methods compose.
#pragma once

#include "core/huge_page_memory.hpp"
#include "kv/block_hash.hpp"
#include "kv/block_pool.hpp"
#include "kv/prefix_index.hpp"
#include "persona/core/error.hpp"
#include "persona/kv/paged_kv_cache.hpp"

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <unordered_map>
#include <utility>
#include <vector>

namespace persona {
namespace detail {

inline constexpr std::uint32_t kNoTenant = std::numeric_limits<std::uint32_t>::max();

struct Sequence {
  std::uint32_t generation = 1;
  std::uint64_t salt = 0;  // digest of the cache salt (0: none)
  bool alive = false;
  bool pinned = false;
  std::uint32_t tenant_slot = kNoTenant;
  TenantId tenant = kPublicTenant;
  AdapterVersionId adapter = {};
  std::size_t shared_prefix_tokens = 0;
  AdapterVersionId shared_prefix_adapter = {};
  std::size_t length = 0;
  std::size_t cached_tokens = 0;
  std::size_t hashed_blocks = 0;     // leading full blocks whose chain hash is set
  std::vector<std::size_t> written;  // [layers]: positions whose K/V are written, per layer
  std::vector<BlockId> blocks;
};

struct Tenant {
  TenantId id = kPublicTenant;
  std::size_t blocks = 0;
  std::size_t quota = 0;
};

// A tenant holding a block, and through how many of its sequences and pins.
struct BlockHolder {
  std::uint32_t tenant = kNoTenant;
  std::uint32_t refs = 0;
};

struct BlockMeta {
  std::uint64_t hash = 0;  // chain hash; set once the block is full and written in every layer
  // The exact context the block's K/V belong to: a number unique to one (parent context, key, tokens),
  // given when the block is hashed and shared only by blocks found equal to it. A lookup matches a
  // block only if its parent's context, key and tokens are equal, so a hash collision anywhere in a
  // chain is a miss: the whole prefix is verified, not trusted to a 64-bit hash. 0: not hashed.
  std::uint64_t context = 0;
  std::uint64_t parent_context = 0;  // 0 for a sequence's first block
  BlockKey key;
  bool registered = false;  // in the prefix index
  // Who holds it: the first tenant inline, further ones (a public prefix several tenants reuse) beside.
  BlockHolder holder;
  std::vector<BlockHolder> more_holders;
};

// Whether block `m`, holding `held`, is the block for `tokens` under `key` after the context
// `parent_context`: decided exactly, whatever the hashes that found it say.
inline bool same_context(const BlockMeta& m, const std::int32_t* held, std::uint64_t parent_context,
                         const BlockKey& key, std::span<const std::int32_t> tokens) noexcept {
  return m.context != 0 && m.parent_context == parent_context && m.key == key &&
         std::equal(tokens.begin(), tokens.end(), held);
}

}  // namespace detail

struct PagedKvCache::State {
  using Sequence = detail::Sequence;
  using Tenant = detail::Tenant;
  using BlockMeta = detail::BlockMeta;
  using BlockKey = detail::BlockKey;

  KvCacheConfig config;
  std::size_t block_shift = 0;
  std::size_t block_mask = 0;
  std::size_t blocks = 0;
  std::size_t row_elements = 0;       // kv_heads * head_dim: one token's K (or V) in one layer
  std::size_t layer_elements = 0;     // num_blocks * block_size * row_elements
  detail::HugePageMemory k, v;        // [layers, num_blocks, block_size, kv_heads, head_dim] of storage
  Tensor<float> k_scale, v_scale;     // [layers, num_blocks, block_size, kv_heads], int8 only
  Tensor<std::int32_t> block_tokens;  // [num_blocks, block_size]
  std::vector<BlockMeta> meta;
  detail::BlockPool pool;
  detail::PrefixIndex index;
  std::vector<Sequence> sequences;
  std::vector<std::uint32_t> free_slots;
  std::vector<Tenant> tenants;
  std::unordered_map<TenantId, std::uint32_t> tenant_slots;
  std::vector<BlockId> hits;  // scratch of create_sequence
  std::size_t prompt_tokens = 0, hit_tokens = 0, evictions = 0;
  std::uint64_t contexts = 0;  // the last context number given
  // The seed of the chain hash and of salt digests, drawn per cache: nobody outside can aim collisions at
  // the prefix index (they would only cost hits; lookups verify every match exactly).
  std::uint64_t hash_seed;

  State(const KvCacheConfig& c, std::size_t num_blocks)
      : config(c),
        block_shift(static_cast<std::size_t>(std::countr_zero(c.block_size))),
        block_mask(c.block_size - 1),
        blocks(num_blocks),
        row_elements(c.kv_heads * c.head_dim),
        layer_elements(num_blocks * c.block_size * c.kv_heads * c.head_dim),
        k(c.layers * layer_elements * size_of(c.storage)),
        v(c.layers * layer_elements * size_of(c.storage)),
        k_scale(Shape{c.storage == DType::i8 ? c.layers * num_blocks * c.block_size * c.kv_heads : 0}),
        v_scale(Shape{c.storage == DType::i8 ? c.layers * num_blocks * c.block_size * c.kv_heads : 0}),
        block_tokens(Shape{num_blocks * c.block_size}),
        meta(num_blocks),
        pool(num_blocks),
        index(num_blocks),
        hash_seed(detail::random_hash_seed()) {}

  KvLayerView layer(std::size_t l) const noexcept {
    const std::size_t scale_elements = blocks * config.block_size * config.kv_heads;
    const bool int8 = config.storage == DType::i8;
    return KvLayerView{k.data() + l * layer_elements * size_of(config.storage),
                       v.data() + l * layer_elements * size_of(config.storage),
                       int8 ? k_scale.data() + l * scale_elements : nullptr,
                       int8 ? v_scale.data() + l * scale_elements : nullptr,
                       config.storage,
                       config.layout,
                       config.block_size,
                       config.kv_heads,
                       config.head_dim};
  }

  std::size_t row_of(const KvLayerView& view, const Sequence& s, std::size_t position,
                     std::size_t head) const noexcept {
    return view.row_index(static_cast<std::size_t>(s.blocks[position >> block_shift]), position & block_mask, head);
  }
  std::int32_t* tokens_of(BlockId b) noexcept {
    return block_tokens.data() + static_cast<std::size_t>(b) * config.block_size;
  }
  const std::int32_t* tokens_of(BlockId b) const noexcept {
    return block_tokens.data() + static_cast<std::size_t>(b) * config.block_size;
  }

  const Sequence* find(SequenceId id) const noexcept {
    const std::size_t slot = id.value & 0xffffffffu;
    const auto generation = static_cast<std::uint32_t>(id.value >> 32);
    if (slot >= sequences.size() || !sequences[slot].alive || sequences[slot].generation != generation) return nullptr;
    return &sequences[slot];
  }
  const Sequence& get(SequenceId id, const char* function) const {
    const Sequence* s = find(id);
    PERSONA_CHECK_AT(function, not_found, s != nullptr, "unknown or freed sequence id {:#x}", id.value);
    return *s;
  }
  Sequence& get(SequenceId id, const char* function) {
    return const_cast<Sequence&>(std::as_const(*this).get(id, function));
  }
  // As get, for a call acting for `tenant`: Error permission_denied for another tenant's sequence.
  const Sequence& get_owned(SequenceId id, TenantId tenant, const char* function) const {
    const Sequence& s = get(id, function);
    PERSONA_CHECK_AT(function, permission_denied, s.tenant == tenant, "sequence {:#x} is not tenant {}'s", id.value,
                     tenant);
    return s;
  }
  Sequence& get_owned(SequenceId id, TenantId tenant, const char* function) {
    return const_cast<Sequence&>(std::as_const(*this).get_owned(id, tenant, function));
  }

  BlockKey key_for(const Sequence& s, std::size_t block_index) const noexcept {
    if ((block_index + 1) * config.block_size <= s.shared_prefix_tokens) {
      return BlockKey{true, kPublicTenant, s.shared_prefix_adapter, s.salt};
    }
    return BlockKey{false, s.tenant, s.adapter, s.salt};
  }

  // The slot of `tenant` in the accounting, made on first sight.
  std::uint32_t tenant_slot(TenantId tenant);
  std::uint32_t take_slot();
  // Gives `s` (a fork or pin sharing existing blocks) a slot and takes a reference to each of its blocks.
  SequenceId adopt(Sequence s);
  // Error capacity_exhausted unless `count` more blocks fit in the pool and `charged` more in the tenant's
  // quota.
  void require_blocks(std::uint32_t tenant, std::size_t count, std::size_t charged, const char* function) const;
  // A block for tenant `owner`, reference count 1 (capacity checked by the caller).
  BlockId acquire(std::uint32_t owner) noexcept;
  // Whether `tenant` holds `b` already (a retain then charges it nothing).
  bool holds(BlockId b, std::uint32_t tenant) const noexcept;
  // Makes room for `tenant` among b's holders, so that the retain that follows cannot fail (may throw
  // std::bad_alloc, changing nothing observable). Returns whether that retain will charge the tenant.
  bool prepare_retain(BlockId b, std::uint32_t tenant);
  // One more reference by one of `tenant`'s sequences; charges the tenant if it did not hold the block.
  void retain(BlockId b, std::uint32_t tenant) noexcept;
  // One reference by one of `tenant`'s sequences less; the tenant's charge goes with its last one.
  void release(BlockId b, std::uint32_t tenant) noexcept;
  void copy_block(BlockId from, BlockId to, std::size_t slots) noexcept;
  // Sets the chain hash of every full block written in all layers, and enters it in the prefix index
  // unless an equal block is there already.
  void hash_written_blocks(Sequence& s) noexcept;
  // The block holding `tokens` under `key` after the block whose hash and context are `parent_hash` and
  // `parent_context` (kRootHash-seeded and 0 for a first block), or kNoBlock. A hash match is confirmed
  // against the block's parent context, key and tokens: a collision is a miss, never another's block.
  BlockId lookup(std::uint64_t parent_hash, std::uint64_t parent_context, const BlockKey& key,
                 std::span<const std::int32_t> tokens, std::uint64_t& hash) const noexcept;
  std::uint64_t root_hash() const noexcept { return detail::mix(detail::kRootHash, hash_seed); }
  // Whether cached block `held` holds what `fresh` (being hashed, after the parent at `parent_hash`)
  // holds, under the same key, but after another context that no lookup can reach any more: the prefix
  // before it was rewritten or evicted. `fresh` then takes its place in the index.
  bool unreachable_behind(BlockId held, BlockId fresh, std::uint64_t parent_hash) const noexcept;
  // Takes a block out of the prefix cache (freed if nobody holds it).
  void forget_cached(BlockId b) noexcept;
  std::size_t reserve_tokens(Sequence& s, std::span<const std::int32_t> tokens, const char* function);
};

// The per-block calls of every sequence operation, inline.
inline bool PagedKvCache::State::holds(BlockId b, std::uint32_t tenant) const noexcept {
  const BlockMeta& m = meta[static_cast<std::size_t>(b)];
  return m.holder.tenant == tenant || std::any_of(m.more_holders.begin(), m.more_holders.end(),
                                                  [&](const detail::BlockHolder& h) { return h.tenant == tenant; });
}

inline bool PagedKvCache::State::prepare_retain(BlockId b, std::uint32_t tenant) {
  BlockMeta& m = meta[static_cast<std::size_t>(b)];
  if (m.holder.tenant == tenant) return false;
  if (m.holder.tenant == detail::kNoTenant) return true;
  if (holds(b, tenant)) return false;
  m.more_holders.reserve(m.more_holders.size() + 1);
  return true;
}

inline void PagedKvCache::State::retain(BlockId b, std::uint32_t tenant) noexcept {
  BlockMeta& m = meta[static_cast<std::size_t>(b)];
  pool.retain(b);
  if (m.holder.tenant == tenant) {
    ++m.holder.refs;
    return;
  }
  for (detail::BlockHolder& h : m.more_holders) {
    if (h.tenant == tenant) {
      ++h.refs;
      return;
    }
  }
  ++tenants[tenant].blocks;
  if (m.holder.tenant == detail::kNoTenant) {
    m.holder = {tenant, 1};
  } else {
    m.more_holders.push_back({tenant, 1});  // room made by prepare_retain
  }
}

inline void PagedKvCache::State::release(BlockId b, std::uint32_t tenant) noexcept {
  BlockMeta& m = meta[static_cast<std::size_t>(b)];
  pool.release(b);
  detail::BlockHolder* h = &m.holder;
  if (h->tenant != tenant) {
    h = &*std::find_if(m.more_holders.begin(), m.more_holders.end(),
                       [&](const detail::BlockHolder& x) { return x.tenant == tenant; });
  }
  if (--h->refs != 0) return;
  --tenants[tenant].blocks;
  if (h == &m.holder) {
    if (m.more_holders.empty()) {
      m.holder = {};
      return;
    }
    m.holder = m.more_holders.back();
  } else {
    *h = m.more_holders.back();
  }
  m.more_holders.pop_back();
}

}  // namespace persona
