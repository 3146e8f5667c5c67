// serve_demo: one base model serving many tenants, each with its own int4 LoRA adapter, in one
// continuous-batching loop. What it does and how to read its report: docs/serve_demo.md.
#include "demo_model.hpp"
#include "report.hpp"
#include "workload.hpp"

#include <persona/persona.hpp>

#include <fmt/format.h>
#include <tbb/parallel_for.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <deque>
#include <fstream>
#include <future>
#include <random>

namespace serve_demo {
namespace {
using namespace persona;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// ---- The serving loop ----

using Routes = std::vector<std::vector<std::int32_t>>;  // per position: the experts of each layer

struct Live {
  const Request* request = nullptr;
  double admitted = 0, last_token = 0;
  std::shared_future<AdapterHandle> pending;
  AdapterHandle adapter;
  std::vector<std::int32_t> prompt, generated;
  SequenceId sequence;
  std::size_t computed_from = 0;  // prompt tokens found in the prefix cache
  bool recorded = false;          // a verified request: its logits are kept
  std::vector<std::vector<float>> logits;
  Routes routes;  // when recorded
};

// Keeps the experts that batch token t (of T), at `position` of the request, was routed to in each layer
// (every layer of the demo's model is a MoE layer).
void keep_routes(Routes& routes, const std::vector<std::int32_t>& routed, std::size_t t, std::size_t T,
                 std::size_t position, const ModelConfig& c) {
  if (routes.size() <= position) routes.resize(position + 1);
  auto& kept = routes[position];
  kept.clear();
  const std::size_t k = c.experts_per_token;
  for (std::size_t l = 0; l < c.num_layers; ++l) {
    const auto first = routed.begin() + static_cast<std::ptrdiff_t>((l * T + t) * k);
    kept.insert(kept.end(), first, first + static_cast<std::ptrdiff_t>(k));
  }
}

// Where the time of the forward passes went, in seconds.
struct StageTimes {
  double lora = 0, base_matmul = 0, attention = 0, experts = 0, other = 0;
  void add(const ForwardStats& s) noexcept {
    lora += s.lora_seconds;
    base_matmul += s.base_seconds;
    attention += s.attention_seconds;
    experts += s.experts_seconds;
    other += s.other_seconds;
  }
};

// One step's inputs for Model::forward, kept alive while it runs.
struct Step {
  std::vector<SequenceId> sequences;
  std::vector<std::size_t> token_counts;
  std::vector<std::int32_t> tokens, lora_slots;
  std::vector<const LoraAdapter*> adapters;
  ForwardBatch batch() const { return {sequences, token_counts, tokens, lora_slots, adapters}; }
};

struct Outcome {
  RunReport report;
  std::vector<Live> verified;  // finished requests whose logits were kept
  Routes shared_routes;        // of the system prompt's positions, as first computed
};

std::int32_t argmax(std::span<const float> row) {
  return static_cast<std::int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
}

// Runs the trace. With `registry`, every request uses its tenant's adapter; without, the model's weights
// already hold the one adapter every request uses (the single-tenant case).
Outcome serve(const Options& o, const Model& model, const std::vector<Request>& trace, AdapterRegistry* registry,
              const HnswIndex& memory, const MemoryEmbedder& embedder, const std::vector<std::size_t>& verify_ids) {
  const ModelConfig& c = model.config();
  const std::vector<std::int32_t> system = system_prompt(c.vocab_size);
  const std::size_t max_tokens = kSystemPromptTokens + kMemoryHits * kMemoryTokens + 48 + o.new_tokens;
  PagedKvCache cache(model.kv_cache_config(o.max_batch * ((max_tokens + 15) / 16) + 64));
  ModelWorkspace workspace;
  ForwardStats step_stats;
  Outcome outcome;
  RunReport& r = outcome.report;
  r.label = registry ? "multi-tenant" : "single adapter merged";
  r.kv_blocks = cache.num_blocks();
  StageTimes stages;
  double ann_seconds = 0, registry_seconds = 0;
  std::vector<std::size_t> expert_counts(c.num_layers * c.num_experts, 0);
  // One step through the model: its logits, its stage times and routing recorded.
  const auto forward = [&](const Step& step) {
    Tensor<float> logits = model.forward(step.batch(), cache, workspace, &step_stats);
    stages.add(step_stats);
    const std::size_t T = step.tokens.size(), k = c.experts_per_token;
    for (std::size_t i = 0; i < step_stats.routed_experts.size(); ++i) {
      const std::size_t layer = i / (T * k);
      ++expert_counts[layer * c.num_experts + static_cast<std::size_t>(step_stats.routed_experts[i])];
    }
    return logits;
  };

  const auto t0 = Clock::now();
  double skipped = 0;  // idle trace time jumped over
  const auto now = [&] { return std::chrono::duration<double>(Clock::now() - t0).count() + skipped; };
  std::size_t next = 0, prefetched = 0, done = 0;
  std::deque<Live> loading;
  std::vector<Live> running;
  double last_progress = -1;

  while (done < trace.size()) {
    // Admit what has arrived, up to the batch limit; start each adapter's acquire without waiting.
    if (running.empty() && loading.empty() && next < trace.size() && trace[next].arrival > now()) {
      skipped += trace[next].arrival - now();
    }
    while (next < trace.size() && trace[next].arrival <= now() && running.size() + loading.size() < o.max_batch) {
      Live live;
      live.request = &trace[next++];
      live.admitted = now();
      live.recorded = std::binary_search(verify_ids.begin(), verify_ids.end(), live.request->id);
      if (registry) {
        // In RAM: the switch is a pointer swap. Else the load starts on a worker and the loop goes on.
        const auto start = Clock::now();
        const AdapterRef ref{live.request->tenant, "persona"};
        live.adapter = registry->try_acquire(live.request->tenant, ref);
        if (!live.adapter) live.pending = registry->acquire_async(live.request->tenant, ref);
        const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
        registry_seconds += seconds;
        if (live.adapter) r.switch_ms.push_back(seconds * 1e3);
      }
      loading.push_back(std::move(live));
    }
    // Warm the adapters of the requests queued next (a scheduler knows its waiting queue).
    if (registry && o.prefetch) {
      prefetched = std::max(prefetched, next);
      const auto start = Clock::now();
      const double arrived_by = now();  // only requests that wait in the queue, never future arrivals
      for (; prefetched < std::min(trace.size(), next + o.max_batch) && trace[prefetched].arrival <= arrived_by;
           ++prefetched) {
        registry->prefetch(trace[prefetched].tenant, AdapterRef{trace[prefetched].tenant, "persona"});
      }
      registry_seconds += std::chrono::duration<double>(Clock::now() - start).count();
    }

    // Requests whose adapter is ready: memory lookup, prompt, sequence.
    // Nothing to compute until a load finishes: wait for one rather than spin.
    if (registry && running.empty() && !loading.empty() && !loading.front().adapter) {
      loading.front().pending.wait_for(std::chrono::milliseconds(1));
    }
    Step prefill;
    std::vector<Live> starting;
    for (auto it = loading.begin(); it != loading.end();) {
      if (registry && !it->adapter) {
        if (it->pending.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
          ++it;
          continue;
        }
        it->adapter = it->pending.get();                      // an Error here ends the demo loudly
        r.switch_ms.push_back((now() - it->admitted) * 1e3);  // seen at the next loop turn
      }
      Live live = std::move(*it);
      it = loading.erase(it);
      const auto search_start = Clock::now();
      const auto query = embedder.embed(live.request->user_prompt);
      const auto hits = memory.search(query, kMemoryHits, SearchFilter::only_tenant(live.request->tenant));
      ann_seconds += std::chrono::duration<double>(Clock::now() - search_start).count();
      live.prompt = system;
      for (const Neighbor& hit : hits) {
        PERSONA_CHECK(hit.label / 1000 == live.request->tenant, "memory of tenant {} returned for tenant {}",
                      hit.label / 1000, live.request->tenant);
        const auto tokens = memory_tokens(hit.label, c.vocab_size);
        live.prompt.insert(live.prompt.end(), tokens.begin(), tokens.end());
      }
      live.prompt.insert(live.prompt.end(), live.request->user_prompt.begin(), live.request->user_prompt.end());
      SequenceSpec spec;
      spec.tenant = live.request->tenant;
      spec.adapter = live.adapter.version_id();  // {} without a registry: the base model
      spec.prompt = live.prompt;
      spec.shared_prefix_tokens = kSystemPromptTokens;
      spec.max_tokens = live.prompt.size() + o.new_tokens;
      live.sequence = cache.create_sequence(spec);
      live.computed_from = cache.sequence_info(live.sequence).cached_tokens;
      starting.push_back(std::move(live));
    }
    if (!starting.empty()) {
      for (Live& live : starting) {
        const std::size_t n = live.prompt.size() - live.computed_from;
        prefill.sequences.push_back(live.sequence);
        prefill.token_counts.push_back(n);
        const auto slot = static_cast<std::int32_t>(prefill.adapters.size());
        if (registry) prefill.adapters.push_back(&live.adapter.adapter());
        for (std::size_t p = live.computed_from; p < live.prompt.size(); ++p) {
          prefill.tokens.push_back(live.prompt[p]);
          // The shared system prompt is computed with the base model, so that every tenant can reuse it.
          if (registry) prefill.lora_slots.push_back(p >= kSystemPromptTokens ? slot : kNoLora);
        }
        r.prefill_tokens += n;
        r.cached_prompt_tokens += live.computed_from;
      }
      const auto start = Clock::now();
      const Tensor<float> logits = forward(prefill);
      r.prefill_seconds += std::chrono::duration<double>(Clock::now() - start).count();
      const std::vector<std::int32_t>& routed = step_stats.routed_experts;
      for (std::size_t s = 0, t = 0; s < starting.size(); ++s) {
        for (std::size_t p = starting[s].computed_from; p < starting[s].prompt.size(); ++p, ++t) {
          if (starting[s].recorded) keep_routes(starting[s].routes, routed, t, prefill.tokens.size(), p, c);
          // The shared system prompt is computed once and then comes from the prefix cache.
          if (p < kSystemPromptTokens && (outcome.shared_routes.size() <= p || outcome.shared_routes[p].empty())) {
            keep_routes(outcome.shared_routes, routed, t, prefill.tokens.size(), p, c);
          }
        }
      }
      const double at = now();
      for (std::size_t s = 0; s < starting.size(); ++s) {
        Live& live = starting[s];
        const std::span<const float> row(logits.data() + s * c.vocab_size, c.vocab_size);
        live.generated.push_back(argmax(row));
        if (live.recorded) live.logits.emplace_back(row.begin(), row.end());
        r.first_token_ms.push_back((at - live.request->arrival) * 1e3);
        live.last_token = at;
        running.push_back(std::move(live));
      }
    }

    // One decode step for every running request: each token with its own tenant's adapter.
    std::vector<Live*> decoding;
    for (Live& live : running) {
      if (live.generated.size() < o.new_tokens) decoding.push_back(&live);
    }
    if (!decoding.empty()) {
      Step step;
      std::vector<std::size_t> positions;
      for (Live* live : decoding) {
        const std::int32_t token = live->generated.back();
        positions.push_back(cache.append_tokens(live->sequence, std::span(&token, 1)));
        step.sequences.push_back(live->sequence);
        step.token_counts.push_back(1);
        step.tokens.push_back(token);
        if (registry) {
          step.lora_slots.push_back(static_cast<std::int32_t>(step.adapters.size()));
          step.adapters.push_back(&live->adapter.adapter());
        }
      }
      const auto start = Clock::now();
      const Tensor<float> logits = forward(step);
      r.decode_seconds += std::chrono::duration<double>(Clock::now() - start).count();
      for (std::size_t s = 0; s < decoding.size(); ++s) {
        if (decoding[s]->recorded) {
          keep_routes(decoding[s]->routes, step_stats.routed_experts, s, decoding.size(), positions[s], c);
        }
      }
      r.decode_tokens += decoding.size();
      const double at = now();
      for (std::size_t s = 0; s < decoding.size(); ++s) {
        Live& live = *decoding[s];
        const std::span<const float> row(logits.data() + s * c.vocab_size, c.vocab_size);
        live.generated.push_back(argmax(row));
        if (live.recorded) live.logits.emplace_back(row.begin(), row.end());
        r.token_latency_ms.push_back((at - live.last_token) * 1e3);
        live.last_token = at;
      }
    }
    const KvCacheStats kv_stats = cache.stats();
    if (kv_stats.used_blocks > r.kv_peak_used_blocks) {
      r.kv_peak_used_blocks = kv_stats.used_blocks;
      r.kv_peak_wasted_slots = kv_stats.wasted_slots;
    }
    // Finish: free the sequence, release the adapter.
    for (auto it = running.begin(); it != running.end();) {
      if (it->generated.size() < o.new_tokens) {
        ++it;
        continue;
      }
      cache.free_sequence(it->sequence, it->request->tenant);
      it->adapter = AdapterHandle();
      if (it->recorded) outcome.verified.push_back(std::move(*it));
      it = running.erase(it);
      ++done;
    }
    if (const double t = now(); t - last_progress > 0.1 || done == trace.size()) {
      last_progress = t;
      const int filled = static_cast<int>(30.0 * static_cast<double>(done) / static_cast<double>(trace.size()));
      std::fprintf(stderr, "\r%-22s [%.*s%*s] %zu/%zu requests, %.0f decode tokens/s ", r.label.c_str(), filled,
                   "==============================", 30 - filled, "", done, trace.size(), r.decode_tokens_per_second());
    }
  }
  std::fprintf(stderr, "\n");
  r.requests = trace.size();
  r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  const KvCacheStats kv_stats = cache.stats();
  r.kv_prefix_hit_rate = kv_stats.hit_rate();
  r.expert_load.assign(c.num_experts, 0);
  for (std::size_t i = 0; i < expert_counts.size(); ++i) r.expert_load[i % c.num_experts] += expert_counts[i];
  double adapter_load_seconds = 0;
  if (registry) {
    const AdapterRegistryMetrics m = registry->metrics();
    r.adapter_hits = m.hits;
    r.adapter_misses = m.misses;
    r.adapter_prefetches = m.prefetches;
    r.adapter_prefetch_hits = m.prefetch_hits;
    r.adapter_loads = m.loads;
    r.adapter_evictions = m.evictions;
    r.adapter_bytes_read = static_cast<double>(m.bytes_read);
    adapter_load_seconds = m.load_total_ms / 1e3;
  }
  r.stage_seconds = {{"LoRA apply", stages.lora},
                     {"base matmuls", stages.base_matmul},
                     {"attention", stages.attention},
                     {"routing + experts", stages.experts},
                     {"ANN search", ann_seconds},
                     {"adapter loads (workers)", adapter_load_seconds + registry_seconds},
                     {"norms, RoPE, SwiGLU, embedding", stages.other}};
  return outcome;
}

// ---- Verification: each sampled request again, alone, dense f32, adapter merged ----

Verification verify(const ReferenceWeights& weights, const Outcome& outcome, AdapterStore& store) {
  Verification v;
  // Relative to the largest reference logit: the batched run quantizes activations to int8 for its
  // int8/int4 weight products and the reference does not (measured: up to ~3%).
  v.tolerance = 0.05;
  // Router logits closer than this may be ordered differently by the two runs' rounding (the largest
  // flip seen, once in 256 tokens, was above 0.05).
  v.router_tie = 0.1f;
  const auto routes = [&](const Live& live, std::size_t position) {
    for (const Routes* known : {&live.routes, &outcome.shared_routes}) {
      if (position < known->size() && !(*known)[position].empty())
        return std::span<const std::int32_t>((*known)[position]);
    }
    return std::span<const std::int32_t>();
  };
  for (const Live& live : outcome.verified) {
    ++v.checked;
    const LoraAdapter adapter = store.get(live.request->tenant, "persona");
    ReferenceDecoder reference(weights, &adapter, kSystemPromptTokens, v.router_tie);
    std::vector<float> logits;
    for (std::size_t p = 0; p < live.prompt.size(); ++p) logits = reference.step(live.prompt[p], routes(live, p));
    bool ok = true;
    for (std::size_t step = 0; step < live.logits.size() && ok; ++step) {
      if (step > 0) {  // fed the batched run's tokens
        const std::size_t position = live.prompt.size() + step - 1;
        logits = reference.step(live.generated[step - 1], routes(live, position));
      }
      ++v.steps;
      const std::vector<float>& batched = live.logits[step];
      float largest = 0, worst = 0;
      for (std::size_t i = 0; i < logits.size(); ++i) {
        largest = std::max(largest, std::fabs(logits[i]));
        worst = std::max(worst, std::fabs(logits[i] - batched[i]));
      }
      const double relative = worst / std::max(largest, 1e-6f);
      v.worst_relative_error = std::max(v.worst_relative_error, relative);
      std::vector<float> sorted = logits;
      std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<>());
      const bool near_tie = sorted[0] - sorted[1] <= 2 * worst;  // either token is right within the error
      const bool same_token = argmax(logits) == live.generated[step];
      if (relative > v.tolerance || (!same_token && !near_tie) || reference.routing_disagreements() > 0) {
        ok = false;
        v.failures.push_back(fmt::format(
            "request {} (tenant {}), token {}: max |logit diff| {:.4f} ({:.2f}% of the largest logit), tokens {} "
            "batched vs {} reference, {} routing choices differing beyond the tie margin",
            live.request->id, live.request->tenant, step, worst, 100 * relative, live.generated[step], argmax(logits),
            reference.routing_disagreements()));
      }
    }
    v.followed_routing += reference.followed_routing();
    v.passed += ok ? 1 : 0;
  }
  return v;
}

int run(int argc, char** argv) {
  const Options o = parse(argc, argv);
  if (o.threads > 0) set_num_threads(static_cast<int>(o.threads));
  fs::create_directories(o.out);
  fmt::print("persona {} serve_demo | {} | {} threads\n", PERSONA_VERSION_STRING, cpu_features().to_string(),
             num_threads());

  // The model: written once as a Hugging Face folder, then loaded like any checkpoint.
  const DemoShape shape;
  const fs::path model_dir = o.out / "model";
  auto start = Clock::now();
  const bool wrote = write_demo_model(model_dir, shape);
  const double write_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  start = Clock::now();
  const Model model = Model::load(model_dir, {.weights = kDemoWeights});
  const double load_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const ModelConfig& config = model.config();
  fmt::print(
      "model: {} in {} ({} layers, hidden {}, {} experts top-{} + a shared expert, vocab {}), {}, loaded as "
      "int8 in {:.2f} s ({:.1f} MiB of weights)\n",
      to_string(config.architecture), model_dir.string(), config.num_layers, config.hidden_size, config.num_experts,
      config.experts_per_token, config.vocab_size,
      wrote ? fmt::format("written in {:.1f} s", write_seconds) : std::string("reused"), load_seconds,
      static_cast<double>(model.weight_bytes()) / (1 << 20));
  const ReferenceWeights reference(model_dir);
  const MemoryEmbedder embedder(reference.embedding);
  const std::string model_key = nlohmann::json::parse(std::ifstream(model_dir / "serve_demo.json")).at("model");
  Tenants tenants = prepare_tenants(o, model, model_key, embedder);
  fmt::print("tenants: {} adapters (int{}, ranks 4-32, {:.1f} MiB in RAM in all), {} memory vectors — {} in {:.1f} s\n",
             o.tenants, o.adapter_bits, static_cast<double>(tenants.adapter_bytes) / (1 << 20), tenants.memory->size(),
             tenants.reused ? "reused" : "made", tenants.setup_seconds);

  const std::vector<Request> trace = make_trace(o, config.vocab_size);
  std::vector<std::size_t> verify_ids;
  for (std::size_t i = 0; i < o.verify; ++i) verify_ids.push_back(i * o.requests / o.verify);
  AdapterRegistryConfig registry_config;
  registry_config.ram_budget_bytes = std::max<std::size_t>(tenants.adapter_bytes / 100 * o.ram_budget_percent, 1 << 20);
  AdapterRegistry registry(*tenants.store, registry_config);
  Outcome multi = serve(o, model, trace, &registry, *tenants.memory, embedder, verify_ids);
  multi.report.registry_budget_bytes = static_cast<double>(registry_config.ram_budget_bytes);
  const Verification verification = verify(reference, multi, *tenants.store);

  std::optional<RunReport> merged;
  if (o.tax) {
    const fs::path merged_dir = o.out / "merged_model";
    write_merged_model(model_dir, merged_dir, tenants.store->get(trace.front().tenant, "persona"));
    const Model single = Model::load(merged_dir, {.weights = kDemoWeights});
    merged = serve(o, single, trace, nullptr, *tenants.memory, embedder, {}).report;
  }
  const nlohmann::json setup = {{"model",
                                 {{"architecture", to_string(config.architecture)},
                                  {"layers", config.num_layers},
                                  {"hidden", config.hidden_size},
                                  {"q_heads", config.num_heads},
                                  {"kv_heads", config.num_kv_heads},
                                  {"experts", config.num_experts},
                                  {"top_k", config.experts_per_token},
                                  {"shared_expert_ffn", config.shared_expert_intermediate_size},
                                  {"vocab", config.vocab_size},
                                  {"base_weights", "int8"}}},
                                {"tenants", o.tenants},
                                {"requests", o.requests},
                                {"threads", num_threads()},
                                {"adapter_bits", o.adapter_bits},
                                {"prefetch", o.prefetch},
                                {"new_tokens", o.new_tokens},
                                {"max_batch", o.max_batch},
                                {"cpu", cpu_features().to_string()}};
  write_report(multi.report, merged ? &*merged : nullptr, verification, setup.dump(), o.out);
  if (verification.passed != verification.checked) {
    for (const std::string& f : verification.failures) std::fprintf(stderr, "VERIFICATION FAILED: %s\n", f.c_str());
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace serve_demo

int main(int argc, char** argv) {
  try {
    return serve_demo::run(argc, argv);
  } catch (const std::exception& e) {  // persona::Error and the rest (an unwritable --out, out of memory)
    std::fprintf(stderr, "serve_demo: %s\n", e.what());
    return 1;
  }
}
