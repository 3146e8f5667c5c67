#include "model.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>

namespace serve_demo {
using namespace persona;

namespace {

using Clock = std::chrono::steady_clock;

// Adds the seconds since `start` to `into` and restarts the clock.
void lap(Clock::time_point& start, double& into) {
  const auto now = Clock::now();
  into += std::chrono::duration<double>(now - start).count();
  start = now;
}

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

QuantSpec base_spec(int bits) { return QuantSpec{bits, 32}; }

// [out, in] weight with variance 1/in, so activations stay of order one through the layers.
WeightMatrix base_weight(UniformSource& rng, std::size_t out, std::size_t in, int bits) {
  return WeightMatrix(quantize(random_matrix(rng, out, in, 1.0f / std::sqrt(static_cast<float>(in))), base_spec(bits)));
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

}  // namespace

StageTimes& StageTimes::operator+=(const StageTimes& o) noexcept {
  lora += o.lora;
  base_matmul += o.base_matmul;
  attention += o.attention;
  experts += o.experts;
  other += o.other;
  return *this;
}

DemoModel::DemoModel(const ModelConfig& config)
    : config_(config), router_(RouterConfig::mixtral(config.experts, config.top_k)) {
  PERSONA_CHECK(config.weight_bits == 8 || config.weight_bits == 4, "weight bits {}: expected 8 or 4",
                config.weight_bits);
  PERSONA_CHECK(config.q_heads * config.head_dim == config.hidden, "q_heads x head_dim must equal hidden");
  UniformSource rng(config.seed);
  const std::size_t H = config.hidden, kv = config.kv_heads * config.head_dim;
  embedding_ = random_matrix(rng, config.vocab, H, 1.0f);
  final_norm_ = norm_weight(rng, H);
  const std::array<std::pair<std::size_t, std::size_t>, 7> shapes{
      {{H, H}, {kv, H}, {kv, H}, {H, H}, {config.shared_ffn, H}, {config.shared_ffn, H}, {H, config.shared_ffn}}};
  for (std::size_t l = 0; l < config.layers; ++l) {
    LayerWeights layer;
    layer.attn_norm = norm_weight(rng, H);
    layer.ffn_norm = norm_weight(rng, H);
    for (std::size_t i = 0; i < shapes.size(); ++i) {
      layer.linear[i] = base_weight(rng, shapes[i].first, shapes[i].second, config.weight_bits);
    }
    layer.router = random_matrix(rng, config.experts, H, 1.0f / std::sqrt(static_cast<float>(H)));
    for (std::size_t e = 0; e < config.experts; ++e) {
      layer.experts.push_back(ExpertFfn{base_weight(rng, config.expert_ffn, H, config.weight_bits),
                                        base_weight(rng, config.expert_ffn, H, config.weight_bits),
                                        base_weight(rng, H, config.expert_ffn, config.weight_bits)});
    }
    layers_.push_back(std::move(layer));
  }
  lm_head_ = base_weight(rng, config.vocab, H, config.weight_bits);
}

RouterConfig DemoModel::router_config() const { return RouterConfig::mixtral(config_.experts, config_.top_k); }

KvCacheConfig DemoModel::kv_config(std::size_t num_blocks) const {
  KvCacheConfig c;
  c.layers = config_.layers;
  c.kv_heads = config_.kv_heads;
  c.head_dim = config_.head_dim;
  c.block_size = 16;
  c.num_blocks = num_blocks;
  c.storage = DType::f32;
  c.layout = KvLayout::hnd;
  return c;
}

DemoModel DemoModel::merged_with(const LoraAdapter& adapter) const {
  DemoModel merged(*this);
  for (std::size_t l = 0; l < layers_.size(); ++l) {
    for (std::size_t i = 0; i < kAdaptedModules.size(); ++i) {
      const LoraModule* module = adapter.find(l, kAdaptedModules[i]);
      if (module == nullptr) continue;
      Tensor<float> w = layers_[l].linear[i].to_f32();
      merge_lora(w, *module);
      merged.layers_[l].linear[i] = WeightMatrix(quantize(w, base_spec(config_.weight_bits)));
    }
  }
  return merged;
}

DemoModel::DemoModel(const DemoModel& other)
    : config_(other.config_),
      embedding_(other.embedding_),
      final_norm_(other.final_norm_),
      layers_(other.layers_),
      lm_head_(other.lm_head_),
      router_(other.router_) {}

Tensor<float> DemoModel::forward(const ForwardBatch& batch, PagedKvCache& cache, StageTimes& times,
                                 std::vector<std::size_t>& expert_counts, std::vector<std::int32_t>* routed) {
  const ModelConfig& c = config_;
  const std::size_t T = batch.tokens.size(), S = batch.sequences.size(), H = c.hidden;
  const std::size_t kv_width = c.kv_heads * c.head_dim;
  PERSONA_CHECK(batch.positions.size() == T && batch.lora_slots.size() == T && batch.token_counts.size() == S,
                "forward: a batch of {} tokens needs as many positions and LoRA slots", T);
  expert_counts.resize(c.layers * c.experts, 0);
  auto start = Clock::now();

  Tensor<float> x({T, H}), h({T, H}), q({T, H}), k({T, kv_width}), v({T, kv_width}), attn({T, H}), o({T, H});
  Tensor<float> gate({T, c.shared_ffn}), up({T, c.shared_ffn}), act({T, c.shared_ffn}), moe({T, H});
  Tensor<float> router_logits({T, c.experts});
  for (std::size_t t = 0; t < T; ++t) {
    const auto token = static_cast<std::size_t>(batch.tokens[t]);
    PERSONA_CHECK(token < c.vocab, "token {} is outside the vocabulary of {}", token, c.vocab);
    std::copy_n(embedding_.data() + token * H, H, x.data() + t * H);
  }
  const LoraBatchPlan plan = plan_lora_batch(batch.lora_slots, batch.slot_adapters.size());
  std::vector<const LoraModule*> modules(batch.slot_adapters.size());
  lap(start, times.other);

  // y = in W^T, then every token's own adapter added.
  const auto linear = [&](std::size_t l, std::size_t i, const Tensor<float>& in, Tensor<float>& out) {
    layers_[l].linear[i].multiply(in, out);
    lap(start, times.base_matmul);
    if (plan.tokens.empty()) return;
    for (std::size_t s = 0; s < modules.size(); ++s) {
      modules[s] = batch.slot_adapters[s]->find(l, kAdaptedModules[i]);
      PERSONA_CHECK(modules[s] != nullptr, "adapter '{}' has no {} in layer {}", batch.slot_adapters[s]->id(),
                    kAdaptedModules[i], l);
    }
    apply_lora(in, out, modules, plan, lora_workspace_);
    lap(start, times.lora);
  };

  AttentionConfig attention{c.q_heads, 0.0f};
  for (std::size_t l = 0; l < c.layers; ++l) {
    const LayerWeights& w = layers_[l];
    rmsnorm(x, w.attn_norm.span(), c.rms_eps, h);
    lap(start, times.other);
    linear(l, 0, h, q);
    linear(l, 1, h, k);
    linear(l, 2, h, v);
    TensorView<float> q3(q.data(), {T, c.q_heads, c.head_dim}), k3(k.data(), {T, c.kv_heads, c.head_dim});
    TensorView<float> attn3(attn.data(), {T, c.q_heads, c.head_dim});
    rope(q3, batch.positions);
    rope(k3, batch.positions);
    std::size_t offset = 0;
    for (std::size_t s = 0; s < S; ++s) {
      const std::size_t n = batch.token_counts[s];
      cache.write_kv(batch.sequences[s], l,
                     TensorView<const float>(k.data() + offset * kv_width, {n, c.kv_heads, c.head_dim}),
                     TensorView<const float>(v.data() + offset * kv_width, {n, c.kv_heads, c.head_dim}));
      offset += n;
    }
    if (batch.decode) {
      paged_decode_attention(cache, l, batch.sequences, q3, attn3, attention);
    } else {
      paged_prefill_attention(cache, l, batch.sequences, batch.token_counts, q3, attn3, attention);
    }
    lap(start, times.attention);
    linear(l, 3, attn, o);
    for (std::size_t i = 0; i < T * H; ++i) x.data()[i] += o.data()[i];
    rmsnorm(x, w.ffn_norm.span(), c.rms_eps, h);
    lap(start, times.other);

    matmul(h, w.router, router_logits, Transpose::yes);
    router_.route(router_logits, routing_);
    if (routed != nullptr) {
      routed->resize(c.layers * T * c.top_k);
      std::copy(routing_.experts.begin(), routing_.experts.end(),
                routed->begin() + static_cast<std::ptrdiff_t>(l * T * c.top_k));
    }
    plan_experts(routing_, c.experts, plan_, kMoeTileTokens);
    std::vector<const ExpertFfn*> experts(c.experts);
    for (std::size_t e = 0; e < c.experts; ++e) {
      experts[e] = &w.experts[e];
      expert_counts[l * c.experts + e] += plan_.counts[e];
    }
    moe_ffn(h, routing_, plan_, experts, {}, moe, moe_workspace_);
    lap(start, times.experts);

    linear(l, 4, h, gate);
    linear(l, 5, h, up);
    swiglu(gate, up, act);
    lap(start, times.other);
    linear(l, 6, act, o);
    for (std::size_t i = 0; i < T * H; ++i) x.data()[i] += moe.data()[i] + o.data()[i];
    lap(start, times.other);
  }

  Tensor<float> last({S, H}), normed({S, H}), logits({S, c.vocab});
  std::size_t offset = 0;
  for (std::size_t s = 0; s < S; ++s) {
    offset += batch.token_counts[s];
    std::copy_n(x.data() + (offset - 1) * H, H, last.data() + s * H);
  }
  rmsnorm(last, final_norm_.span(), c.rms_eps, normed);
  lap(start, times.other);
  lm_head_.multiply(normed, logits);
  lap(start, times.base_matmul);
  return logits;
}

ReferenceDecoder::ReferenceDecoder(const DemoModel& model, const LoraAdapter* adapter, std::size_t shared_prefix,
                                   float router_tie)
    : model_(model), shared_prefix_(shared_prefix), router_tie_(router_tie), lm_head_(model.lm_head().to_f32()) {
  for (std::size_t l = 0; l < model.config().layers; ++l) {
    Layer layer;
    for (std::size_t i = 0; i < kAdaptedModules.size(); ++i) {
      layer.base[i] = model.layer(l).linear[i].to_f32();
      layer.merged[i] = layer.base[i];
      if (adapter != nullptr) {
        if (const LoraModule* module = adapter->find(l, kAdaptedModules[i])) merge_lora(layer.merged[i], *module);
      }
    }
    for (const ExpertFfn& e : model.layer(l).experts) {
      layer.experts.push_back({e.gate.to_f32(), e.up.to_f32(), e.down.to_f32()});
    }
    layers_.push_back(std::move(layer));
  }
}

std::vector<float> ReferenceDecoder::step(std::int32_t token, std::span<const std::int32_t> batched_experts) {
  const ModelConfig& c = model_.config();
  const std::size_t H = c.hidden, kv_width = c.kv_heads * c.head_dim, group = c.q_heads / c.kv_heads;
  const bool base_only = position_ < shared_prefix_;
  std::vector<float> x(model_.embedding().data() + static_cast<std::size_t>(token) * H,
                       model_.embedding().data() + static_cast<std::size_t>(token + 1) * H);
  std::vector<float> h(H), q(H), k(kv_width), v(kv_width), attn(H), o(H), moe(H), logits(c.experts);
  const auto norm = [&](std::span<const float> in, const Tensor<float>& weight, std::span<float> out) {
    rmsnorm_ref(TensorView<const float>(in.data(), {1, in.size()}), weight.span(), c.rms_eps,
                TensorView<float>(out.data(), {1, out.size()}));
  };
  for (std::size_t l = 0; l < c.layers; ++l) {
    Layer& layer = layers_[l];
    const auto& w = base_only ? layer.base : layer.merged;
    norm(x, model_.layer(l).attn_norm, h);
    matvec(w[0], h, q);
    matvec(w[1], h, k);
    matvec(w[2], h, v);
    rope_ref(TensorView<float>(q.data(), {1, c.q_heads, c.head_dim}), position_);
    rope_ref(TensorView<float>(k.data(), {1, c.kv_heads, c.head_dim}), position_);
    layer.keys.insert(layer.keys.end(), k.begin(), k.end());
    layer.values.insert(layer.values.end(), v.begin(), v.end());
    const std::size_t positions = position_ + 1;
    const double scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));
    for (std::size_t head = 0; head < c.q_heads; ++head) {
      const std::size_t kv_head = head / group;
      std::vector<double> scores(positions);
      double best = -INFINITY;
      for (std::size_t p = 0; p < positions; ++p) {
        double dot = 0;
        for (std::size_t d = 0; d < c.head_dim; ++d) {
          dot += static_cast<double>(q[head * c.head_dim + d]) * layer.keys[p * kv_width + kv_head * c.head_dim + d];
        }
        scores[p] = dot * scale;
        best = std::max(best, scores[p]);
      }
      double sum = 0;
      for (double& s : scores) sum += (s = std::exp(s - best));
      for (std::size_t d = 0; d < c.head_dim; ++d) {
        double acc = 0;
        for (std::size_t p = 0; p < positions; ++p)
          acc += scores[p] * layer.values[p * kv_width + kv_head * c.head_dim + d];
        attn[head * c.head_dim + d] = static_cast<float>(acc / sum);
      }
    }
    matvec(w[3], attn, o);
    for (std::size_t i = 0; i < H; ++i) x[i] += o[i];
    norm(x, model_.layer(l).ffn_norm, h);

    matvec(model_.layer(l).router, h, logits);
    // Mixtral routing: the top-k logits (ties to the lower index), weights softmax over the chosen.
    std::vector<std::int32_t> order(c.experts);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](std::int32_t a, std::int32_t b) {
      return logits[static_cast<std::size_t>(a)] > logits[static_cast<std::size_t>(b)];
    });
    std::vector<std::int32_t> chosen(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(c.top_k));
    if (!batched_experts.empty()) {
      std::vector<std::int32_t> theirs(batched_experts.begin() + static_cast<std::ptrdiff_t>(l * c.top_k),
                                       batched_experts.begin() + static_cast<std::ptrdiff_t>((l + 1) * c.top_k));
      std::vector<std::int32_t> mine = chosen;
      std::sort(theirs.begin(), theirs.end());
      std::sort(mine.begin(), mine.end());
      if (mine != theirs) {
        // A tie only if every expert the runs swapped lies within router_tie of the cut between chosen
        // and not chosen: theirs that I left out no lower than my k-th minus the margin, mine that they
        // left out no higher than my (k+1)-th plus it.
        const auto logit = [&](std::int32_t e) { return logits[static_cast<std::size_t>(e)]; };
        const float kth = logit(order[c.top_k - 1]), next = logit(order[c.top_k]);
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
    double top = -INFINITY, sum = 0;
    for (std::int32_t e : chosen) top = std::max(top, static_cast<double>(logits[static_cast<std::size_t>(e)]));
    for (std::int32_t e : chosen) sum += std::exp(logits[static_cast<std::size_t>(e)] - top);
    std::fill(moe.begin(), moe.end(), 0.0f);
    for (std::int32_t expert : chosen) {
      const auto& e = layer.experts[static_cast<std::size_t>(expert)];
      const auto weight = static_cast<float>(std::exp(logits[static_cast<std::size_t>(expert)] - top) / sum);
      swiglu_ffn(e[0], e[1], e[2], h, o);
      for (std::size_t i = 0; i < H; ++i) moe[i] += weight * o[i];
    }
    swiglu_ffn(w[4], w[5], w[6], h, o);
    for (std::size_t i = 0; i < H; ++i) x[i] += moe[i] + o[i];
  }
  norm(x, model_.final_norm(), h);
  std::vector<float> out(c.vocab);
  matvec(lm_head_, h, out);
  ++position_;
  return out;
}

}  // namespace serve_demo
