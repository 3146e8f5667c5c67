// Bf16Matrix: a [rows, cols] weight (rows = outputs, cols = inputs) held as bf16, either a copy or the
// bf16 tensor of a mapped checkpoint used in place (its owner keeps the mapping alive). bf16_matmul
// multiplies f32 activations by it, widening each weight on the way into the FMA (bf16 is the top half of
// an f32): half the bytes of f32 weights read per token, the same results as the f32 product of the
// widened weights up to summation order.
#pragma once

#include "persona/core/tensor.hpp"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

namespace persona {

class Bf16Matrix {
 public:
  Bf16Matrix() = default;
  Bf16Matrix(const Bf16Matrix& other);
  Bf16Matrix& operator=(const Bf16Matrix& other);
  Bf16Matrix(Bf16Matrix&&) noexcept = default;  // a moved vector keeps its buffer, so data_ stays valid
  Bf16Matrix& operator=(Bf16Matrix&&) noexcept = default;
  // The values rounded to bf16 (to nearest, ties to even). Error unless rank 2.
  static Bf16Matrix from_f32(TensorView<const float> w);
  // rows x cols bf16 values, row-major, that `owner` keeps alive (e.g. a MappedFile). Used in place when
  // 2-byte aligned, else copied. Error(shape_mismatch) unless data holds exactly rows * cols values.
  Bf16Matrix(std::span<const std::byte> data, std::size_t rows, std::size_t cols, std::shared_ptr<const void> owner);

  std::size_t rows() const noexcept { return rows_; }
  std::size_t cols() const noexcept { return cols_; }
  const std::uint16_t* data() const noexcept { return data_; }
  // Bytes this matrix holds itself: 0 when it views a mapping.
  std::size_t owned_bytes() const noexcept { return owned_.size() * sizeof(std::uint16_t); }
  std::size_t bytes() const noexcept { return rows_ * cols_ * sizeof(std::uint16_t); }
  bool in_place() const noexcept { return owned_.empty() && rows_ * cols_ != 0; }
  Tensor<float> to_f32() const;
  // Row r widened into out (cols floats).
  void row_f32(std::size_t r, std::span<float> out) const;

 private:
  std::size_t rows_ = 0, cols_ = 0;
  const std::uint16_t* data_ = nullptr;
  std::vector<std::uint16_t> owned_;
  std::shared_ptr<const void> owner_;
};

// y[m, rows] = x[m, cols] · W^T, overwritten; x rows may be strided, their elements contiguous. Runs on
// num_threads() threads over blocks of W's rows; the result does not depend on the thread count. Up to
// kBf16DirectRows rows of x run the widening kernel; more widen blocks of W into f32 and use the f32
// GEMM (prefill).
inline constexpr std::size_t kBf16DirectRows = 8;
void bf16_matmul(TensorView<const float> x, const Bf16Matrix& w, TensorView<float> y);
// The oracle: per element, double accumulation of the widened weights.
void bf16_matmul_ref(TensorView<const float> x, const Bf16Matrix& w, TensorView<float> y);

}  // namespace persona
