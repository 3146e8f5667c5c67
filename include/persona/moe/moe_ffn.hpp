// Expert FFNs over an ExpertPlan: each routed (token, slot) runs its expert's SwiGLU FFN,
// down(silu(gate x) * up x), and the results are combined with the routing weights, plus the shared
// experts. Weights may be f32, int8, int4 (any QuantSpec).
#pragma once

#include "persona/core/tensor.hpp"
#include "persona/moe/expert_plan.hpp"
#include "persona/moe/top_k_router.hpp"
#include "persona/quant/weight_matrix.hpp"

#include <cstddef>
#include <memory>
#include <span>

namespace persona {

struct ExpertFfn {
  WeightMatrix gate;  // [ffn, hidden]
  WeightMatrix up;    // [ffn, hidden]
  WeightMatrix down;  // [hidden, ffn]

  std::size_t hidden() const noexcept { return gate.cols(); }
  std::size_t ffn() const noexcept { return gate.rows(); }
  std::size_t bytes() const noexcept { return gate.bytes() + up.bytes() + down.bytes(); }
};

// Tokens per task: an expert's entries are cut into tiles of this many, fixed so that results never
// depend on the thread count.
inline constexpr std::size_t kMoeTileTokens = 16;

namespace detail {
struct MoeWorkspaceAccess;
}

// Scratch for moe_ffn, kept across calls and layers: per thread, the gathered rows and intermediate
// activations of one tile; per call, each routed entry's expert output ([entries, hidden] floats) so that
// the combine adds them in slot order. Not for two calls at once.
class MoeWorkspace {
 public:
  MoeWorkspace();
  ~MoeWorkspace();
  MoeWorkspace(MoeWorkspace&&) noexcept;
  MoeWorkspace& operator=(MoeWorkspace&&) noexcept;
  std::size_t bytes() const noexcept;

 private:
  friend struct detail::MoeWorkspaceAccess;  // the kernels' door into the opaque scratch
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// y[t] = sum over slots s of weight(t, s) FFN_{expert(t, s)}(x[t]) + sum over j of shared_weight(t, j)
// FFN_shared[j](x[t]); y is overwritten. x, y: [tokens, hidden]. experts: [E] (null for an expert no
// token uses), shared: [routing.shared]. Errors: shapes (naming the expert), a plan made for another
// routing, an expert that is used but null. Runs on num_threads() threads over (expert, tile) tasks; the
// result does not depend on the thread count, and with quantized experts not on the rest of the batch
// either (f32 experts use a GEMM whose summation order may depend on the tile's size).
void moe_ffn(TensorView<const float> x, const Routing& routing, const ExpertPlan& plan,
             std::span<const ExpertFfn* const> experts, std::span<const ExpertFfn* const> shared, TensorView<float> y,
             MoeWorkspace& workspace);

// The reference: a per-token loop, each product by the scalar oracles (matmul_ref, quantized_matmul_ref)
// one token at a time, swiglu_ref, and the same combine order.
void moe_ffn_ref(TensorView<const float> x, const Routing& routing, std::span<const ExpertFfn* const> experts,
                 std::span<const ExpertFfn* const> shared, TensorView<float> y);

}  // namespace persona
