// HnswIndex's public methods: validation, the lock choreography of adds, updates and removes, slot
// bookkeeping and statistics. The graph itself is in hnsw_graph.cpp, the file format in hnsw_io.cpp.
#include "persona/ann/hnsw_index.hpp"

#include "ann/hnsw_state.hpp"
#include "ann/vector_math.hpp"
#include "persona/core/cpu_features.hpp"
#include "persona/core/threading.hpp"

#include <algorithm>
#include <cmath>
#include <exception>
#include <mutex>
#include <shared_mutex>

namespace persona {

using detail::Slot;

HnswIndex::HnswIndex(const HnswConfig& config) {
  PERSONA_CHECK(config.dim > 0 && config.dim <= 65536, "dim is {}; expected 1..65536", config.dim);
  PERSONA_CHECK(config.M >= 2 && config.M <= 100, "M is {}; expected 2..100", config.M);
  PERSONA_CHECK(config.ef_construction >= 1, "ef_construction is 0; expected at least 1");
  PERSONA_CHECK(
      config.metric == Metric::l2 || config.metric == Metric::inner_product || config.metric == Metric::cosine,
      "unknown metric {}", static_cast<int>(config.metric));
  PERSONA_CHECK(config.storage == VectorStorage::f32 || config.storage == VectorStorage::int8,
                "unknown vector storage {}", static_cast<int>(config.storage));
  PERSONA_CHECK(config.rerank_factor >= 1, "rerank_factor is 0; expected at least 1");
  state_ = std::make_unique<detail::HnswState>(config);
}

HnswIndex::~HnswIndex() = default;
HnswIndex::HnswIndex(HnswIndex&&) noexcept = default;
HnswIndex& HnswIndex::operator=(HnswIndex&&) noexcept = default;

const HnswConfig& HnswIndex::config() const noexcept { return state_->config; }

std::size_t HnswIndex::size() const noexcept {
  std::lock_guard lock(state_->book_mutex);
  return state_->live;
}

void HnswIndex::add(VectorLabel label, std::span<const float> vector, TenantId tenant) {
  detail::HnswState& st = *state_;
  std::vector<float> prepared(st.config.dim);
  detail::prepare_vector(st.config.metric, st.config.dim, vector, prepared.data(), "add", "vector");
  // Held shared from taking a slot until the vector is in its tenant's list: remove, update and compact
  // (exclusive) never meet a half-added vector.
  std::shared_lock inserting(st.rewrite_mutex);
  Slot slot = 0;
  std::size_t level = 0;
  bool reused = false;
  // A slot is taken only once the arrays hold it, so a failed allocation changes nothing.
  for (std::size_t wanted = 1; wanted != 0;) {
    wanted = 0;
    {
      std::shared_lock growth(st.growth);
      std::lock_guard lock(st.book_mutex);
      PERSONA_CHECK(!st.slots.contains(label), "label {} is already in the index", label);
      if (!st.free_slots.empty()) {
        slot = st.free_slots.back();
        st.free_slots.pop_back();
        reused = true;
      } else if (st.next_slot < st.capacity) {
        slot = static_cast<Slot>(st.next_slot++);
        const double u = std::uniform_real_distribution<double>(0.0, 1.0)(st.rng);
        level = std::min(detail::kMaxLevel, static_cast<std::size_t>(-std::log(std::max(u, 1e-300)) * st.level_scale));
      } else {
        PERSONA_CHECK_CODE(capacity_exhausted, st.next_slot < 0xffffffffu, "the index holds {} vectors; no more slots",
                           st.next_slot);
        wanted = st.next_slot + 1;
      }
      if (wanted == 0) {
        st.slots.emplace(label, detail::HnswState::LabelEntry{slot, tenant});
        ++st.live;
      }
    }
    if (wanted != 0) st.reserve(wanted);
  }
  try {
    if (reused) {
      // The slot still routes searches: its vector changes only while none runs, and it stays deleted
      // (never a result) until it is linked at its new place.
      {
        std::unique_lock lock(st.growth);
        st.write_vector(slot, prepared.data());
        st.labels[slot] = label;
        st.tenants[slot] = tenant;
        level = st.levels[slot];
      }
      std::shared_lock lock(st.growth);
      st.repair_around(persona::detail::distance_kernels(active_isa_level()), slot, level);
      st.link(slot, level, prepared.data());
      st.deleted[slot].store(false, std::memory_order_release);
    } else {
      std::shared_lock lock(st.growth);
      st.write_vector(slot, prepared.data());
      st.labels[slot] = label;
      st.tenants[slot] = tenant;
      if (level > 0) {
        st.upper[slot] = std::make_unique<Slot[]>(level * st.stride());
        std::fill_n(st.upper[slot].get(), level * st.stride(), Slot{0});
      }
      st.levels[slot] = static_cast<std::uint8_t>(level);  // only once its upper links exist
      st.link(slot, level, prepared.data());
    }
    std::shared_lock growth(st.growth);
    std::lock_guard lock(st.book_mutex);
    st.tenant_lists.add(slot, tenant);
  } catch (...) {
    // Out of memory while linking: the vector never became a result; its slot is freed for reuse (it may
    // route searches meanwhile, as any deleted one does).
    std::shared_lock growth(st.growth);
    std::lock_guard lock(st.book_mutex);
    st.deleted[slot].store(true, std::memory_order_release);
    st.slots.erase(label);
    --st.live;
    st.free_slots.push_back(slot);
    throw;
  }
}

void HnswIndex::add(std::span<const VectorLabel> labels, TensorView<const float> vectors,
                    std::span<const TenantId> tenants) {
  PERSONA_CHECK_CODE(shape_mismatch,
                     vectors.rank() == 2 && vectors.dim(0) == labels.size() && vectors.dim(1) == state_->config.dim &&
                         vectors.is_contiguous(),
                     "vectors have shape {}; expected contiguous [{}, {}]", vectors.shape().to_string(), labels.size(),
                     state_->config.dim);
  PERSONA_CHECK_CODE(shape_mismatch, tenants.size() == labels.size(), "{} tenants for {} labels", tenants.size(),
                     labels.size());
  const std::size_t dim = state_->config.dim;
  std::size_t next_slot = 0;
  {
    std::lock_guard lock(state_->book_mutex);
    next_slot = state_->next_slot + labels.size() - std::min(labels.size(), state_->free_slots.size());
  }
  state_->reserve(next_slot);
  std::exception_ptr failure;
  std::mutex failure_mutex;
  parallel_for(labels.size(), 64, [&](std::size_t begin, std::size_t end) {
    for (std::size_t i = begin; i < end; ++i) {
      try {
        add(labels[i], {vectors.data() + i * dim, dim}, tenants[i]);
      } catch (...) {
        std::lock_guard lock(failure_mutex);
        if (!failure) failure = std::current_exception();
      }
    }
  });
  if (failure) std::rethrow_exception(failure);
}

void HnswIndex::update(VectorLabel label, std::span<const float> vector, TenantId tenant) {
  detail::HnswState& st = *state_;
  std::vector<float> prepared(st.config.dim);
  detail::prepare_vector(st.config.metric, st.config.dim, vector, prepared.data(), "update", "vector");
  std::unique_lock rewrite(st.rewrite_mutex);
  Slot slot;
  {
    std::shared_lock growth(st.growth);
    std::lock_guard lock(st.book_mutex);
    slot = st.owned_slot(label, tenant, "update");
    st.tenant_lists.remove(slot, tenant);
    st.deleted[slot].store(true, std::memory_order_release);
  }
  std::size_t level = 0;
  {
    std::unique_lock lock(st.growth);
    st.write_vector(slot, prepared.data());
    level = st.levels[slot];
  }
  const auto finish = [&] {
    std::shared_lock growth(st.growth);
    std::lock_guard lock(st.book_mutex);
    st.tenant_lists.add(slot, tenant);
    st.deleted[slot].store(false, std::memory_order_release);
  };
  try {
    std::shared_lock lock(st.growth);
    st.repair_around(persona::detail::distance_kernels(active_isa_level()), slot, level);
    st.link(slot, level, prepared.data());
  } catch (...) {
    finish();  // out of memory while relinking: the new vector stays, reachable through its old links
    throw;
  }
  finish();
}

void HnswIndex::remove(VectorLabel label, TenantId tenant) {
  detail::HnswState& st = *state_;
  std::unique_lock rewrite(st.rewrite_mutex);
  std::shared_lock growth(st.growth);  // before book_mutex, the order every path takes
  std::lock_guard lock(st.book_mutex);
  const Slot slot = st.owned_slot(label, tenant, "remove");
  st.slots.erase(label);
  st.deleted[slot].store(true, std::memory_order_release);
  st.tenant_lists.remove(slot, tenant);
  st.free_slots.push_back(slot);
  --st.live;
}

void HnswIndex::compact() {
  detail::HnswState& st = *state_;
  std::unique_lock rewrite(st.rewrite_mutex);
  std::unique_lock growth(st.growth);
  std::lock_guard lock(st.book_mutex);
  st.compact();
}

bool HnswIndex::contains(VectorLabel label, TenantId tenant) const {
  std::lock_guard lock(state_->book_mutex);
  const auto it = state_->slots.find(label);
  return it != state_->slots.end() && it->second.tenant == tenant;
}

std::vector<Neighbor> HnswIndex::search(std::span<const float> query, std::size_t k, const SearchFilter& filter,
                                        std::size_t ef) const {
  const detail::HnswState& st = *state_;
  PERSONA_CHECK(k > 0, "k is 0; expected at least 1");
  std::vector<float> q(st.config.dim);
  detail::prepare_vector(st.config.metric, st.config.dim, query, q.data(), "search", "query");
  return st.search(q.data(), k, filter, ef);
}

HnswStats HnswIndex::stats() const {
  const detail::HnswState& st = *state_;
  std::shared_lock growth(st.growth);
  std::lock_guard lock(st.book_mutex);
  HnswStats s;
  s.vectors = st.live;
  s.deleted = st.free_slots.size();
  const std::size_t f32_row = st.has_f32 ? st.config.dim * sizeof(float) : 0;
  const std::size_t code_row = st.has_codes ? st.code_stride : 0;
  s.vector_bytes = st.next_slot * (f32_row + code_row);
  s.mapped_bytes = st.next_slot * ((st.f32.mapped() ? f32_row : 0) + (st.codes.mapped() ? code_row : 0));
  std::size_t upper_bytes = 0;
  for (std::size_t i = 0; i < std::min(st.next_slot, st.capacity); ++i) {
    upper_bytes += st.levels[i] * st.stride() * sizeof(Slot);
  }
  s.graph_bytes = st.next_slot * st.stride0() * sizeof(Slot) + upper_bytes;
  s.bytes = st.f32.owned_bytes() + st.codes.owned_bytes() + st.links0.owned_bytes() + upper_bytes +
            st.capacity * (sizeof(void*) + 1 + sizeof(VectorLabel) + sizeof(TenantId) + sizeof(detail::SpinLock) +
                           sizeof(std::atomic<bool>)) +
            st.slots.size() * (sizeof(VectorLabel) + sizeof(detail::HnswState::LabelEntry) + 2 * sizeof(void*)) +
            (st.tenant_lists.position_capacity() + st.free_slots.capacity() + st.live) * sizeof(Slot) +
            sizeof(detail::HnswState);
  return s;
}

}  // namespace persona
