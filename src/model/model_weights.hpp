// The weights of a loaded Model, as the forward reads them (model_load.cpp fills them, model_forward.cpp
// runs them). Internal: the public face is persona/model/model.hpp.
#pragma once

#include "persona/model/model.hpp"
#include "persona/moe/moe_ffn.hpp"
#include "persona/moe/top_k_router.hpp"
#include "persona/quant/weight_matrix.hpp"

#include <array>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace persona::detail {

// A linear layer y = x W^T + b, and the module name LoRA adapters address it by.
struct Linear {
  WeightMatrix weight;      // [out, in]
  std::vector<float> bias;  // [out], or empty
  std::string module;       // e.g. "self_attn.q_proj"
};

// A SwiGLU MLP down(silu(gate x) * up x): the dense MLP, or the shared expert.
struct Mlp {
  Linear gate, up, down;
};

struct DecoderLayer {
  Tensor<float> input_norm, post_attention_norm;
  Tensor<float> q_norm, k_norm;  // [head_dim] (Qwen3), or empty
  Linear q, k, v, o;
  std::size_t window = 0;  // sliding window, 0: none
  bool sparse = false;     // MoE (else the dense mlp)
  Mlp mlp;                 // the dense MLP
  // MoE: the router [E, hidden], the routed experts (as moe_ffn takes them) with their module names
  // (gate, up, down), and Qwen2-MoE's shared expert behind its sigmoid gate [1, hidden].
  Tensor<float> router;
  std::vector<ExpertFfn> experts;
  std::vector<std::array<std::string, 3>> expert_modules;
  // Other names adapters may use for them: Mixtral's experts are "block_sparse_moe.experts.<e>.w1/w3/w2" in
  // transformers 4 and per-expert PEFT files, "mlp.experts.<e>.gate_proj/up_proj/down_proj" as the PEFT
  // reader names what it splits from transformers 5's fused experts. Empty when there is one name.
  std::vector<std::array<std::string, 3>> expert_aliases;
  std::optional<Mlp> shared_expert;
  Tensor<float> shared_expert_gate;
};

}  // namespace persona::detail

namespace persona {

struct Model::Weights {
  ModelConfig config;
  WeightFormat format = WeightFormat::f32;
  WeightMatrix embedding;  // [vocab, hidden]: f32, or bf16 for the other formats
  Tensor<float> final_norm;
  // The output projection; empty when tied and f32 or bf16 (the forward multiplies by the embedding).
  std::optional<WeightMatrix> lm_head;
  std::vector<detail::DecoderLayer> layers;
  std::optional<TopKRouter> router;

  // LoRA's map of the linear layers (index_linears): per layer, `linears_per_layer` of them in the
  // forward's order (q, k, v, o; gate, up, down of the dense MLP or the shared expert; then each routed
  // expert's gate, up, down), found by (layer, module name or alias). The names view the layers' strings.
  struct LinearShape {
    std::size_t out = 0, in = 0;
  };
  std::size_t linears_per_layer = 0;
  std::map<std::pair<std::size_t, std::string_view>, std::size_t> linear_by_name;  // -> index in its layer
  std::vector<LinearShape> linear_shapes;  // [layer * linears_per_layer + index]; {0, 0}: none there
};

namespace detail {
// Fills the LoRA map above once the layers are built (model_forward.cpp, which owns the order).
void index_linears(Model::Weights& w);
}  // namespace detail

}  // namespace persona
