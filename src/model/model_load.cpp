// Model::load: every tensor the architecture implies is read from the source (a checkpoint folder or a
// persona model file) with its shape checked, in the chosen weight format, and every tensor the source
// holds is accounted for.
#include "model/hf_weight_source.hpp"
#include "model/model_file_source.hpp"
#include "model/model_weights.hpp"
#include "model/weight_source.hpp"
#include "persona/core/error.hpp"
#include "persona/model/checkpoint.hpp"
#include "persona/quant/quantize.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <set>
#include <tuple>

namespace persona {
namespace detail {
namespace {

void load_experts(WeightSource& source, const ModelConfig& c, const std::string& prefix, DecoderLayer& layer) {
  const std::size_t E = c.num_experts, H = c.hidden_size, F = c.moe_intermediate_size;
  const bool mixtral = c.architecture == ModelArchitecture::mixtral;
  // Module names as PEFT addresses per-expert checkpoints, whatever the layout on disk.
  const std::string moe_block = mixtral ? "block_sparse_moe." : "mlp.";
  const std::array<std::string, 3> projections = mixtral
                                                     ? std::array<std::string, 3>{"w1", "w3", "w2"}
                                                     : std::array<std::string, 3>{"gate_proj", "up_proj", "down_proj"};
  layer.router = source.tensor(prefix + moe_block + "gate.weight", {E, H});
  layer.experts.resize(E);
  layer.expert_modules.resize(E);
  for (std::size_t e = 0; e < E; ++e) {
    const std::string expert = fmt::format("{}experts.{}.", moe_block, e);
    for (std::size_t p = 0; p < 3; ++p) layer.expert_modules[e][p] = expert + projections[p];
    if (mixtral) {
      layer.expert_aliases.push_back({fmt::format("mlp.experts.{}.gate_proj", e),
                                      fmt::format("mlp.experts.{}.up_proj", e),
                                      fmt::format("mlp.experts.{}.down_proj", e)});
    }
    ExpertFfn& ffn = layer.experts[e];
    ffn.gate = source.matrix(prefix + expert + projections[0] + ".weight", F, H);
    ffn.up = source.matrix(prefix + expert + projections[1] + ".weight", F, H);
    ffn.down = source.matrix(prefix + expert + projections[2] + ".weight", H, F);
  }
  if (c.shared_expert_intermediate_size != 0) {
    const std::size_t S = c.shared_expert_intermediate_size;
    Mlp shared;
    for (const auto& [linear, module, out, in] : {std::tuple{&shared.gate, "mlp.shared_expert.gate_proj", S, H},
                                                  std::tuple{&shared.up, "mlp.shared_expert.up_proj", S, H},
                                                  std::tuple{&shared.down, "mlp.shared_expert.down_proj", H, S}}) {
      linear->module = module;
      linear->weight = source.matrix(prefix + module + ".weight", out, in);
    }
    layer.shared_expert = std::move(shared);
    layer.shared_expert_gate = source.tensor(prefix + "mlp.shared_expert_gate.weight", {1, H});
  }
}

Linear linear(WeightSource& source, const std::string& prefix, const std::string& module, std::size_t out,
              std::size_t in, bool bias) {
  Linear l;
  l.module = module;
  l.weight = source.matrix(prefix + module + ".weight", out, in);
  if (bias) {
    const Tensor<float> b = source.tensor(prefix + module + ".bias", {out});
    l.bias.assign(b.data(), b.data() + out);
  }
  return l;
}

}  // namespace

void build_weights(Model::Weights& w, WeightSource& source) {
  const ModelConfig& c = w.config;
  const std::size_t H = c.hidden_size, D = c.head_dim;
  // The embedding is f32 with f32 weights, else bf16 (in place when the file's is): a row gather needs no
  // quantized format, and bf16 halves what the vocabulary costs.
  w.embedding = source.embedding("model.embed_tokens.weight", c.vocab_size, H);
  w.final_norm = source.tensor("model.norm.weight", {H});
  if (!c.tie_word_embeddings) {
    w.lm_head = source.matrix("lm_head.weight", c.vocab_size, H);
  } else {
    w.lm_head = source.tied_lm_head(c.vocab_size, H);
  }
  for (std::size_t l = 0; l < c.num_layers; ++l) {
    const std::string prefix = fmt::format("model.layers.{}.", l);
    DecoderLayer layer;
    layer.input_norm = source.tensor(prefix + "input_layernorm.weight", {H});
    layer.post_attention_norm = source.tensor(prefix + "post_attention_layernorm.weight", {H});
    layer.q = linear(source, prefix, "self_attn.q_proj", c.q_width(), H, c.qkv_bias);
    layer.k = linear(source, prefix, "self_attn.k_proj", c.kv_width(), H, c.qkv_bias);
    layer.v = linear(source, prefix, "self_attn.v_proj", c.kv_width(), H, c.qkv_bias);
    layer.o = linear(source, prefix, "self_attn.o_proj", H, c.q_width(), c.o_bias);
    if (c.qk_norm) {
      layer.q_norm = source.tensor(prefix + "self_attn.q_norm.weight", {D});
      layer.k_norm = source.tensor(prefix + "self_attn.k_norm.weight", {D});
    }
    layer.window = c.attention_window[l];
    layer.sparse = c.is_moe() && c.sparse_layer[l];
    if (layer.sparse) {
      load_experts(source, c, prefix, layer);
    } else {
      const std::size_t F = c.intermediate_size;
      layer.mlp.gate = linear(source, prefix, "mlp.gate_proj", F, H, c.mlp_bias);
      layer.mlp.up = linear(source, prefix, "mlp.up_proj", F, H, c.mlp_bias);
      layer.mlp.down = linear(source, prefix, "mlp.down_proj", H, F, c.mlp_bias);
    }
    w.layers.push_back(std::move(layer));
  }
  source.finish();
  if (c.is_moe()) w.router.emplace(c.router_config());
  index_linears(w);
}

}  // namespace detail

Model::Model() : weights_(std::make_unique<Weights>()) {}
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;
Model::~Model() = default;

Model Model::load(const std::filesystem::path& path, const ModelLoadOptions& options) {
  Model model;
  Weights& w = *model.weights_;
  std::error_code ec;
  if (std::filesystem::is_regular_file(path, ec)) {
    detail::load_model_file(w, path, options);
    return model;
  }
  w.config = read_model_config(path);
  w.format = options.weights.value_or(WeightFormat::f32);
  const Checkpoint checkpoint = Checkpoint::open(path);
  detail::HfWeightSource source(checkpoint, w.format);
  detail::build_weights(w, source);
  return model;
}

const ModelConfig& Model::config() const noexcept { return weights_->config; }
WeightFormat Model::weight_format() const noexcept { return weights_->format; }

std::size_t Model::weight_bytes() const noexcept {
  const Weights& w = *weights_;
  const auto linear = [](const detail::Linear& l) { return l.weight.bytes() + l.bias.size() * sizeof(float); };
  const auto mlp = [&](const detail::Mlp& m) { return linear(m.gate) + linear(m.up) + linear(m.down); };
  std::size_t total = w.embedding.bytes() + w.final_norm.numel() * sizeof(float);
  if (w.lm_head) total += w.lm_head->bytes();
  for (const detail::DecoderLayer& l : w.layers) {
    total += (l.input_norm.numel() + l.post_attention_norm.numel() + l.q_norm.numel() + l.k_norm.numel() +
              l.router.numel() + l.shared_expert_gate.numel()) *
             sizeof(float);
    total += linear(l.q) + linear(l.k) + linear(l.v) + linear(l.o);
    if (!l.sparse) total += mlp(l.mlp);
    for (const ExpertFfn& e : l.experts) total += e.bytes();
    if (l.shared_expert) total += mlp(*l.shared_expert);
  }
  return total;
}

std::size_t Model::mapped_weight_bytes() const noexcept {
  const Weights& w = *weights_;
  const auto mapped = [](const WeightMatrix& m) -> std::size_t {
    if (const Bf16Matrix* b = m.bf16()) return b->in_place() ? b->bytes() : 0;
    if (const QuantizedMatrix* q = m.quantized_matrix()) return q->in_place() ? q->bytes() : 0;
    return 0;
  };
  const auto mlp = [&](const detail::Mlp& m) {
    return mapped(m.gate.weight) + mapped(m.up.weight) + mapped(m.down.weight);
  };
  std::size_t total = mapped(w.embedding) + (w.lm_head ? mapped(*w.lm_head) : 0);
  for (const detail::DecoderLayer& l : w.layers) {
    total += mapped(l.q.weight) + mapped(l.k.weight) + mapped(l.v.weight) + mapped(l.o.weight);
    if (!l.sparse) total += mlp(l.mlp);
    for (const ExpertFfn& e : l.experts) total += mapped(e.gate) + mapped(e.up) + mapped(e.down);
    if (l.shared_expert) total += mlp(*l.shared_expert);
  }
  return total;
}

KvCacheConfig Model::kv_cache_config(std::size_t num_blocks, std::size_t block_size, DType storage) const {
  KvCacheConfig kv;
  kv.layers = weights_->config.num_layers;
  kv.kv_heads = weights_->config.num_kv_heads;
  kv.head_dim = weights_->config.head_dim;
  kv.block_size = block_size;
  kv.num_blocks = num_blocks;
  kv.storage = storage;
  return kv;
}

std::vector<Model::AdaptableModule> Model::adaptable_modules(std::size_t layer) const {
  const Weights& w = *weights_;
  PERSONA_CHECK_CODE(out_of_range, layer < w.layers.size(), "layer {} of a model with {} layers", layer,
                     w.layers.size());
  const detail::DecoderLayer& l = w.layers[layer];
  std::vector<AdaptableModule> modules;
  const auto add = [&](const detail::Linear& linear) {
    modules.push_back({linear.module, linear.weight.rows(), linear.weight.cols()});
  };
  for (const detail::Linear* linear : {&l.q, &l.k, &l.v, &l.o}) add(*linear);
  if (!l.sparse) {
    for (const detail::Linear* linear : {&l.mlp.gate, &l.mlp.up, &l.mlp.down}) add(*linear);
  }
  for (std::size_t e = 0; e < l.experts.size(); ++e) {
    const ExpertFfn& ffn = l.experts[e];
    modules.push_back({l.expert_modules[e][0], ffn.gate.rows(), ffn.gate.cols()});
    modules.push_back({l.expert_modules[e][1], ffn.up.rows(), ffn.up.cols()});
    modules.push_back({l.expert_modules[e][2], ffn.down.rows(), ffn.down.cols()});
  }
  if (l.shared_expert) {
    for (const detail::Linear* linear : {&l.shared_expert->gate, &l.shared_expert->up, &l.shared_expert->down}) {
      add(*linear);
    }
  }
  return modules;
}

}  // namespace persona
