// One LoRA module (one adapted linear layer): y += scale * B (A x), with A [rank, in] and B [out, rank]
// each stored as f32 or as a QuantizedMatrix (int8, int4, int2, NF4), and the scale alpha / rank
// (LoRA) or alpha / sqrt(rank) (rsLoRA). A DoRA module also holds a magnitude vector m [out]: its layer
// computes, as PEFT does, n = m / ||W + scale B A|| (norm of each output row) and
//   y = n * (x W^T + scale * B (A x)),
// which needs the base weight W: DoRA modules run through lora_linear and merge_lora, not apply_lora.
#pragma once

#include "persona/core/tensor.hpp"
#include "persona/quant/weight_matrix.hpp"

#include <cstddef>

namespace persona {

// A matrix of a LoRA module (A [rank, in] or B [out, rank]), f32 or quantized along its columns.
using LoraMatrix = WeightMatrix;

enum class LoraScaling {
  standard,         // alpha / rank (PEFT's default)
  rank_stabilized,  // alpha / sqrt(rank) (rsLoRA, PEFT's use_rslora)
};

class LoraModule {
 public:
  LoraModule() = default;
  // Error(shape_mismatch) unless a is [rank, in] and b is [out, rank] with rank >= 1, and a DoRA
  // magnitude (if not empty) is [out]; Error if alpha is not finite.
  LoraModule(LoraMatrix a, LoraMatrix b, float alpha, LoraScaling scaling = LoraScaling::standard,
             Tensor<float> dora_magnitude = {});

  const LoraMatrix& a() const noexcept { return a_; }
  const LoraMatrix& b() const noexcept { return b_; }
  std::size_t rank() const noexcept { return a_.rows(); }
  std::size_t in_features() const noexcept { return a_.cols(); }
  std::size_t out_features() const noexcept { return b_.rows(); }
  float alpha() const noexcept { return alpha_; }
  LoraScaling scaling() const noexcept { return scaling_; }
  float scale() const noexcept { return scale_; }
  bool dora() const noexcept { return !magnitude_.empty(); }
  const Tensor<float>& dora_magnitude() const noexcept { return magnitude_; }  // [out], empty unless DoRA
  std::size_t bytes() const noexcept { return a_.bytes() + b_.bytes() + magnitude_.numel() * sizeof(float); }

 private:
  LoraMatrix a_, b_;
  float alpha_ = 0.0f;
  LoraScaling scaling_ = LoraScaling::standard;
  float scale_ = 0.0f;
  Tensor<float> magnitude_;
};

// DoRA's per-output-row factor m / ||W + scale B A|| for base weight w [out, in].
Tensor<float> dora_row_scale(const LoraModule& module, TensorView<const float> w);

// W[out, in] += scale * B A (merge) or -= (unmerge), in f32, for single-tenant hot paths. Merging a
// DoRA module gives n * (W + scale B A); unmerging one is Error(unsupported): the row norms it would
// need are gone from the merged weight (keep a copy of W instead).
void merge_lora(TensorView<float> w, const LoraModule& module);
void unmerge_lora(TensorView<float> w, const LoraModule& module);

}  // namespace persona
