// Many adapters in one batch: every token t carries a slot s(t) (or none) naming the LoraModule that
// adapts it, and y[t] += scale_s B_s (A_s x[t]). Ranks and storage formats may differ freely across
// slots; nothing is padded to a common rank.
//
// plan_lora_batch groups the tokens by slot once (a stable counting sort); apply_lora then runs either
// form: segment (each slot's tokens as one small GEMM pair, as Punica's SGMV; for prefill, where runs
// of tokens share an adapter) or gather (each token on its own, as BGMV; for decode, where every token
// differs). LoraForm::automatic picks segment when slots average at least kLoraSegmentMinTokens tokens.
#pragma once

#include "persona/core/tensor.hpp"
#include "persona/lora/lora_module.hpp"

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace persona {

inline constexpr std::int32_t kNoLora = -1;
inline constexpr std::size_t kLoraSegmentMinTokens = 4;

struct LoraSegment {
  std::int32_t slot;
  std::size_t begin, end;  // range of LoraBatchPlan::tokens
};

struct LoraBatchPlan {
  std::size_t token_count = 0;
  std::vector<std::size_t> tokens;    // adapted tokens, grouped by slot, in batch order within a slot
  std::vector<LoraSegment> segments;  // one per slot that has tokens, in slot order
  std::size_t max_segment_tokens = 0;
};

// token_slots[t] is a slot in [0, slot_count) or kNoLora. Error(out_of_range) naming the token otherwise.
LoraBatchPlan plan_lora_batch(std::span<const std::int32_t> token_slots, std::size_t slot_count);

enum class LoraForm { automatic, segment, gather };

// x: [tokens, in], y: [tokens, out] (added to). slots[s] is the module of slot s; every module used must
// have in_features == in and out_features == out (Error naming the slot otherwise). Runs on
// num_threads() threads over segments (or tokens); results do not depend on the thread count.
void apply_lora(TensorView<const float> x, TensorView<float> y, std::span<const LoraModule* const> slots,
                const LoraBatchPlan& plan, LoraForm form = LoraForm::automatic);

// The oracle: a per-token loop over dequantized f32 A and B with double accumulation.
void apply_lora_ref(TensorView<const float> x, TensorView<float> y, std::span<const LoraModule* const> slots,
                    std::span<const std::int32_t> token_slots);

// y = x W^T + LoRA(x) in one call, W [out, in] f32 or quantized. y is overwritten. The one call that
// runs DoRA modules (apply_lora refuses them with Error(unsupported)): their row norms need W.
void lora_linear(TensorView<const float> x, const LoraMatrix& base, TensorView<float> y,
                 std::span<const LoraModule* const> slots, const LoraBatchPlan& plan);

}  // namespace persona
