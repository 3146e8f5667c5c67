// ModelConfig: what a Hugging Face model folder's config.json (and generation_config.json) says about the
// decoder, for the architectures persona runs:
//   LlamaForCausalLM     Llama 2, 3, 3.1, 3.2: rope_scaling none / linear / llama3, optional biases
//   MistralForCausalLM   sliding-window attention
//   Qwen2ForCausalLM     q/k/v bias, sliding layers past max_window_layers
//   Qwen3ForCausalLM     q/k RMSNorm per head, an explicit head_dim
//   MixtralForCausalLM   8 experts top-2, renormalized
//   Qwen2MoeForCausalLM  routed experts plus a shared expert behind a sigmoid gate
//   Qwen3MoeForCausalLM  norm_topk_prob, decoder_sparse_step / mlp_only_layers
// Both config formats are read: transformers 5's rope_parameters and the older rope_theta + rope_scaling.
// A field that changes the math and that persona does not implement (another rope_type, a quantization
// config, partial rotary embedding, an activation other than SiLU, a field it does not know) is
// Error(unsupported) naming it; fields that only matter for training or for transformers itself are
// ignored (the list: docs/models.md).
#pragma once

#include "persona/core/ops.hpp"
#include "persona/moe/router_config.hpp"

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace persona {

enum class ModelArchitecture { llama, mistral, qwen2, qwen3, mixtral, qwen2_moe, qwen3_moe };

// The Hugging Face class name, e.g. "Qwen3MoeForCausalLM".
std::string_view to_string(ModelArchitecture architecture) noexcept;

struct ModelConfig {
  ModelArchitecture architecture = ModelArchitecture::llama;
  std::size_t vocab_size = 0;
  std::size_t hidden_size = 0;
  std::size_t intermediate_size = 0;  // the dense MLP's (the dense layers of a MoE model)
  std::size_t num_layers = 0;
  std::size_t num_heads = 0;
  std::size_t num_kv_heads = 0;
  std::size_t head_dim = 0;  // explicit, or hidden_size / num_heads
  float rms_norm_eps = 1e-6f;
  RopeConfig rope;
  std::size_t max_position_embeddings = 0;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;  // q/k/v projections have a bias (Qwen2; attention_bias)
  bool o_bias = false;    // o_proj has one (attention_bias of Llama and Qwen3)
  bool mlp_bias = false;  // gate/up/down have one (Llama's mlp_bias)
  bool qk_norm = false;   // RMSNorm over each head of q and k before RoPE (Qwen3)
  // Per layer: the sliding window (0: full attention).
  std::vector<std::size_t> attention_window;

  // Mixture of Experts (0 experts: a dense model).
  std::size_t num_experts = 0;
  std::size_t experts_per_token = 0;
  std::size_t moe_intermediate_size = 0;            // each routed expert's
  std::size_t shared_expert_intermediate_size = 0;  // Qwen2-MoE's shared expert (0: none)
  bool norm_topk_prob = false;                      // the chosen weights renormalized
  std::vector<bool> sparse_layer;                   // per layer: MoE (true) or the dense MLP

  // Token ids that end generation (generation_config.json, else config.json), and the bos id if any.
  std::vector<std::int32_t> eos_token_ids;
  std::optional<std::int32_t> bos_token_id;

  bool is_moe() const noexcept { return num_experts != 0; }
  std::size_t q_width() const noexcept { return num_heads * head_dim; }
  std::size_t kv_width() const noexcept { return num_kv_heads * head_dim; }
  // The routing of the MoE layers (Error(invalid_argument) for a dense model).
  RouterConfig router_config() const;
  // Error(invalid_argument) naming the field for values out of range or contradicting each other.
  void validate() const;
};

// Parses config.json's text (and generation_config.json's, which may be empty). `source` names the
// folder in errors. Error(corrupt_data) for text that is not a JSON object or a field of the wrong type,
// Error(unsupported) for an unknown architecture or a field persona does not implement,
// Error(invalid_argument) for values that validate() refuses.
ModelConfig parse_model_config(std::string_view config_json, std::string_view generation_config_json,
                               std::string_view source = "<memory>");

// Reads <folder>/config.json and, if present, <folder>/generation_config.json. Error(io_error) when
// config.json cannot be read.
ModelConfig read_model_config(const std::filesystem::path& folder);

}  // namespace persona
