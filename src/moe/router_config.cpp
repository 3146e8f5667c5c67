#include "persona/moe/router_config.hpp"

#include "persona/core/error.hpp"

#include <cmath>

namespace persona {

void RouterConfig::validate() const {
  PERSONA_CHECK(num_experts >= 1, "RouterConfig.num_experts is 0");
  PERSONA_CHECK(top_k >= 1 && top_k <= num_experts, "RouterConfig.top_k is {}; it must be in 1..num_experts ({})",
                top_k, num_experts);
  PERSONA_CHECK(num_groups >= 1 && num_experts % num_groups == 0,
                "RouterConfig.num_groups is {}; it must divide num_experts ({})", num_groups, num_experts);
  PERSONA_CHECK(topk_groups >= 1 && topk_groups <= num_groups,
                "RouterConfig.topk_groups is {}; it must be in 1..num_groups ({})", topk_groups, num_groups);
  const std::size_t per_group = num_experts / num_groups;
  PERSONA_CHECK(top_k <= topk_groups * per_group,
                "RouterConfig.top_k is {} but topk_groups ({}) x experts per group ({}) leaves only {} to choose from",
                top_k, topk_groups, per_group, topk_groups * per_group);
  PERSONA_CHECK(num_groups == 1 || group_score != GroupScore::sum_top2 || per_group >= 2,
                "RouterConfig.group_score sum_top2 needs at least 2 experts per group, got {}", per_group);
  PERSONA_CHECK(selection_bias.empty() || selection_bias.size() == num_experts,
                "RouterConfig.selection_bias has {} values; it needs num_experts ({}) or none", selection_bias.size(),
                num_experts);
  for (std::size_t e = 0; e < selection_bias.size(); ++e) {
    PERSONA_CHECK(std::isfinite(selection_bias[e]), "RouterConfig.selection_bias[{}] is {}", e, selection_bias[e]);
  }
  const bool by_logit = scoring == RouterScoring::topk_then_softmax || scoring == RouterScoring::logit_sigmoid;
  PERSONA_CHECK(!by_logit || (num_groups == 1 && selection_bias.empty()),
                "RouterConfig: a scheme that chooses by logit (topk_then_softmax, logit_sigmoid) takes no groups and "
                "no selection_bias");
  PERSONA_CHECK(std::isfinite(capacity_factor) && capacity_factor >= 0.0f,
                "RouterConfig.capacity_factor is {}; it must be > 0 (or 0: unlimited)", capacity_factor);
  PERSONA_CHECK(std::isfinite(routed_scaling_factor), "RouterConfig.routed_scaling_factor is {}",
                routed_scaling_factor);
}

RouterConfig RouterConfig::mixtral(std::size_t experts, std::size_t k) {
  RouterConfig c;
  c.num_experts = experts;
  c.top_k = k;
  c.scoring = RouterScoring::softmax;
  c.renormalize = true;
  return c;
}

RouterConfig RouterConfig::qwen3_moe(std::size_t experts, std::size_t k, bool norm_topk_prob) {
  RouterConfig c = mixtral(experts, k);
  c.renormalize = norm_topk_prob;
  return c;
}

RouterConfig RouterConfig::deepseek_v3(std::vector<float> bias, std::size_t experts, std::size_t k, std::size_t groups,
                                       std::size_t topk_groups, float scaling) {
  RouterConfig c;
  c.num_experts = experts;
  c.top_k = k;
  c.scoring = RouterScoring::sigmoid;
  c.renormalize = true;
  c.routed_scaling_factor = scaling;
  c.num_groups = groups;
  c.topk_groups = topk_groups;
  c.group_score = GroupScore::sum_top2;
  c.selection_bias = std::move(bias);
  c.shared_experts = 1;
  return c;
}

RouterConfig RouterConfig::llama4(std::size_t experts) {
  RouterConfig c;
  c.num_experts = experts;
  c.top_k = 1;
  c.scoring = RouterScoring::logit_sigmoid;
  c.shared_experts = 1;
  return c;
}

}  // namespace persona
