// HnswState: everything an HnswIndex holds (its arrays, locks, entry point and bookkeeping) and the
// operations its files share. The public methods live in hnsw_index.cpp, the graph walk and linking in
// hnsw_graph.cpp, compaction in hnsw_compact.cpp, the file format in hnsw_io.cpp.
#pragma once

#include "ann/hnsw_links.hpp"
#include "ann/tenant_lists.hpp"
#include "ann/vector_math.hpp"
#include "ann/vector_storage.hpp"
#include "persona/ann/hnsw_index.hpp"

#include <atomic>
#include <cmath>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <shared_mutex>
#include <span>
#include <unordered_map>
#include <vector>

namespace persona::detail {

struct HnswState {
  HnswConfig config;
  std::size_t max_links0, max_links;  // 2 M on layer 0, M above
  double level_scale;
  bool has_f32, has_codes;
  std::size_t code_stride;  // bytes per int8 row: header, codes, padding to 4

  // Exclusive while the arrays grow, a reused slot's vector is rewritten, or compaction runs; every add
  // and search holds it shared. Lock order: rewrite_mutex, growth, book_mutex. A filter predicate runs
  // under it (shared) and must not call back into the index.
  mutable std::shared_mutex growth;
  std::size_t capacity = 0;
  RowStorage<float> f32;                         // [capacity, dim] when has_f32
  RowStorage<std::int8_t> codes;                 // [capacity, code_stride] when has_codes
  RowStorage<Slot> links0;                       // [capacity, 1 + max_links0]: count, then slots
  std::vector<std::unique_ptr<Slot[]>> upper;    // per node: levels x [1 + max_links]
  std::vector<std::uint8_t> levels;              // [capacity]
  std::vector<VectorLabel> labels;               // [capacity]
  std::vector<TenantId> tenants;                 // [capacity]
  std::unique_ptr<SpinLock[]> locks;             // [capacity]
  std::unique_ptr<std::atomic<bool>[]> deleted;  // [capacity]

  std::mutex entry_mutex;
  std::atomic<std::int64_t> entry{-1};
  std::atomic<int> top_level{-1};

  std::shared_mutex rewrite_mutex;  // shared by each add in flight; exclusive for update, remove, compact
  mutable std::mutex book_mutex;    // labels, tenants, counts, free slots, level draws
  struct LabelEntry {
    Slot slot;
    TenantId tenant;  // the owner, as in tenants[slot] (which add writes later, outside book_mutex)
  };
  std::unordered_map<VectorLabel, LabelEntry> slots;  // the live labels
  TenantLists tenant_lists;                           // exactly the live slots
  std::vector<Slot> free_slots;                       // deleted slots that later inserts reuse
  std::size_t next_slot = 0, live = 0;
  std::mt19937_64 rng;

  explicit HnswState(const HnswConfig& c);

  // The slot of `tenant`'s `label`; the caller holds book_mutex. Error not_found for an unknown label,
  // permission_denied for another tenant's.
  Slot owned_slot(VectorLabel label, TenantId tenant, const char* function) const;

  std::size_t stride0() const noexcept { return 1 + max_links0; }
  std::size_t stride() const noexcept { return 1 + max_links; }
  const float* f32_row(Slot s) const noexcept { return f32.data() + static_cast<std::size_t>(s) * config.dim; }
  const std::int8_t* code_row(Slot s) const noexcept {
    return codes.data() + static_cast<std::size_t>(s) * code_stride;
  }
  Slot* links(Slot s, std::size_t level) noexcept {
    return level == 0 ? links0.data() + static_cast<std::size_t>(s) * stride0()
                      : upper[s].get() + (level - 1) * stride();
  }
  const Slot* links(Slot s, std::size_t level) const noexcept { return const_cast<HnswState*>(this)->links(s, level); }
  std::size_t max_links_at(std::size_t level) const noexcept { return level == 0 ? max_links0 : max_links; }
  // The link count, never past the list's end even if a concurrent write were torn.
  std::size_t link_count(const Slot* list, std::size_t level) const noexcept {
    return std::min<std::size_t>(load_link(list), max_links_at(level));
  }

  // Distances from one float vector to stored rows: through the int8 codes, or through the f32 rows.
  struct QueryDistance {
    const HnswState* st;
    const DistanceKernelTable* k;
    const float* q;
    bool use_codes;
    float q_norm = 0.0f, q_sum = 0.0f;

    float operator()(Slot s) const noexcept {
      const std::size_t dim = st->config.dim;
      if (!use_codes) return distance(*k, st->config.metric, q, st->f32_row(s), dim);
      const std::int8_t* row = st->code_row(s);
      const Int8RowHeader h = int8_row_header(row);
      // q . x = offset * sum(q) + scale * (q . codes)
      const float dot = h.offset * q_sum + h.scale * k->dot_i8(q, int8_row_codes(row), dim);
      return st->config.metric == Metric::l2 ? std::max(0.0f, ordered(q_norm - 2.0f * dot + h.norm))
                                             : ordered(1.0f - dot);
    }
    // Asks for the first `lines` cache lines of a row the walk will read soon.
    void prefetch(Slot s, std::size_t lines) const noexcept {
      const std::size_t bytes = use_codes ? st->code_stride : st->config.dim * sizeof(float);
      const char* row =
          use_codes ? reinterpret_cast<const char*>(st->code_row(s)) : reinterpret_cast<const char*>(st->f32_row(s));
      for (std::size_t b = 0; b < std::min(bytes, lines * 64); b += 64) __builtin_prefetch(row + b);
    }
  };
  // For a walk (use_codes: the int8 rows when the index has them) or for building and re-ranking (f32).
  QueryDistance distance_from(const DistanceKernelTable& k, const float* q, bool use_codes) const {
    QueryDistance d{this, &k, q, use_codes && has_codes};
    if (d.use_codes) {
      d.q_norm = k.dot(q, q, config.dim);
      for (std::size_t i = 0; i < config.dim; ++i) d.q_sum += q[i];
    }
    return d;
  }
  // Building uses the f32 rows when kept, else the codes.
  QueryDistance build_distance(const DistanceKernelTable& k, const float* q) const {
    return distance_from(k, q, !has_f32);
  }
  // A stored vector as floats: its f32 row, or its codes decoded into `buffer`.
  const float* vector_of(Slot s, std::vector<float>& buffer) const;

  // Grows the arrays to hold `size` slots; the caller holds no lock on `growth`.
  void reserve(std::size_t size);
  // `rows`: the vector rows too (not when load maps them from the file).
  void resize_arrays(std::size_t grown, bool rows = true);
  // Writes a prepared vector into slot s's rows.
  void write_vector(Slot s, const float* v) noexcept;

  // The graph (hnsw_graph.cpp). Replaces the links of `to` at `level` with the best of its own and
  // `extra` by the neighbour heuristic; the caller holds to's lock.
  void relink_from(const DistanceKernelTable& k, Slot to, std::size_t level, std::span<const Slot> extra);
  // A reused slot's old neighbours lose the node that joined them: each reconsiders its links together
  // with the others (hnswlib's updatePoint, one hop).
  void repair_around(const DistanceKernelTable& k, Slot slot, std::size_t level);
  // Links `slot` (vector q, at `level`) into the graph; a reused slot may already be reachable.
  void link(Slot slot, std::size_t level, const float* q);
  // The k nearest live vectors to the prepared query q passing the filter, closest first; ef as
  // HnswIndex::search. Takes `growth` shared.
  std::vector<Neighbor> search(const float* q, std::size_t k, const SearchFilter& filter, std::size_t ef) const;

  // Drops the deleted slots (hnsw_compact.cpp); the caller holds rewrite_mutex, growth and book_mutex.
  void compact();
};

}  // namespace persona::detail
