// Load statistics of routed batches, per layer: how evenly the experts are used, the Switch Transformer
// auxiliary loss, dropped and re-routed slots, and optionally every token's routing (a replay log, as
// vLLM records for RL users).
#pragma once

#include "persona/core/tensor.hpp"
#include "persona/moe/top_k_router.hpp"

#include <cstddef>
#include <cstdint>
#include <vector>

namespace persona {

struct ExpertLoad {
  std::vector<std::size_t> counts;  // [E]: routed slots per expert
  std::size_t total = 0;            // routed slots (dropped ones excluded)
  std::size_t max = 0;
  double mean = 0.0;
  double coefficient_of_variation = 0.0;  // stddev / mean of the counts
  double jain_index = 0.0;                // (sum c)^2 / (E sum c^2): 1 = perfectly even, 1/E = one expert
  double switch_aux_loss = 0.0;  // E * sum_e f_e P_e; f_e: share of slots, P_e: mean softmax prob (needs logits)
  std::size_t dropped = 0, rerouted = 0;
};

// logits ([tokens, E], optional) give P_e for the auxiliary loss; without them it stays 0.
ExpertLoad expert_load(const Routing& routing, std::size_t num_experts, TensorView<const float> logits = {});

// Accumulates ExpertLoad counts per layer over many batches; with replay on, keeps every token's experts.
class RoutingStats {
 public:
  RoutingStats(std::size_t layers, std::size_t num_experts, bool replay = false);

  void record(std::size_t layer, const Routing& routing);  // Error(out_of_range) for an unknown layer
  ExpertLoad layer(std::size_t layer) const;               // totals so far (no aux loss: logits are not kept)
  // Replay: per layer, the experts of every recorded token in order, [tokens recorded, k] flattened.
  const std::vector<std::int32_t>& replay(std::size_t layer) const;
  void reset();

 private:
  std::size_t num_experts_;
  bool replay_on_;
  std::vector<std::vector<std::size_t>> counts_;  // [layers][E]
  std::vector<std::size_t> dropped_, rerouted_;
  std::vector<std::vector<std::int32_t>> replay_;
};

}  // namespace persona
