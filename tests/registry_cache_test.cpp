// Tests of the registry's RAM tier: AdapterCache (keys, budget, pins, single-flight loads,
// invalidation), the eviction policies, the prefetcher and AdapterRegistry::prefetch_ahead.
#include "registry_support.hpp"
#include "test_support.hpp"

#include <persona/core/error.hpp>
#include <persona/registry/adapter_cache.hpp>
#include <persona/registry/adapter_prefetcher.hpp>
#include <persona/registry/adapter_registry.hpp>
#include <persona/registry/adapter_store.hpp>
#include <persona/registry/eviction_policy.hpp>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>

using namespace persona;
using namespace persona::test;

TEST_CASE("AdapterCache: keys per adapter, budget, pins, single-flight loads, invalidation", "[registry]") {
  // A loader over a map of versions, counting its calls; `gate` holds loads until released.
  std::mutex mutex;
  std::map<std::string, AdapterVersion> stored{{"a", 1}, {"b", 1}, {"c", 1}};
  std::atomic<int> calls{0};
  std::promise<void> gate_open;
  std::shared_future<void> gate = gate_open.get_future().share();
  std::atomic<bool> gated{false};
  // The version is read first, so that a held load returns what was stored when it began.
  AdapterCache::Loader loader = [&](const AdapterRef& ref) {
    ++calls;
    AdapterVersion version = 0;
    {
      std::lock_guard lock(mutex);
      const auto it = stored.find(ref.id);
      if (it == stored.end()) PERSONA_THROW(not_found, "no adapter '{}'", ref.id);
      version = it->second;
    }
    if (gated) gate.wait();
    return AdapterCache::Loaded{tagged_adapter(ref.id, ref.owner, static_cast<float>(version)), version, 100};
  };
  const std::size_t one = tagged_adapter("a", 1, 1.0f).bytes();
  AdapterCache cache(AdapterCacheConfig{2 * one + one / 2, EvictionPolicyKind::lru}, loader);

  const AdapterRef a{1, "a"}, b{1, "b"}, c{1, "c"}, other_a{2, "a"};
  AdapterHandle ha = cache.get(a);
  REQUIRE(ha);
  CHECK(ha.key() != kNoAdapter);
  CHECK(ha.version() == 1);
  CHECK(ha.version_id() == AdapterVersionId{ha.key(), 1});
  CHECK(cache.key_of(a) == ha.key());
  CHECK(cache.ref_of(ha.key()) == a);
  CHECK_FALSE(cache.ref_of(9999).has_value());
  // Another tenant's adapter of the same id is another adapter with another key.
  const AdapterHandle hoa = cache.get(other_a);
  CHECK(hoa.key() != ha.key());
  CHECK(hoa->tenant() == 2);
  CHECK(cache.get(a).key() == ha.key());  // a hit keeps the key
  CHECK(calls == 2);

  // Held adapters are never evicted; released ones go in LRU order when the budget needs room.
  {
    const AdapterHandle hb = cache.get(b);
    const AdapterHandle hc = cache.get(c);  // a, other_a, b, c held: all over the budget, nothing evicted
    CHECK(cache.stats().resident_adapters == 4);
    CHECK(cache.stats().over_budget_bytes > 0);
  }
  ha = AdapterHandle();
  {
    const AdapterCacheStats s = cache.stats();  // other_a still held; a, b, c released: a and b go
    CHECK(s.over_budget_bytes == 0);
    CHECK(s.resident_bytes <= 2 * one + one / 2);
  }
  CHECK_FALSE(cache.find(a));
  CHECK(cache.find(other_a));
  CHECK(cache.find(c));
  CHECK(cache.last_bytes(cache.key_of(b)) == one);

  // A resident pin keeps an adapter without a handle.
  REQUIRE(cache.set_resident_pin(c, true));
  CHECK_FALSE(cache.set_resident_pin(a, true));  // not resident
  (void)cache.get(a);
  (void)cache.get(b);
  CHECK(cache.find(c));
  cache.set_resident_pin(c, false);

  // Single flight: 4 threads asking for a cold adapter share one load.
  cache.invalidate(b);
  calls = 0;
  gated = true;
  const std::uint64_t misses = cache.stats().misses;
  std::vector<std::future<AdapterHandle>> waiters;
  for (int i = 0; i < 4; ++i) waiters.push_back(std::async(std::launch::async, [&] { return cache.get(b); }));
  // Every thread has missed (and so joined the one load) before the load may finish.
  for (int i = 0; i < 5000 && cache.stats().misses < misses + 4; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  CHECK(cache.stats().misses == misses + 4);
  CHECK(cache.holds(b));
  // A new version stored while that load (of version 1) is in flight: the load's result never enters the
  // cache, and a get after the invalidation never joins it: it loads version 2 itself.
  {
    std::lock_guard lock(mutex);
    stored["b"] = 2;
  }
  const std::uint64_t epoch = cache.epoch(b);
  cache.invalidate(b);
  CHECK(cache.epoch(b) != epoch);
  auto late = std::async(std::launch::async, [&] { return cache.get(b); });
  for (int i = 0; i < 5000 && calls < 2; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  CHECK(calls == 2);
  gate_open.set_value();
  for (auto& w : waiters) CHECK(w.get().version() == 1);  // they asked before the invalidation
  CHECK(late.get().version() == 2);
  gated = false;
  CHECK(calls == 2);
  CHECK(cache.find(b).version() == 2);
  const AdapterHandle hb2 = cache.get(b);
  CHECK(hb2.version() == 2);
  CHECK(calls == 2);
  CHECK(hb2.key() == cache.key_of(b));  // a new version keeps the adapter's key

  // Loader errors reach the caller and the cache stays usable; an adapter above the whole budget is
  // capacity_exhausted.
  PERSONA_REQUIRE_ERROR(cache.get(AdapterRef{1, "missing"}), not_found, "no adapter 'missing'");
  CHECK(cache.key_of(AdapterRef{1, "missing"}) == kNoAdapter);  // failed loads get no key
  AdapterCache tiny(AdapterCacheConfig{one / 2, EvictionPolicyKind::lru}, loader);
  PERSONA_REQUIRE_ERROR(tiny.get(a), capacity_exhausted, "the RAM budget is");
  CHECK(cache.stats().load_failures == 1);
  PERSONA_REQUIRE_ERROR(AdapterCache(AdapterCacheConfig{0, EvictionPolicyKind::lru}, loader), invalid_argument,
                        "ram_budget_bytes is 0");
}

TEST_CASE("Eviction policies: LRU order, GDSF keeps small and frequent entries and ages idle ones", "[registry]") {
  const auto none = [](std::uint64_t) { return false; };
  auto lru = make_eviction_policy(EvictionPolicyKind::lru);
  for (std::uint64_t k = 1; k <= 4; ++k) lru->insert(k, 100);
  lru->hit(1);
  CHECK(lru->victim(none) == 2u);
  CHECK(lru->victim([](std::uint64_t k) { return k == 2; }) == 3u);  // pinned ones are skipped
  lru->evict(2);
  CHECK(lru->victim(none) == 3u);
  CHECK(lru->size() == 3);
  CHECK_FALSE(lru->victim([](std::uint64_t) { return true; }).has_value());
  PERSONA_REQUIRE_ERROR(lru->insert(1, 100), invalid_argument, "entry 1 is already held");
  PERSONA_REQUIRE_ERROR(lru->insert(9, 0), invalid_argument, "entry 9 has 0 bytes");

  auto gdsf = make_eviction_policy(EvictionPolicyKind::gdsf);
  gdsf->insert(1, 100);  // small
  gdsf->insert(2, 400);  // large, same hits: goes first
  CHECK(gdsf->victim(none) == 2u);
  for (int i = 0; i < 8; ++i) gdsf->hit(2);  // 9 hits / 400 bytes beats 1 / 100
  CHECK(gdsf->victim(none) == 1u);
  gdsf->evict(1);  // inflation rises to the evicted priority
  gdsf->insert(3, 100);
  CHECK(gdsf->victim(none) == 3u);           // newcomer: inflation + 1 / 100 < 2's priority
  for (std::uint64_t k = 10; k < 20; ++k) {  // a stream of one-hit entries: each evicted ages the rest
    gdsf->insert(k, 100);
    gdsf->evict(*gdsf->victim(none));
  }
  CHECK(gdsf->size() == 2);
  CHECK(to_string(EvictionPolicyKind::gdsf) == "gdsf");
}

TEST_CASE("AdapterPrefetcher learns daily rhythms and successors", "[registry]") {
  AdapterPrefetcher prefetcher;
  constexpr double kHour = 3600.0, kDay = 24 * kHour;
  // Key 7 arrives every morning at 8, key 9 every evening at 20; after 3 comes 4.
  for (int day = 0; day < 3; ++day) {
    for (int i = 0; i < 5; ++i) prefetcher.record(7, day * kDay + 8 * kHour + i * 60);
    for (int i = 0; i < 5; ++i) prefetcher.record(9, day * kDay + 20 * kHour + i * 60);
  }
  const auto morning = prefetcher.predict(3 * kDay + 7.5 * kHour, kHour, 1);
  CHECK(morning == std::vector<std::uint64_t>{7});
  const auto evening = prefetcher.predict(3 * kDay + 19.5 * kHour, kHour, 1);
  CHECK(evening == std::vector<std::uint64_t>{9});
  CHECK(prefetcher.predict(3 * kDay + 13 * kHour, 0.5 * kHour, 5).size() <= 1);  // nobody at 13:00 but the successor
  AdapterPrefetcher chain;
  for (int i = 0; i < 10; ++i) {
    chain.record(3, 100.0 * i);
    chain.record(4, 100.0 * i + 1);
    chain.record(5 + static_cast<std::uint64_t>(i), 100.0 * i + 2);
  }
  chain.record(3, 2000.0);
  const auto next = chain.predict(2000.0 + 12 * kHour, 60.0, 2);  // no rhythm at that hour: successors of 3
  REQUIRE_FALSE(next.empty());
  CHECK(next.front() == 4);
  PERSONA_REQUIRE_ERROR(chain.record(3, 10.0), invalid_argument, "before the last recorded time");
  PERSONA_REQUIRE_ERROR(AdapterPrefetcher({.slots = 0}), invalid_argument, "slots is 0");
  CHECK(chain.predict(0.0, 60.0, 0).empty());
  // Times before 0 (a clock with another origin) fall in the same daily slots, never outside the counts.
  CHECK(prefetcher.predict(-1 * kDay + 7.5 * kHour, kHour, 1) == morning);
  CHECK(prefetcher.predict(-2 * kDay + 19.5 * kHour, kHour, 1) == evening);
  PERSONA_REQUIRE_ERROR(prefetcher.predict(std::nan(""), kHour, 1), invalid_argument, "time nan");
}

TEST_CASE("AdapterCache remembers a bounded number of invalidations and stays correct past the bound", "[registry]") {
  std::atomic<int> calls{0};
  AdapterCache cache(AdapterCacheConfig{}, [&](const AdapterRef& ref) {
    ++calls;
    return AdapterCache::Loaded{tagged_adapter(ref.id, ref.owner, 1.0f), 1, 100};
  });
  const AdapterRef a{1, "a"};
  REQUIRE(cache.get(a));
  const std::uint64_t before = cache.epoch(a);
  // Ids nobody stored, as a client may send them without end: the memory they take stays bounded.
  for (std::size_t i = 0; i < AdapterCache::kMaxTrackedEpochs + 100; ++i) {
    cache.invalidate(AdapterRef{2, fmt::format("unknown-{}", i)});
  }
  CHECK(cache.stats().tracked_epochs <= AdapterCache::kMaxTrackedEpochs);
  // Forgetting them changed every other epoch, so no earlier look-up can be taken as current.
  CHECK(cache.epoch(a) != before);
  CHECK(cache.get(a));
  CHECK(calls == 1);  // resident entries are not touched by the reset
}

TEST_CASE("AdapterRegistry::prefetch_ahead warms what the history predicts, within its byte budget", "[registry]") {
  TempFolder folder;
  AdapterStore store(folder.path);
  for (int i = 0; i < 6; ++i) store.put(tagged_adapter(fmt::format("t{}", i), 1, static_cast<float>(i)));
  const std::size_t one = tagged_adapter("x", 1, 0.0f).bytes();
  double clock = 0.0;
  AdapterRegistry registry(store, {.ram_budget_bytes = 2 * one, .clock = [&clock] { return clock; }});
  constexpr double kHour = 3600.0, kDay = 24 * kHour;
  // t0 every morning at 8; the rest of the day others push it out of the two-adapter budget.
  for (int day = 0; day < 3; ++day) {
    clock = day * kDay + 8 * kHour;
    (void)registry.acquire(1, AdapterRef{1, "t0"});
    for (int i = 1; i < 6; ++i) {
      clock = day * kDay + (10 + i) * kHour;
      (void)registry.acquire(1, AdapterRef{1, fmt::format("t{}", i)});
    }
  }
  clock = 3 * kDay + 7.5 * kHour;
  CHECK(registry.prefetch_ahead(kHour, 0) == 0);  // no budget, nothing warmed
  const std::uint64_t before = registry.metrics().loads;
  CHECK(registry.prefetch_ahead(kHour, one) == 1);
  for (int i = 0; i < 5000 && registry.metrics().loads == before; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  CHECK(registry.metrics().prefetches == 1);
  clock = 3 * kDay + 8 * kHour;
  const std::uint64_t loads = registry.metrics().loads;
  CHECK(tag_of(registry.acquire(1, AdapterRef{1, "t0"}).adapter()) == 0.0f);
  CHECK(registry.metrics().loads == loads);  // served by the prefetch
  CHECK(registry.metrics().prefetch_hits == 1);
}
