#include "persona/registry/adapter_registry.hpp"

#include "persona/core/error.hpp"

#include "registry/load_workers.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <mutex>
#include <optional>
#include <system_error>
#include <unordered_map>
#include <vector>

namespace persona {

struct AdapterRegistry::State {
  AdapterStore* store;
  AdapterRegistryConfig config;
  AdapterCache cache;

  State(AdapterStore& s, const AdapterRegistryConfig& c)
      : store(&s),
        config(c),
        cache(
            AdapterCacheConfig{c.ram_budget_bytes, c.eviction},
            [store = &s](const AdapterRef& ref) {
              const std::uint64_t generation = store->generation(ref.owner, ref.id);  // before reading
              VersionedAdapter read = store->read(ref.owner, ref.id);
              return AdapterCache::Loaded{std::move(read.adapter), read.version, read.file_bytes, generation};
            },
            [store = &s](const AdapterRef& ref) { return store->generation(ref.owner, ref.id); }),
        prefetcher(c.prefetcher) {}

  std::mutex mutex;  // own_by_id, prefetcher, last_time
  // acquire(tenant, id): whether {tenant, id} names the tenant's own adapter or the public one, found in
  // the store at a generation of {tenant, id}: forgotten when a put or remove through this registry
  // touches it, and not believed once the generation moved (a write by another store or process).
  struct Ownership {
    bool own = false;
    std::uint64_t generation = 0;
  };
  std::unordered_map<AdapterRef, Ownership> own_by_id;
  // The access history, by the cache's adapter keys.
  AdapterPrefetcher prefetcher;
  std::chrono::steady_clock::time_point born = std::chrono::steady_clock::now();
  double last_time = 0.0;

  double now() const {
    return config.clock ? config.clock()
                        : std::chrono::duration<double>(std::chrono::steady_clock::now() - born).count();
  }
  // One access, for the prefetcher (a clock that steps back is held at its last value).
  void remember(const AdapterHandle& handle) {
    if (!handle) return;
    std::lock_guard lock(mutex);
    last_time = std::max(now(), last_time);
    prefetcher.record(handle.key(), last_time);
  }

  // acquire_async and prefetch loads; declared last, so that they finish (in its destructor) before
  // anything they use is destroyed.
  detail::LoadWorkers workers{config.load_threads};

  void forget(const AdapterRef& ref) {
    cache.invalidate(ref);
    std::lock_guard lock(mutex);
    own_by_id.erase(ref);
  }

  static void check_owner(TenantId tenant, const AdapterRef& ref) {
    PERSONA_CHECK_CODE(permission_denied, ref.owner == tenant || ref.owner == kPublicTenant,
                       "tenant {} may not use adapter '{}' of tenant {}", tenant, ref.id, ref.owner);
  }

  AdapterHandle acquire(TenantId tenant, const AdapterRef& ref) {
    check_owner(tenant, ref);
    AdapterHandle handle = cache.get(ref);
    remember(handle);
    return handle;
  }
};

AdapterRegistry::AdapterRegistry(AdapterStore& store, AdapterRegistryConfig config) {
  PERSONA_CHECK(config.load_threads >= 1, "load_threads is 0; expected at least 1");
  state_ = std::make_shared<State>(store, config);
}

AdapterRegistry::~AdapterRegistry() = default;  // the workers run what is queued before the state goes

AdapterHandle AdapterRegistry::acquire(TenantId tenant, const AdapterRef& adapter) {
  return state_->acquire(tenant, adapter);
}

AdapterHandle AdapterRegistry::try_acquire(TenantId tenant, const AdapterRef& adapter) {
  State::check_owner(tenant, adapter);
  AdapterHandle handle = state_->cache.find(adapter);
  state_->remember(handle);
  return handle;
}

AdapterHandle AdapterRegistry::acquire(TenantId tenant, std::string_view id) {
  if (tenant == kPublicTenant) return acquire(tenant, AdapterRef{kPublicTenant, std::string(id)});
  State& st = *state_;
  AdapterRef own_ref{tenant, std::string(id)};
  std::optional<bool> own;
  const std::uint64_t epoch = st.cache.epoch(own_ref);
  const std::uint64_t generation = st.store->generation(tenant, id);  // before looking at the store
  if (st.cache.holds(own_ref)) {
    own = true;
  } else {
    std::lock_guard lock(st.mutex);
    const auto it = st.own_by_id.find(own_ref);
    if (it != st.own_by_id.end() && it->second.generation == generation) own = it->second.own;
  }
  if (!own) {  // first use of this id by this tenant, or written since: one look at the store, unlocked
    own = !st.store->versions(tenant, id).empty();
    std::lock_guard lock(st.mutex);
    constexpr std::size_t kMaxRemembered = std::size_t{1} << 16;
    if (st.own_by_id.size() >= kMaxRemembered) st.own_by_id.clear();
    if (st.cache.epoch(own_ref) == epoch) {  // no put or remove through this registry since
      st.own_by_id.insert_or_assign(own_ref, State::Ownership{*own, generation});
    }
  }
  if (!*own) own_ref.owner = kPublicTenant;
  return acquire(tenant, own_ref);
}

std::shared_future<AdapterHandle> AdapterRegistry::acquire_async(TenantId tenant, const AdapterRef& adapter) {
  auto promise = std::make_shared<std::promise<AdapterHandle>>();
  std::shared_future<AdapterHandle> result = promise->get_future().share();
  state_->workers.run([state = state_.get(), tenant, adapter, promise] {
    try {
      promise->set_value(state->acquire(tenant, adapter));
    } catch (...) {
      promise->set_exception(std::current_exception());
    }
  });
  return result;
}

void AdapterRegistry::prefetch(TenantId tenant, const AdapterRef& adapter) {
  if (adapter.owner != tenant && adapter.owner != kPublicTenant) return;  // never warms what it may not use
  try {
    state_->workers.run([state = state_.get(), adapter] {
      try {
        state->cache.get(adapter, true);
      } catch (...) {  // counted as a load failure
      }
    });
  } catch (const std::system_error&) {  // no load thread could start: a prefetch is only a hint
  }
}

std::size_t AdapterRegistry::prefetch_ahead(double horizon_seconds, std::size_t byte_budget) {
  State& st = *state_;
  std::vector<AdapterKey> predicted;
  {
    std::lock_guard lock(st.mutex);
    predicted = st.prefetcher.predict(st.now(), horizon_seconds, 256);
  }
  std::vector<AdapterRef> wanted;
  std::size_t spent = 0;
  for (const AdapterKey key : predicted) {
    const std::optional<AdapterRef> ref = st.cache.ref_of(key);
    if (!ref || st.cache.holds(*ref)) continue;
    const std::size_t bytes = st.cache.last_bytes(key);
    if (spent + bytes > byte_budget) break;
    spent += bytes;
    wanted.push_back(*ref);
  }
  // Only adapters some tenant acquired before are predicted; warming one hands it to nobody.
  for (const AdapterRef& ref : wanted) prefetch(ref.owner, ref);
  return wanted.size();
}

void AdapterRegistry::pin_resident(TenantId tenant, const AdapterRef& adapter) {
  for (;;) {
    const AdapterHandle handle = acquire(tenant, adapter);
    if (state_->cache.set_resident_pin(adapter, true)) return;
    // a put replaced it between the load and now: load the new version
  }
}

void AdapterRegistry::unpin_resident(const AdapterRef& adapter) { state_->cache.set_resident_pin(adapter, false); }

StoredAdapter AdapterRegistry::put(const LoraAdapter& adapter, const std::optional<QuantSpec>& quantize,
                                   DType float_storage) {
  StoredAdapter stored = state_->store->put(adapter, quantize, float_storage);
  state_->forget(AdapterRef{adapter.tenant(), adapter.id()});
  return stored;
}

void AdapterRegistry::remove(const AdapterRef& adapter) {
  state_->store->remove(adapter.owner, adapter.id);
  state_->forget(adapter);
}

AdapterRegistryMetrics AdapterRegistry::metrics() const {
  AdapterRegistryMetrics m;
  static_cast<AdapterCacheStats&>(m) = state_->cache.stats();
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
