// Tests of the adapter registry: AdapterStore round trips, versions and pruning, ids, quantizing on the
// way in, damaged and misplaced files, a failed put (file size limit, as a full disk) and writers killed
// at many points of a put; AdapterRegistry pins, ownership, loads and versions. The RAM tier
// (AdapterCache, eviction policies, the prefetcher): registry_cache_test.cpp.
#include "registry_support.hpp"
#include "test_support.hpp"

#include <persona/core/error.hpp>
#include <persona/kv/paged_kv_cache.hpp>
#include <persona/registry/adapter_cache.hpp>
#include <persona/registry/adapter_prefetcher.hpp>
#include <persona/registry/adapter_registry.hpp>
#include <persona/registry/adapter_store.hpp>
#include <persona/registry/eviction_policy.hpp>

#include <fmt/format.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <tbb/global_control.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <random>
#include <thread>

using namespace persona;
using namespace persona::test;
using persona::test::random_tensor;
namespace fs = std::filesystem;

TEST_CASE("AdapterStore keeps versions per tenant and adapter, unknown keys and bad ids are clear Errors",
          "[registry]") {
  TempFolder folder;
  AdapterStore store(folder.path);
  CHECK(store.put(tagged_adapter("style", 7, 1.0f)).version == 1);
  CHECK(store.put(tagged_adapter("style", 7, 2.0f)).version == 2);
  CHECK(store.put(tagged_adapter("style", 8, 3.0f)).version == 1);  // another tenant's own "style"
  CHECK(store.put(tagged_adapter("common", kPublicTenant, 4.0f)).version == 1);
  CHECK(tag_of(store.get(7, "style")) == 2.0f);
  CHECK(tag_of(store.get(7, "style", 1)) == 1.0f);
  CHECK(tag_of(store.get(8, "style")) == 3.0f);
  CHECK(store.get(8, "style").tenant() == 8);
  CHECK(store.versions(7, "style") == std::vector<std::uint64_t>{1, 2});
  CHECK(store.list(7) == std::vector<std::string>{"style"});
  PERSONA_REQUIRE_ERROR(store.put(LoraAdapter("empty", 7)), invalid_argument,
                        "adapter 'empty' of tenant 7 has no modules; nothing to store");
  CHECK(store.versions(7, "empty").empty());
  CHECK(store.list(kPublicTenant) == std::vector<std::string>{"common"});
  CHECK(store.list(12345).empty());
  // Three versions are kept; older ones go.
  store.put(tagged_adapter("style", 7, 5.0f));
  store.put(tagged_adapter("style", 7, 6.0f));
  CHECK(store.versions(7, "style") == std::vector<std::uint64_t>{2, 3, 4});
  CHECK(tag_of(store.get(7, "style")) == 6.0f);
  PERSONA_REQUIRE_ERROR(store.get(7, "style", 1), not_found, "has no version 1 (stored: 2 to 4)");
  PERSONA_REQUIRE_ERROR(store.get(7, "missing"), not_found, "tenant 7 has no adapter 'missing'");
  PERSONA_REQUIRE_ERROR(store.get(9, "style"), not_found, "tenant 9 has no adapter 'style'");
  for (const char* bad : {"", ".", "..", "../escape", "a/b", "sp ace"}) {
    INFO(bad);
    PERSONA_REQUIRE_ERROR(store.put(tagged_adapter(bad, 7, 1.0f)), invalid_argument, "is not 1..128 characters");
    PERSONA_REQUIRE_ERROR(store.get(7, bad), invalid_argument, "is not 1..128 characters");
  }
  store.remove(7, "style");
  CHECK(store.list(7).empty());
  PERSONA_REQUIRE_ERROR(store.get(7, "style"), not_found, "has no adapter 'style'");
  PERSONA_REQUIRE_ERROR(store.remove(7, "style"), not_found, "has no adapter 'style'");
  // A version number never names two adapters (the KV prefix cache keys K/V by it): after a remove, a
  // put numbers on from the last one removed, also in a store opened later.
  CHECK(store.put(tagged_adapter("style", 7, 5.0f)).version == 5);  // versions 2..4 were removed
  store.remove(7, "style");
  CHECK(AdapterStore(folder.path).put(tagged_adapter("style", 7, 6.0f)).version == 6);
  CHECK(store.versions(7, "style") == std::vector<std::uint64_t>{6});
  CHECK(store.list(7) == std::vector<std::string>{"style"});  // the floor file is no adapter
  store.remove(7, "style");
  CHECK(tag_of(store.get(8, "style")) == 3.0f);  // the other tenant's adapter of the same name is untouched
  // A store opened again on the folder sees the same adapters.
  AdapterStore again(folder.path);
  CHECK(again.versions(8, "style") == std::vector<std::uint64_t>{1});
  PERSONA_REQUIRE_ERROR(AdapterStore(folder.path, {.keep_versions = 0}), invalid_argument, "keep_versions is 0");
}

TEST_CASE("AdapterStore quantizes on the way in and reports the error", "[registry]") {
  TempFolder folder;
  AdapterStore store(folder.path);
  LoraAdapter adapter("q", 3);
  const Tensor<float> a = random_tensor({8, 256}, 1), b = random_tensor({256, 8}, 2);
  adapter.add({0, "self_attn.q_proj"}, LoraModule(LoraMatrix(Tensor<float>(a)), LoraMatrix(Tensor<float>(b)), 16.0f));
  const StoredAdapter stored = store.put(adapter, QuantSpec{4, 32});
  REQUIRE(stored.quantization.size() == 1);
  const LoraQuantReport& report = stored.quantization.begin()->second;
  REQUIRE(report.a_spec.has_value());
  CHECK(report.a.max_abs_error > 0.0);
  const LoraAdapter back = store.get(3, "q");
  const LoraModule& module = back.modules().begin()->second;
  CHECK(module.a().f32() == nullptr);  // stored as int4
  const Tensor<float> a_back = module.a().to_f32();
  double worst = 0.0;
  for (std::size_t i = 0; i < a.numel(); ++i)
    worst = std::max(worst, double(std::fabs(a_back.data()[i] - a.data()[i])));
  CHECK(worst <= report.a.max_abs_error + 1e-6);
  const StoredAdapter plain = store.put(adapter);
  CHECK(plain.quantization.empty());
  CHECK(plain.file_bytes > stored.file_bytes);
}

TEST_CASE("Damaged or misplaced files are corrupt_data and the store stays usable", "[registry]") {
  TempFolder folder;
  AdapterStore store(folder.path);
  store.put(tagged_adapter("style", 1, 1.0f));
  store.put(tagged_adapter("other", 1, 2.0f));
  // Tenant 1's file copied into tenant 2's folder does not become tenant 2's adapter.
  const fs::path planted = folder.path / "tenants" / "2" / "style";
  fs::create_directories(planted);
  fs::copy_file(store.path_of(1, "style"), planted / store.path_of(1, "style").filename());
  PERSONA_REQUIRE_ERROR(store.get(2, "style"), corrupt_data, "holds adapter 'style' of tenant 1");
  // A truncated version is corrupt_data; the other adapter still loads.
  const fs::path file = store.path_of(1, "style");
  fs::resize_file(file, fs::file_size(file) / 2);
  PERSONA_REQUIRE_ERROR(store.get(1, "style"), corrupt_data, file.filename().string());
  CHECK(tag_of(store.get(1, "other")) == 2.0f);
  // A stray temporary file of an interrupted put is not a version.
  std::ofstream(file.parent_path() / ".v00000000000000000002.persona.tmp-abc123") << "partial";
  CHECK(store.versions(1, "style") == std::vector<std::uint64_t>{1});
  // A put replaces the damaged version with a whole new one.
  store.put(tagged_adapter("style", 1, 3.0f));
  CHECK(tag_of(store.get(1, "style")) == 3.0f);
}

TEST_CASE("A put that cannot write (a full disk or a file in the folder's place) leaves the old version",
          "[registry]") {
  TempFolder folder;
  AdapterStore store(folder.path);
  store.put(tagged_adapter("style", 1, 1.0f));
  // A full disk, as the file size limit makes it: the write fails with EFBIG in a child process.
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    signal(SIGXFSZ, SIG_IGN);
    const rlimit limit{4096, 4096};
    setrlimit(RLIMIT_FSIZE, &limit);
    try {
      store.put(tagged_adapter("style", 1, 2.0f));
    } catch (const Error& e) {
      _exit(e.code() == ErrorCode::io_error ? 0 : 2);
    }
    _exit(1);
  }
  int status = 0;
  waitpid(child, &status, 0);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(store.versions(1, "style") == std::vector<std::uint64_t>{1});
  CHECK(tag_of(store.get(1, "style")) == 1.0f);
  for (const auto& entry : fs::directory_iterator(folder.path / "tenants" / "1" / "style")) {
    CHECK(entry.path().filename().string().starts_with("v"));  // the temporary file was removed
  }
  // A regular file where a tenant's folder would go.
  std::ofstream(folder.path / "tenants" / "5") << "not a folder";
  PERSONA_REQUIRE_ERROR(store.put(tagged_adapter("style", 5, 1.0f)), io_error,
                        "tenants/5: cannot create the folder: something that is not a folder is in its place");
}

TEST_CASE("Killing a writer at any moment leaves whole versions only", "[registry]") {
  TempFolder folder;
  AdapterStore store(folder.path);
  // One put's duration sets the kill times, so that they span it on fast and slow (sanitized) builds.
  const auto start = std::chrono::steady_clock::now();
  store.put(tagged_adapter("style", 1, 1.0f, 1024, 16));
  const auto one_put = std::chrono::steady_clock::now() - start;
  std::size_t interrupted = 0, unchanged = 0, advanced = 0;
  for (int trial = 0; trial < 24; ++trial) {
    const std::uint64_t latest = store.versions(1, "style").back();
    const pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      for (int j = 0; j < 1000; ++j)
        store.put(tagged_adapter("style", 1, static_cast<float>(100 * trial + j), 1024, 16));
      _exit(0);
    }
    // Kill it after 0 to 3 puts' time: inside the serialization, the write, the fsync, the rename or the
    // pruning of its first, second or third put.
    std::this_thread::sleep_for(one_put * trial / 8);
    kill(child, SIGKILL);
    int status = 0;
    waitpid(child, &status, 0);
    interrupted += WIFSIGNALED(status) ? 1 : 0;
    const std::vector<std::uint64_t> versions = store.versions(1, "style");
    REQUIRE_FALSE(versions.empty());
    (versions.back() == latest ? unchanged : advanced) += 1;
    for (std::uint64_t v : versions) {
      INFO("trial " << trial << ", version " << v);
      (void)tag_of(store.get(1, "style", v));  // every listed version is whole
    }
  }
  CHECK(interrupted > 0);
  // Some kills came before a child's first put finished, some after one or more.
  CHECK(unchanged > 0);
  CHECK(advanced > 0);
  // The store takes new versions after all that.
  const std::uint64_t next = store.put(tagged_adapter("style", 1, 7.0f, 1024, 16)).version;
  CHECK(tag_of(store.get(1, "style")) == 7.0f);
  CHECK(store.versions(1, "style").back() == next);
}

TEST_CASE("A resident pin stays with the adapter through new versions, whoever writes them", "[registry]") {
  TempFolder folder;
  AdapterStore mine(folder.path), theirs(folder.path);
  mine.put(tagged_adapter("common", kPublicTenant, 1.0f));
  AdapterRegistry registry(mine);
  const AdapterRef common{kPublicTenant, "common"};
  registry.pin_resident(5, common);
  const std::size_t bytes = registry.metrics().pinned_bytes;
  CHECK(bytes > 0);
  theirs.put(tagged_adapter("common", kPublicTenant, 2.0f));  // another store: seen through the generation
  CHECK(tag_of(registry.acquire(5, common).adapter()) == 2.0f);
  CHECK(registry.metrics().pinned_bytes == bytes);              // the new version, pinned without a handle
  registry.put(tagged_adapter("common", kPublicTenant, 3.0f));  // through the registry itself
  CHECK(tag_of(registry.acquire(5, common).adapter()) == 3.0f);
  CHECK(registry.metrics().pinned_bytes == bytes);
  registry.unpin_resident(common);
  CHECK(registry.metrics().pinned_bytes == 0);
}

TEST_CASE("Writers in two processes on one root never take the same version", "[registry]") {
  TempFolder folder;
  AdapterStore parent_store(folder.path, {.keep_versions = 1000});
  constexpr int kWriters = 2, kPuts = 60;
  std::vector<pid_t> children;
  for (int w = 0; w < kWriters; ++w) {
    const pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      // Its own store on the root, as another process would open it; it records what each put reported.
      AdapterStore store(folder.path, {.keep_versions = 1000});
      std::ofstream claims(folder.path / fmt::format("claims.{}", w));
      for (int j = 0; j < kPuts; ++j) {
        const float tag = static_cast<float>(1000 * (w + 1) + j);
        claims << store.put(tagged_adapter("style", 1, tag, 64, 4)).version << ' ' << tag << '\n';
      }
      claims.close();
      _exit(claims ? 0 : 1);
    }
    children.push_back(child);
  }
  for (const pid_t child : children) {
    int status = 0;
    waitpid(child, &status, 0);
    REQUIRE(WIFEXITED(status));
    REQUIRE(WEXITSTATUS(status) == 0);
  }
  std::map<AdapterVersion, float> claimed;
  std::size_t claims = 0;
  for (int w = 0; w < kWriters; ++w) {
    std::ifstream in(folder.path / fmt::format("claims.{}", w));
    AdapterVersion version = 0;
    float tag = 0.0f;
    while (in >> version >> tag) {
      ++claims;
      CHECK(claimed.emplace(version, tag).second);  // no version reported twice
    }
  }
  CHECK(claims == kWriters * kPuts);
  const std::vector<AdapterVersion> stored = parent_store.versions(1, "style");
  CHECK(stored.size() == claims);
  for (const AdapterVersion v : stored) {
    REQUIRE(claimed.contains(v));
    CHECK(tag_of(parent_store.get(1, "style", v)) == claimed[v]);  // each holds what its writer wrote
  }
}

TEST_CASE("With one version kept, a get during puts never fails while a version exists", "[registry]") {
  TempFolder folder;
  AdapterStore store(folder.path, {.keep_versions = 1});
  store.put(tagged_adapter("style", 1, 0.0f, 16, 1));
  constexpr int kPuts = 300;
  std::atomic<bool> done = false;
  std::thread writer([&] {
    for (int j = 1; j <= kPuts; ++j) store.put(tagged_adapter("style", 1, static_cast<float>(j), 16, 1));
    done = true;
  });
  // Two readers, each listing and opening as fast as it can: the prune of the version just listed falls
  // between the two now and then.
  std::atomic<std::size_t> gets = 0, failures = 0, torn_or_older = 0;
  const auto read = [&] {
    float last = 0.0f;
    while (!done) {
      try {
        float tag = 0.0f;
        const bool is_whole = whole(store.get(1, "style"), tag);
        torn_or_older += is_whole && tag >= last ? 0 : 1;
        last = tag;
      } catch (const Error&) {
        ++failures;
      }
      ++gets;
    }
  };
  std::thread reader(read);
  read();
  writer.join();
  reader.join();
  INFO(gets << " gets");
  CHECK(gets > 100);
  CHECK(failures == 0);
  CHECK(torn_or_older == 0);
  CHECK(store.versions(1, "style") == std::vector<AdapterVersion>{kPuts + 1});
}

TEST_CASE("A registry sees writes by another store on its root, in this process or another", "[registry]") {
  TempFolder folder;
  AdapterStore mine(folder.path), theirs(folder.path);
  AdapterRegistry registry(mine), other(theirs);
  mine.put(tagged_adapter("style", 1, 1.0f));
  mine.put(tagged_adapter("greet", kPublicTenant, 10.0f));
  CHECK(tag_of(registry.acquire(1, AdapterRef{1, "style"}).adapter()) == 1.0f);
  CHECK(tag_of(registry.acquire(1, "greet").adapter()) == 10.0f);  // no own "greet": the public one
  // Through another store (another registry's) on the same root.
  other.put(tagged_adapter("style", 1, 2.0f));
  CHECK(tag_of(registry.acquire(1, AdapterRef{1, "style"}).adapter()) == 2.0f);
  other.put(tagged_adapter("greet", 1, 11.0f));
  CHECK(tag_of(registry.acquire(1, "greet").adapter()) == 11.0f);  // now the tenant's own
  other.remove(AdapterRef{1, "greet"});
  CHECK(tag_of(registry.acquire(1, "greet").adapter()) == 10.0f);  // the public one again
  // From another process: its own store on the root, as a second server would write.
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    try {
      AdapterStore store(folder.path);
      store.put(tagged_adapter("style", 1, 3.0f));
      store.remove(kPublicTenant, "greet");
    } catch (...) {
      _exit(1);
    }
    _exit(0);
  }
  int status = 0;
  waitpid(child, &status, 0);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  CHECK(tag_of(registry.acquire(1, AdapterRef{1, "style"}).adapter()) == 3.0f);
  PERSONA_REQUIRE_ERROR(registry.acquire(1, "greet"), not_found, "has no adapter 'greet'");
  const AdapterRegistryMetrics m = registry.metrics();
  CHECK(m.loads == 5);  // style 1, 2, 3; greet 10, 11: each write loaded once, hits otherwise served from RAM
}

TEST_CASE("AdapterRegistry pins, checks ownership, loads once and keeps to its budget", "[registry]") {
  TempFolder folder;
  AdapterStore store(folder.path);
  for (int i = 0; i < 6; ++i) store.put(tagged_adapter(fmt::format("a{}", i), 1, static_cast<float>(i)));
  store.put(tagged_adapter("common", kPublicTenant, 100.0f));
  store.put(tagged_adapter("mine", 2, 200.0f));
  const std::size_t one = tagged_adapter("x", 1, 0.0f).bytes();
  AdapterRegistry registry(store, {.ram_budget_bytes = 3 * one + one / 2});  // room for three

  // Ownership on every path: acquire, acquire by id, async, prefetch, pin.
  CHECK(tag_of(registry.acquire(1, AdapterRef{1, "a0"}).adapter()) == 0.0f);
  CHECK(tag_of(registry.acquire(2, AdapterRef{kPublicTenant, "common"}).adapter()) == 100.0f);
  CHECK(tag_of(registry.acquire(2, "mine").adapter()) == 200.0f);
  CHECK(tag_of(registry.acquire(1, "common").adapter()) == 100.0f);  // no own "common": the public one
  PERSONA_REQUIRE_ERROR(registry.acquire(2, AdapterRef{1, "a0"}), permission_denied,
                        "tenant 2 may not use adapter 'a0' of tenant 1");
  PERSONA_REQUIRE_ERROR(registry.acquire_async(2, AdapterRef{1, "a0"}).get(), permission_denied, "tenant 2");
  PERSONA_REQUIRE_ERROR(registry.pin_resident(2, AdapterRef{1, "a0"}), permission_denied, "tenant 2");
  PERSONA_REQUIRE_ERROR(registry.acquire(1, "mine"), not_found, "has no adapter 'mine'");  // 2's, not public
  PERSONA_REQUIRE_ERROR(registry.acquire(1, AdapterRef{1, "nope"}), not_found, "tenant 1 has no adapter 'nope'");

  // LRU within the budget: a0 touched again survives, a1 (least recent) goes.
  const AdapterRegistryMetrics start = registry.metrics();
  for (const char* id : {"a1", "a2", "a0", "a3"}) (void)registry.acquire(1, AdapterRef{1, id});
  AdapterRegistryMetrics m = registry.metrics();
  CHECK(m.resident_bytes <= 3 * one + one / 2);
  CHECK(m.evictions > start.evictions);
  const std::uint64_t loads = m.loads;
  (void)registry.acquire(1, AdapterRef{1, "a0"});
  CHECK(registry.metrics().loads == loads);  // a hit
  (void)registry.acquire(1, AdapterRef{1, "a1"});
  CHECK(registry.metrics().loads == loads + 1);  // evicted, loaded again

  // Pinned adapters survive any pressure; the excess is reported as pinned.
  std::vector<AdapterHandle> held;
  for (int i = 0; i < 5; ++i) held.push_back(registry.acquire(1, AdapterRef{1, fmt::format("a{}", i)}));
  m = registry.metrics();
  CHECK(m.pinned_bytes >= 5 * one);
  CHECK(m.over_budget_bytes == m.resident_bytes - (3 * one + one / 2));
  for (int i = 0; i < 5; ++i) CHECK(tag_of(held[static_cast<std::size_t>(i)].adapter()) == static_cast<float>(i));
  const std::uint64_t before_hits = registry.metrics().hits;
  for (int i = 0; i < 5; ++i) (void)registry.acquire(1, AdapterRef{1, fmt::format("a{}", i)});
  CHECK(registry.metrics().hits == before_hits + 5);
  held.clear();
  m = registry.metrics();  // released: back within the budget
  CHECK(m.over_budget_bytes == 0);
  CHECK(m.resident_bytes <= 3 * one + one / 2);

  // Resident pins stay without handles.
  registry.pin_resident(1, AdapterRef{kPublicTenant, "common"});
  for (int i = 0; i < 6; ++i) (void)registry.acquire(1, AdapterRef{1, fmt::format("a{}", i)});
  const std::uint64_t hits = registry.metrics().hits;
  (void)registry.acquire(3, AdapterRef{kPublicTenant, "common"});
  CHECK(registry.metrics().hits == hits + 1);
  registry.unpin_resident(AdapterRef{kPublicTenant, "common"});

  // A put through the registry is seen by the next acquire; old handles keep their version.
  const AdapterHandle old = registry.acquire(1, AdapterRef{1, "a5"});
  registry.put(tagged_adapter("a5", 1, 55.0f));
  CHECK(tag_of(registry.acquire(1, AdapterRef{1, "a5"}).adapter()) == 55.0f);
  CHECK(tag_of(old.adapter()) == 5.0f);
  registry.remove(AdapterRef{1, "a5"});
  PERSONA_REQUIRE_ERROR(registry.acquire(1, AdapterRef{1, "a5"}), not_found, "a5");

  // A damaged file is corrupt_data and the registry stays usable.
  const auto path = store.path_of(1, "a4");
  registry.put(tagged_adapter("a4", 1, 4.0f));  // drop any cached copy
  fs::resize_file(store.path_of(1, "a4"), 100);
  PERSONA_REQUIRE_ERROR(registry.acquire(1, AdapterRef{1, "a4"}), corrupt_data, "v0");
  CHECK(tag_of(registry.acquire(1, AdapterRef{1, "a3"}).adapter()) == 3.0f);
  CHECK(registry.metrics().load_failures >= 1);

  // A budget smaller than one adapter.
  AdapterRegistry tiny(store, {.ram_budget_bytes = one / 2});
  PERSONA_REQUIRE_ERROR(tiny.acquire(1, AdapterRef{1, "a0"}), capacity_exhausted, "the RAM budget is");
  const std::string json = registry.metrics().to_json();
  CHECK(json.find("\"load_p99_ms\"") != std::string::npos);
  const AdapterRegistryMetrics totals = registry.metrics();
  CHECK(totals.load_total_ms >= totals.load_p99_ms);  // the sum of every load is at least the slowest's
  CHECK(totals.load_total_ms > 0.0);
  CHECK(json.find("\"evictions\"") != std::string::npos);
}

TEST_CASE("acquire by id serves a resident adapter from RAM and follows puts and removes", "[registry]") {
  TempFolder folder;
  AdapterStore store(folder.path);
  store.put(tagged_adapter("style", kPublicTenant, 100.0f));
  AdapterRegistry registry(store);
  CHECK(tag_of(registry.acquire(3, "style").adapter()) == 100.0f);  // no own "style" yet
  registry.put(tagged_adapter("style", 3, 300.0f));
  CHECK(tag_of(registry.acquire(3, "style").adapter()) == 300.0f);  // the put made it tenant 3's own

  // With the tenant's folder gone from disk, a resident adapter is still found by id: no store lookup on
  // a hit (a lookup would now find no own "style" and hand out the public one).
  const fs::path own = folder.path / "tenants" / "3", away = folder.path / "away";
  fs::rename(own, away);
  CHECK(tag_of(registry.acquire(3, "style").adapter()) == 300.0f);
  fs::rename(away, own);

  // try_acquire: RAM only, never a load; ownership as acquire.
  AdapterRegistry cold(store);
  CHECK_FALSE(cold.try_acquire(3, AdapterRef{3, "style"}));
  CHECK(cold.metrics().loads == 0);
  (void)cold.acquire(3, AdapterRef{3, "style"});
  const std::uint64_t hits = cold.metrics().hits;
  const AdapterHandle warm = cold.try_acquire(3, AdapterRef{3, "style"});
  REQUIRE(warm);
  CHECK(tag_of(warm.adapter()) == 300.0f);
  CHECK(cold.metrics().hits == hits + 1);
  PERSONA_REQUIRE_ERROR(cold.try_acquire(4, AdapterRef{3, "style"}), permission_denied, "tenant 4");

  registry.remove(AdapterRef{3, "style"});
  CHECK(tag_of(registry.acquire(3, "style").adapter()) == 100.0f);  // back to the public one
  registry.remove(AdapterRef{kPublicTenant, "style"});
  PERSONA_REQUIRE_ERROR(registry.acquire(3, "style"), not_found, "'style'");
}

TEST_CASE("acquire_async and prefetch complete where oneTBB has no worker thread to spare", "[registry]") {
  TempFolder folder;
  AdapterStore store(folder.path);
  store.put(tagged_adapter("solo", 1, 7.0f));
  store.put(tagged_adapter("next", 1, 8.0f));
  const tbb::global_control one_thread(tbb::global_control::max_allowed_parallelism, 1);  // as on one CPU
  AdapterRegistry registry(store);
  const auto later = registry.acquire_async(1, AdapterRef{1, "solo"});
  REQUIRE(later.wait_for(std::chrono::seconds(30)) == std::future_status::ready);
  CHECK(tag_of(later.get().adapter()) == 7.0f);
  registry.prefetch(1, AdapterRef{1, "next"});
  bool warmed = false;
  for (int i = 0; i < 3000 && !warmed; ++i) {
    warmed = registry.try_acquire(1, AdapterRef{1, "next"}) ? true : false;
    if (!warmed) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(warmed);
}

TEST_CASE("Destroying a registry with loads and prefetches in flight waits for them", "[registry]") {
  // Run under AddressSanitizer in CI: a load still running on a oneTBB worker after the registry is gone
  // would touch freed memory. (Not under ThreadSanitizer: it cannot see oneTBB's hand-offs.)
  TempFolder folder;
  AdapterStore store(folder.path);
  constexpr int kAdapters = 12;
  for (int i = 0; i < kAdapters; ++i) store.put(tagged_adapter(fmt::format("a{}", i), 1, static_cast<float>(i), 512));
  std::vector<std::shared_future<AdapterHandle>> pending;
  {
    AdapterRegistry registry(store);
    for (int i = 0; i < kAdapters; ++i) {
      const AdapterRef ref{1, fmt::format("a{}", i)};
      pending.push_back(registry.acquire_async(1, ref));
      registry.prefetch(1, AdapterRef{1, fmt::format("a{}", kAdapters - 1 - i)});
    }
    registry.prefetch_ahead(3600.0, std::size_t{1} << 30);
  }  // the destructor waits for every load
  for (int i = 0; i < kAdapters; ++i) {
    REQUIRE(pending[i].wait_for(std::chrono::seconds(0)) == std::future_status::ready);
    const AdapterHandle handle = pending[i].get();  // handles outlive the registry
    CHECK(tag_of(handle.adapter()) == static_cast<float>(i));
  }
}

TEST_CASE("AdapterRegistry loads a cold adapter once for many threads, prefetch warms it", "[registry]") {
  TempFolder folder;
  AdapterStore store(folder.path);
  store.put(tagged_adapter("big", 1, 9.0f, 1024, 16));
  store.put(tagged_adapter("warm", 1, 8.0f));
  AdapterRegistry registry(store);
  std::vector<std::thread> threads;
  std::atomic<int> right{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      const AdapterHandle h = registry.acquire(1, AdapterRef{1, "big"});
      right += h->id() == "big" ? 1 : 0;
    });
  }
  for (std::thread& t : threads) t.join();
  CHECK(right == 8);
  AdapterRegistryMetrics m = registry.metrics();
  CHECK(m.loads == 1);
  CHECK(m.hits + m.misses == 8);
  // Async acquires of one cold adapter: one load.
  std::vector<std::shared_future<AdapterHandle>> futures;
  registry.remove(AdapterRef{1, "big"});
  store.put(tagged_adapter("big", 1, 10.0f, 1024, 16));
  for (int i = 0; i < 6; ++i) futures.push_back(registry.acquire_async(1, AdapterRef{1, "big"}));
  for (auto& f : futures) CHECK(tag_of(f.get().adapter()) == 10.0f);
  CHECK(registry.metrics().loads == 2);
  // Prefetch returns at once and the next acquire is a hit that counts as a prefetch hit.
  registry.prefetch(1, AdapterRef{1, "warm"});
  registry.prefetch(2, AdapterRef{1, "warm"});  // not tenant 2's: ignored
  for (int i = 0; i < 2000 && registry.metrics().resident_adapters < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  m = registry.metrics();
  CHECK(m.prefetches == 1);
  (void)registry.acquire(1, AdapterRef{1, "warm"});
  CHECK(registry.metrics().prefetch_hits == 1);
}

TEST_CASE("AdapterRegistry under 2 threads acquiring, releasing, putting and removing at random", "[registry]") {
  TempFolder folder;
  AdapterStore store(folder.path);
  for (int i = 0; i < 8; ++i) store.put(tagged_adapter(fmt::format("s{}", i), 1, static_cast<float>(i)));
  const std::size_t one = tagged_adapter("x", 1, 0.0f).bytes();
  const EvictionPolicyKind kind = GENERATE(EvictionPolicyKind::lru, EvictionPolicyKind::gdsf);
  INFO("policy " << to_string(kind));
  AdapterRegistry registry(store, {.ram_budget_bytes = 3 * one, .eviction = kind});
  std::atomic<std::size_t> bad{0}, done{0};
  const auto worker = [&](std::uint32_t seed) {
    std::mt19937 rng(seed);
    std::vector<AdapterHandle> held;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(1500);
    while (std::chrono::steady_clock::now() < deadline) {
      const std::string id = fmt::format("s{}", rng() % 8);
      try {
        switch (rng() % 6) {
          case 0:
          case 1:
          case 2: {
            AdapterHandle h = registry.acquire(1, AdapterRef{1, id});
            float tag = 0.0f;
            bad += h->id() == id && whole(h.adapter(), tag) ? 0 : 1;
            if (held.size() < 3) held.push_back(std::move(h));
            break;
          }
          case 3: held.clear(); break;
          case 4: registry.put(tagged_adapter(id, 1, static_cast<float>(rng() % 100))); break;
          case 5: registry.remove(AdapterRef{1, id}); break;
        }
      } catch (const Error& e) {
        bad += e.code() == ErrorCode::not_found ? 0 : 1;  // removed meanwhile: the only expected error
      }
      const AdapterRegistryMetrics m = registry.metrics();
      bad += m.resident_bytes <= 3 * one + m.pinned_bytes ? 0 : 1;
      ++done;
    }
  };
  std::thread other(worker, 1);
  worker(2);
  other.join();
  CHECK(bad == 0);
  CHECK(done > 100);
}

TEST_CASE("After a put or remove returns, no acquire gets what was there before (checked against the history)",
          "[registry]") {
  // One writer thread per id puts tags 1, 2, 3... or removes, in its own order; readers acquire. Every
  // operation takes a tick from one clock when it starts and when it ends. A read that starts after
  // write k of its id ended may see write k or a later one that had started before the read ended,
  // never an earlier one.
  TempFolder folder;
  AdapterStore store(folder.path);
  const std::size_t one = tagged_adapter("x", 1, 0.0f).bytes();
  AdapterRegistry registry(store, {.ram_budget_bytes = 4 * one});
  constexpr int kIds = 2;
  std::atomic<std::uint64_t> clock{0};
  struct Write {
    std::uint64_t start, end;
    float tag;  // 0: remove
  };
  struct Read {
    int id;
    std::uint64_t start, end;
    float tag;  // 0: not_found
    AdapterVersion version;
  };
  std::array<std::vector<Write>, kIds> writes;
  std::atomic<bool> writing{true};
  std::atomic<std::size_t> unexpected{0};
  const auto writer = [&](int id, std::uint32_t seed) {
    std::mt19937 rng(seed);
    for (int j = 1; j <= 150; ++j) {
      const float tag = rng() % 5 == 0 ? 0.0f : static_cast<float>(j);
      const std::uint64_t start = clock++;
      if (tag == 0.0f) {
        try {
          registry.remove(AdapterRef{1, fmt::format("x{}", id)});
        } catch (const Error& e) {
          if (e.code() != ErrorCode::not_found) ++unexpected;  // removed already: it stays absent
        }
      } else {
        registry.put(tagged_adapter(fmt::format("x{}", id), 1, tag));
      }
      writes[static_cast<std::size_t>(id)].push_back({start, clock++, tag});
    }
  };
  const auto reader = [&](std::uint32_t seed, std::vector<Read>& reads) {
    std::mt19937 rng(seed);
    while (writing) {
      const int id = static_cast<int>(rng() % kIds);
      const std::uint64_t start = clock++;
      float tag = 0.0f;
      AdapterVersion version = 0;
      try {
        const AdapterHandle h = registry.acquire(1, AdapterRef{1, fmt::format("x{}", id)});
        version = h.version();
        if (!whole(h.adapter(), tag)) ++unexpected;
      } catch (const Error& e) {
        if (e.code() != ErrorCode::not_found) ++unexpected;
      }
      reads.push_back({id, start, clock++, tag, version});
    }
  };
  std::vector<Read> reads_a, reads_b;
  std::thread read_a(reader, 11, std::ref(reads_a)), read_b(reader, 12, std::ref(reads_b));
  std::thread write_0(writer, 0, 21), write_1(writer, 1, 22);
  write_0.join();
  write_1.join();
  writing = false;
  read_a.join();
  read_b.join();
  CHECK(unexpected == 0);
  std::size_t stale = 0, checked = 0;
  for (const std::vector<Read>* reads : {&reads_a, &reads_b}) {
    for (const Read& r : *reads) {
      const std::vector<Write>& h = writes[static_cast<std::size_t>(r.id)];
      // The last write that ended before the read began (none: nothing stored yet).
      std::ptrdiff_t k = -1;
      for (std::size_t j = 0; j < h.size(); ++j) {
        if (h[j].end < r.start) k = static_cast<std::ptrdiff_t>(j);
      }
      bool allowed = k < 0 && r.tag == 0.0f;
      for (std::size_t j = static_cast<std::size_t>(std::max<std::ptrdiff_t>(k, 0)); j < h.size() && !allowed; ++j) {
        allowed = h[j].start < r.end && h[j].tag == r.tag;
      }
      if (!allowed && ++stale <= 5) {
        UNSCOPED_INFO("read of x" << r.id << " at [" << r.start << ", " << r.end << "] saw tag " << r.tag
                                  << " (version " << r.version << ")"
                                  << "; the last write before it: " << (k < 0 ? -1.0f : h[k].tag));
      }
      ++checked;
    }
  }
  CHECK(stale == 0);
  CHECK(checked > 200);
}

TEST_CASE("AdapterRegistry handles name the adapter's key and stored version, a put moves the version on",
          "[registry]") {
  const TempFolder root;
  AdapterStore store(root.path);
  AdapterRegistry registry(store);
  registry.put(tagged_adapter("style", 5, 1.0f));
  const AdapterHandle first = registry.acquire(5, AdapterRef{5, "style"});
  CHECK(first.version() == 1);
  CHECK(first.key() != kNoAdapter);
  registry.put(tagged_adapter("style", 5, 2.0f));
  const AdapterHandle second = registry.acquire(5, "style");
  CHECK(second.version() == 2);
  CHECK(second.key() == first.key());
  CHECK_FALSE(second.version_id() == first.version_id());
  float tag = 0.0f;
  CHECK((whole(first.adapter(), tag) && tag == 1.0f));  // the old handle keeps the old version
  CHECK((whole(second.adapter(), tag) && tag == 2.0f));
  CHECK(AdapterHandle().version_id() == AdapterVersionId{});
  const VersionedAdapter read = store.read(5, "style");
  CHECK(read.version == 2);
  CHECK(read.file_bytes == fs::file_size(store.path_of(5, "style")));
  // What the KV prefix cache keys by: a prompt prefilled with the old version is not reused with the new.
  PagedKvCache kv(KvCacheConfig{1, 1, 2, 4, 16});
  const std::vector<std::int32_t> prompt{1, 2, 3, 4, 5, 6, 7, 8, 9};
  const auto prefill = [&](const AdapterHandle& handle) {
    const SequenceId id = kv.create_sequence({.tenant = 5, .adapter = handle.version_id(), .prompt = prompt});
    const std::size_t cached = kv.sequence_info(id).cached_tokens;
    Tensor<float> rows({prompt.size() - cached, 1, 2});
    kv.write_kv(id, 0, rows, rows);
    return cached;
  };
  CHECK(prefill(first) == 0);
  CHECK(prefill(first) == 8);
  CHECK(prefill(second) == 0);
  CHECK(prefill(second) == 8);
}
