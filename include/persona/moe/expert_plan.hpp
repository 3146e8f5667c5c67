// ExpertPlan: a routed batch grouped by expert in one pass (a stable counting sort), so expert kernels
// gather their tokens' rows by index instead of working on a permuted copy of the activations (as
// ggml's mul_mat_id does).
#pragma once

#include "persona/moe/top_k_router.hpp"

#include <cstddef>
#include <cstdint>
#include <vector>

namespace persona {

struct ExpertPlan {
  std::size_t num_experts = 0, tokens = 0, k = 0, tile = 1;
  std::vector<std::size_t> counts;         // [E]: routed (token, slot) pairs per expert, dropped slots excluded
  std::vector<std::size_t> offsets;        // [E + 1]: expert e owns entries [offsets[e], offsets[e + 1])
  std::vector<std::int32_t> entry_tokens;  // [offsets[E]]: the token of each entry; -1 for tile padding
  std::vector<std::int32_t> entry_slots;   // [offsets[E]]: its slot in 0..k-1; -1 for tile padding
  std::vector<std::int32_t> position;      // [tokens, k]: the entry of (token, slot); -1 for a dropped slot

  std::size_t entries() const noexcept { return offsets.empty() ? 0 : offsets.back(); }
};

inline constexpr std::size_t kMaxPlanTile = 1024;

// Within an expert, entries follow token order (then slot order). tile > 1 pads each expert's entries to
// a multiple of tile (padding entries have token and slot -1). Error if tile is 0 or above kMaxPlanTile, an
// expert id is outside
// [0, num_experts) or the routing's shapes disagree. `out` keeps its buffers across calls.
void plan_experts(const Routing& routing, std::size_t num_experts, ExpertPlan& out, std::size_t tile = 1);
ExpertPlan plan_experts(const Routing& routing, std::size_t num_experts, std::size_t tile = 1);

}  // namespace persona
