// WeightMatrix: a [rows, cols] weight (rows = outputs, cols = inputs, the torch.nn.Linear layout) stored
// as f32, as bf16 (Bf16Matrix, possibly in place in a mapped checkpoint) or as a QuantizedMatrix; what
// LoRA factors, expert FFNs and base layers hold.
#pragma once

#include "persona/core/tensor.hpp"
#include "persona/quant/bf16_matrix.hpp"
#include "persona/quant/quantized_matrix.hpp"

#include <cstddef>
#include <string>
#include <variant>

namespace persona {

class WeightMatrix {
 public:
  WeightMatrix() = default;
  explicit WeightMatrix(Tensor<float> weights);  // Error unless rank 2
  explicit WeightMatrix(QuantizedMatrix weights);
  explicit WeightMatrix(Bf16Matrix weights);

  std::size_t rows() const noexcept;
  std::size_t cols() const noexcept;
  bool quantized() const noexcept { return std::holds_alternative<QuantizedMatrix>(storage_); }
  std::string format() const;          // "f32", "bf16" or the QuantSpec, e.g. "int4 g32 sym f16"
  std::size_t bytes() const noexcept;  // of the weights (a bf16 matrix used in place included)

  // out[m, rows] = x[m, cols] · W^T on num_threads() threads. Quantized matrices use the int8-activation
  // product, bf16 ones bf16_matmul.
  void multiply(TensorView<const float> x, TensorView<float> out) const;
  Tensor<float> to_f32() const;  // dequantized copy

  const Tensor<float>* f32() const noexcept { return std::get_if<Tensor<float>>(&storage_); }
  const QuantizedMatrix* quantized_matrix() const noexcept { return std::get_if<QuantizedMatrix>(&storage_); }
  const Bf16Matrix* bf16() const noexcept { return std::get_if<Bf16Matrix>(&storage_); }

 private:
  std::variant<Tensor<float>, QuantizedMatrix, Bf16Matrix> storage_;
};

}  // namespace persona
