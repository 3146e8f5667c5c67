// AdapterCache: the RAM tier of adapters. A byte budget bounds what stays resident once released; an
// EvictionPolicy picks what goes; adapters a handle holds (or that are pinned resident) are never
// evicted; a missing adapter is loaded once however many threads ask for it at the same time
// (single-flight). It knows nothing of tenants' rights or of the disk: the loader it is given reads the
// adapter, and AdapterRegistry checks ownership before asking.
#pragma once

#include "persona/core/error.hpp"
#include "persona/core/ids.hpp"
#include "persona/registry/adapter_handle.hpp"
#include "persona/registry/eviction_policy.hpp"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace persona {

struct AdapterCacheConfig {
  // Bytes of adapters (LoraAdapter::bytes) kept resident. Pinned adapters may push the total above it,
  // which stats report; nothing else does.
  std::size_t ram_budget_bytes = std::size_t{1} << 30;
  EvictionPolicyKind eviction = EvictionPolicyKind::lru;
};

struct AdapterCacheStats {
  std::uint64_t hits = 0, misses = 0;  // gets served from RAM / that had to wait for a load
  std::uint64_t loads = 0, load_failures = 0, evictions = 0;
  std::uint64_t bytes_read = 0;  // file bytes the loader reported
  double load_p50_ms = 0.0, load_p99_ms = 0.0;
  double load_total_ms = 0.0;  // summed over every load (they may overlap)
  std::size_t resident_adapters = 0, resident_bytes = 0, pinned_bytes = 0;
  std::size_t over_budget_bytes = 0;  // resident bytes above the budget, all of them pinned
  std::size_t tracked_epochs = 0;     // refs whose invalidation is remembered (at most kMaxTrackedEpochs)
  std::uint64_t prefetches = 0, prefetch_hits = 0, prefetch_unused = 0;  // unused: evicted before any get
};

class AdapterCache {
 public:
  // What the loader returns: the adapter, its version, the bytes read to get it, and the source's
  // generation of the ref read before reading it (see GenerationOf).
  struct Loaded {
    LoraAdapter adapter;
    AdapterVersion version = 0;
    std::size_t file_bytes = 0;
    std::uint64_t generation = 0;
  };
  // Reads one adapter (from an AdapterStore, a test's map...); its errors reach the callers of get.
  using Loader = std::function<Loaded(const AdapterRef&)>;
  // The source's current generation of a ref (AdapterStore::generation): a resident adapter loaded at
  // another generation is stale (written by someone else since) and is loaded again. Cheap: called on
  // every hit.
  using GenerationOf = std::function<std::uint64_t(const AdapterRef&)>;

  // Error invalid_argument for a zero budget or no loader. Without `generation_of`, only invalidate tells
  // the cache that an adapter changed.
  AdapterCache(AdapterCacheConfig config, Loader loader, GenerationOf generation_of = nullptr);
  AdapterCache(const AdapterCache&) = delete;
  AdapterCache& operator=(const AdapterCache&) = delete;

  // The adapter, pinned by the handle, loaded (once, whoever else waits for it) if it is not resident.
  // Errors of the loader, or capacity_exhausted when the adapter alone is larger than the budget; the
  // cache stays usable. `prefetch`: load it for later and return an empty handle (counted as a prefetch,
  // not a miss; nothing happens if it is resident).
  AdapterHandle get(const AdapterRef& ref, bool prefetch = false);
  // The adapter if resident (counted as a hit), else an empty handle; never loads or waits.
  AdapterHandle find(const AdapterRef& ref);
  // Drops the adapter from RAM (handles keep theirs) and makes a load already in flight for it stay out
  // of the cache: after a put or remove, every later get loads what is stored then (it never joins a
  // load that began before; that load's own waiters still get its result).
  void invalidate(const AdapterRef& ref);
  // Keeps a resident adapter resident without a handle (counted against the budget); false when it is
  // not resident. The pin belongs to the ref: a version loaded later (after a put, or a write seen
  // through the generation) is pinned too, until unpinned.
  bool set_resident_pin(const AdapterRef& ref, bool pinned);

  // Resident (and not stale) or being loaded.
  bool holds(const AdapterRef& ref) const;
  // A value that changes with every invalidation of `ref`: a caller that looked something up in the
  // store can tell whether an invalidation happened meanwhile (equal values: none). Only the refs
  // invalidated most recently are tracked (kMaxTrackedEpochs); past that, every value changes at once,
  // which can only make such a caller look again.
  std::uint64_t epoch(const AdapterRef& ref) const;
  static constexpr std::size_t kMaxTrackedEpochs = std::size_t{1} << 16;
  // The key given to `ref` at its first load (kNoAdapter if never loaded), and back.
  AdapterKey key_of(const AdapterRef& ref) const;
  std::optional<AdapterRef> ref_of(AdapterKey key) const;
  // The adapter's bytes when last loaded (0 if never).
  std::size_t last_bytes(AdapterKey key) const;

  // Evicts first what released handles left over the budget, so the figures are current.
  AdapterCacheStats stats();
  const AdapterCacheConfig& config() const noexcept { return config_; }

 private:
  struct Entry {
    std::shared_ptr<const LoadedAdapter> loaded;
    std::size_t bytes = 0;
    bool resident_pin = false;
    bool prefetched_unused = false;
    std::uint64_t generation = 0;
  };
  // What a load hands every waiter: the adapter, or what went wrong as data, so that each waiter throws
  // an Error of its own (one exception object rethrown in several threads is shared between them).
  struct Failure {
    ErrorCode code = ErrorCode::io_error;
    std::string function, message;
  };
  struct Result {
    std::shared_ptr<const LoadedAdapter> loaded;
    std::optional<Failure> failure;
    std::exception_ptr other;  // not a persona::Error (std::bad_alloc): rethrown as it is
  };

  static bool pinned(const Entry& e) noexcept { return e.resident_pin || e.loaded.use_count() > 1; }
  void make_room(std::size_t incoming);          // under mutex_
  AdapterHandle hit(Entry& entry);               // under mutex_
  AdapterKey assign_key(const AdapterRef& ref);  // under mutex_: the first successful load gives it
  void load(const AdapterRef& ref, std::promise<Result>& promise, std::uint64_t epoch, bool prefetch);
  // The resident entry of `ref` if there is one and it is not stale; a stale one is dropped as by
  // invalidate. Under mutex_.
  Entry* current(const AdapterRef& ref);
  bool stale(const AdapterRef& ref, const Entry& entry) const;  // under mutex_
  void invalidate_locked(const AdapterRef& ref);                // under mutex_

  AdapterCacheConfig config_;
  Loader loader_;
  GenerationOf generation_of_;
  mutable std::mutex mutex_;                // everything below
  std::unique_ptr<EvictionPolicy> policy_;  // ordered by AdapterKey
  std::unordered_map<AdapterKey, Entry> entries_;
  struct InFlight {
    std::shared_future<Result> result;
    std::uint64_t epoch = 0;  // of the ref when the load began: later gets join only while it holds
  };
  std::uint64_t epoch_of(const AdapterRef& ref) const;          // under mutex_
  void end_flight(const AdapterRef& ref, std::uint64_t epoch);  // under mutex_
  std::unordered_map<AdapterRef, InFlight> in_flight_;
  std::unordered_map<AdapterRef, AdapterKey> keys_;
  std::vector<AdapterRef> refs_;                          // [key - 1]
  std::vector<std::size_t> last_bytes_;                   // [key - 1]
  std::unordered_set<AdapterRef> resident_pins_;          // refs pinned resident, whichever version is loaded
  std::unordered_map<AdapterRef, std::uint64_t> epochs_;  // the refs invalidated since the last reset
  std::uint64_t untracked_epoch_ = 0;                     // the epoch of every other ref
  std::uint64_t last_epoch_ = 0;                          // every invalidation takes a new one
  std::size_t resident_bytes_ = 0;
  AdapterCacheStats counts_;
  std::vector<double> load_ms_;  // the most recent loads, for the percentiles
  std::size_t next_sample_ = 0;
};

}  // namespace persona
