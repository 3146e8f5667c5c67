#include "kv/paged_kv_cache_state.hpp"

#include <algorithm>
#include <cstring>
#include <random>
#include <string>

namespace persona {

std::uint64_t detail::random_hash_seed() {
  std::random_device device;
  return (static_cast<std::uint64_t>(device()) << 32) ^ device();
}

std::uint32_t PagedKvCache::State::tenant_slot(TenantId tenant) {
  if (const auto it = tenant_slots.find(tenant); it != tenant_slots.end()) return it->second;
  tenants.push_back(Tenant{tenant, 0, 0});
  try {
    tenant_slots.emplace(tenant, static_cast<std::uint32_t>(tenants.size() - 1));
  } catch (...) {
    tenants.pop_back();
    throw;
  }
  return static_cast<std::uint32_t>(tenants.size() - 1);
}

std::uint32_t PagedKvCache::State::take_slot() {
  if (!free_slots.empty()) {
    const std::uint32_t slot = free_slots.back();
    free_slots.pop_back();
    return slot;
  }
  PERSONA_CHECK_CODE(capacity_exhausted, sequences.size() < 0xffffffffu, "{} sequences exist; no more ids",
                     sequences.size());
  sequences.emplace_back();
  return static_cast<std::uint32_t>(sequences.size() - 1);
}

SequenceId PagedKvCache::State::adopt(Sequence s) {
  const std::uint32_t slot = take_slot();
  Sequence& target = sequences[slot];
  s.generation = target.generation;
  s.alive = true;
  target = std::move(s);
  for (const BlockId b : target.blocks) retain(b, target.tenant_slot);  // its own tenant's: no allocation
  return SequenceId{(static_cast<std::uint64_t>(target.generation) << 32) | slot};
}

void PagedKvCache::State::require_blocks(std::uint32_t tenant, std::size_t count, std::size_t charged,
                                         const char* function) const {
  const Tenant& t = tenants[tenant];
  PERSONA_CHECK_AT(function, capacity_exhausted, count <= pool.available(),
                   "{} more blocks needed but {} of {} are available ({} used); tenant {} holds {} blocks (quota {})",
                   count, pool.available(), blocks, pool.used(), t.id, t.blocks,
                   t.quota == 0 ? std::string("none") : std::to_string(t.quota));
  PERSONA_CHECK_AT(function, capacity_exhausted, t.quota == 0 || t.blocks + charged <= t.quota,
                   "tenant {} holds {} blocks and needs {} more: over its quota of {} ({} of {} blocks in use)", t.id,
                   t.blocks, charged, t.quota, pool.used(), blocks);
}

BlockId PagedKvCache::State::acquire(std::uint32_t owner) noexcept {
  const detail::BlockPool::Allocation a = pool.allocate();
  BlockMeta& m = meta[static_cast<std::size_t>(a.block)];
  if (a.evicted) {
    index.erase(m.hash);
    ++evictions;
  }
  m.hash = m.context = m.parent_context = 0;
  m.key = {};
  m.registered = false;
  m.holder = {owner, 1};
  m.more_holders.clear();  // keeps its capacity: a later share need not allocate
  ++tenants[owner].blocks;
  return a.block;
}

void PagedKvCache::State::copy_block(BlockId from, BlockId to, std::size_t slots) noexcept {
  const std::size_t row_bytes = config.head_dim * size_of(config.storage);
  for (std::size_t l = 0; l < config.layers; ++l) {
    const KvLayerView view = layer(l);
    for (std::size_t s = 0; s < slots; ++s) {
      for (std::size_t h = 0; h < config.kv_heads; ++h) {
        const std::size_t from_row = view.row_index(static_cast<std::size_t>(from), s, h);
        const std::size_t to_row = view.row_index(static_cast<std::size_t>(to), s, h);
        std::memcpy(const_cast<std::byte*>(view.k) + to_row * row_bytes, view.k + from_row * row_bytes, row_bytes);
        std::memcpy(const_cast<std::byte*>(view.v) + to_row * row_bytes, view.v + from_row * row_bytes, row_bytes);
        if (config.storage == DType::i8) {
          const_cast<float*>(view.k_scale)[to_row] = view.k_scale[from_row];
          const_cast<float*>(view.v_scale)[to_row] = view.v_scale[from_row];
        }
      }
    }
  }
  std::memcpy(tokens_of(to), tokens_of(from), slots * sizeof(std::int32_t));
}

void PagedKvCache::State::hash_written_blocks(Sequence& s) noexcept {
  const std::size_t written = *std::min_element(s.written.begin(), s.written.end());
  for (std::size_t i = s.hashed_blocks; (i + 1) * config.block_size <= written; ++i) {
    const BlockId b = s.blocks[i];
    BlockMeta& m = meta[static_cast<std::size_t>(b)];
    if (m.registered) {  // a block found in the cache: hashed when it was first filled
      s.hashed_blocks = i + 1;
      continue;
    }
    const BlockMeta* parent = i == 0 ? nullptr : &meta[static_cast<std::size_t>(s.blocks[i - 1])];
    const std::span<const std::int32_t> tokens(tokens_of(b), config.block_size);
    const std::uint64_t parent_hash = parent != nullptr ? parent->hash : root_hash();
    m.parent_context = parent != nullptr ? parent->context : 0;
    m.key = key_for(s, i);
    m.hash = detail::chain_hash(parent_hash, m.key, tokens);
    std::uint64_t unused = 0;
    if (const BlockId equal = lookup(parent_hash, m.parent_context, m.key, tokens, unused); equal != kNoBlock) {
      m.context = meta[static_cast<std::size_t>(equal)].context;  // the same context, cached in another block
    } else {
      m.context = ++contexts;
      if (const BlockId held = index.find(m.hash); held != kNoBlock && unreachable_behind(held, b, parent_hash)) {
        forget_cached(held);
      }
      if (index.insert(m.hash, b)) {  // false: another context has this hash; this block stays uncached
        m.registered = true;
        pool.set_cacheable(b, true);
      }
    }
    s.hashed_blocks = i + 1;
  }
}

bool PagedKvCache::State::unreachable_behind(BlockId held, BlockId fresh_block,
                                             std::uint64_t parent_hash) const noexcept {
  const BlockMeta& h = meta[static_cast<std::size_t>(held)];
  const BlockMeta& fresh = meta[static_cast<std::size_t>(fresh_block)];
  if (fresh.parent_context == 0 || !(h.key == fresh.key) || h.parent_context == fresh.parent_context) return false;
  if (!std::equal(tokens_of(held), tokens_of(held) + config.block_size, tokens_of(fresh_block))) return false;
  // The index holds one block per hash: the one at the parent's hash is what every lookup walks through.
  const BlockId parent = index.find(parent_hash);
  return parent != kNoBlock && meta[static_cast<std::size_t>(parent)].context == fresh.parent_context;
}

void PagedKvCache::State::forget_cached(BlockId b) noexcept {
  BlockMeta& m = meta[static_cast<std::size_t>(b)];
  index.erase(m.hash);
  m.registered = false;
  if (pool.ref_count(b) == 0) {
    pool.uncache(b);
  } else {
    pool.set_cacheable(b, false);  // its holders keep it; released, it is freed
  }
}

BlockId PagedKvCache::State::lookup(std::uint64_t parent_hash, std::uint64_t parent_context, const BlockKey& key,
                                    std::span<const std::int32_t> tokens, std::uint64_t& hash) const noexcept {
  hash = detail::chain_hash(parent_hash, key, tokens);
  const BlockId b = index.find(hash);
  if (b == kNoBlock) return kNoBlock;
  return detail::same_context(meta[static_cast<std::size_t>(b)], tokens_of(b), parent_context, key, tokens) ? b
                                                                                                            : kNoBlock;
}

std::size_t PagedKvCache::State::reserve_tokens(Sequence& s, std::span<const std::int32_t> tokens,
                                                const char* function) {
  const std::size_t n = tokens.size(), start = s.length, bs = config.block_size;
  if (n == 0) return start;
  const std::size_t fill = start & block_mask;
  const std::size_t have = (start + bs - 1) >> block_shift, need_total = (start + n + bs - 1) >> block_shift;
  bool copy_last = false, uncache_last = false;
  if (fill != 0) {
    const BlockId last = s.blocks.back();
    copy_last = pool.ref_count(last) > 1;
    uncache_last = !copy_last && meta[static_cast<std::size_t>(last)].registered;
  }
  const std::size_t new_blocks = need_total - have + (copy_last ? 1 : 0);
  require_blocks(s.tenant_slot, new_blocks, new_blocks, function);
  s.blocks.reserve(need_total);
  if (uncache_last) {
    // A rolled-back block this sequence alone holds but the prefix cache lists: it leaves the cache and
    // is written in place (a copy would need a spare block, and quota, just to roll back).
    BlockMeta& m = meta[static_cast<std::size_t>(s.blocks.back())];
    index.erase(m.hash);
    m.registered = false;
    pool.set_cacheable(s.blocks.back(), false);
  }
  if (copy_last) {
    const BlockId old = s.blocks.back();
    const BlockId copy = acquire(s.tenant_slot);
    copy_block(old, copy, fill);
    release(old, s.tenant_slot);
    s.blocks.back() = copy;
  }
  for (std::size_t i = have; i < need_total; ++i) s.blocks.push_back(acquire(s.tenant_slot));
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t position = start + i;
    tokens_of(s.blocks[position >> block_shift])[position & block_mask] = tokens[i];
  }
  s.length = start + n;
  return start;
}

}  // namespace persona
