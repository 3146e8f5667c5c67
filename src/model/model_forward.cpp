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
#include <chrono>

namespace persona {
namespace {

constexpr const char* kFunction = "Model::forward";

// A [rows, cols] view of the front of a buffer grown to fit.
TensorView<float> view(std::vector<float>& buffer, std::size_t rows, std::size_t cols) {
  if (buffer.size() < rows * cols) buffer.resize(rows * cols);
  return TensorView<float>(buffer.data(), {rows, cols});
}

// A layer's linear layers in LoRA's order: q, k, v, o (0-3), the MLP's or shared expert's gate, up, down,
// then expert e's gate, up, down at kExpertLinear + 3 e.
constexpr std::size_t kMlpLinear = 4;
constexpr std::size_t kExpertLinear = 7;

// Which adapter module each slot uses for each linear layer of the model, and the token plan of each
// distinct set of slots that adapt one. Kept in the workspace: its vectors keep their storage across steps.
struct LoraStep {
  std::size_t slots = 0, per_layer = 0;
  std::vector<const LoraModule*> modules;  // [layer][linear][slot]
  std::vector<std::int32_t> plan_of;       // [layer][linear]: index into plans, -1: no token adapted
  std::vector<LoraBatchPlan> plans;        // the first plan_count are this step's
  std::size_t plan_count = 0;
  std::vector<std::uint8_t> plan_slots;             // [plan][slot]: the slots each plan adapts
  std::vector<std::uint8_t> present;                // [slot] scratch
  std::vector<std::int32_t> masked;                 // [token] scratch
  std::vector<std::uint8_t> layer_has_expert_lora;  // [layer]

  std::span<const LoraModule* const> at(std::size_t layer, std::size_t linear) const {
    return {modules.data() + (layer * per_layer + linear) * slots, slots};
  }
  const LoraBatchPlan* plan(std::size_t layer, std::size_t linear) const {
    const std::int32_t p = plan_of[layer * per_layer + linear];
    return p < 0 ? nullptr : &plans[static_cast<std::size_t>(p)];
  }
};

}  // namespace

struct ModelWorkspace::Impl {
  std::vector<float> x, h, q, k, v, attn, o, gate, up, act, mlp_out, router_logits, shared_gate_logits, rows, normed;
  std::vector<std::size_t> positions, slot_tokens, default_rows;
  std::vector<std::uint64_t> sequence_ids;
  LoraStep lora_step;
  LoraWorkspace lora;
  MoeWorkspace moe;
  Routing routing;
  ExpertPlan plan;
  std::vector<const ExpertFfn*> experts;
  // The LoRA path of the routed experts: one expert's gathered rows, activations, token slots and plan,
  // and every routed entry's output.
  std::vector<float> expert_x, expert_gate, expert_up, expert_act, expert_out, entry_out;
  std::vector<std::int32_t> expert_slots, masked_slots;
  LoraBatchPlan expert_lora_plan;
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

namespace detail {

void index_linears(Model::Weights& w) {
  const std::size_t per_layer = kExpertLinear + 3 * w.config.num_experts;
  w.linears_per_layer = per_layer;
  w.linear_shapes.assign(w.layers.size() * per_layer, {});
  w.linear_by_name.clear();
  for (std::size_t l = 0; l < w.layers.size(); ++l) {
    const DecoderLayer& layer = w.layers[l];
    const auto add = [&](std::size_t i, const std::string& name, const WeightMatrix& weight) {
      w.linear_shapes[l * per_layer + i] = {weight.rows(), weight.cols()};
      w.linear_by_name.emplace(std::pair{l, std::string_view(name)}, i);
    };
    add(0, layer.q.module, layer.q.weight);
    add(1, layer.k.module, layer.k.weight);
    add(2, layer.v.module, layer.v.weight);
    add(3, layer.o.module, layer.o.weight);
    const Mlp* mlp = layer.sparse ? (layer.shared_expert ? &*layer.shared_expert : nullptr) : &layer.mlp;
    if (mlp != nullptr) {
      add(kMlpLinear, mlp->gate.module, mlp->gate.weight);
      add(kMlpLinear + 1, mlp->up.module, mlp->up.weight);
      add(kMlpLinear + 2, mlp->down.module, mlp->down.weight);
    }
    for (std::size_t e = 0; e < layer.experts.size(); ++e) {
      const ExpertFfn& f = layer.experts[e];
      const std::array<const WeightMatrix*, 3> projections{&f.gate, &f.up, &f.down};
      for (std::size_t p = 0; p < 3; ++p) {
        add(kExpertLinear + 3 * e + p, layer.expert_modules[e][p], *projections[p]);
        if (!layer.expert_aliases.empty()) {
          w.linear_by_name.emplace(std::pair{l, std::string_view(layer.expert_aliases[e][p])},
                                   kExpertLinear + 3 * e + p);
        }
      }
    }
  }
}

}  // namespace detail

namespace {

// Adds the wall time of each stage to the step's stats, when there are stats to fill.
class StageClock {
 public:
  using Stage = double ForwardStats::*;
  explicit StageClock(ForwardStats* stats) : stats_(stats) {
    if (stats_ != nullptr) last_ = Clock::now();
  }
  void lap(Stage stage) {
    if (stats_ == nullptr) return;
    const auto now = Clock::now();
    stats_->*stage += std::chrono::duration<double>(now - last_).count();
    last_ = now;
  }

 private:
  using Clock = std::chrono::steady_clock;
  ForwardStats* stats_;
  Clock::time_point last_;
};

// Resolves every slot's module for every linear layer (each adapter module checked against the model's
// layer), then one token plan per distinct set of adapting slots: usually one for the whole model.
void plan_lora(const Model::Weights& w, const ForwardBatch& batch, std::span<const std::size_t> slot_tokens,
               LoraStep& step) {
  const std::size_t L = w.layers.size(), S = batch.adapters.size(), P = w.linears_per_layer;
  step.slots = S;
  step.per_layer = P;
  step.modules.assign(L * P * S, nullptr);
  step.plan_of.assign(L * P, -1);
  step.layer_has_expert_lora.assign(L, 0);
  step.plan_count = 0;
  if (batch.lora_slots.empty()) return;

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
      const auto it = w.linear_by_name.find({target.layer, std::string_view(target.module)});
      if (it == w.linear_by_name.end()) {
        PERSONA_THROW_AT(kFunction, invalid_argument,
                         "adapter '{}' (slot {}) adapts layer {} module '{}', which this {} model does not have",
                         adapter.id(), s, target.layer, target.module, to_string(w.config.architecture));
      }
      const Model::Weights::LinearShape shape = w.linear_shapes[target.layer * P + it->second];
      if (module.out_features() != shape.out || module.in_features() != shape.in) {
        PERSONA_THROW_AT(kFunction, shape_mismatch,
                         "adapter '{}' (slot {}): layer {} module '{}' is [out {}, in {}] but the model's layer is "
                         "[{}, {}]",
                         adapter.id(), s, target.layer, target.module, module.out_features(), module.in_features(),
                         shape.out, shape.in);
      }
      const LoraModule*& entry = step.modules[(target.layer * P + it->second) * S + s];
      PERSONA_CHECK_AT(kFunction, invalid_argument, entry == nullptr,
                       "adapter '{}' (slot {}) adapts layer {} module '{}' twice, under two of its names", adapter.id(),
                       s, target.layer, target.module);
      entry = &module;
    }
  }

  step.present.resize(S);
  step.masked.resize(batch.lora_slots.size());
  for (std::size_t l = 0; l < L; ++l) {
    for (std::size_t i = 0; i < P; ++i) {
      bool any = false;
      for (std::size_t s = 0; s < S; ++s) {
        step.present[s] = step.modules[(l * P + i) * S + s] != nullptr ? 1 : 0;
        any = any || step.present[s] != 0;
      }
      if (!any) continue;
      if (i >= kExpertLinear) {
        step.layer_has_expert_lora[l] = 1;
        continue;  // expert plans are made per expert, over its tokens
      }
      std::size_t p = 0;
      while (p < step.plan_count && !std::equal(step.present.begin(), step.present.end(),
                                                step.plan_slots.begin() + static_cast<std::ptrdiff_t>(p * S))) {
        ++p;
      }
      if (p == step.plan_count) {
        for (std::size_t t = 0; t < step.masked.size(); ++t) {
          const std::int32_t slot = batch.lora_slots[t];
          step.masked[t] = slot != kNoLora && step.present[static_cast<std::size_t>(slot)] != 0 ? slot : kNoLora;
        }
        if (step.plans.size() <= p) step.plans.resize(p + 1);
        step.plans[p].reserve(step.masked.size(), S);
        plan_lora_batch(step.masked, S, step.plans[p]);
        step.plan_slots.resize((p + 1) * S);
        std::copy(step.present.begin(), step.present.end(),
                  step.plan_slots.begin() + static_cast<std::ptrdiff_t>(p * S));
        ++step.plan_count;
      }
      step.plan_of[l * P + i] = static_cast<std::int32_t>(p);
    }
  }
}

// y = x W^T (+ LoRA of the tokens whose slot adapts it) (+ b). The base product and the LoRA deltas are
// timed apart; DoRA slots need the base weight inside the LoRA step (lora_linear).
void run_linear(const detail::Linear& linear, TensorView<const float> x, TensorView<float> y,
                std::span<const LoraModule* const> modules, const LoraBatchPlan* plan, LoraWorkspace& workspace,
                StageClock& clock) {
  const bool dora =
      plan != nullptr && std::any_of(plan->segments.begin(), plan->segments.end(), [&](const LoraSegment& s) {
        return modules[static_cast<std::size_t>(s.slot)]->dora();
      });
  if (dora) {
    lora_linear(x, linear.weight, y, modules, *plan, workspace);
    clock.lap(&ForwardStats::lora_seconds);
  } else {
    linear.weight.multiply(x, y);
    clock.lap(&ForwardStats::base_seconds);
    if (plan != nullptr) {
      apply_lora(x, y, modules, *plan, workspace);
      clock.lap(&ForwardStats::lora_seconds);
    }
  }
  if (linear.bias.empty()) return;
  const std::size_t n = linear.bias.size();
  for (std::size_t t = 0; t < y.dim(0); ++t) {
    float* row = y.data() + t * n;
    for (std::size_t j = 0; j < n; ++j) row[j] += linear.bias[j];
  }
  clock.lap(&ForwardStats::other_seconds);
}

void add_into(TensorView<float> x, TensorView<const float> y) {
  float* a = x.data();
  const float* b = y.data();
  for (std::size_t i = 0; i < x.numel(); ++i) a[i] += b[i];
}

// out = down(silu(gate h) * up h), each linear with its LoRA (linear indices first, first + 1, first + 2).
void run_mlp(const detail::Mlp& mlp, TensorView<const float> h, TensorView<float> out, const LoraStep& lora,
             std::size_t layer, std::size_t first, ModelWorkspace::Impl& ws, StageClock& clock) {
  const std::size_t T = h.dim(0), F = mlp.gate.weight.rows();
  const TensorView<float> gate = view(ws.gate, T, F), up = view(ws.up, T, F), act = view(ws.act, T, F);
  run_linear(mlp.gate, h, gate, lora.at(layer, first), lora.plan(layer, first), ws.lora, clock);
  run_linear(mlp.up, h, up, lora.at(layer, first + 1), lora.plan(layer, first + 1), ws.lora, clock);
  swiglu(gate, up, act);
  clock.lap(&ForwardStats::other_seconds);
  run_linear(mlp.down, act, out, lora.at(layer, first + 2), lora.plan(layer, first + 2), ws.lora, clock);
}

// The routed experts with LoRA: each expert's tokens gathered, its three projections run with the LoRA of
// the tokens' slots (a plan per projection over those tokens), the outputs combined in slot order.
void run_experts_with_lora(const detail::DecoderLayer& layer, std::size_t l, TensorView<const float> h,
                           TensorView<float> out, std::span<const std::int32_t> lora_slots, const LoraStep& lora,
                           ModelWorkspace::Impl& ws) {
  const ExpertPlan& plan = ws.plan;
  const Routing& routing = ws.routing;
  const std::size_t H = h.dim(1), T = h.dim(0), F = layer.experts.front().ffn();
  const TensorView<float> entries = view(ws.entry_out, std::max<std::size_t>(plan.entries(), 1), H);
  // Sized for an expert that gets every token, so that how the routing falls never grows them.
  view(ws.expert_x, T, H);
  view(ws.expert_gate, T, F);
  view(ws.expert_up, T, F);
  view(ws.expert_act, T, F);
  view(ws.expert_out, T, H);
  ws.expert_slots.reserve(T);
  ws.masked_slots.reserve(T);
  ws.expert_lora_plan.reserve(T, lora.slots);
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
      plan_lora_batch(ws.masked_slots, modules.size(), ws.expert_lora_plan);
      lora_linear(in, weight, y, modules, ws.expert_lora_plan, ws.lora);
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
             ModelWorkspace::Impl& ws, StageClock& clock, ForwardStats* stats) {
  const std::size_t T = h.dim(0), E = w.config.num_experts;
  const TensorView<float> logits = view(ws.router_logits, T, E);
  matmul(h, layer.router, logits, Transpose::yes);
  TensorView<float> shared_logits;
  if (layer.shared_expert) {
    shared_logits = view(ws.shared_gate_logits, T, 1);
    matmul(h, layer.shared_expert_gate, shared_logits, Transpose::yes);
  }
  w.router->route(logits, ws.routing, {}, shared_logits);
  if (stats != nullptr) {
    stats->routed_experts.insert(stats->routed_experts.end(), ws.routing.experts.begin(), ws.routing.experts.end());
  }
  // The shared expert runs below as a dense MLP (with LoRA on its projections): moe_ffn gets only the
  // routed experts, and the shared expert its gate weights.
  ws.shared_weights.swap(ws.routing.shared_weights);
  ws.routing.shared_weights.clear();
  ws.routing.shared = 0;
  // No padding: moe_ffn cuts each expert's entries into tiles itself, and padded rows would be multiplied
  // too (16 rows for an expert's one token at decode).
  plan_experts(ws.routing, E, ws.plan);
  if (lora.layer_has_expert_lora[l] != 0) {
    run_experts_with_lora(layer, l, h, out, lora_slots, lora, ws);
  } else {
    ws.experts.resize(E);
    for (std::size_t e = 0; e < E; ++e) ws.experts[e] = &layer.experts[e];
    moe_ffn(h, ws.routing, ws.plan, ws.experts, {}, out, ws.moe);
  }
  clock.lap(&ForwardStats::experts_seconds);
  if (layer.shared_expert) {
    const std::size_t H = h.dim(1);
    const TensorView<float> shared = view(ws.mlp_out, T, H);
    run_mlp(*layer.shared_expert, h, shared, lora, l, kMlpLinear, ws, clock);
    for (std::size_t t = 0; t < T; ++t) {
      const float weight = ws.shared_weights[t];
      for (std::size_t j = 0; j < H; ++j) out.data()[t * H + j] += weight * shared.data()[t * H + j];
    }
    clock.lap(&ForwardStats::other_seconds);
  }
}

}  // namespace

Tensor<float> Model::forward(const ForwardBatch& batch, PagedKvCache& cache, ModelWorkspace& workspace,
                             ForwardStats* stats) const {
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
  ws.slot_tokens.assign(batch.adapters.size(), 0);
  for (std::size_t t = 0; t < batch.lora_slots.size(); ++t) {
    const std::int32_t s = batch.lora_slots[t];
    if (s == kNoLora) continue;
    PERSONA_CHECK_AT(kFunction, out_of_range, s >= 0 && static_cast<std::size_t>(s) < batch.adapters.size(),
                     "token {} has LoRA slot {} but {} adapters are given", t, s, batch.adapters.size());
    PERSONA_CHECK_AT(kFunction, invalid_argument, batch.adapters[static_cast<std::size_t>(s)] != nullptr,
                     "token {} uses slot {}, which has no adapter", t, s);
    ++ws.slot_tokens[static_cast<std::size_t>(s)];
  }
  ws.sequence_ids.resize(S);
  for (std::size_t i = 0; i < S; ++i) ws.sequence_ids[i] = batch.sequences[i].value;
  std::sort(ws.sequence_ids.begin(), ws.sequence_ids.end());
  if (const auto twice = std::adjacent_find(ws.sequence_ids.begin(), ws.sequence_ids.end());
      twice != ws.sequence_ids.end()) {
    PERSONA_THROW_AT(kFunction, invalid_argument, "sequence id {:#x} appears twice in the batch", *twice);
  }
  ws.positions.resize(T);
  for (std::size_t i = 0, row = 0; i < S; ++i) {
    const SequenceInfo info = cache.sequence_info(batch.sequences[i]);
    const std::size_t written = cache.written_tokens(batch.sequences[i], 0), n = batch.token_counts[i];
    PERSONA_CHECK_AT(kFunction, invalid_argument, info.length == written + n,
                     "sequence {} (id {:#x}) has {} positions, {} of them computed: append exactly its {} new "
                     "tokens before the step",
                     i, batch.sequences[i].value, info.length, written, n);
    for (std::size_t j = 0; j < n; ++j) ws.positions[row++] = written + j;
  }
  ws.default_rows.clear();
  if (batch.logit_rows.empty()) {
    for (std::size_t i = 0, end = 0; i < S; ++i) ws.default_rows.push_back((end += batch.token_counts[i]) - 1);
  }
  const std::span<const std::size_t> logit_rows = batch.logit_rows.empty() ? ws.default_rows : batch.logit_rows;
  for (const std::size_t r : logit_rows) {
    PERSONA_CHECK_AT(kFunction, out_of_range, r < T, "logit row {} of a batch of {} tokens", r, T);
  }
  plan_lora(w, batch, ws.slot_tokens, ws.lora_step);
  const LoraStep& lora = ws.lora_step;
  if (stats != nullptr) {
    *stats = ForwardStats{.routed_experts = std::move(stats->routed_experts)};
    stats->routed_experts.clear();
  }
  StageClock clock(stats);

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
    clock.lap(&ForwardStats::other_seconds);
    run_linear(layer.q, h, q, lora.at(l, 0), lora.plan(l, 0), ws.lora, clock);
    run_linear(layer.k, h, k, lora.at(l, 1), lora.plan(l, 1), ws.lora, clock);
    run_linear(layer.v, h, v, lora.at(l, 2), lora.plan(l, 2), ws.lora, clock);
    if (!layer.q_norm.empty()) {
      const TensorView<float> q_heads(q.data(), {T * c.num_heads, D}), k_heads(k.data(), {T * c.num_kv_heads, D});
      rmsnorm(q_heads, layer.q_norm.span(), c.rms_norm_eps, q_heads);
      rmsnorm(k_heads, layer.k_norm.span(), c.rms_norm_eps, k_heads);
    }
    const TensorView<float> q3(q.data(), {T, c.num_heads, D}), k3(k.data(), {T, c.num_kv_heads, D});
    rope(q3, ws.positions, c.rope);
    rope(k3, ws.positions, c.rope);
    clock.lap(&ForwardStats::other_seconds);
    for (std::size_t i = 0, row = 0; i < S; ++i) {
      const std::size_t n = batch.token_counts[i];
      cache.write_kv(batch.sequences[i], l, TensorView<const float>(k.data() + row * KW, {n, c.num_kv_heads, D}),
                     TensorView<const float>(v.data() + row * KW, {n, c.num_kv_heads, D}));
      row += n;
    }
    paged_prefill_attention(cache, l, batch.sequences, batch.token_counts, q3,
                            TensorView<float>(attn.data(), {T, c.num_heads, D}),
                            AttentionConfig{c.num_heads, 0.0f, layer.window});
    clock.lap(&ForwardStats::attention_seconds);
    run_linear(layer.o, attn, o, lora.at(l, 3), lora.plan(l, 3), ws.lora, clock);
    add_into(x, o);
    rmsnorm(x, layer.post_attention_norm.span(), c.rms_norm_eps, h);
    clock.lap(&ForwardStats::other_seconds);
    if (layer.sparse) {
      run_moe(w, layer, l, h, o, batch.lora_slots, lora, ws, clock, stats);
    } else {
      run_mlp(layer.mlp, h, o, lora, l, kMlpLinear, ws, clock);
    }
    add_into(x, o);
    clock.lap(&ForwardStats::other_seconds);
  }

  const std::size_t R = logit_rows.size();
  const TensorView<float> rows = view(ws.rows, R, H), normed = view(ws.normed, R, H);
  for (std::size_t r = 0; r < R; ++r) std::copy_n(x.data() + logit_rows[r] * H, H, rows.data() + r * H);
  rmsnorm(rows, w.final_norm.span(), c.rms_norm_eps, normed);
  clock.lap(&ForwardStats::other_seconds);
  Tensor<float> logits({R, c.vocab_size});
  (w.lm_head ? *w.lm_head : w.embedding).multiply(normed, logits);
  clock.lap(&ForwardStats::base_seconds);
  return logits;
}

}  // namespace persona
