// bench_kv: paged decode attention (32 query heads over 8 KV heads, head dim 128; block size 16, blocks of
// the batch interleaved across the pool) against the same kernel on contiguous KV (one block per sequence)
// and against the read probe, in the same run. Each case owns enough layers that the KV it reads per call
// (a different layer each iteration) is streamed from well beyond the last-level cache. Then the block
// pool's allocate/release/touch, and the memory waste of 1,000 sequences of random length.
#include "bench_support.hpp"

#include <persona/persona.hpp>

#include "kv/block_pool.hpp"

#include <benchmark/benchmark.h>
#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace {

using namespace persona;
namespace bench = persona::bench;

Tensor<float> bench_random(Shape shape) {
  std::mt19937 rng(static_cast<std::uint32_t>(shape.numel()));
  std::normal_distribution<float> normal;
  Tensor<float> t(shape);
  for (float& v : t.span()) v = normal(rng);
  return t;
}

constexpr std::size_t kQHeads = 32, kKvHeads = 8, kHeadDim = 128, kPagedBlock = 16;

struct DecodeCase {
  std::size_t batch, context;
  DType storage;
  KvLayout layout;
  bool paged;
  int threads;
  std::string name() const {
    return fmt::format("decode/{}/{}/{}/b{}/ctx{}{}", paged ? "paged" : "contiguous", name_of(storage),
                       layout == KvLayout::nhd ? "nhd" : "hnd", batch, context, threads == 2 ? "/threads:2" : "");
  }
  std::string partner() const { return DecodeCase{batch, context, storage, layout, !paged, threads}.name(); }
};

// KV bytes one decode call reads: every position's K and V row of every KV head (and int8 scales).
std::size_t kv_bytes(const DecodeCase& c) {
  const std::size_t row = kHeadDim * size_of(c.storage) + (c.storage == DType::i8 ? sizeof(float) : 0);
  return 2 * c.batch * c.context * kKvHeads * row;
}

struct DecodeFixture {
  std::string key;
  std::unique_ptr<PagedKvCache> cache;
  std::vector<SequenceId> ids;
};

// One fixture at a time (the largest holds 1 GiB of f32 KV): kept while consecutive runs (repetitions, the
// 2-thread run) share the key, rebuilt when it changes.
DecodeFixture& fixture(const DecodeCase& c) {
  static DecodeFixture f;
  const std::string key =
      fmt::format("{}/{}/{}/{}/{}", c.paged, name_of(c.storage), static_cast<int>(c.layout), c.batch, c.context);
  if (f.key == key) return f;
  f = DecodeFixture{};
  const std::size_t layers = std::max<std::size_t>(1, (4 * bench::last_level_cache_bytes()) / kv_bytes(c) + 1);
  const std::size_t block = c.paged ? kPagedBlock : c.context;
  KvCacheConfig config{layers, kKvHeads, kHeadDim, block, 0, 0, c.storage, c.layout};
  config.num_blocks = c.batch * ((c.context + block - 1) / block);
  f.cache = std::make_unique<PagedKvCache>(config);
  for (std::size_t i = 0; i < c.batch; ++i) f.ids.push_back(f.cache->create_sequence({0, {i, 1}, {}, 0, c.context}));
  // Appended round-robin in uneven steps: each sequence's blocks scatter over the pool.
  constexpr std::size_t kMaxStep = 48;
  std::mt19937 rng(7);
  Tensor<float> rows = bench_random({kMaxStep, kKvHeads, kHeadDim});
  std::vector<std::int32_t> tokens(kMaxStep, 1);
  std::vector<std::size_t> done(c.batch, 0);
  for (bool more = true; more;) {
    more = false;
    for (std::size_t i = 0; i < c.batch; ++i) {
      const std::size_t step = std::min<std::size_t>(c.context - done[i], 1 + rng() % kMaxStep);
      if (step == 0) continue;
      more = true;
      f.cache->append_tokens(f.ids[i], std::span(tokens).first(step));
      const TensorView<const float> kv(rows.data(), Shape{step, kKvHeads, kHeadDim});
      for (std::size_t l = 0; l < layers; ++l) f.cache->write_kv(f.ids[i], l, kv, kv);
      done[i] += step;
    }
  }
  f.key = key;
  return f;
}

void run_decode(benchmark::State& state, const DecodeCase& c) {
  ScopedNumThreads threads(c.threads);
  DecodeFixture& f = fixture(c);
  const Tensor<float> q = bench_random({c.batch, kQHeads, kHeadDim});
  Tensor<float> out({c.batch, kQHeads, kHeadDim});
  const std::size_t layers = f.cache->config().layers;
  std::size_t layer = 0;
  bench::timed(state, [&] {
    paged_decode_attention(*f.cache, layer, f.ids, q, out, AttentionConfig{kQHeads});
    layer = (layer + 1) % layers;
  });
  state.SetBytesProcessed(static_cast<std::int64_t>(kv_bytes(c)) * static_cast<std::int64_t>(state.iterations()));
}

// ---- Block pool ---------------------------------------------------------------------------------------
constexpr std::size_t kPoolBlocks = 1 << 20;

// Allocate every block, then release every one: ns per operation.
void run_pool_allocate_release(benchmark::State& state) {
  detail::BlockPool pool(kPoolBlocks);
  std::vector<BlockId> blocks(kPoolBlocks);
  bench::timed(state, [&] {
    for (BlockId& b : blocks) b = pool.allocate().block;
    for (std::size_t i = kPoolBlocks; i-- > 0;) pool.release(blocks[i]);
  });
  state.SetItemsProcessed(static_cast<std::int64_t>(2 * kPoolBlocks) * static_cast<std::int64_t>(state.iterations()));
}

// Touch: a prefix-cache hit revives a cached block (unlinking it from the middle of the LRU list) and the
// release puts it back at the most recent end; blocks visited in random order.
void run_pool_touch(benchmark::State& state) {
  detail::BlockPool pool(kPoolBlocks);
  std::vector<BlockId> order(kPoolBlocks);
  for (BlockId& b : order) {
    b = pool.allocate().block;
    pool.set_cacheable(b, true);
  }
  for (const BlockId b : order) pool.release(b);
  std::shuffle(order.begin(), order.end(), std::mt19937(3));
  bench::timed(state, [&] {
    for (const BlockId b : order) {
      pool.retain(b);
      pool.release(b);
    }
  });
  state.SetItemsProcessed(static_cast<std::int64_t>(2 * kPoolBlocks) * static_cast<std::int64_t>(state.iterations()));
}

// ---- Prefix cache -------------------------------------------------------------------------------------
constexpr std::size_t kPrefixBlocks = 128, kPrefixTenants = 64;

// A 2048-token prompt (128 blocks of 16, declared public) is cached once; each call creates a sequence with
// it for one of 64 tenants, then frees it: 127 blocks found (hash, then the exact check of parent context,
// key and tokens), retained and released with the per-tenant charge, and one block allocated for the
// last token. Against pool/touch, the bare block-pool retain and release of the same number of blocks.
void run_prefix_hit(benchmark::State& state) {
  constexpr std::size_t kBlock = 16;
  PagedKvCache cache(KvCacheConfig{1, 1, 1, kBlock, 4 * kPrefixBlocks});
  std::vector<std::int32_t> prompt(kPrefixBlocks * kBlock);
  for (std::size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<std::int32_t>(i * 7 % 32000);
  const SequenceId first =
      cache.create_sequence({.tenant = 1, .prompt = prompt, .shared_prefix_tokens = prompt.size()});
  Tensor<float> kv({prompt.size(), 1, 1});
  cache.write_kv(first, 0, kv, kv);
  std::size_t call = 0, cached = 0;
  bench::timed(state, [&] {
    const TenantId tenant = 2 + call++ % kPrefixTenants;
    const SequenceId s =
        cache.create_sequence({.tenant = tenant, .prompt = prompt, .shared_prefix_tokens = prompt.size()});
    cached = cache.sequence_info(s).cached_tokens;
    cache.free_sequence(s, tenant);
  });
  if (cached != (kPrefixBlocks - 1) * kBlock) state.SkipWithError("the prompt was not found in the cache");
  state.SetItemsProcessed(static_cast<std::int64_t>(kPrefixBlocks - 1) * static_cast<std::int64_t>(state.iterations()));
}

// ---- Memory waste -------------------------------------------------------------------------------------
struct Waste {
  std::size_t block_size;
  double paged, reserved;  // slots wasted: paged, and a max-length reservation per sequence
};

Waste measure_waste(std::size_t block_size) {
  constexpr std::size_t kSequences = 1000, kMaxLength = 4096;
  PagedKvCache cache(KvCacheConfig{1, 1, 1, block_size, kSequences * (kMaxLength / block_size), 0, DType::f32});
  std::mt19937 rng(11);
  std::uniform_int_distribution<std::size_t> length(1, kMaxLength);
  std::vector<std::int32_t> tokens(kMaxLength, 5);
  std::size_t total = 0;
  for (std::size_t i = 0; i < kSequences; ++i) {
    const std::size_t n = length(rng);
    total += n;
    const SequenceId id = cache.create_sequence({i, {}});
    cache.append_tokens(id, std::span(tokens).first(n));
  }
  return Waste{block_size, cache.stats().waste(),
               1.0 - static_cast<double>(total) / static_cast<double>(kSequences * kMaxLength)};
}

std::vector<DecodeCase>& decode_cases() {
  static std::vector<DecodeCase> all;
  return all;
}

void register_benchmarks() {
  for (int threads : {1, 2}) {
    bench::add_case(threads == 1 ? "read/256Mi" : "read/256Mi/threads:2",
                    [threads](benchmark::State& s) { bench::run_read_probe(s, threads); });
  }
  for (KvLayout layout : {KvLayout::nhd, KvLayout::hnd}) {
    for (DType storage : {DType::f32, DType::i8}) {
      for (std::size_t context : {512, 4096}) {
        for (std::size_t batch : {1, 4, 16, 32}) {
          for (bool paged : {true, false}) {
            for (int threads : {1, 2}) {
              const DecodeCase c{batch, context, storage, layout, paged, threads};
              decode_cases().push_back(c);
              bench::add_case(c.name(), [c](benchmark::State& s) { run_decode(s, c); });
            }
          }
        }
      }
    }
  }
  bench::add_case("pool/allocate_release", run_pool_allocate_release);
  bench::add_case("pool/touch", run_pool_touch);
  bench::add_case("prefix/hit_free", run_prefix_hit);
}

void print_summary(const std::map<std::string, bench::Measurement>& results) {
  const auto* read1 = bench::find_result(results, "read/256Mi");
  const auto* read2 = bench::find_result(results, "read/256Mi/threads:2");
  const double probe1 = read1 ? read1->bytes_per_second / 1e9 : 0.0,
               probe2 = read2 ? read2->bytes_per_second / 1e9 : 0.0;
  fmt::print(
      "\n## bench_kv: paged decode attention, {} query heads over {} KV heads, head dim {}, block {} "
      "(read probe {:.1f} GB/s on 1 thread, {:.1f} on 2)\n\n",
      kQHeads, kKvHeads, kHeadDim, kPagedBlock, probe1, probe2);
  fmt::print("| case | median | min | KV GB/s | % of read | paged / contiguous |\n|---|---|---|---|---|---|\n");
  double worst_ratio = 0.0, worst_share = 1e9;
  std::string worst_ratio_case, worst_share_case;
  for (const DecodeCase& c : decode_cases()) {
    if (!c.paged) continue;
    const auto* m = bench::find_result(results, c.name());
    const auto* contiguous = bench::find_result(results, c.partner());
    if (m == nullptr) continue;
    const double gbs = m->bytes_per_second / 1e9, probe = c.threads == 2 ? probe2 : probe1;
    const double share = probe > 0 ? gbs / probe : 0.0;
    const double ratio = contiguous ? m->median_seconds / contiguous->median_seconds : 0.0;
    fmt::print("| {} | {} | {} | {:.1f} | {:.0f}% | {:.3f} |\n", c.name(), bench::format_time(m->median_seconds),
               bench::format_time(m->min_seconds), gbs, 100.0 * share, ratio);
    if (c.threads == 1 && ratio > worst_ratio) {
      worst_ratio = ratio;
      worst_ratio_case = c.name();
    }
    if (c.threads == 1 && share < worst_share) {
      worst_share = share;
      worst_share_case = c.name();
    }
  }
  fmt::print("\n## bench_kv: block pool ({} blocks)\n\n| case | median per operation | min |\n|---|---|---|\n",
             kPoolBlocks);
  double worst_op = 0.0;
  for (const char* name : {"pool/allocate_release", "pool/touch"}) {
    if (const auto* m = bench::find_result(results, name)) {
      const double per_op = m->median_seconds / static_cast<double>(2 * kPoolBlocks);
      worst_op = std::max(worst_op, per_op);
      fmt::print("| {} | {} | {} |\n", name, bench::format_time(per_op),
                 bench::format_time(m->min_seconds / static_cast<double>(2 * kPoolBlocks)));
    }
  }
  if (const auto* m = bench::find_result(results, "prefix/hit_free")) {
    const auto* touch = bench::find_result(results, "pool/touch");
    const double per_block = m->median_seconds / static_cast<double>(kPrefixBlocks - 1);
    const double touch_op = touch ? 2.0 * touch->median_seconds / static_cast<double>(2 * kPoolBlocks) : 0.0;
    fmt::print(
        "\n## bench_kv: prefix-cache hit, {} cached blocks of 16 created and freed by one of {} tenants\n\n"
        "| case | median per call | per hit block | pool retain + release | ratio |\n|---|---|---|---|---|\n"
        "| prefix/hit_free | {} | {} | {} | {:.1f}x |\n",
        kPrefixBlocks - 1, kPrefixTenants, bench::format_time(m->median_seconds), bench::format_time(per_block),
        bench::format_time(touch_op), touch_op > 0 ? per_block / touch_op : 0.0);
  }
  fmt::print("\n## bench_kv: memory waste, 1,000 sequences of uniform random length 1..4096\n\n");
  fmt::print("| block size | paged: slots wasted | reserving 4096 per sequence |\n|---|---|---|\n");
  double waste16 = 0.0;
  for (std::size_t block : {8, 16, 32}) {
    const Waste w = measure_waste(block);
    if (block == 16) waste16 = w.paged;
    fmt::print("| {} | {:.2f}% | {:.1f}% |\n", block, 100.0 * w.paged, 100.0 * w.reserved);
  }
  fmt::print("\nTargets (1 thread, medians):\n");
  if (!worst_ratio_case.empty()) {
    fmt::print("- paged <= 1.10x contiguous, worst case {}: {:.3f}x — {}\n", worst_ratio_case, worst_ratio,
               worst_ratio <= 1.10 ? "MET" : "NOT MET");
    fmt::print("- KV bytes/s >= 60% of the read probe, worst case {}: {:.0f}% — {}\n", worst_share_case,
               100.0 * worst_share, worst_share >= 0.60 ? "MET" : "NOT MET");
  }
  if (worst_op > 0.0) {
    fmt::print("- block allocate/release/touch < 50 ns: worst {} — {}\n", bench::format_time(worst_op),
               worst_op < 50e-9 ? "MET" : "NOT MET");
  }
  fmt::print("- memory waste at block 16 (report; vLLM reports < 4%): {:.2f}%\n", 100.0 * waste16);
}

}  // namespace

int main(int argc, char** argv) {
  return bench::run_benchmarks(
      argc, argv,
      {"--benchmark_repetitions=5", "--benchmark_min_time=0.05", "--benchmark_display_aggregates_only=true"},
      register_benchmarks, print_summary);
}
