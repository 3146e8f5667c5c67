#include "persona/moe/expert_plan.hpp"

#include "persona/core/error.hpp"

namespace persona {

void plan_experts(const Routing& routing, std::size_t num_experts, ExpertPlan& out, std::size_t tile) {
  const std::size_t T = routing.tokens, k = routing.k;
  PERSONA_CHECK_CODE(shape_mismatch, routing.experts.size() == T * k && routing.weights.size() == T * k,
                     "the routing holds {} experts and {} weights for {} tokens x k = {}", routing.experts.size(),
                     routing.weights.size(), T, k);
  PERSONA_CHECK(tile >= 1 && tile <= kMaxPlanTile, "tile is {}; it must be in 1..{}", tile, kMaxPlanTile);
  out.num_experts = num_experts;
  out.tokens = T;
  out.k = k;
  out.tile = tile;
  out.counts.assign(num_experts, 0);
  for (std::size_t i = 0; i < T * k; ++i) {
    const std::int32_t e = routing.experts[i];
    if (e == kNoExpert) continue;
    PERSONA_CHECK_CODE(out_of_range, e >= 0 && static_cast<std::size_t>(e) < num_experts,
                       "token {} slot {} has expert {}; experts are 0..{}", i / k, i % k, e, num_experts - 1);
    ++out.counts[static_cast<std::size_t>(e)];
  }
  out.offsets.assign(num_experts + 1, 0);
  for (std::size_t e = 0; e < num_experts; ++e) {
    // No division without padding: a 64-bit divide per expert costs more than the rest of the plan.
    const std::size_t padded = tile == 1 ? out.counts[e] : (out.counts[e] + tile - 1) / tile * tile;
    out.offsets[e + 1] = out.offsets[e] + padded;
  }
  out.entry_tokens.assign(out.offsets.back(), -1);
  out.entry_slots.assign(out.offsets.back(), -1);
  out.position.assign(T * k, -1);
  // The offsets serve as the cursors (a warm plan allocates nothing), then step back by the counts.
  for (std::size_t t = 0, i = 0; t < T; ++t) {
    for (std::size_t slot = 0; slot < k; ++slot, ++i) {
      const std::int32_t e = routing.experts[i];
      if (e == kNoExpert) continue;
      const std::size_t at = out.offsets[static_cast<std::size_t>(e)]++;
      out.entry_tokens[at] = static_cast<std::int32_t>(t);
      out.entry_slots[at] = static_cast<std::int32_t>(slot);
      out.position[i] = static_cast<std::int32_t>(at);
    }
  }
  for (std::size_t e = 0; e < num_experts; ++e) out.offsets[e] -= out.counts[e];
}

ExpertPlan plan_experts(const Routing& routing, std::size_t num_experts, std::size_t tile) {
  ExpertPlan plan;
  plan_experts(routing, num_experts, plan, tile);
  return plan;
}

}  // namespace persona
