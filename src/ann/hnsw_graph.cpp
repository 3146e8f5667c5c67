// The HNSW graph algorithm (Malkov & Yashunin, as hnswlib builds it): greedy descent of the upper
// layers, best-first search of one layer, the neighbour-selection heuristic, linking a new node and
// repairing around a reused one, and the index's search (exact scan for small filtered sets, else the
// walk, then the int8 re-rank).
#include "ann/hnsw_state.hpp"
#include "ann/search_scratch.hpp"
#include "persona/core/cpu_features.hpp"

#include <algorithm>

namespace persona::detail {
namespace {

using QueryDistance = HnswState::QueryDistance;

// Greedy descent on one upper layer: the closest node reachable from `start`.
Candidate greedy(const HnswState& st, const QueryDistance& dist, Candidate start, std::size_t level) {
  for (bool moved = true; moved;) {
    moved = false;
    const Slot* list = st.links(start.slot, level);
    const std::size_t n = st.link_count(list, level);
    for (std::size_t i = 0; i < n; ++i) {
      const Slot next = load_link(list + 1 + i);
      const float d = dist(next);
      if (d < start.distance) {
        start = {d, next};
        moved = true;
      }
    }
  }
  return start;
}

// Best-first search of one layer from `start`, keeping ef candidates. `accept` decides which nodes may
// be results; every node routes. Leaves the accepted results (at most ef) in scratch.results.
template <class Accept>
void search_layer(const HnswState& st, const QueryDistance& dist, Candidate start, std::size_t level, std::size_t ef,
                  Scratch& scratch, Accept&& accept) {
  std::vector<Candidate>& frontier = scratch.frontier;
  std::vector<Candidate>& results = scratch.results;
  frontier.assign(1, start);
  results.clear();
  scratch.visited.reset(st.capacity);
  scratch.visited.visit(start.slot);
  if (accept(start.slot)) results.push_back(start);
  Slot pending[kMaxLinks];
  while (!frontier.empty()) {
    const Candidate current = frontier.front();
    if (results.size() >= ef && current.distance > results.front().distance) break;
    std::pop_heap(frontier.begin(), frontier.end(), kNearerFirst);
    frontier.pop_back();
    // The links of the node likely expanded next, which lie apart from its vector.
    if (!frontier.empty()) {
      const char* next_links = reinterpret_cast<const char*>(st.links(frontier.front().slot, level));
      __builtin_prefetch(next_links);
      __builtin_prefetch(next_links + 64);
    }
    // The unvisited neighbours first, each row requested from memory, then their distances, each
    // while the next row streams in.
    const Slot* list = st.links(current.slot, level);
    const std::size_t n = st.link_count(list, level);
    std::size_t m = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const Slot next = load_link(list + 1 + i);
      if (!scratch.visited.visit(next)) continue;
      pending[m++] = next;
      dist.prefetch(next, 1);
    }
    for (std::size_t j = 0; j < m; ++j) {
      if (j + 1 < m) dist.prefetch(pending[j + 1], 16);
      const Slot next = pending[j];
      const float d = dist(next);
      if (results.size() < ef || d < results.front().distance) {
        frontier.push_back({d, next});
        std::push_heap(frontier.begin(), frontier.end(), kNearerFirst);
        if (accept(next)) {
          results.push_back({d, next});
          std::push_heap(results.begin(), results.end(), kFartherFirst);
          if (results.size() > ef) {
            std::pop_heap(results.begin(), results.end(), kFartherFirst);
            results.pop_back();
          }
        }
      }
    }
  }
}

// hnswlib's neighbour heuristic: keep a candidate (nearest first) only if it is closer to the new node
// than to every neighbour kept so far, up to `limit`.
void select_neighbors(const HnswState& st, const DistanceKernelTable& k, std::vector<Candidate>& candidates,
                      std::size_t limit) {
  std::sort(candidates.begin(), candidates.end(),
            [](const Candidate& a, const Candidate& b) { return a.distance < b.distance; });
  std::vector<Candidate> kept;
  std::vector<float> buffer;
  for (const Candidate& c : candidates) {
    if (kept.size() >= limit) break;
    const QueryDistance from_c = st.build_distance(k, st.vector_of(c.slot, buffer));
    bool good = true;
    for (const Candidate& s : kept) {
      if (from_c(s.slot) < c.distance) {
        good = false;
        break;
      }
    }
    if (good) kept.push_back(c);
  }
  candidates = std::move(kept);
}

// Adds `from` to the links of `to` at `level`, pruning with the heuristic when the list is full.
void add_link(HnswState& st, const DistanceKernelTable& k, Slot to, Slot from, std::size_t level) {
  std::lock_guard lock(st.locks[to]);
  Slot* list = st.links(to, level);
  for (std::size_t i = 0; i < list[0]; ++i) {
    if (list[1 + i] == from) return;
  }
  if (list[0] < st.max_links_at(level)) {
    store_link(list + 1 + list[0], from);
    store_link(list, list[0] + 1);
    return;
  }
  const Slot extra[1] = {from};
  st.relink_from(k, to, level, extra);
}

}  // namespace

void HnswState::relink_from(const DistanceKernelTable& k, Slot to, std::size_t level, std::span<const Slot> extra) {
  Slot* list = links(to, level);
  std::vector<Slot> pool(list + 1, list + 1 + list[0]);
  pool.insert(pool.end(), extra.begin(), extra.end());
  std::sort(pool.begin(), pool.end());
  pool.erase(std::unique(pool.begin(), pool.end()), pool.end());
  std::vector<float> buffer;
  const QueryDistance from_to = build_distance(k, vector_of(to, buffer));
  std::vector<Candidate> candidates;
  for (Slot s : pool) {
    if (s != to) candidates.push_back({from_to(s), s});
  }
  select_neighbors(*this, k, candidates, max_links_at(level));
  for (std::size_t i = 0; i < candidates.size(); ++i) store_link(list + 1 + i, candidates[i].slot);
  store_link(list, static_cast<Slot>(candidates.size()));
}

void HnswState::repair_around(const DistanceKernelTable& k, Slot slot, std::size_t level) {
  for (std::size_t l = 0; l <= level; ++l) {
    std::vector<Slot> old;
    {
      std::lock_guard lock(locks[slot]);
      const Slot* list = links(slot, l);
      old.assign(list + 1, list + 1 + list[0]);
    }
    for (Slot n : old) {
      if (n == slot) continue;
      std::lock_guard lock(locks[n]);
      relink_from(k, n, l, old);
    }
  }
}

void HnswState::link(Slot slot, std::size_t level, const float* q) {
  const auto& k = distance_kernels(active_isa_level());
  std::unique_lock entry_lock(entry_mutex, std::defer_lock);
  int top = top_level.load(std::memory_order_acquire);
  if (static_cast<int>(level) > top) entry_lock.lock();  // may become the entry point: one at a time
  top = top_level.load(std::memory_order_acquire);
  const std::int64_t first = entry.load(std::memory_order_acquire);
  if (first < 0) {
    entry.store(slot, std::memory_order_release);
    top_level.store(static_cast<int>(level), std::memory_order_release);
    return;
  }
  const QueryDistance dist = build_distance(k, q);
  Candidate current{dist(static_cast<Slot>(first)), static_cast<Slot>(first)};
  for (int l = top; l > static_cast<int>(level); --l)
    current = greedy(*this, dist, current, static_cast<std::size_t>(l));
  // Choose the links of every level first, then write them all, then add the reverse links from layer
  // 0 up: a search that reaches the node on any layer finds every layer's links in place.
  ScratchLease scratch;
  const int lowest_top = std::min(top, static_cast<int>(level));
  std::vector<std::vector<Candidate>> chosen(static_cast<std::size_t>(lowest_top) + 1);
  for (int l = lowest_top; l >= 0; --l) {
    search_layer(*this, dist, current, static_cast<std::size_t>(l), config.ef_construction, *scratch,
                 [slot](Slot s) { return s != slot; });
    std::vector<Candidate>& candidates = chosen[static_cast<std::size_t>(l)];
    candidates = scratch->results;
    if (candidates.empty()) continue;  // a reused slot that is the only node on this layer
    current = *std::min_element(candidates.begin(), candidates.end(),
                                [](const Candidate& a, const Candidate& b) { return a.distance < b.distance; });
    select_neighbors(*this, k, candidates, max_links);
  }
  {
    std::lock_guard lock(locks[slot]);
    for (std::size_t l = 0; l < chosen.size(); ++l) {
      Slot* list = links(slot, l);
      for (std::size_t i = 0; i < chosen[l].size(); ++i) store_link(list + 1 + i, chosen[l][i].slot);
      store_link(list, static_cast<Slot>(chosen[l].size()));
    }
  }
  for (std::size_t l = 0; l < chosen.size(); ++l) {
    for (const Candidate& c : chosen[l]) add_link(*this, k, c.slot, slot, l);
  }
  if (static_cast<int>(level) > top) {
    entry.store(slot, std::memory_order_release);
    top_level.store(static_cast<int>(level), std::memory_order_release);
  }
}

std::vector<Neighbor> HnswState::search(const float* q, std::size_t k, const SearchFilter& filter,
                                        std::size_t ef) const {
  const auto& kernels = distance_kernels(active_isa_level());
  std::shared_lock growth_lock(growth);
  const auto accept = [&](Slot s) {
    if (deleted[s].load(std::memory_order_acquire)) return false;
    if (filter.tenant() && tenants[s] != *filter.tenant()) return false;
    return !filter.predicate() || filter.predicate()(labels[s]);
  };
  // The live slots a filtered search may return: a tenant's list, or every tenant's.
  const auto candidates = [&] {
    std::lock_guard lock(book_mutex);
    return filter.tenant() ? tenant_lists.slots_of(*filter.tenant()) : tenant_lists.all_slots();
  };
  // Exact over the f32 rows when the index has them.
  const auto exact = distance_from(kernels, q, !has_f32);
  const auto scan = [&](const std::vector<Slot>& pool) {
    TopK best(k);
    // A tenant's vectors lie scattered over the index: request rows ahead, or each one waits on memory.
    // Flags, label and predicate are read only for a vector that would enter the k best.
    constexpr std::size_t kAhead = 8;
    for (std::size_t i = 0; i < pool.size(); ++i) {
      if (i + kAhead < pool.size()) exact.prefetch(pool[i + kAhead], 64);
      const Slot s = pool[i];
      const float d = exact(s);
      if (d <= best.bound() && accept(s)) best.offer({labels[s], d});
    }
    return std::move(best).sorted();
  };
  if (filter.tenant()) {  // a small tenant: exact over its own vectors
    std::vector<Slot> own = candidates();
    if (own.empty()) return {};
    if (own.size() <= config.exact_search_limit) return scan(own);
  }
  // The top level before the entry: link() publishes a new entry before its level, so the entry read
  // here reaches at least this level.
  const int top = top_level.load(std::memory_order_acquire);
  const std::int64_t first = entry.load(std::memory_order_acquire);
  if (first < 0) return {};
  const auto walk = distance_from(kernels, q, true);
  Candidate current{walk(static_cast<Slot>(first)), static_cast<Slot>(first)};
  for (int l = std::min<int>(top, levels[static_cast<Slot>(first)]); l > 0; --l) {
    current = greedy(*this, walk, current, static_cast<std::size_t>(l));
  }
  ScratchLease scratch;
  search_layer(*this, walk, current, 0, std::max(ef == 0 ? config.ef_search : ef, k), *scratch, accept);
  std::vector<Candidate>& found = scratch->results;
  if (has_codes && has_f32) {
    // The walk ranked by int8 distances: the best few are re-ranked by their exact ones.
    std::sort(found.begin(), found.end(),
              [](const Candidate& a, const Candidate& b) { return a.distance < b.distance; });
    found.resize(std::min(found.size(), config.rerank_factor * k));
    for (std::size_t i = 0; i + 1 < found.size(); ++i) exact.prefetch(found[i + 1].slot, 64);
    for (Candidate& c : found) c.distance = exact(c.slot);
  }
  TopK best(k);
  for (const Candidate& c : found) best.offer({labels[c.slot], c.distance});
  std::vector<Neighbor> result = std::move(best).sorted();
  // Fewer than k passed the filter on the walk: scan, so that all that exist are returned.
  if (result.size() < k && (filter.tenant() || filter.predicate())) return scan(candidates());
  return result;
}

}  // namespace persona::detail
