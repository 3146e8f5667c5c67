// AdapterRegistry: the front door to adapters. acquire(tenant, adapter) checks ownership (another
// tenant's adapter is permission_denied, public ones are open to all) and returns a pinned handle from
// the RAM tier (AdapterCache) in front of the disk tier (AdapterStore); loads for acquire_async and
// prefetch run on the registry's own load threads; the access history feeds an AdapterPrefetcher that warms what it
// predicts.
#pragma once

#include "persona/core/ids.hpp"
#include "persona/lora/lora_adapter.hpp"
#include "persona/registry/adapter_cache.hpp"
#include "persona/registry/adapter_handle.hpp"
#include "persona/registry/adapter_prefetcher.hpp"
#include "persona/registry/adapter_store.hpp"
#include "persona/registry/eviction_policy.hpp"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <string_view>

namespace persona {

struct AdapterRegistryConfig {
  // Bytes of adapters (LoraAdapter::bytes) kept resident. Pinned adapters may push the total above it,
  // which metrics report; nothing else does.
  std::size_t ram_budget_bytes = std::size_t{1} << 30;
  // LRU: GDSF did not win on the trace replays (docs/performance.md).
  EvictionPolicyKind eviction = EvictionPolicyKind::lru;
  // The access history that prefetch_ahead learns from, and the clock (seconds) it is kept on: by
  // default the steady clock since the registry was made.
  AdapterPrefetcherConfig prefetcher = {};
  std::function<double()> clock = nullptr;
  // Threads of the registry's own that run acquire_async and prefetch loads (started on first use; a
  // load mostly waits on the disk, so they are not oneTBB's compute workers).
  std::size_t load_threads = 2;
};

// The RAM tier's figures (AdapterCacheStats), as JSON too.
struct AdapterRegistryMetrics : AdapterCacheStats {
  std::string to_json() const;
};

class AdapterRegistry {
 public:
  // `store` must outlive the registry.
  AdapterRegistry(AdapterStore& store, AdapterRegistryConfig config = {});
  ~AdapterRegistry();  // waits for loads in flight and queued
  AdapterRegistry(const AdapterRegistry&) = delete;
  AdapterRegistry& operator=(const AdapterRegistry&) = delete;

  // The adapter, pinned, loading it if needed. Error permission_denied (the adapter belongs to another
  // tenant), not_found, corrupt_data or io_error from the store (the registry stays usable),
  // capacity_exhausted (the adapter alone is larger than the budget). The handle names the adapter's key
  // and the version loaded (AdapterHandle::version_id), which the KV prefix cache keys K/V by.
  AdapterHandle acquire(TenantId tenant, const AdapterRef& adapter);
  // The tenant's own adapter `id` if it has one, else the public adapter `id`.
  AdapterHandle acquire(TenantId tenant, std::string_view id);
  // The adapter if it is in RAM (counted as a hit), else an empty handle; never loads, never waits for a
  // load. Error permission_denied as acquire. For schedulers that start a load only for a miss.
  AdapterHandle try_acquire(TenantId tenant, const AdapterRef& adapter);
  // Returns at once; the load runs on one of the registry's load threads. Errors arrive through the
  // future.
  std::shared_future<AdapterHandle> acquire_async(TenantId tenant, const AdapterRef& adapter);
  // Loads the adapter into RAM ahead of use, if the tenant may use it; returns at once. Failures are only
  // counted.
  void prefetch(TenantId tenant, const AdapterRef& adapter);
  // Warms what the access history predicts for the next `horizon_seconds` (AdapterPrefetcher: daily
  // rhythms, successors), most expected first, up to `byte_budget` bytes of adapters not resident (sizes
  // as last loaded); returns how many loads it started. Only adapters acquired before are predicted.
  std::size_t prefetch_ahead(double horizon_seconds, std::size_t byte_budget);

  // Keeps the adapter resident whether or not a handle holds it ("common persona" adapters); it counts
  // against the budget. Errors as acquire.
  void pin_resident(TenantId tenant, const AdapterRef& adapter);
  void unpin_resident(const AdapterRef& adapter);

  // Writes through another AdapterStore on the same root, in this process or another on the machine,
  // are seen too: every acquire compares the adapter's generation in the store (AdapterStore::generation,
  // a shared-memory read) with the one it was loaded at, and a resident adapter written since is loaded
  // again; so is the memo of whether a tenant has its own adapter of an id.
  //
  // Writes a new version through the store; the next acquire sees it (handles to the old one keep it).
  StoredAdapter put(const LoraAdapter& adapter, const std::optional<QuantSpec>& quantize = std::nullopt,
                    DType float_storage = DType::f32);
  // Removes every version from the store and the adapter from RAM (handles keep theirs).
  void remove(const AdapterRef& adapter);

  AdapterRegistryMetrics metrics() const;

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace persona
