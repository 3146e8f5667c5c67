#include "demo_model.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <numeric>

namespace serve_demo {
using namespace persona;
namespace fs = std::filesystem;

namespace {

constexpr QuantSpec kGrid{8, 32};  // the int8 format Model::load quantizes 512-wide inputs to

// Uniform with the given standard deviation.
Tensor<float> random_matrix(UniformSource& uniform, std::size_t rows, std::size_t cols, float stddev) {
  Tensor<float> t({rows, cols});
  const float range = std::sqrt(3.0f) * stddev;
  for (float& v : t.span()) v = range * uniform();
  return t;
}

Tensor<float> norm_weight(UniformSource& uniform, std::size_t n) {
  Tensor<float> t({n});
  for (float& v : t.span()) v = 1.0f + 0.1f * uniform();
  return t;
}

// The nearest point of the int8 grid, which quantizing again must leave where it is.
Tensor<float> on_int8_grid(const Tensor<float>& w, std::string_view name) {
  Tensor<float> snapped = dequantize(quantize(w, kGrid));
  const Tensor<float> again = dequantize(quantize(snapped, kGrid));
  PERSONA_CHECK(std::memcmp(again.data(), snapped.data(), snapped.numel() * sizeof(float)) == 0,
                "{}: the int8 grid is not stable under quantization", name);
  return snapped;
}

// [out, in] weight with variance 1/in, so activations stay of order one through the layers.
Tensor<float> linear_weight(UniformSource& rng, std::size_t out, std::size_t in, std::string_view name) {
  return on_int8_grid(random_matrix(rng, out, in, 1.0f / std::sqrt(static_cast<float>(in))), name);
}

std::string demo_key(const DemoShape& s) {
  return fmt::format(
      "qwen2_moe layers {} hidden {} heads {}/{}x{} experts {} top {} ffn {}/{} vocab {} seed {} grid int8", s.layers,
      s.hidden, s.heads, s.kv_heads, s.head_dim, s.experts, s.top_k, s.expert_ffn, s.shared_ffn, s.vocab, s.seed);
}

nlohmann::ordered_json config_json(const DemoShape& s) {
  return {{"architectures", {"Qwen2MoeForCausalLM"}},
          {"model_type", "qwen2_moe"},
          {"vocab_size", s.vocab},
          {"hidden_size", s.hidden},
          {"intermediate_size", s.shared_ffn},
          {"num_hidden_layers", s.layers},
          {"num_attention_heads", s.heads},
          {"num_key_value_heads", s.kv_heads},
          {"hidden_act", "silu"},
          {"rms_norm_eps", 1e-6},
          {"rope_parameters", {{"rope_theta", 1000000.0}, {"rope_type", "default"}}},
          {"max_position_embeddings", 4096},
          {"tie_word_embeddings", false},
          {"qkv_bias", true},
          {"num_experts", s.experts},
          {"num_experts_per_tok", s.top_k},
          {"moe_intermediate_size", s.expert_ffn},
          {"shared_expert_intermediate_size", s.shared_ffn},
          {"norm_topk_prob", false},
          {"decoder_sparse_step", 1},
          {"mlp_only_layers", nlohmann::ordered_json::array()},
          {"use_sliding_window", false},
          {"bos_token_id", 1},
          {"eos_token_id", 2},
          {"dtype", "float32"}};
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  PERSONA_CHECK_CODE(io_error, static_cast<bool>(out.flush()), "cannot write {}", path.string());
}

void matvec(const Tensor<float>& w, std::span<const float> x, std::span<float> y) {
  matmul(TensorView<const float>(x.data(), {1, x.size()}), w, TensorView<float>(y.data(), {1, y.size()}),
         Transpose::yes);
}

// out = down (silu(gate x) * (up x)) for one token, in f32.
void swiglu_ffn(const Tensor<float>& gate, const Tensor<float>& up, const Tensor<float>& down, std::span<const float> x,
                std::span<float> out) {
  std::vector<float> g(gate.dim(0)), u(up.dim(0)), a(gate.dim(0));
  matvec(gate, x, g);
  matvec(up, x, u);
  swiglu_ref(TensorView<const float>(g.data(), {1, g.size()}), TensorView<const float>(u.data(), {1, u.size()}),
             TensorView<float>(a.data(), {1, a.size()}));
  matvec(down, a, out);
}

std::string layer_name(std::size_t l, std::string_view rest) { return fmt::format("model.layers.{}.{}", l, rest); }

}  // namespace

bool write_demo_model(const fs::path& folder, const DemoShape& shape) {
  const fs::path manifest = folder / "serve_demo.json";
  if (std::ifstream in(manifest); in) {
    const nlohmann::json have = nlohmann::json::parse(in, nullptr, false);
    if (have.is_object() && have.value("model", "") == demo_key(shape) && fs::exists(folder / "model.safetensors")) {
      return false;
    }
  }
  fs::create_directories(folder);
  const DemoShape& s = shape;
  UniformSource rng(s.seed);
  const std::size_t H = s.hidden, Q = s.heads * s.head_dim, KV = s.kv_heads * s.head_dim;
  SafetensorsWriter writer;
  Tensor<float> embedding = random_matrix(rng, s.vocab, H, 1.0f);
  for (float& v : embedding.span()) v = to_f32(to_bf16(v));  // the int8 format keeps the embedding in bf16
  writer.add("model.embed_tokens.weight", embedding);
  writer.add("model.norm.weight", norm_weight(rng, H));
  writer.add("lm_head.weight", linear_weight(rng, s.vocab, H, "lm_head"));
  for (std::size_t l = 0; l < s.layers; ++l) {
    const auto add_linear = [&](std::string_view module, std::size_t out, std::size_t in) {
      const std::string name = layer_name(l, fmt::format("{}.weight", module));
      writer.add(name, linear_weight(rng, out, in, name));
    };
    writer.add(layer_name(l, "input_layernorm.weight"), norm_weight(rng, H));
    writer.add(layer_name(l, "post_attention_layernorm.weight"), norm_weight(rng, H));
    add_linear("self_attn.q_proj", Q, H);
    add_linear("self_attn.k_proj", KV, H);
    add_linear("self_attn.v_proj", KV, H);
    add_linear("self_attn.o_proj", H, Q);
    for (const auto& [module, n] : {std::pair{"q_proj", Q}, std::pair{"k_proj", KV}, std::pair{"v_proj", KV}}) {
      Tensor<float> bias({n});
      for (float& v : bias.span()) v = 0.1f * rng();
      writer.add(layer_name(l, fmt::format("self_attn.{}.bias", module)), bias);
    }
    writer.add(layer_name(l, "mlp.gate.weight"),
               random_matrix(rng, s.experts, H, 1.0f / std::sqrt(static_cast<float>(H))));
    for (std::size_t e = 0; e < s.experts; ++e) {
      add_linear(fmt::format("mlp.experts.{}.gate_proj", e), s.expert_ffn, H);
      add_linear(fmt::format("mlp.experts.{}.up_proj", e), s.expert_ffn, H);
      add_linear(fmt::format("mlp.experts.{}.down_proj", e), H, s.expert_ffn);
    }
    add_linear("mlp.shared_expert.gate_proj", s.shared_ffn, H);
    add_linear("mlp.shared_expert.up_proj", s.shared_ffn, H);
    add_linear("mlp.shared_expert.down_proj", H, s.shared_ffn);
    writer.add(layer_name(l, "mlp.shared_expert_gate.weight"),
               random_matrix(rng, 1, H, 1.0f / std::sqrt(static_cast<float>(H))));
  }
  writer.set_metadata("format", "pt");
  fs::remove(manifest);  // a crash below leaves no manifest, so the next run writes the folder again
  writer.write(folder / "model.safetensors");
  write_text(folder / "config.json", config_json(s).dump(2));
  write_text(folder / "generation_config.json", nlohmann::json{{"bos_token_id", 1}, {"eos_token_id", 2}}.dump(2));
  write_text(manifest, nlohmann::json{{"model", demo_key(shape)}}.dump(2));
  return true;
}

void write_merged_model(const fs::path& from, const fs::path& to, const LoraAdapter& adapter) {
  const Checkpoint checkpoint = Checkpoint::open(from);
  const ModelConfig config = read_model_config(from);
  SafetensorsWriter writer;
  for (const std::string& name : checkpoint.names()) {
    const LoraModule* module = nullptr;
    for (std::size_t l = 0; l < config.num_layers && module == nullptr; ++l) {
      for (const char* adapted : kAdaptedModules) {
        if (name == layer_name(l, fmt::format("{}.weight", adapted))) module = adapter.find(l, adapted);
      }
    }
    if (module == nullptr) {
      const SafetensorsTensor& t = checkpoint.tensor(name);
      writer.add(name, t.dtype, t.shape, t.data);
      continue;
    }
    Tensor<float> w = checkpoint.read_f32(name);
    merge_lora(w, *module);
    writer.add(name, on_int8_grid(w, name));
  }
  fs::create_directories(to);
  writer.write(to / "model.safetensors");
  fs::copy_file(from / "config.json", to / "config.json", fs::copy_options::overwrite_existing);
  fs::copy_file(from / "generation_config.json", to / "generation_config.json", fs::copy_options::overwrite_existing);
}

ReferenceWeights::ReferenceWeights(const fs::path& folder) : config(read_model_config(folder)) {
  const Checkpoint checkpoint = Checkpoint::open(folder);
  embedding = checkpoint.read_f32("model.embed_tokens.weight");
  final_norm = checkpoint.read_f32("model.norm.weight");
  lm_head = checkpoint.read_f32("lm_head.weight");
  for (std::size_t l = 0; l < config.num_layers; ++l) {
    const auto read = [&](std::string_view rest) { return checkpoint.read_f32(layer_name(l, rest)); };
    Layer layer;
    layer.input_norm = read("input_layernorm.weight");
    layer.post_attention_norm = read("post_attention_layernorm.weight");
    layer.router = read("mlp.gate.weight");
    layer.shared_gate = read("mlp.shared_expert_gate.weight");
    for (std::size_t i = 0; i < kAdaptedModules.size(); ++i) {
      layer.linear[i] = read(fmt::format("{}.weight", kAdaptedModules[i]));
    }
    for (std::size_t i = 0; i < 3; ++i) layer.qkv_bias[i] = read(fmt::format("{}.bias", kAdaptedModules[i]));
    for (std::size_t e = 0; e < config.num_experts; ++e) {
      layer.experts.push_back({read(fmt::format("mlp.experts.{}.gate_proj.weight", e)),
                               read(fmt::format("mlp.experts.{}.up_proj.weight", e)),
                               read(fmt::format("mlp.experts.{}.down_proj.weight", e))});
    }
    layers.push_back(std::move(layer));
  }
}

ReferenceDecoder::ReferenceDecoder(const ReferenceWeights& weights, const LoraAdapter* adapter,
                                   std::size_t shared_prefix, float router_tie)
    : weights_(weights), shared_prefix_(shared_prefix), router_tie_(router_tie), layers_(weights.layers.size()) {
  for (std::size_t l = 0; l < layers_.size(); ++l) {
    for (std::size_t i = 0; i < kAdaptedModules.size(); ++i) {
      layers_[l].merged[i] = weights.layers[l].linear[i];
      if (adapter == nullptr) continue;
      if (const LoraModule* module = adapter->find(l, kAdaptedModules[i])) merge_lora(layers_[l].merged[i], *module);
    }
  }
}

std::vector<float> ReferenceDecoder::step(std::int32_t token, std::span<const std::int32_t> batched_experts) {
  const ModelConfig& c = weights_.config;
  const std::size_t H = c.hidden_size, D = c.head_dim, kv_width = c.kv_width(), group = c.num_heads / c.num_kv_heads;
  const std::size_t k = c.experts_per_token;
  const bool base_only = position_ < shared_prefix_;
  std::vector<float> x(weights_.embedding.data() + static_cast<std::size_t>(token) * H,
                       weights_.embedding.data() + static_cast<std::size_t>(token + 1) * H);
  std::vector<float> h(H), q(c.q_width()), kk(kv_width), v(kv_width), attn(c.q_width()), o(H), moe(H), shared(H);
  std::vector<float> logits(c.num_experts);
  const auto norm = [&](std::span<const float> in, const Tensor<float>& weight, std::span<float> out) {
    rmsnorm_ref(TensorView<const float>(in.data(), {1, in.size()}), weight.span(), c.rms_norm_eps,
                TensorView<float>(out.data(), {1, out.size()}));
  };
  for (std::size_t l = 0; l < c.num_layers; ++l) {
    const ReferenceWeights::Layer& base = weights_.layers[l];
    Layer& layer = layers_[l];
    const auto& w = base_only ? base.linear : layer.merged;
    norm(x, base.input_norm, h);
    matvec(w[0], h, q);
    matvec(w[1], h, kk);
    matvec(w[2], h, v);
    for (const auto& [out, bias] :
         {std::pair{&q, &base.qkv_bias[0]}, std::pair{&kk, &base.qkv_bias[1]}, std::pair{&v, &base.qkv_bias[2]}}) {
      for (std::size_t i = 0; i < out->size(); ++i) (*out)[i] += bias->data()[i];
    }
    rope_ref(TensorView<float>(q.data(), {1, c.num_heads, D}), position_, c.rope);
    rope_ref(TensorView<float>(kk.data(), {1, c.num_kv_heads, D}), position_, c.rope);
    layer.keys.insert(layer.keys.end(), kk.begin(), kk.end());
    layer.values.insert(layer.values.end(), v.begin(), v.end());
    const std::size_t positions = position_ + 1;
    const double scale = 1.0 / std::sqrt(static_cast<double>(D));
    for (std::size_t head = 0; head < c.num_heads; ++head) {
      const std::size_t kv_head = head / group;
      std::vector<double> scores(positions);
      double best = -INFINITY;
      for (std::size_t p = 0; p < positions; ++p) {
        double dot = 0;
        for (std::size_t d = 0; d < D; ++d) {
          dot += static_cast<double>(q[head * D + d]) * layer.keys[p * kv_width + kv_head * D + d];
        }
        scores[p] = dot * scale;
        best = std::max(best, scores[p]);
      }
      double sum = 0;
      for (double& s : scores) sum += (s = std::exp(s - best));
      for (std::size_t d = 0; d < D; ++d) {
        double acc = 0;
        for (std::size_t p = 0; p < positions; ++p) acc += scores[p] * layer.values[p * kv_width + kv_head * D + d];
        attn[head * D + d] = static_cast<float>(acc / sum);
      }
    }
    matvec(w[3], attn, o);
    for (std::size_t i = 0; i < H; ++i) x[i] += o[i];
    norm(x, base.post_attention_norm, h);

    matvec(base.router, h, logits);
    // Qwen2-MoE routing: the top-k logits (ties to the lower index), each weighted by its softmax
    // probability over all experts (norm_topk_prob false: not renormalized).
    std::vector<std::int32_t> order(c.num_experts);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](std::int32_t a, std::int32_t b) {
      return logits[static_cast<std::size_t>(a)] > logits[static_cast<std::size_t>(b)];
    });
    std::vector<std::int32_t> chosen(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k));
    if (!batched_experts.empty()) {
      std::vector<std::int32_t> theirs(batched_experts.begin() + static_cast<std::ptrdiff_t>(l * k),
                                       batched_experts.begin() + static_cast<std::ptrdiff_t>((l + 1) * k));
      std::vector<std::int32_t> mine = chosen;
      std::sort(theirs.begin(), theirs.end());
      std::sort(mine.begin(), mine.end());
      if (mine != theirs) {
        // A tie only if every expert the runs swapped lies within router_tie of the cut between chosen
        // and not chosen: theirs that I left out no lower than my k-th minus the margin, mine that they
        // left out no higher than my (k+1)-th plus it.
        const auto logit = [&](std::int32_t e) { return logits[static_cast<std::size_t>(e)]; };
        const float kth = logit(order[k - 1]), next = logit(order[k]);
        bool tie = true;
        for (std::int32_t e : theirs) {
          if (!std::binary_search(mine.begin(), mine.end(), e)) tie = tie && logit(e) >= kth - router_tie_;
        }
        for (std::int32_t e : mine) {
          if (!std::binary_search(theirs.begin(), theirs.end(), e)) tie = tie && logit(e) <= next + router_tie_;
        }
        if (tie) {
          chosen = theirs;
          ++followed_;
        } else {
          ++disagreements_;
        }
      }
    }
    const double top = logits[static_cast<std::size_t>(order[0])];
    double sum = 0;
    for (const float logit : logits) sum += std::exp(logit - top);
    std::fill(moe.begin(), moe.end(), 0.0f);
    for (std::int32_t expert : chosen) {
      const auto& e = base.experts[static_cast<std::size_t>(expert)];
      const auto weight = static_cast<float>(std::exp(logits[static_cast<std::size_t>(expert)] - top) / sum);
      swiglu_ffn(e[0], e[1], e[2], h, o);
      for (std::size_t i = 0; i < H; ++i) moe[i] += weight * o[i];
    }
    // The shared expert, behind its sigmoid gate.
    double gate_logit = 0;
    for (std::size_t i = 0; i < H; ++i) gate_logit += static_cast<double>(base.shared_gate.data()[i]) * h[i];
    const auto gate = static_cast<float>(1.0 / (1.0 + std::exp(-gate_logit)));
    swiglu_ffn(w[4], w[5], w[6], h, shared);
    for (std::size_t i = 0; i < H; ++i) x[i] += moe[i] + gate * shared[i];
  }
  norm(x, weights_.final_norm, h);
  std::vector<float> out(c.vocab_size);
  matvec(weights_.lm_head, h, out);
  ++position_;
  return out;
}

}  // namespace serve_demo
