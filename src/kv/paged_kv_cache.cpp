#include "persona/kv/paged_kv_cache.hpp"

#include "kv/kv_storage.hpp"
#include "kv/paged_kv_cache_state.hpp"
#include "persona/core/error.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

namespace persona {
namespace {

// K/V ([tokens, kv_heads, head_dim] in `k` and `v`) must be finite and, stored as `storage`, stay finite.
void check_storable(DType storage, std::span<const float> k, std::span<const float> v, std::size_t layer,
                    std::size_t kv_heads, std::size_t head_dim, const char* function) {
  const std::size_t row_elements = kv_heads * head_dim;
  const float limit = storage == DType::f16    ? 65504.0f
                      : storage == DType::bf16 ? 3.38953139e38f
                                               : std::numeric_limits<float>::max();
  for (const auto& [values, name] : {std::pair{k, "K"}, std::pair{v, "V"}}) {
    for (std::size_t i = 0; i < values.size(); ++i) {
      PERSONA_CHECK_AT(function, invalid_argument, std::fabs(values[i]) <= limit,
                       "{} of layer {} at token {}, head {}, element {} is {}: not finite{}", name, layer,
                       i / row_elements, i % row_elements / head_dim, i % head_dim, values[i],
                       storage == DType::f16 || storage == DType::bf16
                           ? fmt::format(" or beyond {} storage (|x| <= {})", name_of(storage), limit)
                           : "");
    }
  }
}

}  // namespace

double KvCacheStats::waste() const noexcept {
  const std::size_t slots = used_blocks * block_size;
  return slots == 0 ? 0.0 : static_cast<double>(wasted_slots) / static_cast<double>(slots);
}

PagedKvCache::PagedKvCache(const KvCacheConfig& config) {
  config.validate();
  const std::size_t num_blocks = config.num_blocks != 0 ? config.num_blocks : config.byte_budget / config.block_bytes();
  PERSONA_CHECK(num_blocks > 0 && num_blocks <= static_cast<std::size_t>(std::numeric_limits<BlockId>::max()),
                "{} blocks requested; expected 1..{}", num_blocks, std::numeric_limits<BlockId>::max());
  std::size_t bytes = 0;
  PERSONA_CHECK_CODE(capacity_exhausted,
                     !__builtin_mul_overflow(num_blocks, config.block_bytes(), &bytes) && bytes <= (SIZE_MAX >> 2),
                     "{} blocks of {} bytes overflow the address space", num_blocks, config.block_bytes());
  state_ = std::make_unique<State>(config, num_blocks);
  state_->config.num_blocks = num_blocks;
}

PagedKvCache::~PagedKvCache() = default;
PagedKvCache::PagedKvCache(PagedKvCache&&) noexcept = default;
PagedKvCache& PagedKvCache::operator=(PagedKvCache&&) noexcept = default;

const KvCacheConfig& PagedKvCache::config() const noexcept { return state_->config; }
std::size_t PagedKvCache::num_blocks() const noexcept { return state_->blocks; }

namespace {
SequenceId make_id(std::size_t slot, std::uint32_t generation) {
  return SequenceId{(static_cast<std::uint64_t>(generation) << 32) | slot};
}
}  // namespace

SequenceId PagedKvCache::create_sequence(const SequenceSpec& spec) {
  State& st = *state_;
  const std::size_t bs = st.config.block_size;
  PERSONA_CHECK(spec.tenant.has_value(),
                "the sequence has no tenant; name its owner (kPublicTenant only for a public sequence)");
  const std::uint32_t tenant = st.tenant_slot(*spec.tenant);
  detail::Sequence probe;  // the new sequence's keys, before it has a slot
  probe.tenant = *spec.tenant;
  probe.adapter = spec.adapter;
  probe.shared_prefix_tokens = std::min(spec.shared_prefix_tokens, spec.prompt.size());
  probe.shared_prefix_adapter = spec.shared_prefix_adapter;
  probe.salt = detail::salt_digest(spec.cache_salt, st.hash_seed);

  // Longest cached run of full prompt blocks, leaving at least the last token to compute.
  st.hits.clear();
  const std::size_t max_hits = spec.prompt.empty() ? 0 : (spec.prompt.size() - 1) >> st.block_shift;
  std::uint64_t parent_hash = st.root_hash(), parent_context = 0;
  std::size_t revived = 0, charged = 0;
  for (std::size_t i = 0; i < max_hits; ++i) {
    std::uint64_t hash = 0;
    const BlockId b =
        st.lookup(parent_hash, parent_context, st.key_for(probe, i), spec.prompt.subspan(i * bs, bs), hash);
    if (b == kNoBlock) break;
    st.hits.push_back(b);
    revived += st.pool.ref_count(b) == 0 ? 1 : 0;
    charged += st.prepare_retain(b, tenant) ? 1 : 0;  // room made now: the retains below cannot fail
    parent_hash = hash;
    parent_context = st.meta[static_cast<std::size_t>(b)].context;
  }
  const std::size_t cached = st.hits.size() * bs, fresh = (spec.prompt.size() - cached + bs - 1) / bs;
  st.require_blocks(tenant, revived + fresh, charged + fresh, "create_sequence");

  const std::uint32_t slot = st.take_slot();
  detail::Sequence& s = st.sequences[slot];
  s.pinned = false;
  s.salt = probe.salt;
  s.tenant = *spec.tenant;
  s.adapter = spec.adapter;
  s.tenant_slot = tenant;
  s.shared_prefix_tokens = probe.shared_prefix_tokens;
  s.shared_prefix_adapter = probe.shared_prefix_adapter;
  s.blocks.reserve(std::min((std::max(spec.max_tokens, spec.prompt.size()) + bs - 1) / bs, st.blocks));
  s.written.assign(st.config.layers, 0);
  s.alive = true;
  for (const BlockId b : st.hits) {
    st.retain(b, tenant);
    s.blocks.push_back(b);
  }
  s.length = s.cached_tokens = cached;
  s.hashed_blocks = st.hits.size();
  std::fill(s.written.begin(), s.written.end(), cached);
  st.prompt_tokens += spec.prompt.size();
  st.hit_tokens += cached;
  st.reserve_tokens(s, spec.prompt.subspan(cached), "create_sequence");
  return make_id(slot, s.generation);
}

SequenceId PagedKvCache::fork(SequenceId parent_id, TenantId tenant) {
  State& st = *state_;
  const detail::Sequence& parent = st.get_owned(parent_id, tenant, "fork");
  PERSONA_CHECK(!parent.pinned, "sequence {:#x} is a pin; fork the sequence it was made from", parent_id.value);
  const std::size_t written = *std::min_element(parent.written.begin(), parent.written.end());
  PERSONA_CHECK(written == parent.length,
                "sequence {:#x} has {} tokens but K/V written for only {} in every layer; write them before forking",
                parent_id.value, parent.length, written);
  detail::Sequence copy = parent;  // before take_slot, which may move the parent
  copy.cached_tokens = 0;
  return st.adopt(std::move(copy));
}

SequenceId PagedKvCache::pin_prefix(SequenceId source_id, std::size_t tokens, TenantId tenant) {
  State& st = *state_;
  const detail::Sequence& source = st.get_owned(source_id, tenant, "pin_prefix");
  const std::size_t written = *std::min_element(source.written.begin(), source.written.end());
  PERSONA_CHECK_CODE(out_of_range, tokens <= written,
                     "pin of {} tokens but sequence {:#x} has K/V written for {} (length {})", tokens, source_id.value,
                     written, source.length);
  const std::size_t full = tokens >> st.block_shift;
  detail::Sequence pin = source;
  pin.blocks.resize(full);
  pin.length = full * st.config.block_size;
  pin.cached_tokens = 0;
  pin.hashed_blocks = std::min(source.hashed_blocks, full);
  pin.written.assign(st.config.layers, pin.length);
  pin.pinned = true;
  return st.adopt(std::move(pin));
}

void PagedKvCache::free_sequence(SequenceId id, TenantId tenant) {
  State& st = *state_;
  detail::Sequence& s = st.get_owned(id, tenant, "free_sequence");
  // Last block first: the cached list then evicts a prefix's tail before its head.
  for (std::size_t i = s.blocks.size(); i-- > 0;) st.release(s.blocks[i], s.tenant_slot);
  s.blocks.clear();
  s.alive = false;
  s.length = 0;
  // A slot whose generation wrapped is retired: its ids must never come back.
  if (++s.generation != 0) st.free_slots.push_back(static_cast<std::uint32_t>(id.value & 0xffffffffu));
}

std::size_t PagedKvCache::append_tokens(SequenceId id, std::span<const std::int32_t> tokens) {
  State& st = *state_;
  detail::Sequence& s = st.get(id, "append_tokens");
  PERSONA_CHECK(!s.pinned, "sequence {:#x} is a pin made by pin_prefix; pins cannot grow", id.value);
  return st.reserve_tokens(s, tokens, "append_tokens");
}

void PagedKvCache::write_kv(SequenceId id, std::size_t layer, TensorView<const float> k, TensorView<const float> v) {
  State& st = *state_;
  detail::Sequence& s = st.get(id, "write_kv");
  const KvCacheConfig& c = st.config;
  PERSONA_CHECK_CODE(out_of_range, layer < c.layers, "layer {} of a cache with {} layers", layer, c.layers);
  PERSONA_CHECK_CODE(
      shape_mismatch, k.rank() == 3 && k.dim(1) == c.kv_heads && k.dim(2) == c.head_dim && k.is_contiguous(),
      "k has shape {}; expected contiguous [tokens, {}, {}]", k.shape().to_string(), c.kv_heads, c.head_dim);
  PERSONA_CHECK_CODE(shape_mismatch, v.shape() == k.shape() && v.is_contiguous(),
                     "v has shape {}; expected contiguous, as k: {}", v.shape().to_string(), k.shape().to_string());
  const std::size_t n = k.dim(0), start = s.written[layer];
  PERSONA_CHECK_CODE(out_of_range, start + n <= s.length,
                     "K/V for positions {}..{} of layer {}, but sequence {:#x} has {} tokens appended", start,
                     start + n, layer, id.value, s.length);
  check_storable(c.storage, k.span(), v.span(), layer, c.kv_heads, c.head_dim, "write_kv");
  const KvLayerView view = st.layer(layer);
  std::byte* k_base = const_cast<std::byte*>(view.k);
  std::byte* v_base = const_cast<std::byte*>(view.v);
  float* k_scale = const_cast<float*>(view.k_scale);
  float* v_scale = const_cast<float*>(view.v_scale);
  for (std::size_t t = 0; t < n; ++t) {
    for (std::size_t h = 0; h < c.kv_heads; ++h) {
      const std::size_t row = st.row_of(view, s, start + t, h);
      detail::kv_store_row(view, k_base, k_scale, row, &k(t, h, 0));
      detail::kv_store_row(view, v_base, v_scale, row, &v(t, h, 0));
    }
  }
  s.written[layer] = start + n;
  st.hash_written_blocks(s);
}

void PagedKvCache::append(SequenceId id, std::span<const std::int32_t> tokens, TensorView<const float> k,
                          TensorView<const float> v) {
  const KvCacheConfig& c = state_->config;
  const auto expected = Shape{c.layers, tokens.size(), c.kv_heads, c.head_dim};
  PERSONA_CHECK_CODE(shape_mismatch,
                     k.shape() == expected && v.shape() == expected && k.is_contiguous() && v.is_contiguous(),
                     "k has shape {} and v {}; expected contiguous {}", k.shape().to_string(), v.shape().to_string(),
                     expected.to_string());
  detail::Sequence& s = state_->get(id, "append");
  PERSONA_CHECK(!s.pinned, "sequence {:#x} is a pin made by pin_prefix; pins cannot grow", id.value);
  for (std::size_t l = 0; l < c.layers; ++l) {
    check_storable(c.storage, k.row(l).span(), v.row(l).span(), l, c.kv_heads, c.head_dim, "append");
  }
  for (std::size_t l = 0; l < c.layers; ++l) {
    PERSONA_CHECK(s.written[l] == s.length,
                  "sequence {:#x} has positions without K/V in layer {} ({} of {} written); use write_kv", id.value, l,
                  s.written[l], s.length);
  }
  if (tokens.empty()) return;
  append_tokens(id, tokens);
  for (std::size_t l = 0; l < c.layers; ++l) write_kv(id, l, k.row(l), v.row(l));
}

void PagedKvCache::truncate(SequenceId id, std::size_t tokens) {
  State& st = *state_;
  detail::Sequence& s = st.get(id, "truncate");
  PERSONA_CHECK(!s.pinned, "sequence {:#x} is a pin; free it instead", id.value);
  PERSONA_CHECK_CODE(out_of_range, tokens <= s.length, "truncate of {} tokens but sequence {:#x} has {}", tokens,
                     id.value, s.length);
  const std::size_t length = s.length - tokens;
  const std::size_t keep = (length + st.config.block_size - 1) >> st.block_shift;
  while (s.blocks.size() > keep) {
    st.release(s.blocks.back(), s.tenant_slot);
    s.blocks.pop_back();
  }
  s.length = length;
  s.cached_tokens = std::min(s.cached_tokens, length);
  s.shared_prefix_tokens = std::min(s.shared_prefix_tokens, length);
  s.hashed_blocks = std::min(s.hashed_blocks, length >> st.block_shift);
  for (std::size_t& w : s.written) w = std::min(w, length);
}

SequenceInfo PagedKvCache::sequence_info(SequenceId id) const {
  const detail::Sequence& s = state_->get(id, "sequence_info");
  return SequenceInfo{s.tenant, s.adapter, s.length, s.cached_tokens, s.pinned};
}

bool PagedKvCache::contains(SequenceId id) const noexcept { return state_->find(id) != nullptr; }

std::size_t PagedKvCache::written_tokens(SequenceId id, std::size_t layer) const {
  const detail::Sequence& s = state_->get(id, "written_tokens");
  PERSONA_CHECK_CODE(out_of_range, layer < state_->config.layers, "layer {} of a cache with {} layers", layer,
                     state_->config.layers);
  return s.written[layer];
}

std::span<const BlockId> PagedKvCache::blocks(SequenceId id) const { return state_->get(id, "blocks").blocks; }

std::vector<std::int32_t> PagedKvCache::tokens(SequenceId id, TenantId tenant) const {
  const State& st = *state_;
  const detail::Sequence& s = st.get_owned(id, tenant, "tokens");
  std::vector<std::int32_t> out(s.length);
  for (std::size_t p = 0; p < s.length; ++p) out[p] = st.tokens_of(s.blocks[p >> st.block_shift])[p & st.block_mask];
  return out;
}

PageTable PagedKvCache::page_table(std::span<const SequenceId> ids) const {
  const State& st = *state_;
  PageTable table;
  table.indptr.reserve(ids.size() + 1);
  table.indptr.push_back(0);
  for (const SequenceId id : ids) {
    const detail::Sequence& s = st.get(id, "page_table");
    table.indices.insert(table.indices.end(), s.blocks.begin(), s.blocks.end());
    table.indptr.push_back(static_cast<std::int32_t>(table.indices.size()));
    const std::size_t fill = s.length & st.block_mask;
    table.last_page_len.push_back(
        static_cast<std::int32_t>(s.length == 0 ? 0 : (fill == 0 ? st.config.block_size : fill)));
  }
  return table;
}

void PagedKvCache::read_kv(SequenceId id, std::size_t layer, TensorView<float> k, TensorView<float> v,
                           TenantId tenant) const {
  const State& st = *state_;
  const detail::Sequence& s = st.get_owned(id, tenant, "read_kv");
  const KvCacheConfig& c = st.config;
  PERSONA_CHECK_CODE(out_of_range, layer < c.layers, "layer {} of a cache with {} layers", layer, c.layers);
  const auto expected = Shape{s.length, c.kv_heads, c.head_dim};
  PERSONA_CHECK_CODE(shape_mismatch,
                     k.shape() == expected && v.shape() == expected && k.is_contiguous() && v.is_contiguous(),
                     "k has shape {} and v {}; expected contiguous {}", k.shape().to_string(), v.shape().to_string(),
                     expected.to_string());
  const KvLayerView view = st.layer(layer);
  for (std::size_t p = 0; p < s.length; ++p) {
    for (std::size_t h = 0; h < c.kv_heads; ++h) {
      const std::size_t row = st.row_of(view, s, p, h);
      detail::kv_load_row(view, view.k, view.k_scale, row, &k(p, h, 0));
      detail::kv_load_row(view, view.v, view.v_scale, row, &v(p, h, 0));
    }
  }
}

KvLayerView PagedKvCache::layer_view(std::size_t layer) const {
  PERSONA_CHECK_CODE(out_of_range, layer < state_->config.layers, "layer {} of a cache with {} layers", layer,
                     state_->config.layers);
  return state_->layer(layer);
}

void PagedKvCache::set_tenant_quota(TenantId tenant, std::size_t max_blocks) {
  State& st = *state_;
  st.tenants[st.tenant_slot(tenant)].quota = max_blocks;
}

TenantUsage PagedKvCache::tenant_usage(TenantId tenant) const {
  const State& st = *state_;
  const auto it = st.tenant_slots.find(tenant);
  if (it == st.tenant_slots.end()) return {};
  const detail::Tenant& t = st.tenants[it->second];
  return TenantUsage{t.blocks, t.quota};
}

KvCacheStats PagedKvCache::stats() const {
  const State& st = *state_;
  KvCacheStats out;
  out.total_blocks = st.blocks;
  out.used_blocks = st.pool.used();
  out.free_blocks = st.pool.free();
  out.cached_blocks = st.pool.cached();
  out.block_size = st.config.block_size;
  out.prompt_tokens = st.prompt_tokens;
  out.hit_tokens = st.hit_tokens;
  out.evictions = st.evictions;
  out.bytes = st.k.bytes() + st.v.bytes() + (st.k_scale.numel() + st.v_scale.numel()) * sizeof(float);
  // Slots of a used block that no sequence reaches; a block shared by several counts once.
  std::vector<std::uint32_t> filled(st.blocks, 0);
  for (const detail::Sequence& s : st.sequences) {
    if (!s.alive) continue;
    if (!s.pinned) {
      ++out.sequences;
      out.tokens += s.length;
    }
    for (std::size_t i = 0; i < s.blocks.size(); ++i) {
      const std::size_t in_block = std::min(st.config.block_size, s.length - i * st.config.block_size);
      auto& f = filled[static_cast<std::size_t>(s.blocks[i])];
      f = std::max(f, static_cast<std::uint32_t>(in_block));
    }
  }
  for (std::size_t b = 0; b < st.blocks; ++b) {
    if (st.pool.ref_count(static_cast<BlockId>(b)) > 0) out.wasted_slots += st.config.block_size - filled[b];
  }
  return out;
}

std::uint32_t PagedKvCache::block_ref_count(BlockId block) const {
  PERSONA_CHECK_CODE(out_of_range, block >= 0 && static_cast<std::size_t>(block) < state_->blocks,
                     "block {} of a pool of {}", block, state_->blocks);
  return state_->pool.ref_count(block);
}

}  // namespace persona
