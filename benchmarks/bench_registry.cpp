// bench_registry: the adapter registry. (1) Trace replays: 10,000 tenants, each with one adapter of rank
// 4-64 (int4, Llama-7B q/k/v/o shaped: rank x 0.5 MiB), Zipf popularity (s = 0.8 and 1.1), sessions
// (a tenant arrives and sends a burst of requests, mean 8, interleaved with other sessions) and a daily
// rhythm (each tenant active 8 hours of its own a day), 3 days of 100,000 requests; each eviction policy
// replayed at RAM budgets of 1%, 5% and 20% of all adapter bytes, with and without the prefetcher: hit
// rate, byte hit rate, bytes prefetched and the share of them never used. (2) acquire
// of a RAM-resident adapter from 2 threads: per-call p50 and p99. (3) Cold load of a Llama-7B-shaped
// rank-16 adapter on q, k, v, o (32 layers, 4096 wide) as int4, int8, f16 (stored f16, loaded as f32) and
// f32, the file dropped from the page cache first, against a plain sequential read of the same file dropped alike.
#include "bench_support.hpp"

#include <persona/persona.hpp>

#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>
#include <random>
#include <thread>
#include <unordered_map>
#include <vector>

namespace {

using namespace persona;
namespace bench = persona::bench;

constexpr std::size_t kTenants = 10000, kRequestsPerDay = 100000, kDays = 3;

struct Trace {
  std::vector<std::uint32_t> requests;  // tenant of each request, in order
  std::vector<std::size_t> bytes;       // adapter bytes per tenant
  std::size_t total_bytes = 0;
};

Trace make_trace(double zipf_s) {
  std::mt19937_64 rng(2026);
  Trace t;
  t.bytes.resize(kTenants);
  const std::size_t ranks[] = {4, 8, 16, 32, 64};
  std::discrete_distribution<int> rank_of({20, 30, 30, 15, 5});
  for (std::size_t& b : t.bytes) b = ranks[rank_of(rng)] * (std::size_t{1} << 19);
  for (std::size_t b : t.bytes) t.total_bytes += b;
  // Popularity: Zipf over a random order of the tenants; each one's active hours start at its own hour.
  std::vector<std::uint32_t> order(kTenants);
  for (std::uint32_t i = 0; i < kTenants; ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<double> cumulative(kTenants);
  double sum = 0.0;
  for (std::size_t i = 0; i < kTenants; ++i) cumulative[i] = sum += 1.0 / std::pow(static_cast<double>(i + 1), zipf_s);
  std::vector<int> start_hour(kTenants);
  for (int& h : start_hour) h = static_cast<int>(rng() % 24);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  std::geometric_distribution<int> burst(1.0 / 8.0);
  struct Session {
    std::uint32_t tenant;
    int left;
  };
  std::vector<Session> active;
  const std::size_t total = kRequestsPerDay * kDays;
  t.requests.reserve(total);
  for (std::size_t i = 0; i < total; ++i) {
    const int hour = static_cast<int>((i % kRequestsPerDay) * 24 / kRequestsPerDay);
    if (active.empty() || uniform(rng) < 1.0 / 8.0) {
      std::uint32_t tenant = 0;
      for (int attempt = 0; attempt < 50; ++attempt) {  // a popular tenant whose hours include this one
        const auto at = std::lower_bound(cumulative.begin(), cumulative.end(), uniform(rng) * sum);
        tenant = order[static_cast<std::size_t>(std::min<std::ptrdiff_t>(at - cumulative.begin(), kTenants - 1))];
        if ((hour - start_hour[tenant] + 24) % 24 < 8) break;
      }
      active.push_back({tenant, 1 + burst(rng)});
    }
    const std::size_t pick = rng() % active.size();
    t.requests.push_back(active[pick].tenant);
    if (--active[pick].left == 0) {
      active[pick] = active.back();
      active.pop_back();
    }
  }
  return t;
}

const Trace& trace(double s) {
  static std::map<double, Trace> cache;
  if (!cache.contains(s)) cache.emplace(s, make_trace(s));
  return cache.at(s);
}

// Replays the trace through a cache of `budget` bytes kept by the policy; with `prefetch`, at the start of
// each hour the prefetcher's predictions for that hour are loaded first, within a tenth of the budget.
void run_replay(benchmark::State& state, double s, EvictionPolicyKind kind, double budget_share, bool prefetch) {
  const Trace& t = trace(s);
  const std::size_t budget = static_cast<std::size_t>(budget_share * static_cast<double>(t.total_bytes));
  std::uint64_t hits = 0, hit_bytes = 0, all_bytes = 0, prefetched = 0, unused = 0;
  bench::timed(state, [&] {
    auto policy = make_eviction_policy(kind);
    AdapterPrefetcher prefetcher;
    std::vector<char> resident(kTenants, 0), speculative(kTenants, 0);
    std::size_t held = 0;
    hits = hit_bytes = all_bytes = prefetched = unused = 0;
    const auto never = [](std::uint64_t) { return false; };
    const auto load = [&](std::uint32_t tenant) {
      while (held + t.bytes[tenant] > budget) {
        const auto victim = policy->victim(never);
        if (!victim) break;
        policy->evict(*victim);
        resident[*victim] = 0;
        held -= t.bytes[*victim];
        if (speculative[*victim]) unused += t.bytes[*victim];
        speculative[*victim] = 0;
      }
      policy->insert(tenant, t.bytes[tenant]);
      resident[tenant] = 1;
      held += t.bytes[tenant];
    };
    constexpr std::size_t kHour = kRequestsPerDay / 24;
    for (std::size_t i = 0; i < t.requests.size(); ++i) {
      const double time = static_cast<double>(i) * 86400.0 / kRequestsPerDay;
      if (prefetch && i % kHour == 0) {
        std::size_t spent = 0;
        for (std::uint64_t key : prefetcher.predict(time, 3600.0, 1000)) {
          const auto tenant = static_cast<std::uint32_t>(key);
          if (resident[tenant]) continue;
          if (spent + t.bytes[tenant] > budget / 10) break;
          spent += t.bytes[tenant];
          prefetched += t.bytes[tenant];
          load(tenant);
          speculative[tenant] = 1;
        }
      }
      const std::uint32_t tenant = t.requests[i];
      if (prefetch) prefetcher.record(tenant, time);
      all_bytes += t.bytes[tenant];
      if (resident[tenant]) {
        ++hits;
        hit_bytes += t.bytes[tenant];
        speculative[tenant] = 0;
        policy->hit(tenant);
        continue;
      }
      load(tenant);
    }
    for (std::uint32_t tenant = 0; tenant < kTenants; ++tenant) unused += speculative[tenant] ? t.bytes[tenant] : 0;
  });
  state.counters["hit_rate"] = static_cast<double>(hits) / static_cast<double>(t.requests.size());
  state.counters["byte_hit_rate"] = static_cast<double>(hit_bytes) / static_cast<double>(all_bytes);
  state.counters["prefetched_gib"] = static_cast<double>(prefetched) / (1 << 30);
  state.counters["unused_share"] =
      prefetched == 0 ? 0.0 : static_cast<double>(unused) / static_cast<double>(prefetched);
}

// acquire + release of a resident adapter, timed per call on each of `threads` threads.
void run_acquire(benchmark::State& state, int threads) {
  const auto folder = std::filesystem::temp_directory_path() / fmt::format("persona_bench_registry_{}", ::getpid());
  {
    AdapterStore store(folder);
    for (int i = 0; i < 4; ++i) {
      LoraAdapter adapter(fmt::format("a{}", i), 1);
      adapter.add({0, "self_attn.q_proj"},
                  LoraModule(LoraMatrix(Tensor<float>({16, 256})), LoraMatrix(Tensor<float>({256, 16})), 16.0f));
      store.put(adapter);
    }
    AdapterRegistry registry(store);
    for (int i = 0; i < 4; ++i) (void)registry.acquire(1, AdapterRef{1, fmt::format("a{}", i)});
    constexpr std::size_t kCalls = 200000;
    std::vector<std::vector<double>> ns(static_cast<std::size_t>(threads), std::vector<double>(kCalls));
    bench::timed(state, [&] {
      std::vector<std::thread> workers;
      for (int w = 0; w < threads; ++w) {
        workers.emplace_back([&, w] {
          const AdapterRef ref{1, fmt::format("a{}", w % 4)};
          for (std::size_t i = 0; i < kCalls; ++i) {
            const auto start = std::chrono::steady_clock::now();
            const AdapterHandle h = registry.acquire(1, ref);
            benchmark::DoNotOptimize(h.adapter().id().size());
            ns[static_cast<std::size_t>(w)][i] =
                std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count();
          }
        });
      }
      for (std::thread& t : workers) t.join();
    });
    std::vector<double> all;
    for (const auto& v : ns) all.insert(all.end(), v.begin(), v.end());
    std::sort(all.begin(), all.end());
    state.counters["p50_ns"] = all[all.size() / 2];
    state.counters["p99_ns"] = all[all.size() * 99 / 100];
  }
  std::filesystem::remove_all(folder);
}

// Drops the file's pages from the page cache (they are clean: the store fsynced them).
void drop_cached(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

// kind: int4, int8, f16 or f32. Cold: the file dropped from the page cache before each get and each read;
// warm: both from the page cache, where the CPU work of a load (checksum, JSON, copies) is all there is.
void run_load(benchmark::State& state, const std::string& kind, bool cold) {
  // In the working folder: /tmp may be a RAM disk elsewhere, which has no cold read.
  const auto folder = std::filesystem::current_path() / fmt::format("persona_bench_cold_{}", ::getpid());
  {
    AdapterStore store(folder);
    LoraAdapter adapter("llama7b_r16", 1);
    std::uint32_t seed = 1;
    for (std::size_t layer = 0; layer < 32; ++layer) {
      for (const char* module : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"}) {
        Tensor<float> a({16, 4096}), b({4096, 16});
        std::mt19937 rng(seed++);
        std::normal_distribution<float> normal(0.0f, 0.02f);
        for (std::size_t i = 0; i < a.numel(); ++i) a.data()[i] = normal(rng);
        for (std::size_t i = 0; i < b.numel(); ++i) b.data()[i] = normal(rng);
        adapter.add({layer, module}, LoraModule(LoraMatrix(std::move(a)), LoraMatrix(std::move(b)), 32.0f));
      }
    }
    const StoredAdapter stored = kind == "int4"   ? store.put(adapter, QuantSpec{4, 32})
                                 : kind == "int8" ? store.put(adapter, QuantSpec{8, 16})
                                                  : store.put(adapter, std::nullopt, parse_dtype(kind));
    double load_seconds = 0.0, read_seconds = 0.0;
    bench::timed(state, [&] {
      if (cold) drop_cached(stored.path);
      auto start = std::chrono::steady_clock::now();
      const LoraAdapter loaded = store.get(1, "llama7b_r16");
      benchmark::DoNotOptimize(loaded.bytes());
      load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (cold) drop_cached(stored.path);
      start = std::chrono::steady_clock::now();
      const std::vector<std::byte> bytes = read_file(stored.path);
      benchmark::DoNotOptimize(bytes.data());
      read_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    });
    state.counters["file_mib"] = static_cast<double>(stored.file_bytes) / (1 << 20);
    state.counters["load_ms"] = load_seconds * 1e3;
    state.counters["read_ms"] = read_seconds * 1e3;
    state.counters["of_read"] = read_seconds / load_seconds;
  }
  std::filesystem::remove_all(folder);
}

const std::vector<double> kZipf{0.8, 1.1};
const std::vector<double> kBudgets{0.01, 0.05, 0.20};
const std::vector<EvictionPolicyKind> kPolicies{EvictionPolicyKind::lru, EvictionPolicyKind::gdsf};

std::string replay_name(double s, EvictionPolicyKind kind, double budget, bool prefetch = false) {
  return fmt::format("replay/zipf{:.1f}/{}/budget{:.0f}%{}", s, to_string(kind), budget * 100,
                     prefetch ? "/prefetch" : "");
}

void register_benchmarks() {
  for (double s : kZipf) {
    for (double budget : kBudgets) {
      for (EvictionPolicyKind kind : kPolicies) {
        for (bool prefetch : {false, true}) {
          benchmark::RegisterBenchmark(
              replay_name(s, kind, budget, prefetch).c_str(),
              [s, kind, budget, prefetch](benchmark::State& st) { run_replay(st, s, kind, budget, prefetch); })
              ->UseManualTime()
              ->Unit(benchmark::kMillisecond)
              ->Iterations(1)
              ->Repetitions(1);
        }
      }
    }
  }
  for (const bool cold : {true, false}) {
    for (const std::string kind : {"int4", "int8", "f16", "f32"}) {
      benchmark::RegisterBenchmark(fmt::format("{}_load/{}", cold ? "cold" : "warm", kind).c_str(),
                                   [kind, cold](benchmark::State& st) { run_load(st, kind, cold); })
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond)
          ->Iterations(1)
          ->Repetitions(5)
          ->ComputeStatistics("min", bench::min_of);
    }
  }
  for (int threads : {1, 2}) {
    benchmark::RegisterBenchmark(fmt::format("acquire_resident/threads:{}", threads).c_str(),
                                 [threads](benchmark::State& st) { run_acquire(st, threads); })
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond)
        ->Iterations(1);
  }
}

void print_summary(const std::map<std::string, bench::Measurement>& results) {
  fmt::print(
      "\n## bench_registry: trace replays (10,000 tenants, 300,000 requests)\n\n"
      "| Zipf s | budget | LRU | LRU + prefetch | GDSF | GDSF + prefetch | LRU byte hits | GDSF byte hits | prefetched "
      "(LRU) | of it never used |\n|---|---|---|---|---|---|---|---|---|---|\n");
  for (double s : kZipf) {
    for (double budget : kBudgets) {
      const auto* lru = bench::find_result(results, replay_name(s, EvictionPolicyKind::lru, budget));
      const auto* lru_p = bench::find_result(results, replay_name(s, EvictionPolicyKind::lru, budget, true));
      const auto* gdsf = bench::find_result(results, replay_name(s, EvictionPolicyKind::gdsf, budget));
      const auto* gdsf_p = bench::find_result(results, replay_name(s, EvictionPolicyKind::gdsf, budget, true));
      if (!lru || !lru_p || !gdsf || !gdsf_p) continue;
      const auto c = [](const bench::Measurement* m, const char* name) { return m->median_counters.at(name); };
      fmt::print("| {:.1f} | {:.0f}% | {:.4f} | {:.4f} | {:.4f} | {:.4f} | {:.4f} | {:.4f} | {:.1f} GiB | {:.0f}% |\n",
                 s, budget * 100, c(lru, "hit_rate"), c(lru_p, "hit_rate"), c(gdsf, "hit_rate"), c(gdsf_p, "hit_rate"),
                 c(lru, "byte_hit_rate"), c(gdsf, "byte_hit_rate"), c(lru_p, "prefetched_gib"),
                 100 * c(lru_p, "unused_share"));
    }
  }
  fmt::print("\n| acquire of a resident adapter | p50 | p99 |\n|---|---|---|\n");
  for (int threads : {1, 2}) {
    const auto* m = bench::find_result(results, fmt::format("acquire_resident/threads:{}", threads));
    if (m == nullptr || !m->median_counters.contains("p50_ns")) continue;
    fmt::print("| {} thread{} | {:.0f} ns | {:.0f} ns |\n", threads, threads == 1 ? "" : "s",
               m->median_counters.at("p50_ns"), m->median_counters.at("p99_ns"));
  }
  std::map<std::string, double> load_ms;
  for (const char* temperature : {"cold", "warm"}) {
    fmt::print(
        "\n| {} load, Llama-7B rank-16 q/k/v/o | file | load (median of 5) | read of the file (read_file) | "
        "load as % of read speed |\n|---|---|---|---|---|\n",
        temperature);
    for (const char* kind : {"int4", "int8", "f16", "f32"}) {
      const auto* m = bench::find_result(results, fmt::format("{}_load/{}", temperature, kind));
      if (m == nullptr || !m->median_counters.contains("load_ms")) continue;
      const auto c = [&](const char* name) { return m->median_counters.at(name); };
      fmt::print("| {} | {:.1f} MiB | {:.1f} ms | {:.1f} ms | {:.0f}% |\n", kind, c("file_mib"), c("load_ms"),
                 c("read_ms"), 100 * c("of_read"));
      if (std::string_view(temperature) == "cold") load_ms[kind] = c("load_ms");
    }
  }
  if (load_ms.contains("int4")) {
    for (const char* wide : {"f16", "f32"}) {
      if (load_ms.contains(wide)) fmt::print("\n{} / int4 load time: {:.1f}x", wide, load_ms[wide] / load_ms["int4"]);
    }
    fmt::print("\n");
  }
  if (const auto* m = bench::find_result(results, "acquire_resident/threads:2");
      m && m->median_counters.contains("p50_ns")) {
    const double p50 = m->median_counters.at("p50_ns");
    fmt::print("\nTarget: acquire p50 under 1 µs with 2 threads: {:.0f} ns — {}\n", p50,
               p50 < 1000 ? "MET" : "NOT MET");
  }
}

}  // namespace

int main(int argc, char** argv) {
  return bench::run_benchmarks(argc, argv, {"--benchmark_repetitions=1"}, register_benchmarks, print_summary);
}
