// bench_lora: many LoRA adapters in one batch at hidden size 4096, on cold adapters (each call takes the
// next adapters of a pool at least 8x the last-level cache), against the same-run read bandwidth and two
// baselines: a naive per-token loop of two Eigen GEMVs over f32 adapters, and padding every adapter of a
// mixed-rank batch to the largest rank. Ends with a table and the targets.
#include "bench_support.hpp"

#include <persona/persona.hpp>

#include <benchmark/benchmark.h>
#include <fmt/format.h>

#include <Eigen/Core>

#include <chrono>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace {

using namespace persona;
namespace bench = persona::bench;

constexpr std::size_t kHidden = 4096;
constexpr std::size_t kPoolFactor = 8;  // pools hold at least 8x the LLC

enum class Format { f32, int8, int4 };
const char* name_of(Format f) { return f == Format::f32 ? "f32" : f == Format::int8 ? "int8" : "int4"; }

LoraMatrix make_matrix(std::size_t rows, std::size_t cols, std::mt19937& rng) {
  std::uniform_real_distribution<float> uniform(-0.05f, 0.05f);
  Tensor<float> w({rows, cols});
  for (float& v : w.span()) v = uniform(rng);
  return LoraMatrix(std::move(w));
}

struct Pool {
  std::vector<LoraModule> modules;
  std::size_t bytes_each = 0;
  std::size_t next = 0;
  // The next `count` modules, wrapping around.
  std::vector<const LoraModule*> take(std::size_t count) {
    std::vector<const LoraModule*> out;
    for (std::size_t i = 0; i < count; ++i) out.push_back(&modules[(next + i) % modules.size()]);
    next = (next + count) % modules.size();
    return out;
  }
};

// Pools by (rank, format); rank 0 is the mixed-rank pool (8, 16, 64 cycling) and rank 1 its copy padded
// to rank 64.
Pool& pool(std::size_t rank, Format format) {
  static std::map<std::pair<std::size_t, Format>, std::unique_ptr<Pool>> pools;
  auto& slot = pools[{rank, format}];
  if (slot) return *slot;
  slot = std::make_unique<Pool>();
  std::mt19937 rng(static_cast<std::uint32_t>(rank * 10 + static_cast<std::size_t>(format)));
  auto rank_of = [&](std::size_t i) { return rank > 1 ? rank : std::array<std::size_t, 3>{8, 16, 64}[i % 3]; };
  const std::size_t target = kPoolFactor * bench::last_level_cache_bytes();
  std::size_t total = 0;
  for (std::size_t i = 0; total < target || slot->modules.size() < 64; ++i) {
    const std::size_t r = rank_of(i);
    LoraMatrix a = make_matrix(r, kHidden, rng), b = make_matrix(kHidden, r, rng);
    if (rank == 1) {  // zero-pad A's rows and B's columns to 64
      Tensor<float> pa({64, kHidden}), pb({kHidden, 64});
      const Tensor<float> fa = a.to_f32(), fb = b.to_f32();
      std::copy_n(fa.data(), fa.numel(), pa.data());
      for (std::size_t o = 0; o < kHidden; ++o) std::copy_n(&fb(o, 0), r, &pb(o, 0));
      a = LoraMatrix(std::move(pa));
      b = LoraMatrix(std::move(pb));
    }
    LoraModule module(std::move(a), std::move(b), 2.0f * static_cast<float>(r));
    // int4/int8 g32 (B, quantized along the rank, takes groups of 16 or 8 below rank 32).
    if (format != Format::f32) module = quantize_lora(module, QuantSpec{format == Format::int8 ? 8 : 4, 32, true});
    slot->modules.push_back(std::move(module));
    total += slot->modules.back().bytes();
  }
  slot->bytes_each = total / slot->modules.size();
  return *slot;
}

struct Case {
  std::string name;
  std::size_t rank;  // 0: mixed 8/16/64; 1: the same padded to 64
  Format format;
  std::size_t tokens, distinct;
  std::string variant;  // "persona", "naive", "padded", "base", "lora_linear"
  int threads = 1;
};
std::vector<Case>& cases() {
  static std::vector<Case> all;
  return all;
}

// y[t] += scale B (A x[t]) for each token, as a plain loop of two Eigen GEMVs per token.
void naive(const std::vector<const LoraModule*>& slots, const std::vector<std::int32_t>& token_slots,
           const Tensor<float>& x, Tensor<float>& y) {
  using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  for (std::size_t t = 0; t < token_slots.size(); ++t) {
    const LoraModule& m = *slots[static_cast<std::size_t>(token_slots[t])];
    const auto& a = *m.a().f32();
    const auto& b = *m.b().f32();
    Eigen::Map<const RowMajor> am(a.data(), static_cast<Eigen::Index>(m.rank()), static_cast<Eigen::Index>(kHidden));
    Eigen::Map<const RowMajor> bm(b.data(), static_cast<Eigen::Index>(kHidden), static_cast<Eigen::Index>(m.rank()));
    Eigen::Map<const Eigen::VectorXf> xt(&x(t, 0), static_cast<Eigen::Index>(kHidden));
    Eigen::Map<Eigen::VectorXf> yt(&y(t, 0), static_cast<Eigen::Index>(kHidden));
    const Eigen::VectorXf h = am * xt;
    yt.noalias() += m.scale() * (bm * h);
  }
}

// Base layers for the overhead cases: f32 [4096, 4096], rotating over copies beyond the LLC.
std::vector<LoraMatrix>& bases() {
  static std::vector<LoraMatrix> all;
  if (all.empty()) {
    const std::size_t copies = 4 * bench::last_level_cache_bytes() / (kHidden * kHidden * sizeof(float)) + 2;
    for (std::size_t i = 0; i < copies; ++i) {
      Tensor<float> w({kHidden, kHidden});
      for (float& v : w.span()) v = 0.001f * static_cast<float>(i + 1);
      all.emplace_back(std::move(w));
    }
  }
  return all;
}

void run_case(benchmark::State& state, const Case& c) {
  ScopedNumThreads threads(c.threads);
  Pool& p = pool(c.rank, c.format);
  Tensor<float> x({c.tokens, kHidden}), y({c.tokens, kHidden});
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  for (float& v : x.span()) v = uniform(rng);
  std::vector<std::int32_t> token_slots(c.tokens);
  for (std::size_t t = 0; t < c.tokens; ++t) token_slots[t] = static_cast<std::int32_t>(t % c.distinct);
  const bool with_base = c.variant == "base" || c.variant == "lora_linear";
  std::vector<LoraMatrix>* base = with_base ? &bases() : nullptr;
  // As a server runs a batch: one plan for every layer, one workspace for the whole run.
  const LoraBatchPlan plan = plan_lora_batch(token_slots, c.distinct);
  LoraWorkspace workspace;
  workspace.reserve(kHidden, kHidden, c.rank > 1 ? c.rank : 64);
  std::size_t call = 0;
  for (auto _ : state) {
    const std::vector<const LoraModule*> slots = p.take(c.distinct);
    const auto start = std::chrono::steady_clock::now();
    if (c.variant == "naive") {
      naive(slots, token_slots, x, y);
    } else if (c.variant == "base") {
      (*base)[call % base->size()].multiply(x, y);
    } else if (c.variant == "lora_linear") {
      lora_linear(x, (*base)[call % base->size()], y, slots, plan, workspace);
    } else {
      apply_lora(x, y, slots, plan, workspace);
    }
    state.SetIterationTime(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    benchmark::DoNotOptimize(y.data());
    ++call;
  }
  // Bytes a call must read: the distinct adapters it uses (and the base layer, where there is one).
  double bytes = static_cast<double>(std::min(c.distinct, c.tokens) * p.bytes_each);
  if (with_base)
    bytes += c.variant == "base" ? static_cast<double>(kHidden * kHidden * sizeof(float)) - bytes
                                 : static_cast<double>(kHidden * kHidden * sizeof(float));
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes) * static_cast<std::int64_t>(state.iterations()));
  state.counters["tokens_per_second"] =
      benchmark::Counter(static_cast<double>(c.tokens), benchmark::Counter::kIsIterationInvariantRate);
}

void register_benchmarks() {
  auto add = [](Case c) {
    c.name = fmt::format("{}/{}/r{}/{}tok_{}ad{}", c.variant, name_of(c.format),
                         c.rank == 0   ? std::string("mixed")
                         : c.rank == 1 ? std::string("padded64")
                                       : std::to_string(c.rank),
                         c.tokens, c.distinct, c.threads > 1 ? "/threads:2" : "");
    cases().push_back(c);
  };
  const std::vector<std::pair<std::size_t, std::size_t>> batches = {{1, 1}, {8, 1}, {8, 8}, {64, 1}, {64, 8}, {64, 64}};
  for (std::size_t rank : {8, 16, 64}) {
    for (auto [tokens, distinct] : batches) {
      for (Format f : {Format::f32, Format::int8, Format::int4}) add({"", rank, f, tokens, distinct, "persona"});
      add({"", rank, Format::f32, tokens, distinct, "naive"});
    }
  }
  // Mixed ranks 8/16/64 in one batch, and the same adapters padded to rank 64 (as vLLM pads).
  add({"", 0, Format::f32, 64, 64, "persona"});
  add({"", 1, Format::f32, 64, 64, "padded"});
  // Decode overhead of one unmerged rank-16 adapter over the base f32 GEMV.
  add({"", 16, Format::f32, 1, 1, "base"});
  add({"", 16, Format::f32, 1, 1, "lora_linear"});
  add({"", 16, Format::int4, 1, 1, "lora_linear"});
  // 2 threads, for the record (targets are judged on 1).
  for (std::size_t rank : {8, 16, 64}) {
    for (Format f : {Format::f32, Format::int4}) add({"", rank, f, 64, 64, "persona", 2});
    add({"", rank, Format::f32, 64, 64, "naive", 2});
  }

  for (int threads : {1, 2}) {
    benchmark::RegisterBenchmark(threads == 1 ? "read/256Mi" : "read/256Mi/threads:2",
                                 [threads](benchmark::State& s) { bench::run_read_probe(s, threads); })
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond)
        ->ComputeStatistics("min", bench::min_of);
  }
  for (const Case& c : cases()) {
    benchmark::RegisterBenchmark(c.name.c_str(), [c](benchmark::State& s) { run_case(s, c); })
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond)
        ->ComputeStatistics("min", bench::min_of);
  }
}

void print_summary(const std::map<std::string, bench::Measurement>& results) {
  const bench::Measurement* read = bench::find_result(results, "read/256Mi");
  const bench::Measurement* read2 = bench::find_result(results, "read/256Mi/threads:2");
  const double read_gbs = read != nullptr ? read->bytes_per_second / 1e9 : 0.0;
  const double read2_gbs = read2 != nullptr ? read2->bytes_per_second / 1e9 : 0.0;
  fmt::print(
      "\n## bench_lora (hidden {}, cold adapters; read probe {:.1f} GB/s on 1 thread, {:.1f} GB/s on 2; "
      "% of read is against the probe of the same thread count)\n\n",
      kHidden, read_gbs, read2_gbs);
  fmt::print("| case | median | min | tokens/s | GB/s | % of read | x naive |\n|---|---|---|---|---|---|---|\n");
  for (const Case& c : cases()) {
    const bench::Measurement* m = bench::find_result(results, c.name);
    if (m == nullptr) continue;
    const double gbs = m->bytes_per_second / 1e9;
    const double probe = c.threads > 1 ? read2_gbs : read_gbs;
    std::string versus;
    if (c.variant == "persona" && c.rank > 1) {
      const std::string naive_name =
          fmt::format("naive/f32/r{}/{}tok_{}ad{}", c.rank, c.tokens, c.distinct, c.threads > 1 ? "/threads:2" : "");
      if (const bench::Measurement* n = bench::find_result(results, naive_name))
        versus = fmt::format("{:.2f}", n->median_seconds / m->median_seconds);
    }
    fmt::print("| {} | {} | {} | {:.0f} | {:.1f} | {:.0f}% | {} |\n", c.name, bench::format_time(m->median_seconds),
               bench::format_time(m->min_seconds),
               m->median_counters.count("tokens_per_second") ? m->median_counters.at("tokens_per_second") : 0.0, gbs,
               probe > 0 ? 100.0 * gbs / probe : 0.0, versus);
  }
  fmt::print(
      "\nNotes: int8/int4 adapters are quantize_lora(module, int8/int4 g32 sym f16): B, quantized along\n"
      "the rank, takes groups of 16 (rank 16) or 8 (rank 8). GB/s counts the distinct adapters' bytes (plus\n"
      "the base weight for base/lora_linear). naive = a per-token loop of two Eigen GEMVs over f32\n"
      "adapters. The plan and the workspace are made once per case, outside the timing, as a server\n"
      "makes them once per batch for every layer.\n\nTargets (1 thread):\n");
  auto median = [&](const std::string& name) {
    const auto* m = bench::find_result(results, name);
    return m ? m->median_seconds : 0.0;
  };
  auto gbs_of = [&](const std::string& name) {
    const auto* m = bench::find_result(results, name);
    return m ? m->bytes_per_second / 1e9 : 0.0;
  };
  for (std::size_t rank : {8, 16, 64}) {
    const std::string name = fmt::format("persona/int4/r{}/64tok_64ad", rank);
    const double share = read_gbs > 0 ? gbs_of(name) / read_gbs : 0.0;
    fmt::print(
        "- gather form, 64 distinct int4 adapters, rank {} >= 60% of read bandwidth: {:.1f} GB/s = {:.0f}% — {}\n",
        rank, gbs_of(name), 100 * share, share >= 0.6 ? "MET" : "NOT MET");
  }
  for (std::size_t rank : {8, 16, 64}) {
    const double speedup = median(fmt::format("naive/f32/r{}/64tok_64ad", rank)) /
                           median(fmt::format("persona/int4/r{}/64tok_64ad", rank));
    fmt::print("- 64 distinct adapters (int4, rank {}) >= 3x the naive loop: {:.2f}x — {}\n", rank, speedup,
               speedup >= 3 ? "MET" : "NOT MET");
  }
  const double base = median("base/f32/r16/1tok_1ad");
  for (const char* f : {"f32", "int4"}) {
    const double overhead = median(fmt::format("lora_linear/{}/r16/1tok_1ad", f)) / base - 1.0;
    fmt::print("- rank-16 {} LoRA decode overhead over the base f32 GEMV <= 10%: {:.1f}% — {}\n", f, 100 * overhead,
               overhead <= 0.10 ? "MET" : "NOT MET");
  }
}

}  // namespace

int main(int argc, char** argv) {
  return bench::run_benchmarks(
      argc, argv,
      {"--benchmark_repetitions=5", "--benchmark_min_time=0.02", "--benchmark_display_aggregates_only=true"},
      register_benchmarks, print_summary);
}
