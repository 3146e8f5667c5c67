// The quantized product behind quantized_matmul, for library code that runs many small products in a
// loop (LoRA apply, expert FFNs): the caller keeps the activation buffers, so a warm run allocates
// nothing, and chooses whether the product itself splits over threads.
#pragma once

#include "persona/core/tensor.hpp"
#include "persona/quant/quantized_matmul.hpp"
#include "persona/quant/quantized_matrix.hpp"
#include "persona/quant/weight_matrix.hpp"
#include "quant/kernels/quant_kernel_table.hpp"

#include <cstdint>
#include <vector>

namespace persona::detail {

// Grown to the largest product seen, never shrunk.
struct QuantActivationScratch {
  std::vector<float> sums;              // f32 path: [m, groups]
  std::vector<std::int8_t> codes;       // int8 path: [m, k]
  std::vector<float> scales;            // int8 path: [m, groups]
  std::vector<std::int32_t> code_sums;  // int8 path: [m, groups]

  // Sizes the buffers for m tokens of k activations in groups of group_size.
  void reserve(std::size_t m, std::size_t k, std::size_t group_size);
};

// y = x W^T with the checks of quantized_matmul; errors name `function`. threaded: split the rows of W
// over num_threads() threads; otherwise run on the calling thread. accumulate: y += alpha * x W^T
// instead, each element with one rounding (fma).
void quantized_product(const QuantKernelTable& kernels, TensorView<const float> x, const QuantizedMatrix& w,
                       TensorView<float> y, QuantProductPath path, QuantActivationScratch& scratch, bool threaded,
                       const char* function, bool accumulate = false, float alpha = 1.0f);

// out[m, rows] = x W^T for an f32 or quantized weight, on the calling thread: the quantized product
// (int8 activations, scratch kept by the caller) or the active level's GEMM kernel, without the checks
// of the public functions (the caller has validated the shapes). accumulate (quantized weights only):
// out += alpha x W^T.
void weight_product(const WeightMatrix& w, TensorView<const float> x, TensorView<float> out,
                    QuantActivationScratch& scratch, const char* function, bool accumulate = false, float alpha = 1.0f);

}  // namespace persona::detail
