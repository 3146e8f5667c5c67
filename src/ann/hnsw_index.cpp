#include "persona/ann/hnsw_index.hpp"

#include "ann/vector_math.hpp"
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

namespace persona::ann {
namespace {

using Slot = std::uint32_t;
constexpr std::size_t kMaxLevel = 15;

// A node's lock: held only while its link lists are read or written.
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
struct Nearer {
  bool operator()(const Candidate& a, const Candidate& b) const noexcept { return a.distance > b.distance; }
};
struct Farther {
  bool operator()(const Candidate& a, const Candidate& b) const noexcept { return a.distance < b.distance; }
};
using MinQueue = std::priority_queue<Candidate, std::vector<Candidate>, Nearer>;
using MaxQueue = std::priority_queue<Candidate, std::vector<Candidate>, Farther>;

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

struct TenantVectors {
  std::vector<Slot> slots;  // every slot ever given to the tenant (deleted ones included)
  std::size_t live = 0;
};

}  // namespace

struct HnswIndex::State {
  HnswConfig config;
  std::size_t max_links0, max_links;  // 2 M on layer 0, M above
  double level_scale;

  // Exclusive only while the arrays grow; every add and search holds it shared.
  mutable std::shared_mutex growth;
  std::size_t capacity = 0;
  std::vector<float> vectors;                    // [capacity, dim]
  std::vector<Slot> links0;                      // [capacity, 1 + max_links0]: count, then slots
  std::vector<std::unique_ptr<Slot[]>> upper;    // per node: levels x [1 + max_links]
  std::vector<std::uint8_t> levels;              // [capacity]
  std::vector<Label> labels;                     // [capacity]
  std::vector<TenantId> tenants;                 // [capacity]
  std::unique_ptr<SpinLock[]> locks;             // [capacity]
  std::unique_ptr<std::atomic<bool>[]> deleted;  // [capacity]

  std::mutex entry_mutex;
  std::atomic<std::int64_t> entry{-1};
  std::atomic<int> top_level{-1};

  mutable std::mutex book_mutex;  // labels, tenants, counts, free visited lists, level draws
  std::unordered_map<Label, Slot> slots;
  std::unordered_map<TenantId, TenantVectors> by_tenant;
  std::size_t next_slot = 0, live = 0, removed = 0;
  std::mt19937_64 rng;
  mutable std::vector<std::unique_ptr<Visited>> visited_pool;

  explicit State(const HnswConfig& c)
      : config(c),
        max_links0(2 * c.M),
        max_links(c.M),
        level_scale(1.0 / std::log(static_cast<double>(c.M))),
        rng(c.seed) {}

  std::size_t stride0() const noexcept { return 1 + max_links0; }
  std::size_t stride() const noexcept { return 1 + max_links; }
  const float* vector(Slot s) const noexcept { return vectors.data() + static_cast<std::size_t>(s) * config.dim; }
  Slot* links(Slot s, std::size_t level) noexcept {
    return level == 0 ? links0.data() + static_cast<std::size_t>(s) * stride0()
                      : upper[s].get() + (level - 1) * stride();
  }
  std::size_t max_links_at(std::size_t level) const noexcept { return level == 0 ? max_links0 : max_links; }

  // Grows the arrays to hold `size` slots; the caller holds no lock on `growth`.
  void reserve(std::size_t size) {
    std::unique_lock lock(growth);
    if (size <= capacity) return;
    const std::size_t grown = std::max({size, 2 * capacity, std::size_t{64}});
    vectors.resize(grown * config.dim);
    links0.resize(grown * stride0(), 0);
    upper.resize(grown);
    levels.resize(grown, 0);
    labels.resize(grown, 0);
    tenants.resize(grown, 0);
    auto new_locks = std::make_unique<SpinLock[]>(grown);
    auto new_deleted = std::make_unique<std::atomic<bool>[]>(grown);
    for (std::size_t i = 0; i < capacity; ++i) new_deleted[i].store(deleted[i].load());
    for (std::size_t i = capacity; i < grown; ++i) new_deleted[i].store(false);
    locks = std::move(new_locks);
    deleted = std::move(new_deleted);
    capacity = grown;
  }

  std::unique_ptr<Visited> take_visited() const {
    {
      std::lock_guard lock(book_mutex);
      if (!visited_pool.empty()) {
        auto v = std::move(visited_pool.back());
        visited_pool.pop_back();
        return v;
      }
    }
    return std::make_unique<Visited>();
  }
  void give_visited(std::unique_ptr<Visited> v) const {
    std::lock_guard lock(book_mutex);
    visited_pool.push_back(std::move(v));
  }

  // A copy of a node's links at `level`, taken under its lock (an insert may be rewriting them).
  std::size_t copy_links(Slot s, std::size_t level, Slot* out) noexcept {
    std::lock_guard lock(locks[s]);
    const Slot* list = links(s, level);
    std::copy_n(list + 1, list[0], out);
    return list[0];
  }

  float distance(const persona::detail::CoreKernelTable& k, const float* q, Slot s) const noexcept {
    return detail::distance(k, config.metric, q, vector(s), config.dim);
  }

  // Greedy descent on one upper layer: the closest node reachable from `start`.
  Candidate greedy(const persona::detail::CoreKernelTable& k, const float* q, Candidate start, std::size_t level) {
    Slot buffer[256];
    for (bool moved = true; moved;) {
      moved = false;
      const std::size_t n = copy_links(start.slot, level, buffer);
      for (std::size_t i = 0; i < n; ++i) {
        const float d = distance(k, q, buffer[i]);
        if (d < start.distance) {
          start = {d, buffer[i]};
          moved = true;
        }
      }
    }
    return start;
  }

  // Best-first search of one layer from `start`, keeping ef candidates. `accept` decides which nodes may
  // be results; every node routes. Returns the accepted results as a max-queue of at most ef.
  template <class Accept>
  MaxQueue search_layer(const persona::detail::CoreKernelTable& k, const float* q, Candidate start, std::size_t level,
                        std::size_t ef, Visited& visited, Accept&& accept) {
    MinQueue frontier;
    MaxQueue results;
    frontier.push(start);
    visited.visit(start.slot);
    if (accept(start.slot)) results.push(start);
    Slot buffer[256];
    while (!frontier.empty()) {
      const Candidate current = frontier.top();
      if (results.size() >= ef && current.distance > results.top().distance) break;
      frontier.pop();
      const std::size_t n = copy_links(current.slot, level, buffer);
      for (std::size_t i = 0; i < n; ++i) {
        const Slot next = buffer[i];
        if (!visited.visit(next)) continue;
        const float d = distance(k, q, next);
        if (results.size() < ef || d < results.top().distance) {
          frontier.push({d, next});
          if (accept(next)) {
            results.push({d, next});
            if (results.size() > ef) results.pop();
          }
        }
      }
    }
    return results;
  }

  // hnswlib's neighbour heuristic: keep a candidate (nearest first) only if it is closer to the new node
  // than to every neighbour kept so far, up to `limit`.
  void select_neighbors(const persona::detail::CoreKernelTable& k, std::vector<Candidate>& candidates,
                        std::size_t limit) const {
    std::sort(candidates.begin(), candidates.end(),
              [](const Candidate& a, const Candidate& b) { return a.distance < b.distance; });
    std::vector<Candidate> kept;
    for (const Candidate& c : candidates) {
      if (kept.size() >= limit) break;
      bool good = true;
      for (const Candidate& s : kept) {
        if (detail::distance(k, config.metric, vector(c.slot), vector(s.slot), config.dim) < c.distance) {
          good = false;
          break;
        }
      }
      if (good) kept.push_back(c);
    }
    candidates = std::move(kept);
  }

  // Adds `from` to the links of `to` at `level`, pruning with the heuristic when the list is full.
  void add_link(const persona::detail::CoreKernelTable& k, Slot to, Slot from, std::size_t level) {
    std::lock_guard lock(locks[to]);
    Slot* list = links(to, level);
    const std::size_t limit = max_links_at(level);
    for (std::size_t i = 0; i < list[0]; ++i) {
      if (list[1 + i] == from) return;
    }
    if (list[0] < limit) {
      list[1 + list[0]] = from;
      ++list[0];
      return;
    }
    std::vector<Candidate> candidates;
    candidates.reserve(limit + 1);
    const float* base = vector(to);
    candidates.push_back({detail::distance(k, config.metric, base, vector(from), config.dim), from});
    for (std::size_t i = 0; i < list[0]; ++i) {
      candidates.push_back({detail::distance(k, config.metric, base, vector(list[1 + i]), config.dim), list[1 + i]});
    }
    select_neighbors(k, candidates, limit);
    list[0] = static_cast<Slot>(candidates.size());
    for (std::size_t i = 0; i < candidates.size(); ++i) list[1 + i] = candidates[i].slot;
  }

  void link(Slot slot, std::size_t level) {
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
    const float* q = vector(slot);
    Candidate current{distance(k, q, static_cast<Slot>(first)), static_cast<Slot>(first)};
    for (int l = top; l > static_cast<int>(level); --l) current = greedy(k, q, current, static_cast<std::size_t>(l));
    // Choose the links of every level first, then write them all, then add the reverse links from layer
    // 0 up: a search that reaches the node on any layer finds every layer's links in place.
    auto visited = take_visited();
    const int lowest_top = std::min(top, static_cast<int>(level));
    std::vector<std::vector<Candidate>> chosen(static_cast<std::size_t>(lowest_top) + 1);
    for (int l = lowest_top; l >= 0; --l) {
      visited->reset(capacity);
      MaxQueue found = search_layer(k, q, current, static_cast<std::size_t>(l), config.ef_construction, *visited,
                                    [](Slot) { return true; });
      std::vector<Candidate>& candidates = chosen[static_cast<std::size_t>(l)];
      candidates.reserve(found.size());
      for (; !found.empty(); found.pop()) candidates.push_back(found.top());
      current = *std::min_element(candidates.begin(), candidates.end(),
                                  [](const Candidate& a, const Candidate& b) { return a.distance < b.distance; });
      select_neighbors(k, candidates, max_links);
    }
    {
      std::lock_guard lock(locks[slot]);
      for (std::size_t l = 0; l < chosen.size(); ++l) {
        Slot* list = links(slot, l);
        list[0] = static_cast<Slot>(chosen[l].size());
        for (std::size_t i = 0; i < chosen[l].size(); ++i) list[1 + i] = chosen[l][i].slot;
      }
    }
    for (std::size_t l = 0; l < chosen.size(); ++l) {
      for (const Candidate& c : chosen[l]) add_link(k, c.slot, slot, l);
    }
    give_visited(std::move(visited));
    if (static_cast<int>(level) > top) {
      entry.store(slot, std::memory_order_release);
      top_level.store(static_cast<int>(level), std::memory_order_release);
    }
  }
};

HnswIndex::HnswIndex(const HnswConfig& config) {
  PERSONA_CHECK(config.dim > 0 && config.dim <= 65536, "dim is {}; expected 1..65536", config.dim);
  PERSONA_CHECK(config.M >= 2 && config.M <= 100, "M is {}; expected 2..100", config.M);
  PERSONA_CHECK(config.ef_construction >= 1, "ef_construction is 0; expected at least 1");
  PERSONA_CHECK(
      config.metric == Metric::l2 || config.metric == Metric::inner_product || config.metric == Metric::cosine,
      "unknown metric {}", static_cast<int>(config.metric));
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
  std::vector<std::byte>& bytes() { return bytes_; }

 private:
  std::vector<std::byte> bytes_;
};

// Reads with every length checked against what is left; a short file is corrupt_data naming the field.
class Reader {
 public:
  Reader(std::span<const std::byte> bytes, const std::filesystem::path& path) : bytes_(bytes), path_(path) {}
  template <class T>
  T get(const char* field) {
    T value;
    std::memcpy(&value, take(sizeof(T), field), sizeof(T));
    return value;
  }
  template <class T>
  void get_array(T* out, std::size_t count, const char* field) {
    std::size_t bytes = 0;
    if (__builtin_mul_overflow(count, sizeof(T), &bytes)) fail(fmt::format("{} count {} overflows", field, count));
    if (bytes != 0) std::memcpy(out, take(bytes, field), bytes);
  }
  [[noreturn]] void fail(const std::string& what) const { PERSONA_THROW(corrupt_data, "{}: {}", path_.string(), what); }
  std::size_t remaining() const noexcept { return bytes_.size() - at_; }

 private:
  const std::byte* take(std::size_t n, const char* field) {
    if (n > remaining()) {
      fail(fmt::format("truncated: {} needs {} bytes at offset {}, {} left", field, n, at_, remaining()));
    }
    const std::byte* p = bytes_.data() + at_;
    at_ += n;
    return p;
  }
  std::span<const std::byte> bytes_;
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
  for (std::uint64_t v :
       {st.config.dim, st.config.M, st.config.ef_construction, st.config.ef_search, st.config.exact_search_limit}) {
    w.put(v);
  }
  w.put(st.config.seed);
  w.put(static_cast<std::uint64_t>(count));
  w.put(static_cast<std::int64_t>(st.entry.load()));
  w.put(static_cast<std::int64_t>(st.top_level.load()));
  w.put_array(st.vectors.data(), count * st.config.dim);
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

HnswIndex HnswIndex::load(const std::filesystem::path& path) {
  const std::vector<std::byte> bytes = read_file(path);
  Reader r(bytes, path);
  if (bytes.size() < sizeof(kMagic) + sizeof(std::uint64_t)) r.fail("too short for an index file");
  std::uint64_t stored = 0;
  std::memcpy(&stored, bytes.data() + bytes.size() - sizeof(stored), sizeof(stored));
  const std::span<const std::byte> body(bytes.data(), bytes.size() - sizeof(stored));
  char magic[8];
  r.get_array(magic, 8, "magic");
  if (std::memcmp(magic, kMagic, 8) != 0) r.fail("not a persona HNSW index (bad magic)");
  const auto version = r.get<std::uint32_t>("version");
  if (version > kFormatVersion) {
    PERSONA_THROW(unsupported, "{}: format version {}; this build reads versions up to {}", path.string(), version,
                  kFormatVersion);
  }
  if (persona_checksum(body) != stored) r.fail("checksum mismatch");
  HnswConfig config;
  const auto metric = r.get<std::uint32_t>("metric");
  if (metric > 2) r.fail(fmt::format("metric {} unknown", metric));
  config.metric = static_cast<Metric>(metric);
  config.dim = r.get<std::uint64_t>("dim");
  config.M = r.get<std::uint64_t>("M");
  config.ef_construction = r.get<std::uint64_t>("ef_construction");
  config.ef_search = r.get<std::uint64_t>("ef_search");
  config.exact_search_limit = r.get<std::uint64_t>("exact_search_limit");
  config.seed = r.get<std::uint64_t>("seed");
  if (config.dim == 0 || config.dim > 65536 || config.M < 2 || config.M > 100 || config.ef_construction == 0) {
    r.fail(fmt::format("config out of range (dim {}, M {}, ef_construction {})", config.dim, config.M,
                       config.ef_construction));
  }
  HnswIndex index(config);
  State& st = *index.state_;
  const auto count = r.get<std::uint64_t>("count");
  const auto entry = r.get<std::int64_t>("entry");
  const auto top = r.get<std::int64_t>("top level");
  // Every vector takes at least dim * 4 bytes: a count beyond the file is corrupt, not an allocation.
  if (count >= 0xffffffffu || count > r.remaining() / (config.dim * sizeof(float))) {
    r.fail(fmt::format("count {} does not fit the file", count));
  }
  st.reserve(count);
  r.get_array(st.vectors.data(), count * config.dim, "vectors");
  r.get_array(st.labels.data(), count, "labels");
  r.get_array(st.tenants.data(), count, "tenants");
  r.get_array(st.levels.data(), count, "levels");
  std::vector<std::uint8_t> deleted(count);
  r.get_array(deleted.data(), count, "deleted flags");
  r.get_array(st.links0.data(), count * st.stride0(), "layer 0 links");
  const auto check_links = [&](const Slot* list, std::size_t limit, std::size_t node) {
    if (list[0] > limit) r.fail(fmt::format("node {} has {} links; at most {}", node, list[0], limit));
    for (std::size_t i = 0; i < list[0]; ++i) {
      if (list[1 + i] >= count) r.fail(fmt::format("node {} links to {}; the index has {}", node, list[1 + i], count));
    }
  };
  for (std::size_t i = 0; i < count; ++i) {
    if (st.levels[i] > kMaxLevel) r.fail(fmt::format("node {} has level {}", i, st.levels[i]));
    check_links(st.links0.data() + i * st.stride0(), st.max_links0, i);
    if (st.levels[i] > 0) {
      st.upper[i] = std::make_unique<Slot[]>(st.levels[i] * st.stride());
      r.get_array(st.upper[i].get(), st.levels[i] * st.stride(), "upper links");
      for (std::size_t l = 0; l < st.levels[i]; ++l) check_links(st.upper[i].get() + l * st.stride(), st.max_links, i);
    }
    st.deleted[i].store(deleted[i] != 0);
    if (deleted[i] == 0 && !st.slots.emplace(st.labels[i], static_cast<Slot>(i)).second) {
      r.fail(fmt::format("label {} appears twice", st.labels[i]));
    }
    TenantVectors& t = st.by_tenant[st.tenants[i]];
    t.slots.push_back(static_cast<Slot>(i));
    t.live += deleted[i] == 0 ? 1 : 0;
  }
  if (r.remaining() != sizeof(stored)) r.fail(fmt::format("{} bytes after the links", r.remaining() - sizeof(stored)));
  if (count == 0 ? entry != -1
                 : (entry < 0 || static_cast<std::uint64_t>(entry) >= count ||
                    top != st.levels[static_cast<std::size_t>(entry)])) {
    r.fail(fmt::format("entry point {} at level {} does not match the nodes", entry, top));
  }
  st.entry.store(entry);
  st.top_level.store(static_cast<int>(top));
  st.next_slot = count;
  st.live = st.slots.size();
  st.removed = count - st.live;
  return index;
}

const HnswConfig& HnswIndex::config() const noexcept { return state_->config; }

std::size_t HnswIndex::size() const noexcept {
  std::lock_guard lock(state_->book_mutex);
  return state_->live;
}

void HnswIndex::add(Label label, std::span<const float> vector, TenantId tenant) {
  State& st = *state_;
  std::vector<float> prepared(st.config.dim);
  detail::prepare_vector(st.config.metric, st.config.dim, vector, prepared.data(), "add", "vector");
  Slot slot;
  std::size_t level;
  {
    std::lock_guard lock(st.book_mutex);
    PERSONA_CHECK(!st.slots.contains(label), "label {} is already in the index", label);
    PERSONA_CHECK_CODE(capacity_exhausted, st.next_slot < 0xffffffffu, "the index holds {} vectors; no more slots",
                       st.next_slot);
    slot = static_cast<Slot>(st.next_slot++);
    st.slots.emplace(label, slot);
    ++st.live;
    const double u = std::uniform_real_distribution<double>(0.0, 1.0)(st.rng);
    level = std::min(kMaxLevel, static_cast<std::size_t>(-std::log(std::max(u, 1e-300)) * st.level_scale));
  }
  {
    std::shared_lock lock(st.growth);
    if (slot >= st.capacity) {
      lock.unlock();
      st.reserve(static_cast<std::size_t>(slot) + 1);
      lock.lock();
    }
    std::copy(prepared.begin(), prepared.end(), st.vectors.begin() + static_cast<std::ptrdiff_t>(slot * st.config.dim));
    st.labels[slot] = label;
    st.tenants[slot] = tenant;
    st.levels[slot] = static_cast<std::uint8_t>(level);
    if (level > 0) {
      st.upper[slot] = std::make_unique<Slot[]>(level * st.stride());
      std::fill_n(st.upper[slot].get(), level * st.stride(), Slot{0});
    }
    st.link(slot, level);
  }
  std::lock_guard lock(st.book_mutex);
  TenantVectors& t = st.by_tenant[tenant];
  t.slots.push_back(slot);
  ++t.live;
}

void HnswIndex::add(std::span<const Label> labels, TensorView<const float> vectors, std::span<const TenantId> tenants) {
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
    next_slot = state_->next_slot;
  }
  state_->reserve(next_slot + labels.size());
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

void HnswIndex::remove(Label label) {
  State& st = *state_;
  std::shared_lock growth(st.growth);  // before book_mutex, the order every path takes
  std::lock_guard lock(st.book_mutex);
  const auto it = st.slots.find(label);
  PERSONA_CHECK_CODE(not_found, it != st.slots.end(), "label {} is not in the index", label);
  const Slot slot = it->second;
  st.slots.erase(it);
  st.deleted[slot].store(true, std::memory_order_release);
  --st.by_tenant[st.tenants[slot]].live;
  --st.live;
  ++st.removed;
}

bool HnswIndex::contains(Label label) const {
  std::lock_guard lock(state_->book_mutex);
  return state_->slots.contains(label);
}

std::vector<Neighbor> HnswIndex::search(std::span<const float> query, std::size_t k, const SearchFilter& filter,
                                        std::size_t ef) const {
  State& st = *state_;
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
  // The slots a filtered search may return, all written: a tenant's list, or every tenant's.
  const auto candidates = [&] {
    std::vector<Slot> out;
    std::lock_guard lock(st.book_mutex);
    for (const auto& [tenant, vectors] : st.by_tenant) {
      if (!filter.tenant || tenant == *filter.tenant) out.insert(out.end(), vectors.slots.begin(), vectors.slots.end());
    }
    return out;
  };
  const auto scan = [&](const std::vector<Slot>& slots) {
    detail::TopK exact(k);
    // A tenant's vectors lie scattered over the index: request a few ahead, or each one waits on memory.
    constexpr std::size_t kAhead = 4;
    const std::size_t row_bytes = st.config.dim * sizeof(float);
    for (std::size_t i = 0; i < slots.size(); ++i) {
      if (i + kAhead < slots.size()) {
        const auto* ahead = reinterpret_cast<const char*>(st.vector(slots[i + kAhead]));
        for (std::size_t b = 0; b < row_bytes; b += 64) __builtin_prefetch(ahead + b);
      }
      if (accept(slots[i])) exact.offer({st.labels[slots[i]], st.distance(kernels, q.data(), slots[i])});
    }
    return std::move(exact).sorted();
  };
  if (filter.tenant) {  // a small tenant: exact over its own vectors
    std::size_t held = 0;
    {
      std::lock_guard lock(st.book_mutex);
      const auto it = st.by_tenant.find(*filter.tenant);
      if (it == st.by_tenant.end() || it->second.live == 0) return {};
      held = it->second.slots.size();
    }
    if (held <= st.config.exact_search_limit) return scan(candidates());
  }
  detail::TopK best(k);
  const std::int64_t first = st.entry.load(std::memory_order_acquire);
  if (first < 0) return {};
  Candidate current{st.distance(kernels, q.data(), static_cast<Slot>(first)), static_cast<Slot>(first)};
  for (int l = st.top_level.load(std::memory_order_acquire); l > 0; --l) {
    current = st.greedy(kernels, q.data(), current, static_cast<std::size_t>(l));
  }
  auto visited = st.take_visited();
  visited->reset(st.capacity);
  MaxQueue found =
      st.search_layer(kernels, q.data(), current, 0, std::max(ef == 0 ? st.config.ef_search : ef, k), *visited, accept);
  st.give_visited(std::move(visited));
  for (; !found.empty(); found.pop()) best.offer({st.labels[found.top().slot], found.top().distance});
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
  s.deleted = st.removed;
  s.vector_bytes = st.next_slot * st.config.dim * sizeof(float);
  s.graph_bytes = st.next_slot * st.stride0() * sizeof(Slot);
  for (std::size_t i = 0; i < st.next_slot && i < st.capacity; ++i)
    s.graph_bytes += st.levels[i] * st.stride() * sizeof(Slot);
  s.bytes = st.capacity * (st.config.dim * sizeof(float) + st.stride0() * sizeof(Slot) + sizeof(void*) + 1 +
                           sizeof(Label) + sizeof(TenantId) + sizeof(SpinLock) + sizeof(std::atomic<bool>)) +
            (s.graph_bytes - st.next_slot * st.stride0() * sizeof(Slot)) +
            st.slots.size() * (sizeof(Label) + sizeof(Slot) + 2 * sizeof(void*)) + st.next_slot * sizeof(Slot) +
            sizeof(State);
  return s;
}

}  // namespace persona::ann
