#include "persona/moe/routing_stats.hpp"

#include "persona/core/error.hpp"

#include <algorithm>
#include <cmath>

namespace persona {
namespace {

ExpertLoad summarize(std::vector<std::size_t> counts, std::size_t dropped, std::size_t rerouted) {
  ExpertLoad load;
  const double E = static_cast<double>(counts.size());
  double sum = 0.0, squares = 0.0;
  for (std::size_t c : counts) {
    sum += static_cast<double>(c);
    squares += static_cast<double>(c) * static_cast<double>(c);
    load.max = std::max(load.max, c);
  }
  load.total = static_cast<std::size_t>(sum);
  load.mean = counts.empty() ? 0.0 : sum / E;
  const double variance = counts.empty() ? 0.0 : std::max(0.0, squares / E - load.mean * load.mean);
  load.coefficient_of_variation = load.mean > 0.0 ? std::sqrt(variance) / load.mean : 0.0;
  load.jain_index = squares > 0.0 ? sum * sum / (E * squares) : 0.0;
  load.counts = std::move(counts);
  load.dropped = dropped;
  load.rerouted = rerouted;
  return load;
}

std::vector<std::size_t> count_slots(const Routing& routing, std::size_t num_experts) {
  std::vector<std::size_t> counts(num_experts, 0);
  for (std::size_t i = 0; i < routing.experts.size(); ++i) {
    const std::int32_t e = routing.experts[i];
    if (e == kNoExpert) continue;
    PERSONA_CHECK_CODE(out_of_range, e >= 0 && static_cast<std::size_t>(e) < num_experts,
                       "slot {} has expert {}; experts are 0..{}", i, e, num_experts - 1);
    ++counts[static_cast<std::size_t>(e)];
  }
  return counts;
}

}  // namespace

ExpertLoad expert_load(const Routing& routing, std::size_t num_experts, TensorView<const float> logits) {
  ExpertLoad load = summarize(count_slots(routing, num_experts), routing.dropped, routing.rerouted);
  if (logits.empty() || routing.tokens == 0 || load.total == 0) return load;
  PERSONA_CHECK_CODE(shape_mismatch,
                     logits.rank() == 2 && logits.dim(0) == routing.tokens && logits.dim(1) == num_experts,
                     "logits {} must be [{}, {}]", logits.shape().to_string(), routing.tokens, num_experts);
  std::vector<double> mean_prob(num_experts, 0.0), p(num_experts);
  for (std::size_t t = 0; t < routing.tokens; ++t) {
    double max = logits(t, 0), sum = 0.0;
    for (std::size_t e = 1; e < num_experts; ++e) max = std::max(max, static_cast<double>(logits(t, e)));
    for (std::size_t e = 0; e < num_experts; ++e) sum += p[e] = std::exp(static_cast<double>(logits(t, e)) - max);
    for (std::size_t e = 0; e < num_experts; ++e) mean_prob[e] += p[e] / sum;
  }
  double loss = 0.0;
  for (std::size_t e = 0; e < num_experts; ++e) {
    const double f = static_cast<double>(load.counts[e]) / static_cast<double>(load.total);
    loss += f * mean_prob[e] / static_cast<double>(routing.tokens);
  }
  load.switch_aux_loss = static_cast<double>(num_experts) * loss;
  return load;
}

RoutingStats::RoutingStats(std::size_t layers, std::size_t num_experts, bool replay)
    : num_experts_(num_experts),
      replay_on_(replay),
      counts_(layers, std::vector<std::size_t>(num_experts, 0)),
      dropped_(layers, 0),
      rerouted_(layers, 0),
      replay_(layers) {}

void RoutingStats::record(std::size_t layer, const Routing& routing) {
  PERSONA_CHECK_CODE(out_of_range, layer < counts_.size(), "layer {} recorded; the stats have {} layers", layer,
                     counts_.size());
  const std::vector<std::size_t> counts = count_slots(routing, num_experts_);
  for (std::size_t e = 0; e < num_experts_; ++e) counts_[layer][e] += counts[e];
  dropped_[layer] += routing.dropped;
  rerouted_[layer] += routing.rerouted;
  if (replay_on_) replay_[layer].insert(replay_[layer].end(), routing.experts.begin(), routing.experts.end());
}

ExpertLoad RoutingStats::layer(std::size_t layer) const {
  PERSONA_CHECK_CODE(out_of_range, layer < counts_.size(), "layer {} asked for; the stats have {} layers", layer,
                     counts_.size());
  return summarize(counts_[layer], dropped_[layer], rerouted_[layer]);
}

const std::vector<std::int32_t>& RoutingStats::replay(std::size_t layer) const {
  PERSONA_CHECK_CODE(out_of_range, layer < counts_.size(), "layer {} asked for; the stats have {} layers", layer,
                     counts_.size());
  return replay_[layer];
}

void RoutingStats::reset() {
  for (auto& c : counts_) std::fill(c.begin(), c.end(), 0);
  std::fill(dropped_.begin(), dropped_.end(), 0);
  std::fill(rerouted_.begin(), rerouted_.end(), 0);
  for (auto& r : replay_) r.clear();
}

}  // namespace persona
