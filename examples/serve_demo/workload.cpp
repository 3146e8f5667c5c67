#include "workload.hpp"

#include <fmt/format.h>
#include <tbb/parallel_for.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <future>
#include <random>

namespace serve_demo {
using namespace persona;
namespace fs = std::filesystem;
namespace {

[[noreturn]] void usage_error(const std::string& what) {
  std::fprintf(stderr, "serve_demo: %s\nRun serve_demo --help for the flags.\n", what.c_str());
  std::exit(2);
}

std::size_t parse_count(const std::string& flag, const std::string& value, std::size_t low, std::size_t high) {
  std::size_t n = 0;
  const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
  if (ec != std::errc() || end != value.data() + value.size() || n < low || n > high) {
    usage_error(fmt::format("{} takes a whole number from {} to {}, not '{}'", flag, low, high, value));
  }
  return n;
}

// ---- Tenants: adapters in an AdapterStore, memories in an HnswIndex, both made once and reused ----

std::size_t adapter_rank(TenantId tenant) {
  constexpr std::array<std::size_t, 5> kRanks{4, 8, 16, 24, 32};
  return kRanks[(tenant * 2654435761u) % kRanks.size()];
}

// A tenant's adapter, quantized: A and B uniform with the variances of 1/in and 0.09/rank (the
// adapter moves each adapted output by about 0.3 of its base's spread), alpha = rank.
LoraAdapter make_adapter(const Model& model, TenantId tenant, int bits) {
  UniformSource uniform(kSeed * 1000003ull + tenant);
  const std::size_t rank = adapter_rank(tenant);
  LoraAdapter adapter("persona", tenant);
  for (std::size_t l = 0; l < model.config().num_layers; ++l) {
    const std::vector<Model::AdaptableModule> modules = model.adaptable_modules(l);
    for (std::size_t i = 0; i < kAdaptedModules.size(); ++i) {
      const auto w = std::find_if(modules.begin(), modules.end(),
                                  [&](const Model::AdaptableModule& m) { return m.name == kAdaptedModules[i]; });
      PERSONA_CHECK(w != modules.end(), "the model has no {} in layer {}", kAdaptedModules[i], l);
      Tensor<float> a({rank, w->in}), b({w->out, rank});
      const float sqrt3 = std::sqrt(3.0f);
      const float a_range = sqrt3 / std::sqrt(static_cast<float>(w->in));
      const float b_range = sqrt3 * 0.3f / std::sqrt(static_cast<float>(rank));
      for (float& v : a.span()) v = a_range * uniform();
      for (float& v : b.span()) v = b_range * uniform();
      adapter.add({l, kAdaptedModules[i]},
                  LoraModule(LoraMatrix(std::move(a)), LoraMatrix(std::move(b)), static_cast<float>(rank)));
    }
  }
  return quantize_lora(adapter, QuantSpec{bits, 32});
}

}  // namespace

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    const auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage_error(fmt::format("{} needs a value", flag));
      return argv[++i];
    };
    if (flag == "--help" || flag == "-h") {
      std::printf(
          "serve_demo: one base model, many tenants' LoRA adapters, one continuous-batching loop.\n\n"
          "  --tenants N       tenants, each with its own adapter and memory (default 1000)\n"
          "  --requests N      requests in the trace (default 192)\n"
          "  --threads N       worker threads (default: all cores)\n"
          "  --adapter-bits B  adapter quantization: 4 or 8 (default 4)\n"
          "  --ram-budget P    adapter RAM budget, %% of all tenants' adapter bytes (default 5)\n"
          "  --verify N        requests recomputed alone in f32 with merged weights (default 8)\n"
          "  --no-prefetch     do not warm adapters of queued requests ahead of use\n"
          "  --no-tax          skip the single-adapter comparison run\n"
          "  --out DIR         adapters, memory index and reports (default serve_demo_out)\n"
          "  --help            this text\n");
      std::exit(0);
    } else if (flag == "--tenants") {
      o.tenants = parse_count(flag, value(), 1, 100000);
    } else if (flag == "--requests") {
      o.requests = parse_count(flag, value(), 1, 1000000);
    } else if (flag == "--threads") {
      o.threads = parse_count(flag, value(), 1, 1024);
    } else if (flag == "--adapter-bits") {
      o.adapter_bits = static_cast<int>(parse_count(flag, value(), 4, 8));
      if (o.adapter_bits != 4 && o.adapter_bits != 8) usage_error("--adapter-bits takes 4 or 8");
    } else if (flag == "--ram-budget") {
      o.ram_budget_percent = parse_count(flag, value(), 1, 100);
    } else if (flag == "--verify") {
      o.verify = parse_count(flag, value(), 0, 1000);
    } else if (flag == "--no-prefetch") {
      o.prefetch = false;
    } else if (flag == "--no-tax") {
      o.tax = false;
    } else if (flag == "--out") {
      o.out = value();
    } else {
      usage_error(fmt::format("unknown flag '{}'", flag));
    }
  }
  o.verify = std::min(o.verify, o.requests);
  return o;
}

// The tokens of memory item `label` (tenant * 1000 + item), and the vector the index holds for it.
std::array<std::int32_t, kMemoryTokens> memory_tokens(VectorLabel label, std::size_t vocab) {
  UniformSource source(label * 7919u + 17u);
  std::array<std::int32_t, kMemoryTokens> tokens{};
  for (auto& t : tokens) t = static_cast<std::int32_t>(source.bits() % vocab);
  return tokens;
}

MemoryEmbedder::MemoryEmbedder(const Tensor<float>& embedding)
    : embedding_(embedding), projection_({kMemoryDim, embedding.dim(1)}) {
  std::mt19937 rng(kSeed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (float& v : projection_.span()) v = normal(rng);
}

std::vector<float> MemoryEmbedder::embed(std::span<const std::int32_t> tokens) const {
  const std::size_t H = embedding_.dim(1);
  std::vector<float> mean(H, 0.0f), out(kMemoryDim);
  for (std::int32_t t : tokens) {
    for (std::size_t i = 0; i < H; ++i) mean[i] += embedding_.data()[static_cast<std::size_t>(t) * H + i];
  }
  matmul(TensorView<const float>(mean.data(), {1, H}), projection_, TensorView<float>(out.data(), {1, kMemoryDim}),
         Transpose::yes);
  return out;
}

Tenants prepare_tenants(const Options& o, const Model& model, const std::string& model_key,
                        const MemoryEmbedder& embedder) {
  const auto start = std::chrono::steady_clock::now();
  Tenants t;
  // What the cached setup was made with; "format" goes up when the index file's format does (2: the XXH3
  // checksum), and the adapter files' version is part of the key.
  const nlohmann::json want = {{"format", 2},
                               {"adapter_format", kPersonaAdapterVersion},
                               {"tenants", o.tenants},
                               {"adapter_bits", o.adapter_bits},
                               {"memories", o.memories},
                               {"seed", kSeed},
                               {"model", model_key}};
  const fs::path manifest = o.out / "tenants.json", store_root = o.out / "adapters", index_path = o.out / "memory.hnsw";
  nlohmann::json have;
  if (std::ifstream in(manifest); in) have = nlohmann::json::parse(in, nullptr, false);
  t.reused = have.is_object() && have.value("setup", nlohmann::json()) == want && fs::exists(index_path);
  if (t.reused) {
    t.store = std::make_unique<AdapterStore>(store_root);
    t.memory = std::make_unique<HnswIndex>(HnswIndex::load(index_path, LoadMode::map));
    t.adapter_bytes = have.at("adapter_bytes").get<std::size_t>();
  } else {
    fs::remove_all(store_root);
    fs::remove(manifest);
    t.store = std::make_unique<AdapterStore>(store_root);
    // The memory index builds on a thread of its own while the adapters are made (quantized on every
    // core) and written one by one (each put fsyncs its file and folder).
    auto memory = std::async(std::launch::async, [&] {
      HnswConfig config{.dim = kMemoryDim, .metric = Metric::cosine, .M = 8, .ef_construction = 32, .ef_search = 64};
      auto index = std::make_unique<HnswIndex>(config);
      std::vector<VectorLabel> labels;
      std::vector<TenantId> owners;
      Tensor<float> vectors({o.tenants * o.memories, kMemoryDim});
      for (TenantId tenant = 1; tenant <= o.tenants; ++tenant) {
        for (std::size_t j = 0; j < o.memories; ++j) {
          const VectorLabel label = tenant * 1000 + j;
          const auto v = embedder.embed(memory_tokens(label, model.config().vocab_size));
          std::copy(v.begin(), v.end(), vectors.data() + labels.size() * kMemoryDim);
          labels.push_back(label);
          owners.push_back(tenant);
        }
      }
      index->add(labels, vectors, owners);
      return index;
    });
    constexpr std::size_t kChunk = 32;
    for (std::size_t first = 1; first <= o.tenants; first += kChunk) {
      std::vector<LoraAdapter> made(std::min(kChunk, o.tenants + 1 - first));
      tbb::parallel_for(std::size_t{0}, made.size(),
                        [&](std::size_t i) { made[i] = make_adapter(model, first + i, o.adapter_bits); });
      for (const LoraAdapter& adapter : made) {
        t.adapter_bytes += adapter.bytes();
        t.store->put(adapter);
      }
      std::fprintf(stderr, "\rwriting adapters %zu/%zu, building the memory index (%zu vectors)",
                   first + made.size() - 1, o.tenants, o.tenants * o.memories);
    }
    t.memory = memory.get();
    t.memory->save(index_path);
    std::ofstream(manifest) << nlohmann::json{{"setup", want}, {"adapter_bytes", t.adapter_bytes}}.dump(2);
    std::fprintf(stderr, "\r%80s\r", "");
  }
  t.setup_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return t;
}

// ---- The trace ----

std::vector<Request> make_trace(const Options& o, std::size_t vocab) {
  std::mt19937_64 rng(kSeed);
  // Zipf (s = 1) over a random order of the tenants.
  std::vector<TenantId> order(o.tenants);
  for (std::size_t i = 0; i < o.tenants; ++i) order[i] = i + 1;
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<double> weights(o.tenants);
  for (std::size_t i = 0; i < o.tenants; ++i) weights[i] = 1.0 / static_cast<double>(i + 1);
  std::discrete_distribution<std::size_t> zipf(weights.begin(), weights.end());
  std::exponential_distribution<double> gap(o.rate);
  std::uniform_int_distribution<std::size_t> length(16, 48);
  std::vector<Request> trace(o.requests);
  double clock = 0;
  for (std::size_t i = 0; i < o.requests; ++i) {
    trace[i].id = i;
    trace[i].tenant = order[zipf(rng)];
    trace[i].arrival = clock += gap(rng);
    trace[i].user_prompt.resize(length(rng));
    for (auto& t : trace[i].user_prompt) t = static_cast<std::int32_t>(rng() % vocab);
  }
  return trace;
}

std::vector<std::int32_t> system_prompt(std::size_t vocab) {
  std::mt19937 rng(kSeed + 1);
  std::vector<std::int32_t> tokens(kSystemPromptTokens);
  for (auto& t : tokens) t = static_cast<std::int32_t>(rng() % vocab);
  return tokens;
}

}  // namespace serve_demo
