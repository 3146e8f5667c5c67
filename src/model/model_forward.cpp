// Model::forward: one serving step. Plan once (positions, each (layer, module)'s LoRA modules and token
// plan, checks), then run layer by layer on the workspace's buffers:
//   x = embed(tokens)
//   per layer: h = norm(x); q, k, v = linear(h) (+ bias, + LoRA); q/k norm; RoPE; K/V into the cache;
//              paged attention (sliding window where the layer has one); x += o(attn)
//              h = norm(x); x += MLP(h) or MoE(h) (routed experts + shared expert), LoRA on every linear
//   logits = lm_head(norm(x[rows]))
#include "model/model_weights.hpp"
#include "persona/core/error.hpp"
#include "persona/core/ops.hpp"
#include "persona/kv/attention.hpp"
#include "persona/lora/lora_apply.hpp"
#include "persona/moe/expert_plan.hpp"

#include <algorithm>
#include <map>
#include <unordered_set>

namespace persona {
namespace {

constexpr const char* kFunction = "Model::forward";

// A [rows, cols] view of the front of a buffer grown to fit.
TensorView<float> view(std::vector<float>& buffer, std::size_t rows, std::size_t cols) {
  if (buffer.size() < rows * cols) buffer.resize(rows * cols);
  return TensorView<float>(buffer.data(), {rows, cols});
}

}  // namespace

struct ModelWorkspace::Impl {
  std::vector<float> x, h, q, k, v, attn, o, gate, up, act, mlp_out, router_logits, shared_gate_logits, rows, normed;
  std::vector<std::size_t> positions;
  LoraWorkspace lora;
  MoeWorkspace moe;
  Routing routing;
  ExpertPlan plan;
  // The LoRA path of the routed experts: one expert's gathered rows, activations and token slots, and every
  // routed entry's output.
  std::vector<float> expert_x, expert_gate, expert_up, expert_act, expert_out, entry_out;
  std::vector<std::int32_t> expert_slots, masked_slots;
  std::vector<float> shared_weights;  // [tokens]: the shared expert's gate weights

  std::size_t bytes() const noexcept {
    std::size_t floats = 0;
    for (const auto* b : {&x,
                          &h,
                          &q,
                          &k,
                          &v,
                          &attn,
                          &o,
                          &gate,
                          &up,
                          &act,
                          &mlp_out,
                          &router_logits,
                          &shared_gate_logits,
                          &rows,
                          &normed,
                          &expert_x,
                          &expert_gate,
                          &expert_up,
                          &expert_act,
                          &expert_out,
                          &entry_out}) {
      floats += b->capacity();
    }
    return floats * sizeof(float) + lora.bytes() + moe.bytes();
  }
};

ModelWorkspace::ModelWorkspace() : impl_(std::make_unique<Impl>()) {}
ModelWorkspace::~ModelWorkspace() = default;
ModelWorkspace::ModelWorkspace(ModelWorkspace&&) noexcept = default;
ModelWorkspace& ModelWorkspace::operator=(ModelWorkspace&&) noexcept = default;
std::size_t ModelWorkspace::bytes() const noexcept { return impl_ ? impl_->bytes() : 0; }

namespace {

// Which adapter module each slot uses for each linear layer of the model, and the token plan of each
// distinct pattern of slots that have it. Linear index within a layer: q, k, v, o, then gate, up, down of
// the dense MLP or the shared expert, then 3 per routed expert (gate, up, down).
struct LoraStep {
  std::size_t slots = 0, per_layer = 0;
  std::vector<const LoraModule*> modules;  // [layer][linear][slot]
  std::vector<std::int32_t> plan_of;       // [layer][linear]: index into plans, -1: no token adapted
  std::vector<LoraBatchPlan> plans;
  std::vector<bool> layer_has_expert_lora;  // [layer]

  std::span<const LoraModule* const> at(std::size_t layer, std::size_t linear) const {
    return {modules.data() + (layer * per_layer + linear) * slots, slots};
  }
  const LoraBatchPlan* plan(std::size_t layer, std::size_t linear) const {
    const std::int32_t p = plan_of[layer * per_layer + linear];
    return p < 0 ? nullptr : &plans[static_cast<std::size_t>(p)];
  }
};

constexpr std::size_t kMlpLinear = 4;     // gate; up and down follow
constexpr std::size_t kExpertLinear = 7;  // expert e's gate is kExpertLinear + 3 e

// The linear layers of `layer` in LoraStep order, with their names and shapes (null for an expert slot
// when the layer is dense, and for the MLP slots of a MoE layer without a shared expert).
struct LinearRef {
  const std::string* module = nullptr;
  std::size_t out = 0, in = 0;
  const std::string* alias = nullptr;  // another name adapters may use (expert_aliases)
};

std::vector<LinearRef> linears_of(const detail::DecoderLayer& l, std::size_t per_layer) {
  std::vector<LinearRef> refs(per_layer);
  const auto set = [&](std::size_t i, const detail::Linear& linear) {
    refs[i] = {&linear.module, linear.weight.rows(), linear.weight.cols()};
  };
  set(0, l.q);
  set(1, l.k);
  set(2, l.v);
  set(3, l.o);
  const detail::Mlp* mlp = l.sparse ? (l.shared_expert ? &*l.shared_expert : nullptr) : &l.mlp;
  if (mlp != nullptr) {
    set(kMlpLinear, mlp->gate);
    set(kMlpLinear + 1, mlp->up);
    set(kMlpLinear + 2, mlp->down);
  }
  for (std::size_t e = 0; e < l.experts.size(); ++e) {
    const ExpertFfn& f = l.experts[e];
    const auto alias = [&](std::size_t p) { return l.expert_aliases.empty() ? nullptr : &l.expert_aliases[e][p]; };
    refs[kExpertLinear + 3 * e] = {&l.expert_modules[e][0], f.gate.rows(), f.gate.cols(), alias(0)};
    refs[kExpertLinear + 3 * e + 1] = {&l.expert_modules[e][1], f.up.rows(), f.up.cols(), alias(1)};
    refs[kExpertLinear + 3 * e + 2] = {&l.expert_modules[e][2], f.down.rows(), f.down.cols(), alias(2)};
  }
  return refs;
}

LoraStep plan_lora(const Model::Weights& w, const ForwardBatch& batch, std::span<const std::size_t> slot_tokens) {
  LoraStep step;
  const std::size_t L = w.layers.size(), S = batch.adapters.size();
  step.slots = S;
  step.per_layer = kExpertLinear + 3 * w.config.num_experts;
  step.modules.assign(L * step.per_layer * S, nullptr);
  step.plan_of.assign(L * step.per_layer, -1);
  step.layer_has_expert_lora.assign(L, false);
  if (batch.lora_slots.empty()) return step;

  // Every module of every adapter must be one of this model's linear layers, with its shape.
  std::map<std::pair<std::size_t, std::string_view>, LinearRef> known;
  std::vector<std::vector<LinearRef>> refs(L);
  for (std::size_t l = 0; l < L; ++l) {
    refs[l] = linears_of(w.layers[l], step.per_layer);
    for (const LinearRef& r : refs[l]) {
      if (r.module != nullptr) known.emplace(std::pair{l, std::string_view(*r.module)}, r);
      if (r.alias != nullptr) known.emplace(std::pair{l, std::string_view(*r.alias)}, r);
    }
  }
  for (std::size_t s = 0; s < S; ++s) {
    if (slot_tokens[s] == 0) continue;
    const LoraAdapter& adapter = *batch.adapters[s];
    if (adapter.layers_path() != "model.layers") {
      PERSONA_THROW_AT(kFunction, invalid_argument,
                       "adapter '{}' (slot {}) was made for a model whose layers are at '{}'; this {} model's are at "
                       "'model.layers'",
                       adapter.id(), s, adapter.layers_path(), to_string(w.config.architecture));
    }
    for (const auto& [target, module] : adapter.modules()) {
      const auto it = known.find({target.layer, std::string_view(target.module)});
      if (it == known.end()) {
        PERSONA_THROW_AT(kFunction, invalid_argument,
                         "adapter '{}' (slot {}) adapts layer {} module '{}', which this {} model does not have",
                         adapter.id(), s, target.layer, target.module, to_string(w.config.architecture));
      }
      if (module.out_features() != it->second.out || module.in_features() != it->second.in) {
        PERSONA_THROW_AT(kFunction, shape_mismatch,
                         "adapter '{}' (slot {}): layer {} module '{}' is [out {}, in {}] but the model's layer is "
                         "[{}, {}]",
                         adapter.id(), s, target.layer, target.module, module.out_features(), module.in_features(),
                         it->second.out, it->second.in);
      }
    }
  }

  // One plan per distinct set of slots that adapt a linear layer (usually one for the whole model).
  std::map<std::vector<bool>, std::int32_t> plan_index;
  std::vector<std::int32_t> masked(batch.lora_slots.size());
  for (std::size_t l = 0; l < L; ++l) {
    for (std::size_t i = 0; i < step.per_layer; ++i) {
      const LinearRef& r = refs[l][i];
      if (r.module == nullptr) continue;
      std::vector<bool> present(S, false);
      bool any = false;
      for (std::size_t s = 0; s < S; ++s) {
        if (slot_tokens[s] == 0) continue;
        const LoraModule* m = batch.adapters[s]->find(l, *r.module);
        if (m == nullptr && r.alias != nullptr) m = batch.adapters[s]->find(l, *r.alias);
        step.modules[(l * step.per_layer + i) * S + s] = m;
        present[s] = m != nullptr;
        any = any || present[s];
      }
      if (!any) continue;
      if (i >= kExpertLinear) {
        step.layer_has_expert_lora[l] = true;
        continue;  // expert plans are made per expert, over its tokens
      }
      auto [it, inserted] = plan_index.emplace(present, static_cast<std::int32_t>(step.plans.size()));
      if (inserted) {
        for (std::size_t t = 0; t < masked.size(); ++t) {
          const std::int32_t s = batch.lora_slots[t];
          masked[t] = s != kNoLora && present[static_cast<std::size_t>(s)] ? s : kNoLora;
        }
        step.plans.push_back(plan_lora_batch(masked, S));
      }
      step.plan_of[l * step.per_layer + i] = it->second;
    }
  }
  return step;
}

// y = x W^T (+ LoRA of the tokens whose slot adapts it) (+ b).
void run_linear(const detail::Linear& linear, TensorView<const float> x, TensorView<float> y,
                std::span<const LoraModule* const> modules, const LoraBatchPlan* plan, LoraWorkspace& workspace) {
  if (plan != nullptr) {
    lora_linear(x, linear.weight, y, modules, *plan, workspace);
  } else {
    linear.weight.multiply(x, y);
  }
  if (linear.bias.empty()) return;
  const std::size_t n = linear.bias.size();
  for (std::size_t t = 0; t < y.dim(0); ++t) {
    float* row = y.data() + t * n;
    for (std::size_t j = 0; j < n; ++j) row[j] += linear.bias[j];
  }
}

void add_into(TensorView<float> x, TensorView<const float> y) {
  float* a = x.data();
  const float* b = y.data();
  for (std::size_t i = 0; i < x.numel(); ++i) a[i] += b[i];
}

// out = down(silu(gate h) * up h), each linear with its LoRA (linear indices first, first + 1, first + 2).
void run_mlp(const detail::Mlp& mlp, TensorView<const float> h, TensorView<float> out, const LoraStep& lora,
             std::size_t layer, std::size_t first, ModelWorkspace::Impl& ws) {
  const std::size_t T = h.dim(0), F = mlp.gate.weight.rows();
  const TensorView<float> gate = view(ws.gate, T, F), up = view(ws.up, T, F), act = view(ws.act, T, F);
  run_linear(mlp.gate, h, gate, lora.at(layer, first), lora.plan(layer, first), ws.lora);
  run_linear(mlp.up, h, up, lora.at(layer, first + 1), lora.plan(layer, first + 1), ws.lora);
  swiglu(gate, up, act);
  run_linear(mlp.down, act, out, lora.at(layer, first + 2), lora.plan(layer, first + 2), ws.lora);
}

// The routed experts with LoRA: each expert's tokens gathered, its three projections run with the LoRA of
// the tokens' slots (a plan per projection over those tokens), the outputs combined in slot order.
void run_experts_with_lora(const detail::DecoderLayer& layer, std::size_t l, TensorView<const float> h,
                           TensorView<float> out, std::span<const std::int32_t> lora_slots, const LoraStep& lora,
                           ModelWorkspace::Impl& ws) {
  const ExpertPlan& plan = ws.plan;
  const Routing& routing = ws.routing;
  const std::size_t H = h.dim(1), T = h.dim(0);
  const TensorView<float> entries = view(ws.entry_out, std::max<std::size_t>(plan.entries(), 1), H);
  for (std::size_t e = 0; e < plan.num_experts; ++e) {
    std::size_t n = 0;
    ws.expert_slots.clear();
    for (std::size_t i = plan.offsets[e]; i < plan.offsets[e + 1]; ++i) {
      if (plan.entry_tokens[i] < 0) continue;
      ws.expert_slots.push_back(lora_slots[static_cast<std::size_t>(plan.entry_tokens[i])]);
      ++n;
    }
    if (n == 0) continue;
    const ExpertFfn& ffn = layer.experts[e];
    const std::size_t F = ffn.ffn();
    const TensorView<float> x = view(ws.expert_x, n, H);
    for (std::size_t i = plan.offsets[e], r = 0; i < plan.offsets[e + 1]; ++i) {
      if (plan.entry_tokens[i] < 0) continue;
      std::copy_n(h.data() + static_cast<std::size_t>(plan.entry_tokens[i]) * H, H, x.data() + r++ * H);
    }
    const auto project = [&](const WeightMatrix& weight, std::size_t p, TensorView<const float> in,
                             TensorView<float> y) {
      const std::span<const LoraModule* const> modules = lora.at(l, kExpertLinear + 3 * e + p);
      ws.masked_slots.resize(n);
      bool any = false;
      for (std::size_t r = 0; r < n; ++r) {
        const std::int32_t s = ws.expert_slots[r];
        ws.masked_slots[r] = s != kNoLora && modules[static_cast<std::size_t>(s)] != nullptr ? s : kNoLora;
        any = any || ws.masked_slots[r] != kNoLora;
      }
      if (!any) {
        weight.multiply(in, y);
        return;
      }
      lora_linear(in, weight, y, modules, plan_lora_batch(ws.masked_slots, modules.size()), ws.lora);
    };
    const TensorView<float> gate = view(ws.expert_gate, n, F), up = view(ws.expert_up, n, F);
    const TensorView<float> act = view(ws.expert_act, n, F), y = view(ws.expert_out, n, H);
    project(ffn.gate, 0, x, gate);
    project(ffn.up, 1, x, up);
    swiglu(gate, up, act);
    project(ffn.down, 2, act, y);
    for (std::size_t i = plan.offsets[e], r = 0; i < plan.offsets[e + 1]; ++i) {
      if (plan.entry_tokens[i] < 0) continue;
      std::copy_n(y.data() + r++ * H, H, entries.data() + i * H);
    }
  }
  for (std::size_t t = 0; t < T; ++t) {
    float* row = out.data() + t * H;
    std::fill_n(row, H, 0.0f);
    for (std::size_t s = 0; s < routing.k; ++s) {
      const std::int32_t entry = plan.position[t * routing.k + s];
      if (entry < 0) continue;
      const float weight = routing.weight(t, s);
      const float* y = entries.data() + static_cast<std::size_t>(entry) * H;
      for (std::size_t j = 0; j < H; ++j) row[j] += weight * y[j];
    }
  }
}

void run_moe(const Model::Weights& w, const detail::DecoderLayer& layer, std::size_t l, TensorView<const float> h,
             TensorView<float> out, std::span<const std::int32_t> lora_slots, const LoraStep& lora,
             ModelWorkspace::Impl& ws) {
  const std::size_t T = h.dim(0), E = w.config.num_experts;
  const TensorView<float> logits = view(ws.router_logits, T, E);
  matmul(h, layer.router, logits, Transpose::yes);
  TensorView<float> shared_logits;
  if (layer.shared_expert) {
    shared_logits = view(ws.shared_gate_logits, T, 1);
    matmul(h, layer.shared_expert_gate, shared_logits, Transpose::yes);
  }
  w.router->route(logits, ws.routing, {}, shared_logits);
  // The shared expert runs below as a dense MLP (with LoRA on its projections): moe_ffn gets only the
  // routed experts, and the shared expert its gate weights.
  ws.shared_weights.swap(ws.routing.shared_weights);
  ws.routing.shared_weights.clear();
  ws.routing.shared = 0;
  // No padding: moe_ffn cuts each expert's entries into tiles itself, and padded rows would be multiplied
  // too (16 rows for an expert's one token at decode).
  plan_experts(ws.routing, E, ws.plan);
  if (lora.layer_has_expert_lora[l]) {
    run_experts_with_lora(layer, l, h, out, lora_slots, lora, ws);
  } else {
    std::vector<const ExpertFfn*> experts(E);
    for (std::size_t e = 0; e < E; ++e) experts[e] = &layer.experts[e];
    moe_ffn(h, ws.routing, ws.plan, experts, {}, out, ws.moe);
  }
  if (layer.shared_expert) {
    const std::size_t H = h.dim(1);
    const TensorView<float> shared = view(ws.mlp_out, T, H);
    run_mlp(*layer.shared_expert, h, shared, lora, l, kMlpLinear, ws);
    for (std::size_t t = 0; t < T; ++t) {
      const float weight = ws.shared_weights[t];
      for (std::size_t j = 0; j < H; ++j) out.data()[t * H + j] += weight * shared.data()[t * H + j];
    }
  }
}

}  // namespace

Tensor<float> Model::forward(const ForwardBatch& batch, PagedKvCache& cache, ModelWorkspace& workspace) const {
  const Weights& w = *weights_;
  const ModelConfig& c = w.config;
  ModelWorkspace::Impl& ws = *workspace.impl_;
  const std::size_t S = batch.sequences.size(), T = batch.tokens.size(), H = c.hidden_size;

  // ---- plan: checks first, so that a refused step writes nothing.
  PERSONA_CHECK_AT(kFunction, shape_mismatch, batch.token_counts.size() == S, "{} token counts for {} sequences",
                   batch.token_counts.size(), S);
  std::size_t total = 0;
  for (std::size_t i = 0; i < S; ++i) {
    PERSONA_CHECK_AT(kFunction, invalid_argument, batch.token_counts[i] >= 1, "sequence {} brings no tokens", i);
    total += batch.token_counts[i];
  }
  PERSONA_CHECK_AT(kFunction, shape_mismatch, total == T, "the token counts add up to {} but {} tokens are given",
                   total, T);
  PERSONA_CHECK_AT(kFunction, invalid_argument, T >= 1, "an empty batch");
  for (std::size_t t = 0; t < T; ++t) {
    PERSONA_CHECK_AT(kFunction, out_of_range,
                     batch.tokens[t] >= 0 && static_cast<std::size_t>(batch.tokens[t]) < c.vocab_size,
                     "token {} is {}, outside the vocabulary of {}", t, batch.tokens[t], c.vocab_size);
  }
  PERSONA_CHECK_AT(kFunction, shape_mismatch, batch.lora_slots.empty() || batch.lora_slots.size() == T,
                   "{} LoRA slots for {} tokens", batch.lora_slots.size(), T);
  std::vector<std::size_t> slot_tokens(batch.adapters.size(), 0);
  for (std::size_t t = 0; t < batch.lora_slots.size(); ++t) {
    const std::int32_t s = batch.lora_slots[t];
    if (s == kNoLora) continue;
    PERSONA_CHECK_AT(kFunction, out_of_range, s >= 0 && static_cast<std::size_t>(s) < batch.adapters.size(),
                     "token {} has LoRA slot {} but {} adapters are given", t, s, batch.adapters.size());
    PERSONA_CHECK_AT(kFunction, invalid_argument, batch.adapters[static_cast<std::size_t>(s)] != nullptr,
                     "token {} uses slot {}, which has no adapter", t, s);
    ++slot_tokens[static_cast<std::size_t>(s)];
  }
  ws.positions.resize(T);
  std::unordered_set<std::uint64_t> seen;
  for (std::size_t i = 0, row = 0; i < S; ++i) {
    const SequenceInfo info = cache.sequence_info(batch.sequences[i]);
    const std::size_t written = cache.written_tokens(batch.sequences[i], 0), n = batch.token_counts[i];
    PERSONA_CHECK_AT(kFunction, invalid_argument, seen.insert(batch.sequences[i].value).second,
                     "sequence {} (id {:#x}) appears twice in the batch", i, batch.sequences[i].value);
    PERSONA_CHECK_AT(kFunction, invalid_argument, info.length == written + n,
                     "sequence {} (id {:#x}) has {} positions, {} of them computed: append exactly its {} new "
                     "tokens before the step",
                     i, batch.sequences[i].value, info.length, written, n);
    for (std::size_t j = 0; j < n; ++j) ws.positions[row++] = written + j;
  }
  const std::vector<std::size_t> default_rows = [&] {
    std::vector<std::size_t> rows;
    if (!batch.logit_rows.empty()) return rows;
    for (std::size_t i = 0, end = 0; i < S; ++i) rows.push_back((end += batch.token_counts[i]) - 1);
    return rows;
  }();
  const std::span<const std::size_t> logit_rows = batch.logit_rows.empty() ? default_rows : batch.logit_rows;
  for (const std::size_t r : logit_rows) {
    PERSONA_CHECK_AT(kFunction, out_of_range, r < T, "logit row {} of a batch of {} tokens", r, T);
  }
  const LoraStep lora = plan_lora(w, batch, slot_tokens);

  // ---- run
  const std::size_t D = c.head_dim, QW = c.q_width(), KW = c.kv_width();
  const TensorView<float> x = view(ws.x, T, H), h = view(ws.h, T, H), o = view(ws.o, T, H);
  const TensorView<float> q = view(ws.q, T, QW), k = view(ws.k, T, KW), v = view(ws.v, T, KW);
  const TensorView<float> attn = view(ws.attn, T, QW);
  for (std::size_t t = 0; t < T; ++t) {
    const auto token = static_cast<std::size_t>(batch.tokens[t]);
    if (const Tensor<float>* e = w.embedding.f32()) {
      std::copy_n(e->data() + token * H, H, x.data() + t * H);
    } else {
      w.embedding.bf16()->row_f32(token, {x.data() + t * H, H});
    }
  }
  for (std::size_t l = 0; l < w.layers.size(); ++l) {
    const detail::DecoderLayer& layer = w.layers[l];
    rmsnorm(x, layer.input_norm.span(), c.rms_norm_eps, h);
    run_linear(layer.q, h, q, lora.at(l, 0), lora.plan(l, 0), ws.lora);
    run_linear(layer.k, h, k, lora.at(l, 1), lora.plan(l, 1), ws.lora);
    run_linear(layer.v, h, v, lora.at(l, 2), lora.plan(l, 2), ws.lora);
    if (!layer.q_norm.empty()) {
      const TensorView<float> q_heads(q.data(), {T * c.num_heads, D}), k_heads(k.data(), {T * c.num_kv_heads, D});
      rmsnorm(q_heads, layer.q_norm.span(), c.rms_norm_eps, q_heads);
      rmsnorm(k_heads, layer.k_norm.span(), c.rms_norm_eps, k_heads);
    }
    const TensorView<float> q3(q.data(), {T, c.num_heads, D}), k3(k.data(), {T, c.num_kv_heads, D});
    rope(q3, ws.positions, c.rope);
    rope(k3, ws.positions, c.rope);
    for (std::size_t i = 0, row = 0; i < S; ++i) {
      const std::size_t n = batch.token_counts[i];
      cache.write_kv(batch.sequences[i], l, TensorView<const float>(k.data() + row * KW, {n, c.num_kv_heads, D}),
                     TensorView<const float>(v.data() + row * KW, {n, c.num_kv_heads, D}));
      row += n;
    }
    paged_prefill_attention(cache, l, batch.sequences, batch.token_counts, q3,
                            TensorView<float>(attn.data(), {T, c.num_heads, D}),
                            AttentionConfig{c.num_heads, 0.0f, layer.window});
    run_linear(layer.o, attn, o, lora.at(l, 3), lora.plan(l, 3), ws.lora);
    add_into(x, o);
    rmsnorm(x, layer.post_attention_norm.span(), c.rms_norm_eps, h);
    if (layer.sparse) {
      run_moe(w, layer, l, h, o, batch.lora_slots, lora, ws);
    } else {
      run_mlp(layer.mlp, h, o, lora, l, kMlpLinear, ws);
    }
    add_into(x, o);
  }

  const std::size_t R = logit_rows.size();
  const TensorView<float> rows = view(ws.rows, R, H), normed = view(ws.normed, R, H);
  for (std::size_t r = 0; r < R; ++r) std::copy_n(x.data() + logit_rows[r] * H, H, rows.data() + r * H);
  rmsnorm(rows, w.final_norm.span(), c.rms_norm_eps, normed);
  Tensor<float> logits({R, c.vocab_size});
  (w.lm_head ? *w.lm_head : w.embedding).multiply(normed, logits);
  return logits;
}

}  // namespace persona
