// bench_moe: routing + expert plan for T tokens over E experts (each scheme), against two baselines run in
// the same process: one streaming pass over the logits (read and sum: the floor for anything that looks at
// every logit) and a naive per-token softmax + std::partial_sort. Then moe_ffn on a Mixtral-shaped layer
// scaled down (hidden 1024, ffn 3584, E = 8, k = 2) with int4 and f32 experts, against the read probe.
// Ends with a table and the targets.
#include "bench_support.hpp"

#include <persona/persona.hpp>

#include <benchmark/benchmark.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

namespace {

using namespace persona;
namespace bench = persona::bench;

enum class Scheme { softmax, group_limited, topk_then_softmax };
const char* name_of(Scheme s) {
  return s == Scheme::softmax ? "softmax" : s == Scheme::group_limited ? "grouped" : "topk_softmax";
}

RouterConfig config_of(Scheme s, std::size_t E, std::size_t k) {
  if (s == Scheme::group_limited) {
    std::vector<float> bias(E);
    for (std::size_t e = 0; e < E; ++e) bias[e] = 0.001f * static_cast<float>(e % 7);
    RouterConfig c = RouterConfig::deepseek_v3(bias, E, k, 8, 4, 2.5f);
    c.shared_experts = 0;
    return c;
  }
  RouterConfig c = RouterConfig::qwen3_moe(E, k, true);
  if (s == Scheme::topk_then_softmax) {
    c.scoring = RouterScoring::topk_then_softmax;
    c.renormalize = false;
  }
  return c;
}

Tensor<float> logits_of(std::size_t T, std::size_t E) {
  std::mt19937 rng(static_cast<std::uint32_t>(T * 1000 + E));
  std::normal_distribution<float> normal(0.0f, 1.5f);
  Tensor<float> t({T, E});
  for (float& v : t.span()) v = normal(rng);
  return t;
}

void run_route(benchmark::State& state, Scheme scheme, std::size_t T, std::size_t E, std::size_t k) {
  ScopedNumThreads threads(1);
  const TopKRouter router(config_of(scheme, E, k));
  const Tensor<float> logits = logits_of(T, E);
  Routing routing;
  ExpertPlan plan;
  bench::timed(state, [&] {
    router.route(logits, routing);
    plan_experts(routing, E, plan);
    benchmark::DoNotOptimize(plan.position.data());
  });
  state.SetItemsProcessed(static_cast<std::int64_t>(T) * static_cast<std::int64_t>(state.iterations()));
}

// One pass that reads every logit: the floor.
void run_stream(benchmark::State& state, std::size_t T, std::size_t E) {
  const Tensor<float> logits = logits_of(T, E);
  bench::timed(state, [&] { benchmark::DoNotOptimize(bench::Stream::sum(logits.data(), logits.numel())); });
}

// What one would write first: per token, softmax in a buffer, then std::partial_sort of the indices.
void run_naive(benchmark::State& state, std::size_t T, std::size_t E, std::size_t k) {
  const Tensor<float> logits = logits_of(T, E);
  std::vector<float> p(E), weights(T * k);
  std::vector<std::int32_t> index(E), experts(T * k);
  bench::timed(state, [&] {
    for (std::size_t t = 0; t < T; ++t) {
      const float* l = &logits(t, 0);
      const float max = *std::max_element(l, l + E);
      float sum = 0.0f;
      for (std::size_t e = 0; e < E; ++e) sum += p[e] = std::exp(l[e] - max);
      std::iota(index.begin(), index.end(), 0);
      std::partial_sort(index.begin(), index.begin() + static_cast<std::ptrdiff_t>(k), index.end(),
                        [&](std::int32_t a, std::int32_t b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
      float chosen = 0.0f;
      for (std::size_t s = 0; s < k; ++s) chosen += p[static_cast<std::size_t>(index[s])];
      for (std::size_t s = 0; s < k; ++s) {
        experts[t * k + s] = index[s];
        weights[t * k + s] = p[static_cast<std::size_t>(index[s])] / chosen;
      }
    }
    benchmark::DoNotOptimize(weights.data());
  });
}

// ---- moe_ffn -----------------------------------------------------------------------------------------
constexpr std::size_t kHidden = 1024, kFfn = 3584, kExperts = 8, kTopK = 2;

struct Layer {
  std::vector<std::unique_ptr<ExpertFfn>> owned;
  std::vector<const ExpertFfn*> experts;
  std::size_t bytes_each = 0;
};

Layer& layer(bool int4) {
  static std::map<bool, Layer> layers;
  Layer& l = layers[int4];
  if (!l.experts.empty()) return l;
  std::mt19937 rng(int4 ? 1 : 2);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  auto weight = [&](std::size_t rows, std::size_t cols) {
    Tensor<float> w({rows, cols});
    for (float& v : w.span()) v = normal(rng);
    return int4 ? WeightMatrix(quantize(w, QuantSpec{4, 32, true})) : WeightMatrix(std::move(w));
  };
  for (std::size_t e = 0; e < kExperts; ++e) {
    l.owned.push_back(
        std::make_unique<ExpertFfn>(ExpertFfn{weight(kFfn, kHidden), weight(kFfn, kHidden), weight(kHidden, kFfn)}));
    l.experts.push_back(l.owned.back().get());
  }
  l.bytes_each = l.owned[0]->bytes();
  return l;
}

void run_ffn(benchmark::State& state, bool int4, std::size_t T, int thread_count) {
  ScopedNumThreads threads(thread_count);
  Layer& l = layer(int4);
  const Tensor<float> logits = logits_of(T, kExperts);
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  Tensor<float> x({T, kHidden}), y({T, kHidden});
  for (float& v : x.span()) v = normal(rng);
  const Routing routing = TopKRouter(RouterConfig::mixtral(kExperts, kTopK)).route(logits);
  const ExpertPlan plan = plan_experts(routing, kExperts);
  MoeWorkspace workspace;
  std::size_t used = 0;
  for (std::size_t c : plan.counts) used += c > 0 ? 1 : 0;
  // The layer's experts (49.5 MiB int4, 352 MiB f32) exceed the LLC: each call streams the used ones.
  bench::timed(state, [&] { moe_ffn(x, routing, plan, l.experts, {}, y, workspace); });
  state.SetBytesProcessed(static_cast<std::int64_t>(used * l.bytes_each) *
                          static_cast<std::int64_t>(state.iterations()));
  state.counters["tokens_per_second"] =
      benchmark::Counter(static_cast<double>(T), benchmark::Counter::kIsIterationInvariantRate);
}

struct Route {
  Scheme scheme;
  std::size_t T, E, k;
  std::string name() const { return fmt::format("route/{}/T{}/E{}/k{}", name_of(scheme), T, E, k); }
};
std::vector<Route>& routes() {
  static std::vector<Route> all;
  return all;
}

void register_benchmarks() {
  for (int threads : {1, 2}) {
    bench::add_case(threads == 1 ? "read/256Mi" : "read/256Mi/threads:2",
                    [threads](benchmark::State& s) { bench::run_read_probe(s, threads); });
  }
  for (std::size_t T : {1, 16, 512, 4096}) {
    for (std::size_t E : {8, 64, 256}) {
      bench::add_case(fmt::format("stream/T{}/E{}", T, E), [T, E](benchmark::State& s) { run_stream(s, T, E); });
      for (std::size_t k : {2, 8}) {
        if (k > E) continue;
        bench::add_case(fmt::format("naive/T{}/E{}/k{}", T, E, k),
                        [T, E, k](benchmark::State& s) { run_naive(s, T, E, k); });
        for (Scheme scheme : {Scheme::softmax, Scheme::group_limited, Scheme::topk_then_softmax}) {
          if (scheme == Scheme::group_limited && (E < 16 || k > 4 * (E / 8))) continue;
          const Route r{scheme, T, E, k};
          routes().push_back(r);
          bench::add_case(r.name(), [r](benchmark::State& s) { run_route(s, r.scheme, r.T, r.E, r.k); });
        }
      }
    }
  }
  for (bool int4 : {true, false}) {
    for (std::size_t T : {1, 16, 64, 256}) {
      for (int threads : {1, 2}) {
        bench::add_case(fmt::format("moe_ffn/{}/T{}{}", int4 ? "int4" : "f32", T, threads == 2 ? "/threads:2" : ""),
                        [int4, T, threads](benchmark::State& s) { run_ffn(s, int4, T, threads); });
      }
    }
  }
}

void print_summary(const std::map<std::string, bench::Measurement>& results) {
  fmt::print("\n## bench_moe: routing + plan (1 thread)\n\n");
  fmt::print("| case | median | min | per token | x stream pass | x naive |\n|---|---|---|---|---|---|\n");
  for (const Route& r : routes()) {
    const auto* m = bench::find_result(results, r.name());
    if (m == nullptr) continue;
    const auto* stream = bench::find_result(results, fmt::format("stream/T{}/E{}", r.T, r.E));
    const auto* naive = bench::find_result(results, fmt::format("naive/T{}/E{}/k{}", r.T, r.E, r.k));
    fmt::print("| {} | {} | {} | {} | {} | {} |\n", r.name(), bench::format_time(m->median_seconds),
               bench::format_time(m->min_seconds), bench::format_time(m->median_seconds / static_cast<double>(r.T)),
               stream ? fmt::format("{:.2f}", m->median_seconds / stream->median_seconds) : "",
               naive ? fmt::format("{:.1f}", naive->median_seconds / m->median_seconds) : "");
  }
  const auto* read1 = bench::find_result(results, "read/256Mi");
  const auto* read2 = bench::find_result(results, "read/256Mi/threads:2");
  const double gbs1 = read1 ? read1->bytes_per_second / 1e9 : 0.0, gbs2 = read2 ? read2->bytes_per_second / 1e9 : 0.0;
  fmt::print(
      "\n## bench_moe: moe_ffn, hidden {}, ffn {}, E {}, k {} (read probe {:.1f} GB/s on 1 thread, {:.1f} on 2)\n\n",
      kHidden, kFfn, kExperts, kTopK, gbs1, gbs2);
  fmt::print("| case | median | min | tokens/s | GB/s of used experts | % of read |\n|---|---|---|---|---|---|\n");
  for (const char* w : {"int4", "f32"}) {
    for (std::size_t T : {1, 16, 64, 256}) {
      for (int threads : {1, 2}) {
        const std::string name = fmt::format("moe_ffn/{}/T{}{}", w, T, threads == 2 ? "/threads:2" : "");
        const auto* m = bench::find_result(results, name);
        if (m == nullptr) continue;
        const double gbs = m->bytes_per_second / 1e9, probe = threads == 2 ? gbs2 : gbs1;
        fmt::print("| {} | {} | {} | {:.0f} | {:.1f} | {:.0f}% |\n", name, bench::format_time(m->median_seconds),
                   bench::format_time(m->min_seconds),
                   m->median_counters.count("tokens_per_second") ? m->median_counters.at("tokens_per_second") : 0.0,
                   gbs, probe > 0 ? 100.0 * gbs / probe : 0.0);
      }
    }
  }
  fmt::print("\nTargets (1 thread, medians):\n");
  for (std::size_t E : {8, 64, 256}) {
    for (std::size_t k : {2, 8}) {
      if (k > E) continue;
      const auto* m = bench::find_result(results, Route{Scheme::softmax, 4096, E, k}.name());
      const auto* stream = bench::find_result(results, fmt::format("stream/T4096/E{}", E));
      const auto* naive = bench::find_result(results, fmt::format("naive/T4096/E{}/k{}", E, k));
      if (!m || !stream || !naive) continue;
      const double vs_stream = m->median_seconds / stream->median_seconds;
      const double vs_naive = naive->median_seconds / m->median_seconds;
      fmt::print("- T=4096 E={} k={} route+plan <= 2x the streaming pass: {:.2f}x — {}\n", E, k, vs_stream,
                 vs_stream <= 2.0 ? "MET" : "NOT MET");
      fmt::print("- T=4096 E={} k={} route+plan >= 5x the naive loop: {:.1f}x — {}\n", E, k, vs_naive,
                 vs_naive >= 5.0 ? "MET" : "NOT MET");
    }
  }
  if (const auto* m = bench::find_result(results, Route{Scheme::group_limited, 1, 256, 8}.name())) {
    fmt::print("- T=1 E=256 k=8 group-limited route+plan < 1 us: {} — {}\n", bench::format_time(m->median_seconds),
               m->median_seconds < 1e-6 ? "MET" : "NOT MET");
  }
}

}  // namespace

int main(int argc, char** argv) {
  return bench::run_benchmarks(
      argc, argv,
      {"--benchmark_repetitions=5", "--benchmark_min_time=0.02", "--benchmark_display_aggregates_only=true"},
      register_benchmarks, print_summary);
}
