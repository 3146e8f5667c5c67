// Compaction: repairs the links that ran through deleted nodes (FreshDiskANN's delete consolidation),
// then moves the live nodes together in slot order, so that the memory of the deleted ones is freed.
#include "ann/hnsw_state.hpp"
#include "persona/core/cpu_features.hpp"

#include <algorithm>

namespace persona::detail {

void HnswState::compact() {
  const auto& k = distance_kernels(active_isa_level());
  const std::size_t count = next_slot;
  const auto dead = [&](Slot s) { return deleted[s].load(std::memory_order_relaxed); };
  // Every live node whose links run through deleted ones takes those nodes' live links as candidates
  // instead and keeps the best by the heuristic.
  for (Slot p = 0; p < count; ++p) {
    if (dead(p)) continue;
    for (std::size_t l = 0; l <= levels[p]; ++l) {
      Slot* list = links(p, l);
      const std::span<const Slot> current(list + 1, list[0]);
      if (std::none_of(current.begin(), current.end(), dead)) continue;
      std::vector<Slot> extra;
      for (Slot n : current) {
        if (!dead(n)) continue;
        const Slot* through = links(n, l);
        for (std::size_t i = 0; i < through[0]; ++i) {
          if (!dead(through[1 + i])) extra.push_back(through[1 + i]);
        }
      }
      std::vector<Slot> keep;
      for (Slot n : current) {
        if (!dead(n)) keep.push_back(n);
      }
      list[0] = static_cast<Slot>(keep.size());
      std::copy(keep.begin(), keep.end(), list + 1);
      relink_from(k, p, l, extra);
    }
  }
  // Then the live nodes move together, in slot order.
  std::vector<Slot> renamed(count, 0);
  std::vector<Slot> order;
  for (Slot s = 0; s < count; ++s) {
    if (!dead(s)) {
      renamed[s] = static_cast<Slot>(order.size());
      order.push_back(s);
    }
  }
  const std::size_t kept = order.size();
  HnswState moved(config);
  moved.resize_arrays(kept);
  for (std::size_t i = 0; i < kept; ++i) {
    const Slot from = order[i];
    if (has_f32) std::copy_n(f32_row(from), config.dim, moved.f32.data() + i * config.dim);
    if (has_codes) std::copy_n(code_row(from), code_stride, moved.codes.data() + i * code_stride);
    moved.labels[i] = labels[from];
    moved.tenants[i] = tenants[from];
    moved.levels[i] = levels[from];
    const Slot* in = links(from, 0);
    Slot* out = moved.links(static_cast<Slot>(i), 0);
    out[0] = in[0];
    for (std::size_t j = 0; j < in[0]; ++j) out[1 + j] = renamed[in[1 + j]];
    moved.upper[i] = std::move(upper[from]);  // renamed in place
    for (std::size_t l = 1; l <= moved.levels[i]; ++l) {
      Slot* list = moved.links(static_cast<Slot>(i), l);
      for (std::size_t j = 0; j < list[0]; ++j) list[1 + j] = renamed[list[1 + j]];
    }
  }
  std::int64_t new_entry = -1;
  int top = -1;
  const std::int64_t old_entry = entry.load();
  if (old_entry >= 0 && !dead(static_cast<Slot>(old_entry))) {
    new_entry = renamed[static_cast<std::size_t>(old_entry)];
    top = top_level.load();
  } else {
    for (std::size_t i = 0; i < kept; ++i) {
      if (static_cast<int>(moved.levels[i]) > top) {
        top = moved.levels[i];
        new_entry = static_cast<std::int64_t>(i);
      }
    }
  }
  f32 = std::move(moved.f32);
  codes = std::move(moved.codes);
  links0 = std::move(moved.links0);
  upper = std::move(moved.upper);
  levels = std::move(moved.levels);
  labels = std::move(moved.labels);
  tenants = std::move(moved.tenants);
  locks = std::move(moved.locks);
  deleted = std::move(moved.deleted);
  capacity = kept;
  entry.store(new_entry);
  top_level.store(top);
  next_slot = kept;
  free_slots = {};
  slots.clear();
  tenant_lists.clear();
  for (std::size_t i = 0; i < kept; ++i) {
    slots.emplace(labels[i], LabelEntry{static_cast<Slot>(i), tenants[i]});
    tenant_lists.add(static_cast<Slot>(i), tenants[i]);
  }
}

}  // namespace persona::detail
