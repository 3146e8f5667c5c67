// TopKRouter: routes each token to k experts (RouterConfig says how), with one SIMD path and a scalar
// reference. Every token is routed on its own: ties break toward the lower expert index, all in fp32,
// and a token's experts and weights are bit-identical whatever the thread count and whatever else is in
// the batch (batch-invariant) unless a capacity is set, which by its nature depends on the batch.
#pragma once

#include "persona/core/tensor.hpp"
#include "persona/moe/router_config.hpp"

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace persona {

inline constexpr std::int32_t kNoExpert = -1;

// Controls for one request's tokens [token_begin, token_end) (a tenant may be kept off some experts).
struct RouterRequest {
  std::size_t token_begin = 0, token_end = 0;
  std::vector<std::uint8_t> allowed;  // [E] or empty: 0 keeps these tokens off that expert
  std::vector<float> bias_offset;     // [E] or empty: added to the selection values of these tokens
};

struct Routing {
  std::size_t tokens = 0, k = 0, shared = 0;
  std::vector<std::int32_t> experts;  // [tokens, k], best first; kNoExpert for a dropped slot
  std::vector<float> weights;         // [tokens, k]; 0 for a dropped slot
  std::vector<float> shared_weights;  // [tokens, shared]
  std::size_t dropped = 0;            // slots lost to the capacity
  std::size_t rerouted = 0;           // slots moved to a next-best expert by the capacity

  std::int32_t expert(std::size_t token, std::size_t slot) const noexcept { return experts[token * k + slot]; }
  float weight(std::size_t token, std::size_t slot) const noexcept { return weights[token * k + slot]; }
};

class TopKRouter {
 public:
  explicit TopKRouter(RouterConfig config);  // validates the config
  const RouterConfig& config() const noexcept { return config_; }

  // logits: [tokens, E]. shared_gate_logits: [tokens, shared_experts] when shared_gate is sigmoid, else
  // empty. requests: token ranges inside [0, tokens) with their masks and offsets (a token outside
  // every range has neither). Errors: shapes (naming both), a NaN or infinite logit (naming the token
  // and the expert), a mask or offset of the wrong length, a request outside the batch, a token whose
  // mask leaves fewer than k experts (or groups) to choose from. Runs on num_threads() threads; `out`
  // keeps its buffers across calls.
  void route(TensorView<const float> logits, Routing& out, std::span<const RouterRequest> requests = {},
             TensorView<const float> shared_gate_logits = {}) const;
  Routing route(TensorView<const float> logits, std::span<const RouterRequest> requests = {},
                TensorView<const float> shared_gate_logits = {}) const;
  // The scalar reference: the same decisions, scores computed with std::exp in double.
  Routing route_ref(TensorView<const float> logits, std::span<const RouterRequest> requests = {},
                    TensorView<const float> shared_gate_logits = {}) const;

 private:
  RouterConfig config_;
};

}  // namespace persona
