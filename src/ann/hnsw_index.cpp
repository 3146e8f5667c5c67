#include "persona/ann/hnsw_index.hpp"

#include "ann/vector_math.hpp"
#include "core/huge_page_memory.hpp"
#include "persona/core/cpu_features.hpp"
#include "persona/core/file_io.hpp"
#include "persona/core/threading.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <mutex>
#include <queue>
#include <random>
#include <shared_mutex>
#include <unordered_map>

namespace persona {
namespace {

using Slot = std::uint32_t;
constexpr std::size_t kMaxLevel = 15;
constexpr std::size_t kMaxLinks = 256;      // 2 M for the largest M
constexpr std::size_t kCodeHeader = 16;     // scale, offset, squared norm, padding: floats before the codes
constexpr std::size_t kFileAlignment = 64;  // of the vector sections, so that they can be mapped in place

// Link lists are read without locks while inserts rewrite them: every entry is an atomic word, read with
// acquire and written with release (plain moves on x86), so a reader sees old or new slots, each valid,
// and the vector of every slot it reads is already written.
Slot load_link(const Slot* p) noexcept {
  return std::atomic_ref<Slot>(*const_cast<Slot*>(p)).load(std::memory_order_acquire);
}
void store_link(Slot* p, Slot value) noexcept { std::atomic_ref<Slot>(*p).store(value, std::memory_order_release); }

// A node's lock: serializes the inserts that rewrite its link lists.
class SpinLock {
 public:
  void lock() noexcept {
    while (flag_.exchange(true, std::memory_order_acquire)) {
      while (flag_.load(std::memory_order_relaxed)) {
      }
    }
  }
  void unlock() noexcept { flag_.store(false, std::memory_order_release); }

 private:
  std::atomic<bool> flag_{false};
};

struct Candidate {
  float distance;
  Slot slot;
};
// Heap orders: the frontier's top is the nearest candidate, the results' top the farthest.
constexpr auto kNearerFirst = [](const Candidate& a, const Candidate& b) { return a.distance > b.distance; };
constexpr auto kFartherFirst = [](const Candidate& a, const Candidate& b) { return a.distance < b.distance; };

// Marks of the nodes one search has visited; a generation counter clears it in O(1).
struct Visited {
  std::vector<std::uint16_t> marks;
  std::uint16_t generation = 0;
  void reset(std::size_t size) {
    if (marks.size() < size) marks.resize(size, 0);
    if (++generation == 0) {
      std::fill(marks.begin(), marks.end(), 0);
      generation = 1;
    }
  }
  bool visit(Slot s) noexcept {
    if (marks[s] == generation) return false;
    marks[s] = generation;
    return true;
  }
};

// What one walk needs besides the index: kept per thread so that a search allocates nothing.
struct Scratch {
  Visited visited;
  std::vector<Candidate> frontier, results;
  bool busy = false;
};

// This thread's scratch, or a fresh one when a filter predicate searches from inside a search.
class ScratchLease {
 public:
  ScratchLease() {
    thread_local Scratch mine;
    if (mine.busy) {
      own_ = std::make_unique<Scratch>();
      scratch_ = own_.get();
    } else {
      scratch_ = &mine;
    }
    scratch_->busy = true;
  }
  ~ScratchLease() { scratch_->busy = false; }
  ScratchLease(const ScratchLease&) = delete;
  ScratchLease& operator=(const ScratchLease&) = delete;
  Scratch& operator*() const noexcept { return *scratch_; }
  Scratch* operator->() const noexcept { return scratch_; }

 private:
  std::unique_ptr<Scratch> own_;
  Scratch* scratch_ = nullptr;
};

// Rows of one element type in owned memory (huge pages when large) or in a mapped file (written
// copy-on-write).
template <class T>
class Rows {
 public:
  T* data() const noexcept { return data_; }
  bool mapped() const noexcept { return file_ != nullptr; }
  std::size_t owned_bytes() const noexcept { return owned_.bytes(); }
  // Owned, zeroed storage of `elements`, keeping the first min(old, new) elements.
  void resize(std::size_t elements) {
    persona::detail::HugePageMemory grown(elements * sizeof(T));
    T* to = reinterpret_cast<T*>(grown.data());
    if (size_ > 0 && elements > 0) std::copy_n(data_, std::min(size_, elements), to);
    owned_ = std::move(grown);
    file_.reset();
    data_ = to;
    size_ = elements;
  }
  void map(std::shared_ptr<MappedFile> file, T* at, std::size_t elements) {
    owned_ = {};
    file_ = std::move(file);
    data_ = at;
    size_ = elements;
  }

 private:
  persona::detail::HugePageMemory owned_;
  std::shared_ptr<MappedFile> file_;
  T* data_ = nullptr;
  std::size_t size_ = 0;
};

// An int8 row: x ~ offset + scale * code over the vector's own range (256 levels), and the squared norm
// of that approximation, so that an L2 distance needs one dot product of the float query with the codes.
struct CodeHeader {
  float scale, offset, norm, unused;
};

void encode(const float* x, std::size_t dim, std::int8_t* row) noexcept {
  const auto [lo, hi] = std::minmax_element(x, x + dim);
  const float scale = (*hi - *lo) / 255.0f;
  const float offset = *lo + 128.0f * scale;
  const float inverse = scale > 0.0f ? 1.0f / scale : 0.0f;
  std::int8_t* codes = row + kCodeHeader;
  double norm = 0.0;
  for (std::size_t i = 0; i < dim; ++i) {
    const float code = std::clamp(std::nearbyint((x[i] - offset) * inverse), -128.0f, 127.0f);
    codes[i] = static_cast<std::int8_t>(code);
    const double value = static_cast<double>(offset) + static_cast<double>(scale) * code;
    norm += value * value;
  }
  const CodeHeader header{scale, offset, static_cast<float>(norm), 0.0f};
  std::memcpy(row, &header, sizeof(header));
}

void decode(const std::int8_t* row, std::size_t dim, float* out) noexcept {
  CodeHeader h;
  std::memcpy(&h, row, sizeof(h));
  for (std::size_t i = 0; i < dim; ++i) out[i] = h.offset + h.scale * static_cast<float>(row[kCodeHeader + i]);
}

struct TenantVectors {
  std::vector<Slot> slots;  // the tenant's live slots
};

}  // namespace

struct HnswIndex::State {
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
  Rows<float> f32;                               // [capacity, dim] when has_f32
  Rows<std::int8_t> codes;                       // [capacity, code_stride] when has_codes
  Rows<Slot> links0;                             // [capacity, 1 + max_links0]: count, then slots
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
  std::unordered_map<VectorLabel, Slot> slots;
  std::unordered_map<TenantId, TenantVectors> by_tenant;
  std::vector<Slot> tenant_position;  // [slot]: its index in its tenant's list
  std::vector<Slot> free_slots;       // deleted slots that later inserts reuse
  std::size_t next_slot = 0, live = 0;
  std::mt19937_64 rng;

  explicit State(const HnswConfig& c)
      : config(c),
        max_links0(2 * c.M),
        max_links(c.M),
        level_scale(1.0 / std::log(static_cast<double>(c.M))),
        has_f32(c.storage == VectorStorage::f32 || c.keep_f32),
        has_codes(c.storage == VectorStorage::int8),
        code_stride(kCodeHeader + (c.dim + 3) / 4 * 4),
        rng(c.seed) {}

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
  const Slot* links(Slot s, std::size_t level) const noexcept { return const_cast<State*>(this)->links(s, level); }
  std::size_t max_links_at(std::size_t level) const noexcept { return level == 0 ? max_links0 : max_links; }
  // The link count, never past the list's end even if a concurrent write were torn.
  std::size_t link_count(const Slot* list, std::size_t level) const noexcept {
    return std::min<std::size_t>(load_link(list), max_links_at(level));
  }

  // Distances from one float vector to stored rows: through the int8 codes, or through the f32 rows.
  struct QueryDistance {
    const State* st;
    const persona::detail::CoreKernelTable* k;
    const float* q;
    bool use_codes;
    float q_norm = 0.0f, q_sum = 0.0f;

    float operator()(Slot s) const noexcept {
      const std::size_t dim = st->config.dim;
      if (!use_codes) return detail::distance(*k, st->config.metric, q, st->f32_row(s), dim);
      const std::int8_t* row = st->code_row(s);
      CodeHeader h;
      std::memcpy(&h, row, sizeof(h));
      const float dot = h.offset * q_sum + h.scale * k->dot_i8(q, row + kCodeHeader, dim);
      return st->config.metric == Metric::l2 ? std::max(0.0f, q_norm - 2.0f * dot + h.norm) : 1.0f - dot;
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
  QueryDistance distance_from(const persona::detail::CoreKernelTable& k, const float* q, bool use_codes) const {
    QueryDistance d{this, &k, q, use_codes && has_codes};
    if (d.use_codes) {
      d.q_norm = k.dot(q, q, config.dim);
      for (std::size_t i = 0; i < config.dim; ++i) d.q_sum += q[i];
    }
    return d;
  }
  // Building uses the f32 rows when kept, else the codes.
  QueryDistance build_distance(const persona::detail::CoreKernelTable& k, const float* q) const {
    return distance_from(k, q, !has_f32);
  }
  // A stored vector as floats: its f32 row, or its codes decoded into `buffer`.
  const float* vector_of(Slot s, std::vector<float>& buffer) const {
    if (has_f32) return f32_row(s);
    buffer.resize(config.dim);
    decode(code_row(s), config.dim, buffer.data());
    return buffer.data();
  }

  // Grows the arrays to hold `size` slots; the caller holds no lock on `growth`.
  void reserve(std::size_t size) {
    std::unique_lock lock(growth);
    if (size <= capacity) return;
    resize_arrays(std::max({size, 2 * capacity, std::size_t{64}}));
  }
  // `rows`: the vector rows too (not when load maps them from the file).
  void resize_arrays(std::size_t grown, bool rows = true) {
    if (has_f32 && rows) f32.resize(grown * config.dim);
    if (has_codes && rows) codes.resize(grown * code_stride);
    links0.resize(grown * stride0());
    upper.resize(grown);
    levels.resize(grown, 0);
    labels.resize(grown, 0);
    tenants.resize(grown, 0);
    upper.shrink_to_fit();
    levels.shrink_to_fit();
    labels.shrink_to_fit();
    tenants.shrink_to_fit();
    auto new_locks = std::make_unique<SpinLock[]>(grown);
    auto new_deleted = std::make_unique<std::atomic<bool>[]>(grown);
    for (std::size_t i = 0; i < std::min(capacity, grown); ++i) new_deleted[i].store(deleted[i].load());
    for (std::size_t i = capacity; i < grown; ++i) new_deleted[i].store(false);
    locks = std::move(new_locks);
    deleted = std::move(new_deleted);
    capacity = grown;
  }

  // Writes a prepared vector into slot s's rows.
  void write_vector(Slot s, const float* v) noexcept {
    if (has_f32) std::copy_n(v, config.dim, f32.data() + static_cast<std::size_t>(s) * config.dim);
    if (has_codes) encode(v, config.dim, codes.data() + static_cast<std::size_t>(s) * code_stride);
  }

  // Greedy descent on one upper layer: the closest node reachable from `start`.
  Candidate greedy(const QueryDistance& dist, Candidate start, std::size_t level) const {
    for (bool moved = true; moved;) {
      moved = false;
      const Slot* list = links(start.slot, level);
      const std::size_t n = link_count(list, level);
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
  void search_layer(const QueryDistance& dist, Candidate start, std::size_t level, std::size_t ef, Scratch& scratch,
                    Accept&& accept) const {
    std::vector<Candidate>& frontier = scratch.frontier;
    std::vector<Candidate>& results = scratch.results;
    frontier.assign(1, start);
    results.clear();
    scratch.visited.reset(capacity);
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
        const char* next_links = reinterpret_cast<const char*>(links(frontier.front().slot, level));
        __builtin_prefetch(next_links);
        __builtin_prefetch(next_links + 64);
      }
      // The unvisited neighbours first, each row requested from memory, then their distances, each
      // while the next row streams in.
      const Slot* list = links(current.slot, level);
      const std::size_t n = link_count(list, level);
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
  void select_neighbors(const persona::detail::CoreKernelTable& k, std::vector<Candidate>& candidates,
                        std::size_t limit) const {
    std::sort(candidates.begin(), candidates.end(),
              [](const Candidate& a, const Candidate& b) { return a.distance < b.distance; });
    std::vector<Candidate> kept;
    std::vector<float> buffer;
    for (const Candidate& c : candidates) {
      if (kept.size() >= limit) break;
      const QueryDistance from_c = build_distance(k, vector_of(c.slot, buffer));
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

  // Replaces the links of `to` at `level` with the best of its own and `extra` by the heuristic.
  // The caller holds to's lock.
  void relink_from(const persona::detail::CoreKernelTable& k, Slot to, std::size_t level, std::span<const Slot> extra) {
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
    select_neighbors(k, candidates, max_links_at(level));
    for (std::size_t i = 0; i < candidates.size(); ++i) store_link(list + 1 + i, candidates[i].slot);
    store_link(list, static_cast<Slot>(candidates.size()));
  }

  // Adds `from` to the links of `to` at `level`, pruning with the heuristic when the list is full.
  void add_link(const persona::detail::CoreKernelTable& k, Slot to, Slot from, std::size_t level) {
    std::lock_guard lock(locks[to]);
    Slot* list = links(to, level);
    for (std::size_t i = 0; i < list[0]; ++i) {
      if (list[1 + i] == from) return;
    }
    if (list[0] < max_links_at(level)) {
      store_link(list + 1 + list[0], from);
      store_link(list, list[0] + 1);
      return;
    }
    const Slot extra[1] = {from};
    relink_from(k, to, level, extra);
  }

  // A reused slot's old neighbours lose the node that joined them: each reconsiders its links together
  // with the others (hnswlib's updatePoint, one hop).
  void repair_around(const persona::detail::CoreKernelTable& k, Slot slot, std::size_t level) {
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

  // Links `slot` (vector q, at `level`) into the graph; a reused slot may already be reachable.
  void link(Slot slot, std::size_t level, const float* q) {
    const auto& k = persona::detail::core_kernels(active_isa_level());
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
    for (int l = top; l > static_cast<int>(level); --l) current = greedy(dist, current, static_cast<std::size_t>(l));
    // Choose the links of every level first, then write them all, then add the reverse links from layer
    // 0 up: a search that reaches the node on any layer finds every layer's links in place.
    ScratchLease scratch;
    const int lowest_top = std::min(top, static_cast<int>(level));
    std::vector<std::vector<Candidate>> chosen(static_cast<std::size_t>(lowest_top) + 1);
    for (int l = lowest_top; l >= 0; --l) {
      search_layer(dist, current, static_cast<std::size_t>(l), config.ef_construction, *scratch,
                   [slot](Slot s) { return s != slot; });
      std::vector<Candidate>& candidates = chosen[static_cast<std::size_t>(l)];
      candidates = scratch->results;
      if (candidates.empty()) continue;  // a reused slot that is the only node on this layer
      current = *std::min_element(candidates.begin(), candidates.end(),
                                  [](const Candidate& a, const Candidate& b) { return a.distance < b.distance; });
      select_neighbors(k, candidates, max_links);
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
      for (const Candidate& c : chosen[l]) add_link(k, c.slot, slot, l);
    }
    if (static_cast<int>(level) > top) {
      entry.store(slot, std::memory_order_release);
      top_level.store(static_cast<int>(level), std::memory_order_release);
    }
  }

  // Under book_mutex: the tenant lists hold exactly the live slots.
  void add_to_tenant(Slot slot, TenantId tenant) {
    std::vector<Slot>& list = by_tenant[tenant].slots;
    if (tenant_position.size() <= slot)
      tenant_position.resize(std::max<std::size_t>(slot + 1, 2 * tenant_position.size()));
    tenant_position[slot] = static_cast<Slot>(list.size());
    list.push_back(slot);
  }
  void remove_from_tenant(Slot slot, TenantId tenant) {
    const auto it = by_tenant.find(tenant);
    std::vector<Slot>& list = it->second.slots;
    const Slot at = tenant_position[slot];
    list[at] = list.back();
    tenant_position[list[at]] = at;
    list.pop_back();
    if (list.empty()) by_tenant.erase(it);
  }
};

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
  state_ = std::make_unique<State>(config);
}

HnswIndex::~HnswIndex() = default;
HnswIndex::HnswIndex(HnswIndex&&) noexcept = default;
HnswIndex& HnswIndex::operator=(HnswIndex&&) noexcept = default;

namespace {

constexpr char kMagic[8] = {'P', 'R', 'S', 'N', 'H', 'N', 'S', 'W'};
constexpr std::uint32_t kFormatVersion = 1;

class Writer {
 public:
  template <class T>
  void put(const T& value) {
    const auto* p = reinterpret_cast<const std::byte*>(&value);
    bytes_.insert(bytes_.end(), p, p + sizeof(T));
  }
  template <class T>
  void put_array(const T* values, std::size_t count) {
    const auto* p = reinterpret_cast<const std::byte*>(values);
    bytes_.insert(bytes_.end(), p, p + count * sizeof(T));
  }
  void align() { bytes_.resize((bytes_.size() + kFileAlignment - 1) / kFileAlignment * kFileAlignment); }
  std::vector<std::byte>& bytes() { return bytes_; }

 private:
  std::vector<std::byte> bytes_;
};

// Reads with every length checked against what is left; a short file is corrupt_data naming the field.
class Reader {
 public:
  Reader(std::span<std::byte> bytes, const std::filesystem::path& path) : bytes_(bytes), path_(path) {}
  template <class T>
  T get(const char* field) {
    T value;
    std::memcpy(&value, take(sizeof(T), field), sizeof(T));
    return value;
  }
  template <class T>
  void get_array(T* out, std::size_t count, const char* field) {
    if (count != 0) std::memcpy(out, take(bytes_of<T>(count, field), field), count * sizeof(T));
  }
  // The next `count` elements in place (for mapping), checked like get_array.
  template <class T>
  T* view_array(std::size_t count, const char* field) {
    return reinterpret_cast<T*>(take(bytes_of<T>(count, field), field));
  }
  void align(const char* field) { take((kFileAlignment - at_ % kFileAlignment) % kFileAlignment, field); }
  [[noreturn]] void fail(const std::string& what) const { PERSONA_THROW(corrupt_data, "{}: {}", path_.string(), what); }
  std::size_t remaining() const noexcept { return bytes_.size() - at_; }

 private:
  template <class T>
  std::size_t bytes_of(std::size_t count, const char* field) const {
    std::size_t bytes = 0;
    if (__builtin_mul_overflow(count, sizeof(T), &bytes)) fail(fmt::format("{} count {} overflows", field, count));
    return bytes;
  }
  std::byte* take(std::size_t n, const char* field) {
    if (n > remaining()) {
      fail(fmt::format("truncated: {} needs {} bytes at offset {}, {} left", field, n, at_, remaining()));
    }
    std::byte* p = bytes_.data() + at_;
    at_ += n;
    return p;
  }
  std::span<std::byte> bytes_;
  const std::filesystem::path& path_;
  std::size_t at_ = 0;
};

}  // namespace

void HnswIndex::save(const std::filesystem::path& path) const {
  const State& st = *state_;
  std::shared_lock growth(st.growth);
  std::lock_guard lock(st.book_mutex);
  const std::size_t count = st.next_slot;
  Writer w;
  w.put(kMagic);
  w.put(kFormatVersion);
  w.put(static_cast<std::uint32_t>(st.config.metric));
  w.put(static_cast<std::uint32_t>(st.config.storage));
  w.put(static_cast<std::uint32_t>(st.has_f32 ? 1 : 0));
  for (std::uint64_t v : {st.config.dim, st.config.M, st.config.ef_construction, st.config.ef_search,
                          st.config.exact_search_limit, st.config.rerank_factor}) {
    w.put(v);
  }
  w.put(st.config.seed);
  w.put(static_cast<std::uint64_t>(count));
  w.put(static_cast<std::int64_t>(st.entry.load()));
  w.put(static_cast<std::int64_t>(st.top_level.load()));
  w.align();
  if (st.has_f32) w.put_array(st.f32.data(), count * st.config.dim);
  w.align();
  if (st.has_codes) w.put_array(st.codes.data(), count * st.code_stride);
  w.put_array(st.labels.data(), count);
  w.put_array(st.tenants.data(), count);
  w.put_array(st.levels.data(), count);
  for (std::size_t i = 0; i < count; ++i) w.put(static_cast<std::uint8_t>(st.deleted[i].load() ? 1 : 0));
  w.put_array(st.links0.data(), count * st.stride0());
  for (std::size_t i = 0; i < count; ++i) {
    if (st.levels[i] > 0) w.put_array(st.upper[i].get(), st.levels[i] * st.stride());
  }
  w.put(persona_checksum(w.bytes()));
  write_file_atomically(path, w.bytes());
}

HnswIndex HnswIndex::load(const std::filesystem::path& path, LoadMode mode) {
  std::shared_ptr<MappedFile> file = MappedFile::open(path);
  const std::span<std::byte> bytes = file->bytes();
  Reader r(bytes, path);
  if (bytes.size() < sizeof(kMagic) + sizeof(std::uint64_t)) r.fail("too short for an index file");
  std::uint64_t stored = 0;
  std::memcpy(&stored, bytes.data() + bytes.size() - sizeof(stored), sizeof(stored));
  char magic[8];
  r.get_array(magic, 8, "magic");
  if (std::memcmp(magic, kMagic, 8) != 0) r.fail("not a persona HNSW index (bad magic)");
  const auto version = r.get<std::uint32_t>("version");
  if (version > kFormatVersion) {
    PERSONA_THROW(unsupported, "{}: format version {}; this build reads versions up to {}", path.string(), version,
                  kFormatVersion);
  }
  if (persona_checksum(bytes.first(bytes.size() - sizeof(stored))) != stored) r.fail("checksum mismatch");
  HnswConfig config;
  const auto metric = r.get<std::uint32_t>("metric");
  const auto storage = r.get<std::uint32_t>("storage");
  const auto keep_f32 = r.get<std::uint32_t>("keep_f32");
  if (metric > 2) r.fail(fmt::format("metric {} unknown", metric));
  if (storage > 1 || keep_f32 > 1) r.fail(fmt::format("storage {} / keep_f32 {} unknown", storage, keep_f32));
  config.metric = static_cast<Metric>(metric);
  config.storage = static_cast<VectorStorage>(storage);
  config.keep_f32 = keep_f32 == 1;
  config.dim = r.get<std::uint64_t>("dim");
  config.M = r.get<std::uint64_t>("M");
  config.ef_construction = r.get<std::uint64_t>("ef_construction");
  config.ef_search = r.get<std::uint64_t>("ef_search");
  config.exact_search_limit = r.get<std::uint64_t>("exact_search_limit");
  config.rerank_factor = r.get<std::uint64_t>("rerank_factor");
  config.seed = r.get<std::uint64_t>("seed");
  if (config.dim == 0 || config.dim > 65536 || config.M < 2 || config.M > 100 || config.ef_construction == 0 ||
      config.rerank_factor == 0) {
    r.fail(fmt::format("config out of range (dim {}, M {}, ef_construction {}, rerank_factor {})", config.dim, config.M,
                       config.ef_construction, config.rerank_factor));
  }
  HnswIndex index(config);
  State& st = *index.state_;
  const auto count = r.get<std::uint64_t>("count");
  const auto entry = r.get<std::int64_t>("entry");
  const auto top = r.get<std::int64_t>("top level");
  // Every node takes its rows, label, tenant, level, flag and layer 0 links in the file: a count beyond
  // the file is corrupt, not an allocation.
  const std::size_t node_bytes = (st.has_f32 ? config.dim * sizeof(float) : 0) + (st.has_codes ? st.code_stride : 0) +
                                 sizeof(VectorLabel) + sizeof(TenantId) + 2 + st.stride0() * sizeof(Slot);
  if (count >= 0xffffffffu || count > r.remaining() / node_bytes) {
    r.fail(fmt::format("count {} does not fit the file", count));
  }
  st.resize_arrays(count, mode == LoadMode::read);
  r.align("padding");
  if (st.has_f32) {
    if (mode == LoadMode::map) {
      st.f32.map(file, r.view_array<float>(count * config.dim, "f32 vectors"), count * config.dim);
    } else {
      r.get_array(st.f32.data(), count * config.dim, "f32 vectors");
    }
  }
  r.align("padding");
  if (st.has_codes) {
    if (mode == LoadMode::map) {
      st.codes.map(file, r.view_array<std::int8_t>(count * st.code_stride, "int8 vectors"), count * st.code_stride);
    } else {
      r.get_array(st.codes.data(), count * st.code_stride, "int8 vectors");
    }
  }
  r.get_array(st.labels.data(), count, "labels");
  r.get_array(st.tenants.data(), count, "tenants");
  r.get_array(st.levels.data(), count, "levels");
  std::vector<std::uint8_t> deleted(count);
  r.get_array(deleted.data(), count, "deleted flags");
  r.get_array(st.links0.data(), count * st.stride0(), "layer 0 links");
  // Links name existing nodes that reach the link's layer.
  const auto check_links = [&](const Slot* list, std::size_t level, std::size_t node) {
    const std::size_t limit = st.max_links_at(level);
    if (list[0] > limit)
      r.fail(fmt::format("node {} has {} links on layer {}; at most {}", node, list[0], level, limit));
    for (std::size_t i = 0; i < list[0]; ++i) {
      if (list[1 + i] >= count) r.fail(fmt::format("node {} links to {}; the index has {}", node, list[1 + i], count));
      if (st.levels[list[1 + i]] < level) {
        r.fail(fmt::format("node {} links on layer {} to node {}, which stops at layer {}", node, level, list[1 + i],
                           st.levels[list[1 + i]]));
      }
    }
  };
  for (std::size_t i = 0; i < count; ++i) {
    if (st.levels[i] > kMaxLevel) r.fail(fmt::format("node {} has level {}", i, st.levels[i]));
    check_links(st.links0.data() + i * st.stride0(), 0, i);
    if (st.levels[i] > 0) {
      st.upper[i] = std::make_unique<Slot[]>(st.levels[i] * st.stride());
      r.get_array(st.upper[i].get(), st.levels[i] * st.stride(), "upper links");
      for (std::size_t l = 0; l < st.levels[i]; ++l) check_links(st.upper[i].get() + l * st.stride(), l + 1, i);
    }
    const Slot slot = static_cast<Slot>(i);
    st.deleted[i].store(deleted[i] != 0);
    if (deleted[i] != 0) {
      st.free_slots.push_back(slot);
    } else {
      if (!st.slots.emplace(st.labels[i], slot).second) r.fail(fmt::format("label {} appears twice", st.labels[i]));
      st.add_to_tenant(slot, st.tenants[i]);
    }
  }
  if (r.remaining() != sizeof(stored)) r.fail(fmt::format("{} bytes after the links", r.remaining() - sizeof(stored)));
  if (count == 0 ? entry != -1 || top != -1
                 : (entry < 0 || static_cast<std::uint64_t>(entry) >= count ||
                    top != st.levels[static_cast<std::size_t>(entry)])) {
    r.fail(fmt::format("entry point {} at level {} does not match the nodes", entry, top));
  }
  st.entry.store(entry);
  st.top_level.store(static_cast<int>(top));
  st.next_slot = count;
  st.live = st.slots.size();
  return index;
}

const HnswConfig& HnswIndex::config() const noexcept { return state_->config; }

std::size_t HnswIndex::size() const noexcept {
  std::lock_guard lock(state_->book_mutex);
  return state_->live;
}

void HnswIndex::add(VectorLabel label, std::span<const float> vector, TenantId tenant) {
  State& st = *state_;
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
        level = std::min(kMaxLevel, static_cast<std::size_t>(-std::log(std::max(u, 1e-300)) * st.level_scale));
      } else {
        PERSONA_CHECK_CODE(capacity_exhausted, st.next_slot < 0xffffffffu, "the index holds {} vectors; no more slots",
                           st.next_slot);
        wanted = st.next_slot + 1;
      }
      if (wanted == 0) {
        st.slots.emplace(label, slot);
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
      st.repair_around(persona::detail::core_kernels(active_isa_level()), slot, level);
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
    st.add_to_tenant(slot, tenant);
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
  PERSONA_CHECK_CODE(shape_mismatch, tenants.empty() || tenants.size() == labels.size(), "{} tenants for {} labels",
                     tenants.size(), labels.size());
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
        add(labels[i], {vectors.data() + i * dim, dim}, tenants.empty() ? 0 : tenants[i]);
      } catch (...) {
        std::lock_guard lock(failure_mutex);
        if (!failure) failure = std::current_exception();
      }
    }
  });
  if (failure) std::rethrow_exception(failure);
}

void HnswIndex::update(VectorLabel label, std::span<const float> vector, TenantId tenant) {
  State& st = *state_;
  std::vector<float> prepared(st.config.dim);
  detail::prepare_vector(st.config.metric, st.config.dim, vector, prepared.data(), "update", "vector");
  std::unique_lock rewrite(st.rewrite_mutex);
  Slot slot;
  {
    std::shared_lock growth(st.growth);
    std::lock_guard lock(st.book_mutex);
    const auto it = st.slots.find(label);
    PERSONA_CHECK_CODE(not_found, it != st.slots.end(), "label {} is not in the index", label);
    slot = it->second;
    st.remove_from_tenant(slot, st.tenants[slot]);
    st.deleted[slot].store(true, std::memory_order_release);
  }
  std::size_t level = 0;
  {
    std::unique_lock lock(st.growth);
    st.write_vector(slot, prepared.data());
    st.tenants[slot] = tenant;
    level = st.levels[slot];
  }
  const auto finish = [&] {
    std::shared_lock growth(st.growth);
    std::lock_guard lock(st.book_mutex);
    st.add_to_tenant(slot, tenant);
    st.deleted[slot].store(false, std::memory_order_release);
  };
  try {
    std::shared_lock lock(st.growth);
    st.repair_around(persona::detail::core_kernels(active_isa_level()), slot, level);
    st.link(slot, level, prepared.data());
  } catch (...) {
    finish();  // out of memory while relinking: the new vector stays, reachable through its old links
    throw;
  }
  finish();
}

void HnswIndex::remove(VectorLabel label) {
  State& st = *state_;
  std::unique_lock rewrite(st.rewrite_mutex);
  std::shared_lock growth(st.growth);  // before book_mutex, the order every path takes
  std::lock_guard lock(st.book_mutex);
  const auto it = st.slots.find(label);
  PERSONA_CHECK_CODE(not_found, it != st.slots.end(), "label {} is not in the index", label);
  const Slot slot = it->second;
  st.slots.erase(it);
  st.deleted[slot].store(true, std::memory_order_release);
  st.remove_from_tenant(slot, st.tenants[slot]);
  st.free_slots.push_back(slot);
  --st.live;
}

void HnswIndex::compact() {
  State& st = *state_;
  std::unique_lock rewrite(st.rewrite_mutex);
  std::unique_lock growth(st.growth);
  std::lock_guard lock(st.book_mutex);
  const auto& k = persona::detail::core_kernels(active_isa_level());
  const std::size_t count = st.next_slot;
  const auto dead = [&](Slot s) { return st.deleted[s].load(std::memory_order_relaxed); };
  // Every live node whose links run through deleted ones takes those nodes' live links as candidates
  // instead (FreshDiskANN's delete consolidation) and keeps the best by the heuristic.
  for (Slot p = 0; p < count; ++p) {
    if (dead(p)) continue;
    for (std::size_t l = 0; l <= st.levels[p]; ++l) {
      Slot* list = st.links(p, l);
      const std::span<const Slot> current(list + 1, list[0]);
      if (std::none_of(current.begin(), current.end(), dead)) continue;
      std::vector<Slot> extra;
      for (Slot n : current) {
        if (!dead(n)) continue;
        const Slot* through = st.links(n, l);
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
      st.relink_from(k, p, l, extra);
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
  const std::size_t live = order.size();
  State moved(st.config);
  moved.resize_arrays(live);
  for (std::size_t i = 0; i < live; ++i) {
    const Slot from = order[i];
    if (st.has_f32) std::copy_n(st.f32_row(from), st.config.dim, moved.f32.data() + i * st.config.dim);
    if (st.has_codes) std::copy_n(st.code_row(from), st.code_stride, moved.codes.data() + i * st.code_stride);
    moved.labels[i] = st.labels[from];
    moved.tenants[i] = st.tenants[from];
    moved.levels[i] = st.levels[from];
    const Slot* in = st.links(from, 0);
    Slot* out = moved.links(static_cast<Slot>(i), 0);
    out[0] = in[0];
    for (std::size_t j = 0; j < in[0]; ++j) out[1 + j] = renamed[in[1 + j]];
    moved.upper[i] = std::move(st.upper[from]);  // renamed in place
    for (std::size_t l = 1; l <= moved.levels[i]; ++l) {
      Slot* list = moved.links(static_cast<Slot>(i), l);
      for (std::size_t j = 0; j < list[0]; ++j) list[1 + j] = renamed[list[1 + j]];
    }
  }
  std::int64_t entry = -1;
  int top = -1;
  const std::int64_t old_entry = st.entry.load();
  if (old_entry >= 0 && !dead(static_cast<Slot>(old_entry))) {
    entry = renamed[static_cast<std::size_t>(old_entry)];
    top = st.top_level.load();
  } else {
    for (std::size_t i = 0; i < live; ++i) {
      if (static_cast<int>(moved.levels[i]) > top) {
        top = moved.levels[i];
        entry = static_cast<std::int64_t>(i);
      }
    }
  }
  st.f32 = std::move(moved.f32);
  st.codes = std::move(moved.codes);
  st.links0 = std::move(moved.links0);
  st.upper = std::move(moved.upper);
  st.levels = std::move(moved.levels);
  st.labels = std::move(moved.labels);
  st.tenants = std::move(moved.tenants);
  st.locks = std::move(moved.locks);
  st.deleted = std::move(moved.deleted);
  st.capacity = live;
  st.entry.store(entry);
  st.top_level.store(top);
  st.next_slot = live;
  st.free_slots = {};
  st.slots.clear();
  st.by_tenant.clear();
  st.tenant_position = {};
  for (std::size_t i = 0; i < live; ++i) {
    st.slots.emplace(st.labels[i], static_cast<Slot>(i));
    st.add_to_tenant(static_cast<Slot>(i), st.tenants[i]);
  }
}

bool HnswIndex::contains(VectorLabel label) const {
  std::lock_guard lock(state_->book_mutex);
  return state_->slots.contains(label);
}

std::vector<Neighbor> HnswIndex::search(std::span<const float> query, std::size_t k, const SearchFilter& filter,
                                        std::size_t ef) const {
  const State& st = *state_;
  PERSONA_CHECK(k > 0, "k is 0; expected at least 1");
  std::vector<float> q(st.config.dim);
  detail::prepare_vector(st.config.metric, st.config.dim, query, q.data(), "search", "query");
  const auto& kernels = persona::detail::core_kernels(active_isa_level());
  std::shared_lock growth(st.growth);
  const auto accept = [&](Slot s) {
    if (st.deleted[s].load(std::memory_order_acquire)) return false;
    if (filter.tenant && st.tenants[s] != *filter.tenant) return false;
    return !filter.predicate || filter.predicate(st.labels[s]);
  };
  // The live slots a filtered search may return: a tenant's list, or every tenant's.
  const auto candidates = [&] {
    std::vector<Slot> out;
    std::lock_guard lock(st.book_mutex);
    if (filter.tenant) {
      if (const auto it = st.by_tenant.find(*filter.tenant); it != st.by_tenant.end()) out = it->second.slots;
      return out;
    }
    for (const auto& [tenant, vectors] : st.by_tenant)
      out.insert(out.end(), vectors.slots.begin(), vectors.slots.end());
    return out;
  };
  // Exact over the f32 rows when the index has them.
  const auto exact = st.distance_from(kernels, q.data(), !st.has_f32);
  const auto scan = [&](const std::vector<Slot>& slots) {
    detail::TopK best(k);
    // A tenant's vectors lie scattered over the index: request rows ahead, or each one waits on memory.
    // Flags, label and predicate are read only for a vector that would enter the k best.
    constexpr std::size_t kAhead = 8;
    for (std::size_t i = 0; i < slots.size(); ++i) {
      if (i + kAhead < slots.size()) exact.prefetch(slots[i + kAhead], 64);
      const Slot s = slots[i];
      const float d = exact(s);
      if (d <= best.bound() && accept(s)) best.offer({st.labels[s], d});
    }
    return std::move(best).sorted();
  };
  if (filter.tenant) {  // a small tenant: exact over its own vectors
    std::vector<Slot> own = candidates();
    if (own.empty()) return {};
    if (own.size() <= st.config.exact_search_limit) return scan(own);
  }
  // The top level before the entry: link() publishes a new entry before its level, so the entry read
  // here reaches at least this level.
  const int top = st.top_level.load(std::memory_order_acquire);
  const std::int64_t first = st.entry.load(std::memory_order_acquire);
  if (first < 0) return {};
  const auto walk = st.distance_from(kernels, q.data(), true);
  Candidate current{walk(static_cast<Slot>(first)), static_cast<Slot>(first)};
  for (int l = std::min<int>(top, st.levels[static_cast<Slot>(first)]); l > 0; --l) {
    current = st.greedy(walk, current, static_cast<std::size_t>(l));
  }
  ScratchLease scratch;
  st.search_layer(walk, current, 0, std::max(ef == 0 ? st.config.ef_search : ef, k), *scratch, accept);
  std::vector<Candidate>& found = scratch->results;
  if (st.has_codes && st.has_f32) {
    // The walk ranked by int8 distances: the best few are re-ranked by their exact ones.
    std::sort(found.begin(), found.end(),
              [](const Candidate& a, const Candidate& b) { return a.distance < b.distance; });
    found.resize(std::min(found.size(), st.config.rerank_factor * k));
    for (std::size_t i = 0; i + 1 < found.size(); ++i) exact.prefetch(found[i + 1].slot, 64);
    for (Candidate& c : found) c.distance = exact(c.slot);
  }
  detail::TopK best(k);
  for (const Candidate& c : found) best.offer({st.labels[c.slot], c.distance});
  std::vector<Neighbor> result = std::move(best).sorted();
  // Fewer than k passed the filter on the walk: scan, so that all that exist are returned.
  if (result.size() < k && (filter.tenant || filter.predicate)) return scan(candidates());
  return result;
}

HnswStats HnswIndex::stats() const {
  const State& st = *state_;
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
            st.capacity * (sizeof(void*) + 1 + sizeof(VectorLabel) + sizeof(TenantId) + sizeof(SpinLock) +
                           sizeof(std::atomic<bool>)) +
            st.slots.size() * (sizeof(VectorLabel) + sizeof(Slot) + 2 * sizeof(void*)) +
            (st.tenant_position.capacity() + st.free_slots.capacity() + st.live) * sizeof(Slot) + sizeof(State);
  return s;
}

}  // namespace persona
