// Routing: per token, scores, selection values, group-limited masks, top-k and weights; then the capacity
// pass in batch order. The fast path and the reference share every decision and differ only in the
// kernels (SIMD sigmoid / softmax and the vector-filtered top-k vs the scalar oracles).
#include "persona/moe/top_k_router.hpp"

#include "core/kernels/core_kernel_table.hpp"
#include "moe/kernels/router_kernel_table.hpp"
#include "persona/core/threading.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace persona {
namespace {

struct Kernels {
  const detail::CoreKernelTable& core;
  const detail::RouterKernelTable& router;
};

// One thread's scratch: [E] each, plus groups.
struct TokenScratch {
  std::vector<float> score, select, best, group_score, compact;
  std::vector<std::uint8_t> allowed, group_allowed;
  std::vector<std::int32_t> ids, group_ids;

  void fit(std::size_t experts, std::size_t groups) {
    for (auto* v : {&score, &select, &best, &group_score, &compact}) v->resize(std::max(experts, groups));
    allowed.resize(experts);
    group_allowed.resize(groups);
    ids.resize(experts);
    group_ids.resize(groups);
  }
};

// Requests by token: the request covering each token, or null.
std::vector<const RouterRequest*> requests_by_token(std::size_t tokens, std::size_t experts,
                                                    std::span<const RouterRequest> requests, const char* function) {
  std::vector<const RouterRequest*> by_token(requests.empty() ? 0 : tokens, nullptr);
  for (std::size_t r = 0; r < requests.size(); ++r) {
    const RouterRequest& q = requests[r];
    if (q.token_begin > q.token_end || q.token_end > tokens) {
      PERSONA_THROW_AT(function, out_of_range, "request {} covers tokens [{}, {}) but the batch has {}", r,
                       q.token_begin, q.token_end, tokens);
    }
    if ((!q.allowed.empty() && q.allowed.size() != experts) ||
        (!q.bias_offset.empty() && q.bias_offset.size() != experts)) {
      PERSONA_THROW_AT(function, shape_mismatch,
                       "request {}: allowed has {} values and bias_offset {}; each needs {} (E) or none", r,
                       q.allowed.size(), q.bias_offset.size(), experts);
    }
    for (std::size_t e = 0; e < q.bias_offset.size(); ++e) {
      if (!std::isfinite(q.bias_offset[e])) {
        PERSONA_THROW_AT(function, invalid_argument, "request {}: bias_offset[{}] is {}", r, e, q.bias_offset[e]);
      }
    }
    for (std::size_t t = q.token_begin; t < q.token_end; ++t) {
      if (by_token[t] != nullptr) {
        PERSONA_THROW_AT(function, invalid_argument, "token {} is covered by two requests (the second is request {})",
                         t, r);
      }
      by_token[t] = &q;
    }
  }
  return by_token;
}

// Routes token t: writes its k experts (best first) and weights. Throws if its mask leaves too few.
void route_token(const RouterConfig& c, const Kernels& k, const float* logits, std::size_t t,
                 const RouterRequest* request, TokenScratch& s, std::int32_t* out_ids, float* out_weights,
                 const char* function) {
  const std::size_t E = c.num_experts;
  if (!k.router.all_finite(logits, E)) {
    const std::size_t e = static_cast<std::size_t>(
        std::find_if_not(logits, logits + E, [](float v) { return std::isfinite(v); }) - logits);
    PERSONA_THROW_AT(function, invalid_argument, "token {}: the logit of expert {} is {}", t, e, logits[e]);
  }
  // Scores, and the values the selection ranks. Softmax, renormalized and without a bias, needs no full
  // softmax: the renormalized weights are the softmax of the chosen logits (the denominator cancels).
  // Renormalized softmax weights are the softmax of the chosen logits whatever chose them (and never 0/0
  // when a bias picks experts whose full-softmax probability underflows).
  const bool biased = !c.selection_bias.empty() || (request != nullptr && !request->bias_offset.empty());
  const bool chosen_softmax =
      c.scoring == RouterScoring::topk_then_softmax || (c.scoring == RouterScoring::softmax && c.renormalize);
  const float* score = logits;
  if (c.scoring == RouterScoring::softmax && (biased || !c.renormalize)) {
    k.core.softmax(logits, s.score.data(), E);
    score = s.score.data();
  } else if (c.scoring == RouterScoring::sigmoid) {
    k.router.sigmoid(logits, s.score.data(), E);
    score = s.score.data();
  }
  const std::vector<float>* offset =
      request != nullptr && !request->bias_offset.empty() ? &request->bias_offset : nullptr;
  const float* select = score;
  if (biased) {
    for (std::size_t e = 0; e < E; ++e) {
      float v = score[e];
      if (!c.selection_bias.empty()) v += c.selection_bias[e];
      if (offset != nullptr) v += (*offset)[e];
      s.select[e] = v;
    }
    select = s.select.data();
  } else if (c.scoring == RouterScoring::softmax) {
    select = logits;  // the same order as the probabilities, without their rounding
  }
  // The experts this token may use: its request's mask, narrowed to the best groups.
  const std::uint8_t* allowed = request != nullptr && !request->allowed.empty() ? request->allowed.data() : nullptr;
  if (c.num_groups > 1) {
    const std::size_t per_group = E / c.num_groups;
    const std::size_t top = c.group_score == GroupScore::sum_top2 ? 2 : 1;
    std::size_t usable_groups = 0;
    for (std::size_t g = 0; g < c.num_groups; ++g) {
      float best[2];
      std::int32_t ids[2];
      const std::size_t n = k.router.select_top_k(select + g * per_group, allowed ? allowed + g * per_group : nullptr,
                                                  per_group, top, ids, best);
      // A group without enough allowed experts to score cannot be chosen.
      s.group_allowed[g] = n == top ? 1 : 0;
      usable_groups += s.group_allowed[g];
      s.group_score[g] = n == top ? (top == 2 ? best[0] + best[1] : best[0]) : 0.0f;
    }
    if (usable_groups < c.topk_groups) {
      PERSONA_THROW_AT(function, invalid_argument,
                       "token {}: its expert mask leaves {} usable groups; topk_groups is {}", t, usable_groups,
                       c.topk_groups);
    }
    const std::size_t chosen = k.router.select_top_k(s.group_score.data(), s.group_allowed.data(), c.num_groups,
                                                     c.topk_groups, s.group_ids.data(), s.best.data());
    std::sort(s.group_ids.begin(), s.group_ids.begin() + static_cast<std::ptrdiff_t>(chosen));
    if (allowed == nullptr) {
      // The chosen groups side by side, in expert order (so ties still go to the lower expert), ranked
      // without a mask; then back to expert ids.
      for (std::size_t i = 0; i < chosen; ++i) {
        std::copy_n(select + static_cast<std::size_t>(s.group_ids[i]) * per_group, per_group,
                    s.compact.data() + i * per_group);
      }
      const std::size_t count =
          k.router.select_top_k(s.compact.data(), nullptr, chosen * per_group, c.top_k, out_ids, s.best.data());
      PERSONA_ASSERT(count == c.top_k);
      for (std::size_t i = 0; i < count; ++i) {
        auto at = static_cast<std::size_t>(out_ids[i]);
        std::size_t group = 0;
        while (at >= per_group) {
          at -= per_group;
          ++group;
        }
        out_ids[i] = static_cast<std::int32_t>(static_cast<std::size_t>(s.group_ids[group]) * per_group + at);
      }
    } else {
      std::fill(s.allowed.begin(), s.allowed.end(), std::uint8_t{0});
      for (std::size_t i = 0; i < chosen; ++i) {
        const auto g = static_cast<std::size_t>(s.group_ids[i]);
        std::copy_n(allowed + g * per_group, per_group, s.allowed.data() + g * per_group);
      }
      allowed = s.allowed.data();
    }
  }
  const std::size_t count = c.num_groups > 1 && allowed == nullptr
                                ? c.top_k
                                : k.router.select_top_k(select, allowed, E, c.top_k, out_ids, s.best.data());
  if (count < c.top_k) {
    PERSONA_THROW_AT(function, invalid_argument,
                     "token {}: its expert mask leaves {} experts to choose from; top_k is {}", t, count, c.top_k);
  }
  // Weights.
  if (chosen_softmax) {
    for (std::size_t i = 0; i < c.top_k; ++i) s.best[i] = logits[out_ids[i]];
    k.core.softmax(s.best.data(), out_weights, c.top_k);
  } else {
    if (c.scoring == RouterScoring::logit_sigmoid) {
      for (std::size_t i = 0; i < c.top_k; ++i) s.best[i] = logits[out_ids[i]];
      k.router.sigmoid(s.best.data(), out_weights, c.top_k);
    } else {
      for (std::size_t i = 0; i < c.top_k; ++i) out_weights[i] = score[out_ids[i]];
    }
    if (c.renormalize) {
      float sum = 0.0f;
      for (std::size_t i = 0; i < c.top_k; ++i) sum += out_weights[i];
      // DeepSeek-V3 guards its sigmoid sum with 1e-20 (renormalized softmax took the branch above).
      const float denominator = c.scoring == RouterScoring::sigmoid ? sum + 1e-20f : sum;
      for (std::size_t i = 0; i < c.top_k; ++i) out_weights[i] /= denominator;
    }
  }
  if (c.routed_scaling_factor != 1.0f) {
    for (std::size_t i = 0; i < c.top_k; ++i) out_weights[i] *= c.routed_scaling_factor;
  }
}

// Slots past an expert's capacity, in batch order: dropped, or moved to the token's next-best expert
// with room (keeping the slot's weight).
void apply_capacity(const RouterConfig& c, const Kernels& k, TensorView<const float> logits,
                    std::span<const RouterRequest* const> by_token, Routing& out, const char* function) {
  const std::size_t E = c.num_experts, T = out.tokens;
  // No expert can take more than every slot: clamping first keeps the conversion defined for huge factors.
  const double slots = static_cast<double>(T * c.top_k);
  const double wanted = std::ceil(static_cast<double>(c.capacity_factor) * slots / static_cast<double>(E));
  const std::size_t capacity = wanted >= slots ? T * c.top_k : static_cast<std::size_t>(wanted);
  std::vector<std::size_t> load(E, 0);
  TokenScratch s;
  s.fit(E, c.num_groups);
  std::vector<std::int32_t> ranking(E);
  std::vector<float> ranking_weights(E);
  RouterConfig full = c;
  full.top_k = E;
  full.num_groups = 1;
  full.topk_groups = 1;
  for (std::size_t t = 0; t < T; ++t) {
    std::size_t ranked = 0;  // experts in `ranking`, once computed
    for (std::size_t slot = 0; slot < c.top_k; ++slot) {
      std::int32_t& e = out.experts[t * c.top_k + slot];
      if (load[static_cast<std::size_t>(e)] < capacity) {
        ++load[static_cast<std::size_t>(e)];
        continue;
      }
      std::int32_t moved = kNoExpert;
      if (c.overflow == CapacityOverflow::reroute) {
        if (ranked == 0) {
          // Every allowed expert of this token, best first (groups ignored: any expert with room will do).
          const RouterRequest* request = by_token.empty() ? nullptr : by_token[t];
          std::size_t allowed = E;
          if (request != nullptr && !request->allowed.empty()) {
            allowed = static_cast<std::size_t>(
                std::count_if(request->allowed.begin(), request->allowed.end(), [](std::uint8_t a) { return a != 0; }));
          }
          full.top_k = allowed;
          full.renormalize = false;
          route_token(full, k, &logits(t, 0), t, request, s, ranking.data(), ranking_weights.data(), function);
          full.top_k = E;
          ranked = allowed;
        }
        for (std::size_t i = 0; i < ranked; ++i) {
          const std::int32_t candidate = ranking[i];
          const bool taken =
              std::find(out.experts.begin() + static_cast<std::ptrdiff_t>(t * c.top_k),
                        out.experts.begin() + static_cast<std::ptrdiff_t>((t + 1) * c.top_k),
                        candidate) != out.experts.begin() + static_cast<std::ptrdiff_t>((t + 1) * c.top_k);
          if (!taken && load[static_cast<std::size_t>(candidate)] < capacity) {
            moved = candidate;
            break;
          }
        }
      }
      if (moved != kNoExpert) {
        ++load[static_cast<std::size_t>(moved)];
        e = moved;
        ++out.rerouted;
      } else {
        e = kNoExpert;
        out.weights[t * c.top_k + slot] = 0.0f;
        ++out.dropped;
      }
    }
  }
}

void route_impl(const RouterConfig& c, const Kernels& k, bool threaded, TensorView<const float> logits, Routing& out,
                std::span<const RouterRequest> requests, TensorView<const float> shared_gate_logits,
                const char* function) {
  const std::size_t E = c.num_experts;
  if (logits.rank() != 2 || logits.dim(1) != E || (logits.dim(1) > 1 && logits.stride(1) != 1)) {
    PERSONA_THROW_AT(function, shape_mismatch, "logits {} must be [tokens, {}] with contiguous rows",
                     logits.shape().to_string(), E);
  }
  const std::size_t T = logits.dim(0);
  const bool gated = c.shared_experts > 0 && c.shared_gate == SharedExpertGate::sigmoid;
  if (gated ? (shared_gate_logits.rank() != 2 || shared_gate_logits.dim(0) != T ||
               shared_gate_logits.dim(1) != c.shared_experts)
            : !shared_gate_logits.empty()) {
    PERSONA_THROW_AT(function, shape_mismatch, "shared_gate_logits {} must be [{}, {}]{}",
                     shared_gate_logits.shape().to_string(), T, c.shared_experts,
                     gated ? "" : " or empty: the config has no sigmoid-gated shared experts");
  }
  const std::vector<const RouterRequest*> by_token = requests_by_token(T, E, requests, function);
  out.tokens = T;
  out.k = c.top_k;
  out.shared = c.shared_experts;
  out.experts.resize(T * c.top_k);
  out.weights.resize(T * c.top_k);
  out.shared_weights.resize(T * c.shared_experts);
  out.dropped = out.rerouted = 0;

  auto body = [&](std::size_t, std::size_t begin, std::size_t end) {
    // Per thread and kept: a one-token call must not pay for allocations.
    thread_local TokenScratch s;
    s.fit(E, c.num_groups);
    for (std::size_t t = begin; t < end; ++t) {
      route_token(c, k, &logits(t, 0), t, by_token.empty() ? nullptr : by_token[t], s, out.experts.data() + t * c.top_k,
                  out.weights.data() + t * c.top_k, function);
      for (std::size_t j = 0; j < c.shared_experts; ++j) {
        float w = 1.0f;
        if (gated) {
          const float g = shared_gate_logits(t, j);
          if (!std::isfinite(g)) {
            PERSONA_THROW_AT(function, invalid_argument, "token {}: shared gate logit {} is {}", t, j, g);
          }
          k.router.sigmoid(&g, &w, 1);
        }
        out.shared_weights[t * c.shared_experts + j] = w;
      }
    }
  };
  constexpr std::size_t kTokenGrain = 64;  // fixed: a token's result never depends on its chunk anyway
  if (threaded) {
    parallel_for_slots(T, kTokenGrain, body);
  } else {
    body(0, 0, T);
  }
  if (c.capacity_factor > 0.0f) apply_capacity(c, k, logits, by_token, out, function);
}

}  // namespace

TopKRouter::TopKRouter(RouterConfig config) : config_(std::move(config)) { config_.validate(); }

void TopKRouter::route(TensorView<const float> logits, Routing& out, std::span<const RouterRequest> requests,
                       TensorView<const float> shared_gate_logits) const {
  const Kernels k{detail::core_kernels(), detail::router_kernels(active_isa_level())};
  route_impl(config_, k, true, logits, out, requests, shared_gate_logits, "route");
}

Routing TopKRouter::route(TensorView<const float> logits, std::span<const RouterRequest> requests,
                          TensorView<const float> shared_gate_logits) const {
  Routing out;
  route(logits, out, requests, shared_gate_logits);
  return out;
}

Routing TopKRouter::route_ref(TensorView<const float> logits, std::span<const RouterRequest> requests,
                              TensorView<const float> shared_gate_logits) const {
  const Kernels k{detail::reference_core_kernels(), detail::reference_router_kernels()};
  Routing out;
  route_impl(config_, k, false, logits, out, requests, shared_gate_logits, "route_ref");
  return out;
}

}  // namespace persona
