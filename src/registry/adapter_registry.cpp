#include "persona/registry/adapter_registry.hpp"

#include "persona/core/error.hpp"

#include <tbb/task_arena.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <vector>

namespace persona {
namespace {

struct Key {
  TenantId owner = kPublicTenant;
  std::string id;
  friend bool operator==(const Key&, const Key&) = default;
};
struct KeyHash {
  std::size_t operator()(const Key& k) const noexcept {
    return std::hash<std::string>()(k.id) ^ (static_cast<std::size_t>(k.owner) * 0x9e3779b97f4a7c15ull);
  }
};

using Loaded = std::shared_ptr<const LoraAdapter>;

struct Entry {
  Loaded adapter;
  std::size_t bytes = 0;
  bool resident_pin = false;
  bool prefetched_unused = false;
  std::uint64_t serial = 0;  // the entry's number in the eviction policy
};

constexpr std::size_t kLatencySamples = 4096;  // the most recent loads, for the percentiles

}  // namespace

struct AdapterRegistry::State {
  AdapterStore* store;
  AdapterRegistryConfig config;
  std::mutex mutex;  // everything below
  std::unordered_map<Key, Entry, KeyHash> entries;
  std::unique_ptr<EvictionPolicy> policy;
  std::unordered_map<std::uint64_t, Key> by_serial;
  std::uint64_t next_serial = 0;
  std::unordered_map<Key, std::shared_future<Loaded>, KeyHash> in_flight;
  // Bumped by put and remove: a load that started before does not enter the cache.
  std::unordered_map<Key, std::uint64_t, KeyHash> epochs;
  // acquire(tenant, id): whether {tenant, id} names the tenant's own adapter (true) or the public one,
  // found once in the store and forgotten when a put or remove through this registry touches the key.
  std::unordered_map<Key, bool, KeyHash> own_by_id;
  std::size_t resident_bytes = 0;
  AdapterRegistryMetrics counts;
  std::vector<double> load_ms;
  std::size_t next_sample = 0;
  // The access history: each adapter acquired gets a stable number for the prefetcher.
  std::unique_ptr<AdapterPrefetcher> prefetcher;
  std::unordered_map<Key, std::uint64_t, KeyHash> key_numbers;
  std::vector<Key> keys_by_number;
  std::unordered_map<Key, std::size_t, KeyHash> last_bytes;
  std::chrono::steady_clock::time_point born = std::chrono::steady_clock::now();

  double now() const {
    return config.clock ? config.clock()
                        : std::chrono::duration<double>(std::chrono::steady_clock::now() - born).count();
  }
  double last_time = 0.0;
  // Under mutex: one access, for the prefetcher (a clock that steps back is held at its last value).
  void remember(const Key& key) {
    auto [it, added] = key_numbers.try_emplace(key, keys_by_number.size());
    if (added) keys_by_number.push_back(key);
    last_time = std::max(now(), last_time);
    prefetcher->record(it->second, last_time);
  }
  // Loads for acquire_async and prefetch are enqueued to an arena: oneTBB then runs them on a worker even
  // where it has none to spare (one CPU), which a task_group would only run once someone waits on it.
  tbb::task_arena arena;
  std::mutex task_mutex;  // tasks_pending
  std::condition_variable task_done;
  std::size_t tasks_pending = 0;

  void run_async(std::function<void()> task) {
    {
      std::lock_guard lock(task_mutex);
      ++tasks_pending;
    }
    arena.enqueue([this, task = std::move(task)] {
      task();  // catches its own errors
      std::lock_guard lock(task_mutex);
      if (--tasks_pending == 0) task_done.notify_all();
    });
  }
  void wait_tasks() {
    std::unique_lock lock(task_mutex);
    task_done.wait(lock, [this] { return tasks_pending == 0; });
  }

  // An adapter is pinned while a handle holds it or while pinned resident. A new handle is either a copy
  // of a live one (the count is already above one) or made here under `mutex`: a count of one read under
  // `mutex` means no handle exists and none can appear meanwhile.
  static bool pinned(const Entry& e) noexcept { return e.resident_pin || e.adapter.use_count() > 1; }

  // Under mutex: evicts unpinned adapters in the policy's order until `incoming` more bytes fit the budget
  // or only pinned ones are left.
  void make_room(std::size_t incoming) {
    const auto is_pinned = [&](std::uint64_t serial) { return pinned(entries.at(by_serial.at(serial))); };
    while (resident_bytes + incoming > config.ram_budget_bytes) {
      const std::optional<std::uint64_t> victim = policy->victim(is_pinned);
      if (!victim) break;
      const auto found = entries.find(by_serial.at(*victim));
      counts.prefetch_unused += found->second.prefetched_unused ? 1 : 0;
      ++counts.evictions;
      resident_bytes -= found->second.bytes;
      policy->evict(*victim);
      by_serial.erase(*victim);
      entries.erase(found);
    }
  }

  void forget(const Key& key) {
    std::lock_guard lock(mutex);
    ++epochs[key];
    own_by_id.erase(key);
    if (const auto it = entries.find(key); it != entries.end()) {
      resident_bytes -= it->second.bytes;
      policy->erase(it->second.serial);
      by_serial.erase(it->second.serial);
      entries.erase(it);
    }
  }

  // Loads `key` from the store and fulfils `promise`; the caller registered it in in_flight.
  void load(const Key& key, std::promise<Loaded>& promise, std::uint64_t epoch, bool prefetch) {
    const auto start = std::chrono::steady_clock::now();
    try {
      std::error_code error;
      const std::size_t file_bytes =
          static_cast<std::size_t>(std::filesystem::file_size(store->path_of(key.owner, key.id), error));
      auto adapter = std::make_shared<const LoraAdapter>(store->get(key.owner, key.id));
      const std::size_t bytes = adapter->bytes();
      PERSONA_CHECK_CODE(capacity_exhausted, bytes <= config.ram_budget_bytes,
                         "adapter '{}' of tenant {} takes {} bytes; the RAM budget is {} bytes", key.id, key.owner,
                         bytes, config.ram_budget_bytes);
      {
        std::lock_guard lock(mutex);
        in_flight.erase(key);
        ++counts.loads;
        counts.bytes_read += error ? 0 : file_bytes;
        const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
        counts.load_total_ms += ms;
        if (load_ms.size() < kLatencySamples) {
          load_ms.push_back(ms);
        } else {
          load_ms[next_sample++ % kLatencySamples] = ms;
        }
        if (epochs[key] == epoch) {
          make_room(bytes);
          const std::uint64_t serial = next_serial++;
          policy->insert(serial, bytes);
          by_serial.emplace(serial, key);
          entries[key] = Entry{adapter, bytes, false, prefetch, serial};
          resident_bytes += bytes;
          last_bytes[key] = bytes;
        }
      }
      promise.set_value(std::move(adapter));
    } catch (...) {
      {
        std::lock_guard lock(mutex);
        in_flight.erase(key);
        ++counts.load_failures;
      }
      promise.set_exception(std::current_exception());
    }
  }

  // Under mutex: an acquire served from RAM.
  AdapterHandle hit(const Key& key, Entry& entry) {
    policy->hit(entry.serial);
    ++counts.hits;
    remember(key);
    if (entry.prefetched_unused) {
      ++counts.prefetch_hits;
      entry.prefetched_unused = false;
    }
    return AdapterHandle(entry.adapter);
  }

  static void check_owner(TenantId tenant, const AdapterRef& ref) {
    PERSONA_CHECK_CODE(permission_denied, ref.owner == tenant || ref.owner == kPublicTenant,
                       "tenant {} may not use adapter '{}' of tenant {}", tenant, ref.id, ref.owner);
  }

  AdapterHandle acquire(TenantId tenant, const AdapterRef& ref, bool prefetch) {
    check_owner(tenant, ref);
    const Key key{ref.owner, ref.id};
    std::shared_future<Loaded> waiting;
    std::promise<Loaded> promise;
    std::uint64_t epoch = 0;
    bool loader = false;
    {
      std::lock_guard lock(mutex);
      make_room(0);  // handles released since the last call may have left pinned bytes over the budget
      if (const auto it = entries.find(key); it != entries.end()) {
        if (prefetch) return AdapterHandle();
        return hit(key, it->second);
      }
      if (prefetch) {
        ++counts.prefetches;
      } else {
        ++counts.misses;
      }
      if (const auto it = in_flight.find(key); it != in_flight.end()) {
        waiting = it->second;
      } else {
        loader = true;
        waiting = promise.get_future().share();
        in_flight.emplace(key, waiting);
        epoch = epochs[key];
      }
    }
    if (loader) load(key, promise, epoch, prefetch);
    if (prefetch) return AdapterHandle();
    AdapterHandle handle(waiting.get());
    std::lock_guard lock(mutex);
    remember(key);
    return handle;
  }
};

AdapterRegistry::AdapterRegistry(AdapterStore& store, AdapterRegistryConfig config)
    : state_(std::make_shared<State>()) {
  PERSONA_CHECK(config.ram_budget_bytes > 0, "ram_budget_bytes is 0; expected at least one adapter's bytes");
  state_->store = &store;
  state_->config = config;
  state_->policy = make_eviction_policy(config.eviction);
  state_->prefetcher = std::make_unique<AdapterPrefetcher>(config.prefetcher);
}

AdapterRegistry::~AdapterRegistry() { state_->wait_tasks(); }

AdapterHandle AdapterRegistry::acquire(TenantId tenant, const AdapterRef& adapter) {
  return state_->acquire(tenant, adapter, false);
}

AdapterHandle AdapterRegistry::try_acquire(TenantId tenant, const AdapterRef& adapter) {
  State::check_owner(tenant, adapter);
  std::lock_guard lock(state_->mutex);
  state_->make_room(0);
  const auto it = state_->entries.find(Key{adapter.owner, adapter.id});
  return it == state_->entries.end() ? AdapterHandle() : state_->hit(it->first, it->second);
}

AdapterHandle AdapterRegistry::acquire(TenantId tenant, std::string_view id) {
  if (tenant == kPublicTenant) return acquire(tenant, AdapterRef{kPublicTenant, std::string(id)});
  Key own_key{tenant, std::string(id)};
  std::optional<bool> own;
  std::uint64_t epoch = 0;
  {
    std::lock_guard lock(state_->mutex);
    const auto known = state_->epochs.find(own_key);  // find: a lookup adds no entry
    epoch = known == state_->epochs.end() ? 0 : known->second;
    if (state_->entries.contains(own_key) || state_->in_flight.contains(own_key)) {
      own = true;
    } else if (const auto it = state_->own_by_id.find(own_key); it != state_->own_by_id.end()) {
      own = it->second;
    }
  }
  if (!own) {  // first use of this id by this tenant: one look at the store, outside the lock
    own = !state_->store->versions(tenant, id).empty();
    std::lock_guard lock(state_->mutex);
    constexpr std::size_t kMaxRemembered = std::size_t{1} << 16;
    if (state_->own_by_id.size() >= kMaxRemembered) state_->own_by_id.clear();
    const auto known = state_->epochs.find(own_key);
    if ((known == state_->epochs.end() ? 0 : known->second) == epoch) {  // no put or remove since
      state_->own_by_id.emplace(own_key, *own);
    }
  }
  return acquire(tenant, AdapterRef{*own ? tenant : kPublicTenant, std::move(own_key.id)});
}

std::shared_future<AdapterHandle> AdapterRegistry::acquire_async(TenantId tenant, const AdapterRef& adapter) {
  auto promise = std::make_shared<std::promise<AdapterHandle>>();
  std::shared_future<AdapterHandle> result = promise->get_future().share();
  state_->run_async([state = state_.get(), tenant, adapter, promise] {
    try {
      promise->set_value(state->acquire(tenant, adapter, false));
    } catch (...) {
      promise->set_exception(std::current_exception());
    }
  });
  return result;
}

void AdapterRegistry::prefetch(TenantId tenant, const AdapterRef& adapter) {
  if (adapter.owner != tenant && adapter.owner != kPublicTenant) return;  // never warms what it may not use
  state_->run_async([state = state_.get(), tenant, adapter] {
    try {
      state->acquire(tenant, adapter, true);
    } catch (...) {  // counted as a load failure
    }
  });
}

std::size_t AdapterRegistry::prefetch_ahead(double horizon_seconds, std::size_t byte_budget) {
  std::vector<Key> wanted;
  {
    std::lock_guard lock(state_->mutex);
    std::size_t spent = 0;
    for (std::uint64_t number : state_->prefetcher->predict(state_->now(), horizon_seconds, 256)) {
      const Key& key = state_->keys_by_number[number];
      if (state_->entries.contains(key) || state_->in_flight.contains(key)) continue;
      const auto known = state_->last_bytes.find(key);
      const std::size_t bytes = known == state_->last_bytes.end() ? 0 : known->second;
      if (spent + bytes > byte_budget) break;
      spent += bytes;
      wanted.push_back(key);
    }
  }
  // Only adapters some tenant acquired before are predicted; warming one hands it to nobody.
  for (const Key& key : wanted) prefetch(key.owner, AdapterRef{key.owner, key.id});
  return wanted.size();
}

void AdapterRegistry::pin_resident(TenantId tenant, const AdapterRef& adapter) {
  const Key key{adapter.owner, adapter.id};
  for (;;) {
    const AdapterHandle handle = acquire(tenant, adapter);
    std::lock_guard lock(state_->mutex);
    if (const auto it = state_->entries.find(key); it != state_->entries.end()) {
      it->second.resident_pin = true;
      return;
    }  // a put replaced it between the load and now: load the new version
  }
}

void AdapterRegistry::unpin_resident(const AdapterRef& adapter) {
  std::lock_guard lock(state_->mutex);
  if (const auto it = state_->entries.find(Key{adapter.owner, adapter.id}); it != state_->entries.end()) {
    it->second.resident_pin = false;
  }
  state_->make_room(0);
}

StoredAdapter AdapterRegistry::put(const LoraAdapter& adapter, const std::optional<QuantSpec>& quantize,
                                   DType float_storage) {
  StoredAdapter stored = state_->store->put(adapter, quantize, float_storage);
  state_->forget(Key{adapter.tenant(), adapter.id()});
  return stored;
}

void AdapterRegistry::remove(const AdapterRef& adapter) {
  state_->store->remove(adapter.owner, adapter.id);
  state_->forget(Key{adapter.owner, adapter.id});
}

AdapterRegistryMetrics AdapterRegistry::metrics() const {
  State& st = *state_;
  std::lock_guard lock(st.mutex);
  st.make_room(0);
  AdapterRegistryMetrics m = st.counts;
  m.resident_adapters = st.entries.size();
  m.resident_bytes = st.resident_bytes;
  for (const auto& [key, entry] : st.entries) m.pinned_bytes += State::pinned(entry) ? entry.bytes : 0;
  m.over_budget_bytes =
      st.resident_bytes > st.config.ram_budget_bytes ? st.resident_bytes - st.config.ram_budget_bytes : 0;
  if (!st.load_ms.empty()) {
    std::vector<double> sorted = st.load_ms;
    std::sort(sorted.begin(), sorted.end());
    const auto at = [&](double q) {
      return sorted[static_cast<std::size_t>(q * static_cast<double>(sorted.size() - 1))];
    };
    m.load_p50_ms = at(0.50);
    m.load_p99_ms = at(0.99);
  }
  return m;
}

std::string AdapterRegistryMetrics::to_json() const {
  const nlohmann::json j{{"hits", hits},
                         {"misses", misses},
                         {"loads", loads},
                         {"load_failures", load_failures},
                         {"evictions", evictions},
                         {"bytes_read", bytes_read},
                         {"load_p50_ms", load_p50_ms},
                         {"load_p99_ms", load_p99_ms},
                         {"load_total_ms", load_total_ms},
                         {"resident_adapters", resident_adapters},
                         {"resident_bytes", resident_bytes},
                         {"pinned_bytes", pinned_bytes},
                         {"over_budget_bytes", over_budget_bytes},
                         {"prefetches", prefetches},
                         {"prefetch_hits", prefetch_hits},
                         {"prefetch_unused", prefetch_unused}};
  return j.dump();
}

}  // namespace persona
