// persona/model at realistic shapes: random bf16 weights written once in Hugging Face layout (under
// $PERSONA_BENCH_MODELS, default build/bench_models, relative to the working directory) for a Llama-3.2-1B-shaped model
// (hidden 2048, 16 layers, 32/8 heads, ffn 8192, vocab 128256, tied embeddings) and an OLMoE-1B-7B-shaped MoE (64
// experts, top-8, hidden 2048, 16 layers, expert ffn 1024, vocab 50304), loaded through Model::load.
//
// Cases (manual time, medians over repetitions):
//   read/256Mi[/threads:2]                  the read probe: the memory roofline of the same run
//   decode/<model>/<weights>/B1             one decode step of one sequence (context 128)
//   decode/<model>/<weights>/B<n>/A<a>      n sequences, each its own rank-16 int4 adapter (a = n), or none (a = 0)
//   prefill/<model>/<weights>/T512          one 512-token prompt
//   load/<model>/<weights>, read_files/<model>   Model::load and a sequential read of the same files
//   load_file/<model>/int4                  Model::load of the model converted once (convert_model)
// The summary reports decode at batch 1 as a % of the weight-streaming roof (bytes of weights one token
// reads / the read probe's bandwidth), the multi-tenant tax (adapters vs none at the same batch), prefill
// tokens/s and load time as a % of reading the files.
#include "bench_support.hpp"

#include <persona/persona.hpp>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <optional>

namespace persona {
namespace {

namespace fs = std::filesystem;

struct Shape {
  std::string name;
  std::size_t hidden, layers, heads, kv_heads, ffn, vocab;
  std::size_t experts = 0, top_k = 0, expert_ffn = 0;
  bool tied = false;
};

const Shape kLlama{"llama-3.2-1b", 2048, 16, 32, 8, 8192, 128256, 0, 0, 0, true};
const Shape kOlmoe{"olmoe-1b-7b", 2048, 16, 16, 16, 1024, 50304, 64, 8, 1024, false};

std::string model_root() {
  const char* dir = std::getenv("PERSONA_BENCH_MODELS");
  return dir != nullptr ? dir : "build/bench_models";
}

// splitmix64 -> uniform in [-1, 1)
struct Uniform {
  std::uint64_t state;
  float operator()() {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return static_cast<float>(static_cast<double>(z >> 40) * 0x1.0p-23 - 1.0);
  }
};

struct TensorSpec {
  std::string name;
  std::vector<std::size_t> shape;
  float scale;  // uniform in [-scale, scale); norms: 1 +- scale
  bool norm = false;
};

std::vector<TensorSpec> tensors_of(const Shape& s) {
  std::vector<TensorSpec> t;
  const std::size_t H = s.hidden, D = H / s.heads, KV = s.kv_heads * D;
  const auto w = [&](std::string name, std::size_t out, std::size_t in) {
    t.push_back({std::move(name), {out, in}, std::sqrt(3.0f / static_cast<float>(in))});
  };
  const auto norm = [&](std::string name, std::size_t n) { t.push_back({std::move(name), {n}, 0.1f, true}); };
  t.push_back({"model.embed_tokens.weight", {s.vocab, H}, 1.0f});
  for (std::size_t l = 0; l < s.layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    norm(p + "input_layernorm.weight", H);
    norm(p + "post_attention_layernorm.weight", H);
    w(p + "self_attn.q_proj.weight", H, H);
    w(p + "self_attn.k_proj.weight", KV, H);
    w(p + "self_attn.v_proj.weight", KV, H);
    w(p + "self_attn.o_proj.weight", H, H);
    if (s.experts == 0) {
      w(p + "mlp.gate_proj.weight", s.ffn, H);
      w(p + "mlp.up_proj.weight", s.ffn, H);
      w(p + "mlp.down_proj.weight", H, s.ffn);
    } else {
      norm(p + "self_attn.q_norm.weight", D);
      norm(p + "self_attn.k_norm.weight", D);
      w(p + "mlp.gate.weight", s.experts, H);
      for (std::size_t e = 0; e < s.experts; ++e) {
        w(fmt::format("{}mlp.experts.{}.gate_proj.weight", p, e), s.expert_ffn, H);
        w(fmt::format("{}mlp.experts.{}.up_proj.weight", p, e), s.expert_ffn, H);
        w(fmt::format("{}mlp.experts.{}.down_proj.weight", p, e), H, s.expert_ffn);
      }
    }
  }
  norm("model.norm.weight", H);
  if (!s.tied) w("lm_head.weight", s.vocab, H);
  return t;
}

// Writes one safetensors file of bf16 tensors, generating each in chunks (the whole model never sits in
// memory).
void write_shard(const fs::path& path, const std::vector<const TensorSpec*>& tensors, Uniform& uniform) {
  nlohmann::ordered_json header;
  std::size_t offset = 0;
  for (const TensorSpec* t : tensors) {
    std::size_t n = 1;
    for (std::size_t d : t->shape) n *= d;
    header[t->name] = {{"dtype", "BF16"}, {"shape", t->shape}, {"data_offsets", {offset, offset + 2 * n}}};
    offset += 2 * n;
  }
  header["__metadata__"] = {{"format", "pt"}};
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  std::ofstream out(path, std::ios::binary);
  const std::uint64_t length = text.size();
  out.write(reinterpret_cast<const char*>(&length), 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  std::vector<std::uint16_t> chunk(1 << 20);
  for (const TensorSpec* t : tensors) {
    std::size_t n = 1;
    for (std::size_t d : t->shape) n *= d;
    for (std::size_t done = 0; done < n;) {
      const std::size_t m = std::min(chunk.size(), n - done);
      for (std::size_t i = 0; i < m; ++i) {
        const float v = t->norm ? 1.0f + t->scale * uniform() : t->scale * uniform();
        chunk[i] = f32_to_bf16_bits(v);
      }
      out.write(reinterpret_cast<const char*>(chunk.data()), static_cast<std::streamsize>(2 * m));
      done += m;
    }
  }
  PERSONA_CHECK(out.good(), "writing {} failed", path.string());
}

// The model folder, written on first use: shards of at most ~2 GiB with an index.
fs::path model_folder(const Shape& s) {
  const fs::path folder = fs::path(model_root()) / s.name;
  if (fs::exists(folder / "config.json")) return folder;
  fs::create_directories(folder);
  fmt::print(stderr, "bench_model: writing {} (random bf16 weights) ...\n", folder.string());
  const std::vector<TensorSpec> specs = tensors_of(s);
  std::vector<std::vector<const TensorSpec*>> shards(1);
  std::size_t bytes = 0;
  for (const TensorSpec& t : specs) {
    std::size_t n = 2;
    for (std::size_t d : t.shape) n *= d;
    if (bytes + n > (std::size_t{2} << 30) && !shards.back().empty()) {
      shards.emplace_back();
      bytes = 0;
    }
    shards.back().push_back(&t);
    bytes += n;
  }
  Uniform uniform{42};
  nlohmann::ordered_json map;
  for (std::size_t i = 0; i < shards.size(); ++i) {
    const std::string file = fmt::format("model-{:05}-of-{:05}.safetensors", i + 1, shards.size());
    write_shard(folder / file, shards[i], uniform);
    for (const TensorSpec* t : shards[i]) map[t->name] = file;
  }
  std::ofstream(folder / "model.safetensors.index.json") << nlohmann::ordered_json{{"weight_map", map}}.dump(1);
  nlohmann::ordered_json config = {{"architectures", {s.experts == 0 ? "LlamaForCausalLM" : "Qwen3MoeForCausalLM"}},
                                   {"hidden_size", s.hidden},
                                   {"intermediate_size", s.ffn},
                                   {"num_hidden_layers", s.layers},
                                   {"num_attention_heads", s.heads},
                                   {"num_key_value_heads", s.kv_heads},
                                   {"vocab_size", s.vocab},
                                   {"rms_norm_eps", 1e-5},
                                   {"rope_theta", 500000.0},
                                   {"max_position_embeddings", 131072},
                                   {"tie_word_embeddings", s.tied}};
  if (s.experts != 0) {
    config["num_experts"] = s.experts;
    config["num_experts_per_tok"] = s.top_k;
    config["moe_intermediate_size"] = s.expert_ffn;
    config["norm_topk_prob"] = false;
    config["head_dim"] = s.hidden / s.heads;
  }
  std::ofstream(folder / "config.json") << config.dump(1);
  return folder;
}

const char* name_of(WeightFormat f) {
  switch (f) {
    case WeightFormat::f32: return "f32";
    case WeightFormat::bf16: return "bf16";
    case WeightFormat::int8: return "int8";
    default: return "int4";
  }
}

// Loaded models, kept across cases (loading a 7B model takes a while).
const Model& model(const Shape& s, WeightFormat f) {
  static std::map<std::pair<std::string, int>, std::unique_ptr<Model>> models;
  auto& slot = models[{s.name, static_cast<int>(f)}];
  if (!slot) {
    // Only one model at a time: the machine holds ~23 GB.
    models.clear();
    auto& fresh = models[{s.name, static_cast<int>(f)}];
    // The converted model file when load_file made one: the same weights, without quantizing again.
    const fs::path file = model_folder(s).parent_path() / fmt::format("{}-{}.persona", s.name, name_of(f));
    fresh = std::make_unique<Model>(fs::exists(file) ? Model::load(file) : Model::load(model_folder(s), {f}));
    return *fresh;
  }
  return *slot;
}

// Bytes of weights one decode token reads: every dense weight, the k routed experts' share of a MoE
// layer's experts, the lm_head (the embedding row is noise).
double bytes_per_token(const Model& m) {
  const ModelConfig& c = m.config();
  double bytes = static_cast<double>(m.weight_bytes());
  if (c.is_moe()) {
    double expert_bytes = 0;
    for (std::size_t l = 0; l < c.num_layers; ++l) {
      for (const auto& module : m.adaptable_modules(l)) {
        if (module.name.find("experts.") == std::string::npos) continue;
        expert_bytes += static_cast<double>(module.out * module.in);
      }
    }
    // adaptable_modules gives shapes; scale by the format's bytes per weight.
    const double per_weight = m.weight_format() == WeightFormat::bf16   ? 2.0
                              : m.weight_format() == WeightFormat::int8 ? 1.0 + 2.0 / 32
                              : m.weight_format() == WeightFormat::int4 ? 0.5 + 2.0 / 32
                                                                        : 4.0;
    expert_bytes *= per_weight;
    bytes -= expert_bytes * (1.0 - static_cast<double>(c.experts_per_token) / static_cast<double>(c.num_experts));
  }
  // The embedding is read one row per token, not whole, unless it is the lm_head itself (tied, f32 or
  // bf16; tied int8 and int4 models multiply by a quantized copy).
  const double embedding =
      static_cast<double>(c.vocab_size * c.hidden_size) * (m.weight_format() == WeightFormat::f32 ? 4.0 : 2.0);
  const bool embedding_is_lm_head =
      c.tie_word_embeddings && (m.weight_format() == WeightFormat::f32 || m.weight_format() == WeightFormat::bf16);
  if (!embedding_is_lm_head) bytes -= embedding;
  return bytes;
}

// Random rank-16 int4 adapters on the attention projections (and the dense MLP), one per sequence.
std::vector<LoraAdapter> adapters_for(const Model& m, std::size_t count) {
  std::vector<LoraAdapter> out;
  Uniform uniform{7};
  for (std::size_t a = 0; a < count; ++a) {
    LoraAdapter adapter(fmt::format("bench-{}", a), 1);
    for (std::size_t l = 0; l < m.config().num_layers; ++l) {
      for (const auto& module : m.adaptable_modules(l)) {
        if (module.name.find("experts.") != std::string::npos) continue;
        Tensor<float> A({16, module.in}), B({module.out, 16});
        for (float& v : A.span()) v = 0.02f * uniform();
        for (float& v : B.span()) v = 0.02f * uniform();
        adapter.add(
            {l, module.name},
            quantize_lora(LoraModule(LoraMatrix(std::move(A)), LoraMatrix(std::move(B)), 16.0f), QuantSpec{4, 32}));
      }
    }
    out.push_back(std::move(adapter));
  }
  return out;
}

// A decode step for `batch` sequences of context `context` (prefilled untimed), each with its own adapter
// when `adapters` is true; one iteration = one step (then the appended token is rolled back).
void decode_case(benchmark::State& state, const Shape& s, WeightFormat f, std::size_t batch, bool adapters,
                 int threads) {
  ScopedNumThreads scoped(threads);
  const Model& m = model(s, f);
  static std::vector<LoraAdapter> cached_adapters;
  static std::string cached_for;
  const std::string key = fmt::format("{}/{}", s.name, batch);
  if (adapters && cached_for != key) {
    cached_adapters = adapters_for(m, batch);
    cached_for = key;
  }
  constexpr std::size_t kContext = 128;
  PagedKvCache cache(m.kv_cache_config(batch * (kContext / 16 + 2), 16));
  ModelWorkspace workspace;
  std::vector<SequenceId> ids;
  std::vector<const LoraAdapter*> slot_adapters;
  for (std::size_t i = 0; i < batch; ++i) {
    ids.push_back(cache.create_sequence({.tenant = 1}));
    if (adapters) slot_adapters.push_back(&cached_adapters[i]);
  }
  // Prefill the context untimed, all sequences in one step.
  {
    std::vector<std::int32_t> tokens(batch * kContext);
    for (std::size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<std::int32_t>((i * 7919) % s.vocab);
    std::vector<std::size_t> counts(batch, kContext);
    std::vector<std::int32_t> slots;
    for (std::size_t i = 0; i < batch; ++i) {
      cache.append_tokens(ids[i], std::span(tokens).subspan(i * kContext, kContext));
      if (adapters) slots.insert(slots.end(), kContext, static_cast<std::int32_t>(i));
    }
    (void)m.forward({ids, counts, tokens, slots, slot_adapters}, cache, workspace);
  }
  std::vector<std::int32_t> step(batch, 5), slots;
  for (std::size_t i = 0; i < batch && adapters; ++i) slots.push_back(static_cast<std::int32_t>(i));
  const std::vector<std::size_t> counts(batch, 1);
  bench::timed(state, [&] {
    for (const SequenceId id : ids) cache.append_tokens(id, std::span(step).first(1));
    const Tensor<float> logits = m.forward({ids, counts, step, slots, slot_adapters}, cache, workspace);
    benchmark::DoNotOptimize(logits.data());
    for (const SequenceId id : ids) cache.truncate(id, 1);
  });
  state.counters["tokens_per_second"] =
      benchmark::Counter(static_cast<double>(batch), benchmark::Counter::kIsIterationInvariantRate);
  if (batch == 1) state.SetBytesProcessed(static_cast<std::int64_t>(bytes_per_token(m)) * state.iterations());
}

void prefill_case(benchmark::State& state, const Shape& s, WeightFormat f, std::size_t tokens, int threads) {
  ScopedNumThreads scoped(threads);
  const Model& m = model(s, f);
  PagedKvCache cache(m.kv_cache_config(tokens / 16 + 2, 16));
  ModelWorkspace workspace;
  std::vector<std::int32_t> prompt(tokens);
  for (std::size_t i = 0; i < tokens; ++i) prompt[i] = static_cast<std::int32_t>((i * 7919) % s.vocab);
  const std::vector<std::size_t> counts{tokens};
  bench::timed(state, [&] {
    const SequenceId id = cache.create_sequence({.tenant = 1});
    cache.append_tokens(id, prompt);
    const std::vector<SequenceId> ids{id};
    const Tensor<float> logits = m.forward({ids, counts, prompt}, cache, workspace);
    benchmark::DoNotOptimize(logits.data());
    cache.free_sequence(id, 1);
  });
  state.counters["tokens_per_second"] =
      benchmark::Counter(static_cast<double>(tokens), benchmark::Counter::kIsIterationInvariantRate);
}

void load_case(benchmark::State& state, const Shape& s, WeightFormat f) {
  const fs::path folder = model_folder(s);
  bench::timed(state, [&] {
    const Model m = Model::load(folder, {f});
    benchmark::DoNotOptimize(&m);
  });
}

// The model converted once into a persona model file (beside the folder), then loaded from it.
void load_file_case(benchmark::State& state, const Shape& s, WeightFormat f) {
  const fs::path folder = model_folder(s);
  const fs::path file = folder.parent_path() / fmt::format("{}-{}.persona", s.name, name_of(f));
  if (!fs::exists(file)) {
    fmt::print(stderr, "bench_model: converting {} to {} ...\n", folder.string(), file.string());
    (void)convert_model(folder, file, f);
  }
  bench::timed(state, [&] {
    const Model m = Model::load(file);
    benchmark::DoNotOptimize(&m);
  });
}

void read_files_case(benchmark::State& state, const Shape& s) {
  const fs::path folder = model_folder(s);
  std::vector<char> buffer(16 << 20);
  std::size_t total = 0;
  bench::timed(state, [&] {
    total = 0;
    for (const auto& entry : fs::directory_iterator(folder)) {
      if (entry.path().extension() != ".safetensors") continue;
      std::FILE* file = std::fopen(entry.path().c_str(), "rb");
      for (std::size_t n; (n = std::fread(buffer.data(), 1, buffer.size(), file)) > 0;) total += n;
      std::fclose(file);
    }
    benchmark::DoNotOptimize(total);
  });
  state.SetBytesProcessed(static_cast<std::int64_t>(total) * state.iterations());
}

void register_benchmarks() {
  for (const int threads : {1, 2}) {
    bench::add_case(threads == 1 ? "read/256Mi" : "read/256Mi/threads:2",
                    [threads](benchmark::State& st) { bench::run_read_probe(st, threads); });
  }
  for (const Shape* s : {&kLlama, &kOlmoe}) {
    const std::vector<WeightFormat> formats =
        s->experts == 0
            ? std::vector<WeightFormat>{WeightFormat::int4, WeightFormat::int8, WeightFormat::bf16, WeightFormat::f32}
            : std::vector<WeightFormat>{WeightFormat::int4, WeightFormat::int8, WeightFormat::bf16};
    for (const WeightFormat f : formats) {
      const std::string base = fmt::format("{}/{}", s->name, name_of(f));
      bench::add_case("load/" + base, [s, f](benchmark::State& st) { load_case(st, *s, f); });
      if (f == WeightFormat::int4) {
        bench::add_case("load_file/" + base, [s, f](benchmark::State& st) { load_file_case(st, *s, f); });
      }
      for (const int threads : {1, 2}) {
        const std::string suffix = threads == 2 ? "/threads:2" : "";
        bench::add_case(fmt::format("decode/{}/B1{}", base, suffix),
                        [s, f, threads](benchmark::State& st) { decode_case(st, *s, f, 1, false, threads); });
      }
      if (f != WeightFormat::int4) continue;
      for (const std::size_t batch : {8u, 32u}) {
        for (const bool adapted : {false, true}) {
          bench::add_case(fmt::format("decode/{}/B{}/A{}", base, batch, adapted ? batch : 0),
                          [s, f, batch, adapted](benchmark::State& st) { decode_case(st, *s, f, batch, adapted, 1); });
        }
      }
      bench::add_case(fmt::format("prefill/{}/T512", base),
                      [s, f](benchmark::State& st) { prefill_case(st, *s, f, 512, 1); });
    }
    bench::add_case("read_files/" + s->name, [s](benchmark::State& st) { read_files_case(st, *s); });
  }
}

void print_summary(const std::map<std::string, bench::Measurement>& results) {
  const auto* read1 = bench::find_result(results, "read/256Mi");
  const auto* read2 = bench::find_result(results, "read/256Mi/threads:2");
  const double gbs1 = read1 ? read1->bytes_per_second / 1e9 : 0.0, gbs2 = read2 ? read2->bytes_per_second / 1e9 : 0.0;
  fmt::print("\n## bench_model (read probe {:.1f} GB/s on 1 thread, {:.1f} on 2)\n\n", gbs1, gbs2);
  fmt::print("| case | median | min | tokens/s | weight GB/s | % of read roof |\n|---|---|---|---|---|---|\n");
  for (const auto& [name, m] : results) {
    if (!name.starts_with("decode/") && !name.starts_with("prefill/")) continue;
    const double gbs = m.bytes_per_second / 1e9, probe = name.ends_with("threads:2") ? gbs2 : gbs1;
    const double tps = m.median_counters.count("tokens_per_second") ? m.median_counters.at("tokens_per_second") : 0.0;
    fmt::print("| {} | {} | {} | {:.1f} | {} | {} |\n", name, bench::format_time(m.median_seconds),
               bench::format_time(m.min_seconds), tps, gbs > 0 ? fmt::format("{:.1f}", gbs) : "",
               gbs > 0 && probe > 0 ? fmt::format("{:.0f}%", 100.0 * gbs / probe) : "");
  }
  fmt::print("\nTargets (1 thread, medians):\n");
  for (const Shape* s : {&kLlama, &kOlmoe}) {
    for (const char* w : {"int4", "int8"}) {
      if (const auto* m = bench::find_result(results, fmt::format("decode/{}/{}/B1", s->name, w)); m && gbs1 > 0) {
        const double share = m->bytes_per_second / 1e9 / gbs1;
        fmt::print("- {} {} decode at batch 1 >= 70% of the weight-streaming roof: {:.0f}% — {}\n", s->name, w,
                   100 * share, share >= 0.7 ? "MET" : "NOT MET");
      }
    }
    for (const std::size_t batch : {8u, 32u}) {
      const auto* plain = bench::find_result(results, fmt::format("decode/{}/int4/B{}/A0", s->name, batch));
      const auto* adapted = bench::find_result(results, fmt::format("decode/{}/int4/B{}/A{}", s->name, batch, batch));
      if (plain && adapted) {
        const double tax = adapted->median_seconds / plain->median_seconds - 1.0;
        fmt::print(
            "- {} int4 batch {} with {} distinct rank-16 adapters: {:.1f}% slower than no adapter (target <= "
            "10%) — {}\n",
            s->name, batch, batch, 100 * tax, tax <= 0.10 ? "MET" : "NOT MET");
      }
    }
    const auto* files = bench::find_result(results, "read_files/" + s->name);
    for (const char* w : {"int4", "int8", "bf16", "f32"}) {
      const auto* load = bench::find_result(results, fmt::format("load/{}/{}", s->name, w));
      if (load && files) {
        fmt::print("- {} load with {} weights: {} = {:.0f}% of a sequential read of the files ({}, page cache warm)\n",
                   s->name, w, bench::format_time(load->median_seconds),
                   100 * load->median_seconds / files->median_seconds, bench::format_time(files->median_seconds));
      }
      const auto* from_file = bench::find_result(results, fmt::format("load_file/{}/{}", s->name, w));
      if (from_file && files) {
        fmt::print("- {} load of the {} persona model file: {} = {:.0f}% of a sequential read of the checkpoint\n",
                   s->name, w, bench::format_time(from_file->median_seconds),
                   100 * from_file->median_seconds / files->median_seconds);
      }
    }
  }
}

}  // namespace
}  // namespace persona

int main(int argc, char** argv) {
  return persona::bench::run_benchmarks(
      argc, argv,
      {"--benchmark_repetitions=3", "--benchmark_min_time=0.05", "--benchmark_display_aggregates_only=true"},
      persona::register_benchmarks, persona::print_summary);
}
