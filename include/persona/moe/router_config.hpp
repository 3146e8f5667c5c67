// RouterConfig: how a Mixture-of-Experts layer picks k of E experts per token, covering the schemes of the
// models in use (docs/api.md lists each model's settings):
//   Mixtral, Qwen2/Qwen3-MoE   softmax over the logits, top-k, optionally renormalized (norm_topk_prob)
//   top-k then softmax         top-k on the logits, softmax over the chosen ones
//   DeepSeek-V3                sigmoid scores, a bias added for selection only, group-limited selection
//                              (groups ranked by the sum of their top-2), weights from the unbiased scores,
//                              renormalized, times routed_scaling_factor
//   DeepSeek-V2                softmax scores, groups ranked by their max, times routed_scaling_factor
//   Llama 4                    top-1 on the logits, weight sigmoid(chosen logit)
// plus shared experts, an optional per-expert capacity, and per-request expert masks and bias offsets.
#pragma once

#include <cstddef>
#include <vector>

namespace persona {

enum class RouterScoring {
  softmax,            // scores = softmax(logits); chosen by score
  topk_then_softmax,  // chosen by logit; weights = softmax over the chosen logits
  sigmoid,            // scores = sigmoid(logits); chosen by score (+ selection bias)
  logit_sigmoid,      // chosen by logit; weights = sigmoid(chosen logit) (Llama 4)
};

enum class GroupScore {
  sum_top2,  // a group's score is the sum of its two best (biased) scores (DeepSeek-V3)
  max,       // its best score (DeepSeek-V2)
};

enum class SharedExpertGate {
  none,     // shared experts always on with weight 1 (DeepSeek)
  sigmoid,  // weight sigmoid(gate logit), the gate logit given per token (Qwen2-MoE's shared_expert_gate)
};

enum class CapacityOverflow {
  drop,     // a token past an expert's capacity loses that slot (expert -1, weight 0)
  reroute,  // it goes to its next-best expert that still has room (dropped only if none has)
};

struct RouterConfig {
  std::size_t num_experts = 8;  // E
  std::size_t top_k = 2;        // k
  RouterScoring scoring = RouterScoring::softmax;
  bool renormalize = false;            // chosen weights divided by their sum (Mixtral; Qwen norm_topk_prob)
  float routed_scaling_factor = 1.0f;  // chosen weights multiplied by it (after renormalizing)
  // Group-limited selection: the E experts form num_groups equal groups; only the topk_groups best
  // groups compete. 1 group: plain top-k.
  std::size_t num_groups = 1;
  std::size_t topk_groups = 1;
  GroupScore group_score = GroupScore::sum_top2;
  std::vector<float> selection_bias;  // [E] or empty: added to the scores for selection only
  std::size_t shared_experts = 0;
  SharedExpertGate shared_gate = SharedExpertGate::none;
  // Capacity per expert: ceil(capacity_factor * tokens * k / E) slots; 0 = unlimited. Tokens claim
  // slots in batch order, so with a capacity the result depends on the batch (without one it never does).
  float capacity_factor = 0.0f;
  CapacityOverflow overflow = CapacityOverflow::drop;

  // Error(invalid_argument) naming the field: k = 0 or k > E, E = 0, num_groups not dividing E,
  // topk_groups = 0 or > num_groups, k > topk_groups * (E / num_groups), group selection with fewer than
  // 2 experts per group for sum_top2, a bias of the wrong length or non-finite, capacity_factor < 0 or
  // not finite, routed_scaling_factor not finite, a logit-chosen scheme (topk_then_softmax,
  // logit_sigmoid) with groups or a selection bias.
  void validate() const;

  // The settings of the models above.
  static RouterConfig mixtral(std::size_t experts = 8, std::size_t k = 2);
  static RouterConfig qwen3_moe(std::size_t experts = 128, std::size_t k = 8, bool norm_topk_prob = true);
  static RouterConfig deepseek_v3(std::vector<float> bias, std::size_t experts = 256, std::size_t k = 8,
                                  std::size_t groups = 8, std::size_t topk_groups = 4, float scaling = 2.5f);
  static RouterConfig llama4(std::size_t experts = 16);
};

}  // namespace persona
