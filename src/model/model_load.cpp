// Model::load: every tensor the architecture implies is read from the checkpoint with its shape checked,
// converted to the chosen weight format, and every tensor of the checkpoint is accounted for.
#include "model/model_weights.hpp"
#include "persona/core/error.hpp"
#include "persona/model/checkpoint.hpp"
#include "persona/quant/quantize.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <set>

namespace persona {
namespace {

constexpr const char* kFunction = "Model::load";

// Reads tensors by name, checking shapes, and remembers which it read.
class TensorSource {
 public:
  TensorSource(const Checkpoint& checkpoint, WeightFormat format) : checkpoint_(checkpoint), format_(format) {}

  // The tensor `name`, checked to have `shape` and a float dtype, and marked read.
  const SafetensorsTensor& checked(const std::string& name, const std::vector<std::size_t>& shape) {
    if (!checkpoint_.contains(name)) {
      PERSONA_THROW_AT(kFunction, corrupt_data, "{}: tensor '{}' is missing (expected shape [{}])",
                       checkpoint_.folder().string(), name, fmt::join(shape, ", "));
    }
    const SafetensorsTensor& t = checkpoint_.tensor(name);
    if (t.shape != shape) {
      PERSONA_THROW_AT(kFunction, shape_mismatch, "{}: tensor '{}' in {} has shape [{}]; config.json implies [{}]",
                       checkpoint_.folder().string(), name, checkpoint_.file_of(name), fmt::join(t.shape, ", "),
                       fmt::join(shape, ", "));
    }
    if (t.dtype != SafetensorsDType::F32 && t.dtype != SafetensorsDType::F16 && t.dtype != SafetensorsDType::BF16) {
      PERSONA_THROW_AT(kFunction, corrupt_data, "{}: tensor '{}' in {} is {}; expected F32, F16 or BF16",
                       checkpoint_.folder().string(), name, checkpoint_.file_of(name), to_string(t.dtype));
    }
    read_.insert(name);
    return t;
  }

  Tensor<float> read(const std::string& name, const std::vector<std::size_t>& shape) {
    (void)checked(name, shape);
    return checkpoint_.read_f32(name);
  }

  std::vector<float> read_vector(const std::string& name, std::size_t n) {
    const Tensor<float> t = read(name, {n});
    return {t.data(), t.data() + n};
  }

  // Rows [first, first + rows) of matrix `index` of the tensor `name` of shape `shape` ([out, in], or
  // [count, R, in] for fused experts), in the chosen format: bf16 views the file's bytes in place when they
  // are bf16; int8 and int4 quantize in groups of 32 inputs, or of 16 or 8 where the input count is not a
  // multiple of 32 (real models' always is; tiny test models' may not be).
  WeightMatrix matrix(const std::string& name, const std::vector<std::size_t>& shape, std::size_t index = 0,
                      std::size_t first = 0, std::size_t rows = 0) {
    const SafetensorsTensor& t = checked(name, shape);
    const std::size_t cols = shape.back(), per_matrix = shape.size() == 3 ? shape[1] : shape[0];
    if (rows == 0) rows = per_matrix;
    const std::size_t offset = (index * per_matrix + first) * cols;
    if (format_ == WeightFormat::bf16 && t.dtype == SafetensorsDType::BF16) {
      return WeightMatrix(Bf16Matrix(t.data.subspan(offset * 2, rows * cols * 2), rows, cols, checkpoint_.owner_of(name)));
    }
    // A fused experts tensor is sliced 2 E or E times: read it once.
    if (cached_name_ != name) {
      cached_ = checkpoint_.read_f32(name);
      cached_name_ = name;
    }
    Tensor<float> w({rows, cols});
    std::copy_n(cached_.data() + offset, rows * cols, w.data());
    return convert(std::move(w), name);
  }

  WeightMatrix convert(Tensor<float> w, std::string_view name) const {
    if (format_ == WeightFormat::f32) return WeightMatrix(std::move(w));
    if (format_ == WeightFormat::bf16) return WeightMatrix(Bf16Matrix::from_f32(w));
    const int bits = format_ == WeightFormat::int8 ? 8 : 4;
    for (const std::size_t group : {32u, 16u, 8u}) {
      const QuantSpec spec{bits, group};
      if (w.dim(1) % group != 0 || group % tile_traits(bits).columns_per_tile != 0) continue;
      return WeightMatrix(quantize(w, spec));
    }
    PERSONA_THROW_AT(kFunction, unsupported, "{}: tensor '{}' has {} inputs, not a multiple of 8: it cannot be held as int{}",
                     checkpoint_.folder().string(), name, w.dim(1), bits);
  }

  detail::Linear linear(const std::string& prefix, const std::string& module, std::size_t out, std::size_t in,
                        bool bias) {
    detail::Linear l;
    l.module = module;
    l.weight = matrix(prefix + module + ".weight", {out, in});
    if (bias) l.bias = read_vector(prefix + module + ".bias", out);
    return l;
  }

  bool contains(const std::string& name) const { return checkpoint_.contains(name); }
  void mark_read(const std::string& name) { read_.insert(name); }

  // Tensors of the checkpoint no part of the model read: Error naming them (transformers' rotary
  // inv_freq buffers, which older checkpoints carry, excepted).
  void refuse_unread() const {
    std::vector<std::string> extra;
    for (const std::string& name : checkpoint_.names()) {
      if (read_.contains(name) || name.ends_with(".rotary_emb.inv_freq")) continue;
      extra.push_back(name);
    }
    if (extra.empty()) return;
    const std::size_t shown = std::min<std::size_t>(extra.size(), 5);
    PERSONA_THROW_AT(kFunction, corrupt_data,
                     "{}: {} tensor(s) are not part of the architecture config.json describes: {}{}",
                     checkpoint_.folder().string(), extra.size(),
                     fmt::join(std::vector<std::string>(extra.begin(), extra.begin() + shown), ", "),
                     extra.size() > shown ? ", ..." : "");
  }

 private:
  const Checkpoint& checkpoint_;
  WeightFormat format_;
  std::string cached_name_;
  Tensor<float> cached_;
  std::set<std::string, std::less<>> read_;
};

void load_experts(TensorSource& source, const ModelConfig& c, const std::string& prefix, detail::DecoderLayer& layer) {
  const std::size_t E = c.num_experts, H = c.hidden_size, F = c.moe_intermediate_size;
  const bool mixtral = c.architecture == ModelArchitecture::mixtral;
  // Module names as PEFT addresses per-expert checkpoints, whatever the layout on disk.
  const std::string moe_block = mixtral ? "block_sparse_moe." : "mlp.";
  const std::array<std::string, 3> projections =
      mixtral ? std::array<std::string, 3>{"w1", "w3", "w2"} : std::array<std::string, 3>{"gate_proj", "up_proj", "down_proj"};
  const std::string fused = prefix + "mlp.experts.gate_up_proj";
  const bool is_fused = source.contains(fused);
  layer.router = source.read(prefix + (is_fused ? "mlp." : moe_block) + "gate.weight", {E, H});
  layer.experts.resize(E);
  layer.expert_modules.resize(E);
  const std::string fused_down = prefix + "mlp.experts.down_proj";
  for (std::size_t e = 0; e < E; ++e) {
    const std::string expert = fmt::format("{}experts.{}.", moe_block, e);
    for (std::size_t p = 0; p < 3; ++p) layer.expert_modules[e][p] = expert + projections[p];
    if (mixtral) {
      layer.expert_aliases.push_back({fmt::format("mlp.experts.{}.gate_proj", e), fmt::format("mlp.experts.{}.up_proj", e),
                                      fmt::format("mlp.experts.{}.down_proj", e)});
    }
    ExpertFfn& ffn = layer.experts[e];
    if (is_fused) {
      ffn.gate = source.matrix(fused, {E, 2 * F, H}, e, 0, F);
      ffn.up = source.matrix(fused, {E, 2 * F, H}, e, F, F);
      ffn.down = source.matrix(fused_down, {E, H, F}, e);
    } else {
      ffn.gate = source.matrix(prefix + expert + projections[0] + ".weight", {F, H});
      ffn.up = source.matrix(prefix + expert + projections[1] + ".weight", {F, H});
      ffn.down = source.matrix(prefix + expert + projections[2] + ".weight", {H, F});
    }
  }
  if (c.shared_expert_intermediate_size != 0) {
    const std::size_t S = c.shared_expert_intermediate_size;
    detail::Mlp shared;
    shared.gate = source.linear(prefix, "mlp.shared_expert.gate_proj", S, H, false);
    shared.up = source.linear(prefix, "mlp.shared_expert.up_proj", S, H, false);
    shared.down = source.linear(prefix, "mlp.shared_expert.down_proj", H, S, false);
    layer.shared_expert = std::move(shared);
    layer.shared_expert_gate = source.read(prefix + "mlp.shared_expert_gate.weight", {1, H});
  }
}

}  // namespace

Model::Model() : weights_(std::make_unique<Weights>()) {}
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;
Model::~Model() = default;

Model Model::load(const std::filesystem::path& folder, const ModelLoadOptions& options) {
  Model model;
  Weights& w = *model.weights_;
  w.config = read_model_config(folder);
  w.format = options.weights;
  const ModelConfig& c = w.config;
  const Checkpoint checkpoint = Checkpoint::open(folder);
  TensorSource source(checkpoint, options.weights);
  const std::size_t H = c.hidden_size, D = c.head_dim;

  // The embedding is f32 with f32 weights, else bf16 (in place when the file's is): a row gather needs no
  // quantized format, and bf16 halves what the vocabulary costs.
  const bool f32_embedding = options.weights == WeightFormat::f32;
  {
    TensorSource embedding_source(checkpoint, f32_embedding ? WeightFormat::f32 : WeightFormat::bf16);
    w.embedding = embedding_source.matrix("model.embed_tokens.weight", {c.vocab_size, H});
    source.mark_read("model.embed_tokens.weight");
  }
  w.final_norm = source.read("model.norm.weight", {H});
  if (!c.tie_word_embeddings) {
    w.lm_head = source.matrix("lm_head.weight", {c.vocab_size, H});
  } else {
    // Some tied checkpoints store the copy too; transformers ties it to the embedding regardless.
    if (source.contains("lm_head.weight")) source.mark_read("lm_head.weight");
    // f32 and bf16 multiply by the embedding itself; int8 and int4 need a quantized copy.
    if (options.weights == WeightFormat::int8 || options.weights == WeightFormat::int4) {
      w.lm_head = source.convert(checkpoint.read_f32("model.embed_tokens.weight"), "model.embed_tokens.weight");
    }
  }
  for (std::size_t l = 0; l < c.num_layers; ++l) {
    const std::string prefix = fmt::format("model.layers.{}.", l);
    detail::DecoderLayer layer;
    layer.input_norm = source.read(prefix + "input_layernorm.weight", {H});
    layer.post_attention_norm = source.read(prefix + "post_attention_layernorm.weight", {H});
    layer.q = source.linear(prefix, "self_attn.q_proj", c.q_width(), H, c.qkv_bias);
    layer.k = source.linear(prefix, "self_attn.k_proj", c.kv_width(), H, c.qkv_bias);
    layer.v = source.linear(prefix, "self_attn.v_proj", c.kv_width(), H, c.qkv_bias);
    layer.o = source.linear(prefix, "self_attn.o_proj", H, c.q_width(), c.o_bias);
    if (c.qk_norm) {
      layer.q_norm = source.read(prefix + "self_attn.q_norm.weight", {D});
      layer.k_norm = source.read(prefix + "self_attn.k_norm.weight", {D});
    }
    layer.window = c.attention_window[l];
    layer.sparse = c.is_moe() && c.sparse_layer[l];
    if (layer.sparse) {
      load_experts(source, c, prefix, layer);
    } else {
      const std::size_t F = c.intermediate_size;
      layer.mlp.gate = source.linear(prefix, "mlp.gate_proj", F, H, c.mlp_bias);
      layer.mlp.up = source.linear(prefix, "mlp.up_proj", F, H, c.mlp_bias);
      layer.mlp.down = source.linear(prefix, "mlp.down_proj", H, F, c.mlp_bias);
    }
    w.layers.push_back(std::move(layer));
  }
  source.refuse_unread();
  if (c.is_moe()) w.router.emplace(c.router_config());
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
  const auto mapped = [](const WeightMatrix& m) {
    const Bf16Matrix* b = m.bf16();
    return b != nullptr && b->in_place() ? b->bytes() : 0;
  };
  const auto mlp = [&](const detail::Mlp& m) { return mapped(m.gate.weight) + mapped(m.up.weight) + mapped(m.down.weight); };
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
