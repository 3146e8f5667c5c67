// The serving demo's decoder: Llama-style layers (RMSNorm, RoPE, grouped-query attention over a
// PagedKvCache) whose FFN is a Mixture of Experts (top-k routed SwiGLU experts) next to one dense shared
// SwiGLU expert, with seeded random weights. Every token of a batch carries its own tenant's LoRA adapter
// on q, k, v, o and the shared expert's gate, up and down projections.
//
// Two forward passes: DemoModel::forward runs a batch through persona's kernels (quantized base
// weights, apply_lora per token, paged attention, TopKRouter + moe_ffn); ReferenceDecoder runs one
// request alone, densely, in f32 with its adapter merged into the weights: the demo's check.
#pragma once

#include <persona/persona.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace serve_demo {

// Uniform in [-1, 1) from a counter (splitmix64): fast enough to make the
// weights of 1,000 adapters in seconds.
class UniformSource {
 public:
  explicit UniformSource(std::uint64_t seed) : state_(seed) {}
  std::uint64_t bits() {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  float operator()() { return static_cast<float>(static_cast<double>(bits() >> 40) * 0x1.0p-23 - 1.0); }

 private:
  std::uint64_t state_;
};

struct ModelConfig {
  std::size_t layers = 4, hidden = 512, q_heads = 8, kv_heads = 2, head_dim = 64;
  std::size_t experts = 8, top_k = 2, expert_ffn = 512, shared_ffn = 512, vocab = 4096;
  int weight_bits = 8;  // base weights: 8 or 4 (group 32)
  float rms_eps = 1e-5f;
  std::uint32_t seed = 7;
};

// The adapted linear layers of each decoder layer, as PEFT names them.
inline constexpr std::array<const char*, 7> kAdaptedModules{"self_attn.q_proj",
                                                            "self_attn.k_proj",
                                                            "self_attn.v_proj",
                                                            "self_attn.o_proj",
                                                            "mlp.shared_expert.gate_proj",
                                                            "mlp.shared_expert.up_proj",
                                                            "mlp.shared_expert.down_proj"};

// Where the time of a forward pass goes, in seconds.
struct StageTimes {
  double lora = 0, base_matmul = 0, attention = 0, experts = 0, other = 0;
  double total() const noexcept { return lora + base_matmul + attention + experts + other; }
  StageTimes& operator+=(const StageTimes& o) noexcept;
};

// One decoder layer's weights; `linear[i]` is kAdaptedModules[i] ([out, in]).
struct LayerWeights {
  persona::Tensor<float> attn_norm, ffn_norm;
  std::array<persona::WeightMatrix, 7> linear;
  persona::Tensor<float> router;  // [experts, hidden] f32
  std::vector<persona::ExpertFfn> experts;
};

// A batch for DemoModel::forward: each sequence brings its next tokens (all of one sequence together,
// sequences in order); every token has its position and its LoRA slot (kNoLora: base model only).
struct ForwardBatch {
  std::vector<persona::SequenceId> sequences;
  std::vector<std::size_t> token_counts;  // per sequence
  std::vector<std::int32_t> tokens;
  std::vector<std::size_t> positions;
  std::vector<std::int32_t> lora_slots;
  std::vector<const persona::LoraAdapter*> slot_adapters;  // the adapter of each slot
  bool decode = false;                                     // one token per sequence: the decode kernel
};

class DemoModel {
 public:
  explicit DemoModel(const ModelConfig& config);
  const ModelConfig& config() const noexcept { return config_; }
  const LayerWeights& layer(std::size_t i) const { return layers_.at(i); }
  const persona::Tensor<float>& embedding() const noexcept { return embedding_; }
  const persona::Tensor<float>& final_norm() const noexcept { return final_norm_; }
  const persona::WeightMatrix& lm_head() const noexcept { return lm_head_; }
  persona::RouterConfig router_config() const;
  persona::KvCacheConfig kv_config(std::size_t num_blocks) const;

  // A copy whose adapted layers hold `adapter` merged in (dequantized, merged in f32, quantized again to
  // the base format): the single-tenant best case the demo measures the multi-tenant tax against.
  DemoModel merged_with(const persona::LoraAdapter& adapter) const;

  // Runs the batch through every layer, writing its K/V into `cache` (whose appends the caller made),
  // and returns the logits of each sequence's last token: [sequences, vocab]. Adds its time to `times`
  // and its expert routing to `expert_counts` ([layers * experts]).
  // With `routed`, also the experts each token was routed to: [layers, tokens, top_k].
  persona::Tensor<float> forward(const ForwardBatch& batch, persona::PagedKvCache& cache, StageTimes& times,
                                 std::vector<std::size_t>& expert_counts, std::vector<std::int32_t>* routed = nullptr);

 private:
  DemoModel(const DemoModel& other);  // the weights; fresh workspaces
  ModelConfig config_;
  persona::Tensor<float> embedding_, final_norm_;
  std::vector<LayerWeights> layers_;
  persona::WeightMatrix lm_head_;
  persona::TopKRouter router_;
  persona::LoraWorkspace lora_workspace_;
  persona::MoeWorkspace moe_workspace_;
  persona::Routing routing_;
  persona::ExpertPlan plan_;
};

// One request, alone and densely: f32 weights dequantized from the model's, the tenant's adapter merged
// into them (merge_lora); the first `shared_prefix` positions use the base weights, as the batched run
// computes a shared system prompt with the base model so that every tenant can reuse its K/V.
//
// Routing is the one discontinuity: where the k-th and (k+1)-th router logits of a layer lie within
// `router_tie`, the rounding differences between the two runs may pick different experts. There the
// reference follows the batched run's choice when it is given (and counts it); a different choice at a
// wider margin is a disagreement.
class ReferenceDecoder {
 public:
  ReferenceDecoder(const DemoModel& model, const persona::LoraAdapter* adapter, std::size_t shared_prefix,
                   float router_tie);
  // Feeds one token at the next position; returns its logits [vocab]. batched_experts: the batched
  // run's experts for this token, [layers, top_k], or empty.
  std::vector<float> step(std::int32_t token, std::span<const std::int32_t> batched_experts = {});
  std::size_t followed_routing() const noexcept { return followed_; }  // (token, layer) ties followed
  std::size_t routing_disagreements() const noexcept { return disagreements_; }

 private:
  struct Layer {
    std::array<persona::Tensor<float>, 7> base, merged;
    std::vector<std::array<persona::Tensor<float>, 3>> experts;  // gate, up, down
    std::vector<float> keys, values;                             // [positions, kv_heads * head_dim]
  };
  const DemoModel& model_;
  std::size_t shared_prefix_ = 0, position_ = 0;
  float router_tie_ = 0;
  std::size_t followed_ = 0, disagreements_ = 0;
  std::vector<Layer> layers_;
  persona::Tensor<float> lm_head_;
};

}  // namespace serve_demo
