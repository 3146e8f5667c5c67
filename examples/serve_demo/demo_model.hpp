// The serving demo's model: a small Qwen2-MoE (grouped-query attention with q/k/v bias, 8 routed SwiGLU
// experts top-2 next to a shared expert behind a sigmoid gate) with seeded random weights, written once
// as a Hugging Face folder and served through persona/model like any checkpoint. Every tenant's adapter
// covers q, k, v, o and the shared expert's gate, up and down projections.
//
// The check: ReferenceDecoder runs one request alone, densely, in f32, from the same folder's tensors,
// with its adapter merged into them (merge_lora) — no persona/model code on its path.
#pragma once

#include <persona/persona.hpp>

#include <array>
#include <cstdint>
#include <filesystem>
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

struct DemoShape {
  std::size_t layers = 4, hidden = 512, heads = 8, kv_heads = 2, head_dim = 64;
  std::size_t experts = 8, top_k = 2, expert_ffn = 512, shared_ffn = 512, vocab = 4096;
  std::uint32_t seed = 7;
};

// The base weights as the demo serves them: int8, groups of 32 (persona's format for WeightFormat::int8).
inline constexpr persona::WeightFormat kDemoWeights = persona::WeightFormat::int8;

// The adapted linear layers of each decoder layer, as PEFT names them.
inline constexpr std::array<const char*, 7> kAdaptedModules{"self_attn.q_proj",
                                                            "self_attn.k_proj",
                                                            "self_attn.v_proj",
                                                            "self_attn.o_proj",
                                                            "mlp.shared_expert.gate_proj",
                                                            "mlp.shared_expert.up_proj",
                                                            "mlp.shared_expert.down_proj"};

// Writes the demo's model into `folder` as a Hugging Face Qwen2MoeForCausalLM checkpoint (config.json,
// generation_config.json, model.safetensors in f32) unless it already holds this shape and seed; returns
// whether it wrote. Each linear layer's weights lie on the int8 grid they are served in (quantized and
// dequantized once here, and checked to come back unchanged) and the embedding on bf16's (as the int8
// format holds it): the served weights equal the checkpoint's, so the reference check measures the
// serving path and not weight rounding.
bool write_demo_model(const std::filesystem::path& folder, const DemoShape& shape);

// A copy of the model folder `from` in `to` with `adapter` merged into the layers it adapts (in f32, then
// back onto the int8 grid): the single-tenant best case the demo measures the multi-tenant tax against.
void write_merged_model(const std::filesystem::path& from, const std::filesystem::path& to,
                        const persona::LoraAdapter& adapter);

// The checkpoint's tensors in f32, read once and shared by every ReferenceDecoder.
struct ReferenceWeights {
  struct Layer {
    persona::Tensor<float> input_norm, post_attention_norm, router, shared_gate;
    std::array<persona::Tensor<float>, 7> linear;  // kAdaptedModules[i], [out, in]
    std::array<persona::Tensor<float>, 3> qkv_bias;
    std::vector<std::array<persona::Tensor<float>, 3>> experts;  // gate, up, down
  };
  persona::ModelConfig config;
  persona::Tensor<float> embedding, final_norm, lm_head;
  std::vector<Layer> layers;

  explicit ReferenceWeights(const std::filesystem::path& folder);
};

// One request, alone and densely, with the tenant's adapter merged into its layers; the first
// `shared_prefix` positions use the base weights, as the batched run computes a shared system prompt with
// the base model so that every tenant can reuse its K/V.
//
// Routing is the one discontinuity: where the k-th and (k+1)-th router logits of a layer lie within
// `router_tie`, the rounding differences between the two runs may pick different experts. There the
// reference follows the batched run's choice when it is given (and counts it); a different choice at a
// wider margin is a disagreement.
class ReferenceDecoder {
 public:
  ReferenceDecoder(const ReferenceWeights& weights, const persona::LoraAdapter* adapter, std::size_t shared_prefix,
                   float router_tie);
  // Feeds one token at the next position; returns its logits [vocab]. batched_experts: the batched
  // run's experts for this token, [layers, top_k], or empty.
  std::vector<float> step(std::int32_t token, std::span<const std::int32_t> batched_experts = {});
  std::size_t followed_routing() const noexcept { return followed_; }  // (token, layer) ties followed
  std::size_t routing_disagreements() const noexcept { return disagreements_; }

 private:
  struct Layer {
    std::array<persona::Tensor<float>, 7> merged;  // the adapted layers, adapter merged in
    std::vector<float> keys, values;               // [positions, kv_heads * head_dim]
  };
  const ReferenceWeights& weights_;
  std::size_t shared_prefix_ = 0, position_ = 0;
  float router_tie_ = 0;
  std::size_t followed_ = 0, disagreements_ = 0;
  std::vector<Layer> layers_;
};

}  // namespace serve_demo
