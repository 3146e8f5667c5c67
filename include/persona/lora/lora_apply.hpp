// Many adapters in one batch: every token t carries a slot s(t) (or none) naming the LoraModule that
// adapts it, and y[t] += scale_s B_s (A_s x[t]). Ranks and storage formats may differ freely across
// slots; nothing is padded to a common rank.
//
// plan_lora_batch groups the tokens by slot once (a stable counting sort); apply_lora then runs either
// form: segment (each slot's tokens, in chunks of kLoraChunkTokens, as small GEMM pairs, as Punica's
// SGMV; for prefill, where runs of tokens share an adapter) or gather (each token on its own, as BGMV;
// for decode, where every token differs). LoraForm::automatic picks segment when slots average at
// least kLoraSegmentMinTokens tokens. A LoraWorkspace, sized once, holds the run's scratch, so a run
// allocates nothing.
#pragma once

#include "persona/core/tensor.hpp"
#include "persona/lora/lora_module.hpp"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

namespace persona {

inline constexpr std::int32_t kNoLora = -1;
inline constexpr std::size_t kLoraSegmentMinTokens = 4;
// Tokens per task of the segment form: fixed, so results never depend on the thread count.
inline constexpr std::size_t kLoraChunkTokens = 16;

struct LoraSegment {
  std::int32_t slot;
  std::size_t begin, end;  // range of LoraBatchPlan::tokens
};

// One plan serves every adapted layer of a batch: it depends only on which slot each token uses.
struct LoraBatchPlan {
  std::size_t token_count = 0;
  std::vector<std::size_t> tokens;        // adapted tokens, grouped by slot, in batch order within a slot
  std::vector<std::int32_t> token_slots;  // the slot of each entry of tokens
  std::vector<LoraSegment> segments;      // one per slot that has tokens, in slot order
  std::vector<LoraSegment> chunks;        // the segments cut into pieces of at most kLoraChunkTokens
  std::size_t max_segment_tokens = 0;
  std::vector<std::size_t> slot_offsets;  // [slot_count + 1]: slot s's entries are tokens[offsets[s], offsets[s+1])

  // Room for any plan of up to `tokens` tokens over `slots` slots: planning into it allocates nothing.
  void reserve(std::size_t tokens, std::size_t slots);
};

// token_slots[t] is a slot in [0, slot_count) or kNoLora. Error(out_of_range) naming the token otherwise.
LoraBatchPlan plan_lora_batch(std::span<const std::int32_t> token_slots, std::size_t slot_count);
// The same into `plan`, reusing its storage: no allocation once it has held as many tokens and slots.
void plan_lora_batch(std::span<const std::int32_t> token_slots, std::size_t slot_count, LoraBatchPlan& plan);

namespace detail {
struct LoraWorkspaceAccess;
}

// Scratch for apply_lora and lora_linear, one part per thread; reused across calls and layers. Not for
// two calls at once: give each concurrent caller its own.
class LoraWorkspace {
 public:
  LoraWorkspace();
  ~LoraWorkspace();
  LoraWorkspace(LoraWorkspace&&) noexcept;
  LoraWorkspace& operator=(LoraWorkspace&&) noexcept;

  // Sizes the scratch for layers of up to `in` inputs and `out` outputs with modules of rank at most
  // max_rank, on up to num_threads() threads: later runs within these bounds allocate nothing. A run
  // beyond them grows the scratch itself.
  void reserve(std::size_t in, std::size_t out, std::size_t max_rank);
  std::size_t bytes() const noexcept;

 private:
  friend struct detail::LoraWorkspaceAccess;  // the kernels' door into the opaque scratch
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

enum class LoraForm { automatic, segment, gather };

// x: [tokens, in], y: [tokens, out] (added to). slots[s] is the module of slot s; every module used must
// have in_features == in and out_features == out (Error naming the slot otherwise). Runs on
// num_threads() threads over chunks (or tokens); results do not depend on the thread count.
void apply_lora(TensorView<const float> x, TensorView<float> y, std::span<const LoraModule* const> slots,
                const LoraBatchPlan& plan, LoraWorkspace& workspace, LoraForm form = LoraForm::automatic);
// The same with a workspace of its own (allocates on every call).
void apply_lora(TensorView<const float> x, TensorView<float> y, std::span<const LoraModule* const> slots,
                const LoraBatchPlan& plan, LoraForm form = LoraForm::automatic);

// The oracle: a per-token loop over dequantized f32 A and B with double accumulation.
void apply_lora_ref(TensorView<const float> x, TensorView<float> y, std::span<const LoraModule* const> slots,
                    std::span<const std::int32_t> token_slots);

// y = x W^T + LoRA(x) in one call, W [out, in] f32 or quantized. y is overwritten. The one call that
// runs DoRA modules (apply_lora refuses them with Error(unsupported)): their row norms need W.
void lora_linear(TensorView<const float> x, const WeightMatrix& base, TensorView<float> y,
                 std::span<const LoraModule* const> slots, const LoraBatchPlan& plan, LoraWorkspace& workspace);
void lora_linear(TensorView<const float> x, const WeightMatrix& base, TensorView<float> y,
                 std::span<const LoraModule* const> slots, const LoraBatchPlan& plan);

}  // namespace persona
