// Quantize f32 matrices to a QuantSpec, dequantize them back, and measure the error of any approximation.
#pragma once

#include "persona/core/tensor.hpp"
#include "persona/quant/quantized_matrix.hpp"

#include <cstddef>

namespace persona {

enum class QuantMethod {
  round_to_nearest,  // scale from the group's range, codes rounded to nearest
  search,            // per group, try a grid of scales, refit scale (and minimum) by least squares,
                     // keep the one with the smallest squared error (as llama.cpp's k-quants do);
                     // never worse than round_to_nearest, whose candidate it includes
};

// w: [rows, cols] f32, rows contiguous. Error if the spec is invalid, cols is not a multiple of the
// group size, or any element is NaN or Inf (naming its row and column). Runs on num_threads() threads;
// the result does not depend on the thread count.
QuantizedMatrix quantize(TensorView<const float> w, const QuantSpec& spec,
                         QuantMethod method = QuantMethod::round_to_nearest);

// out: [row_end - row_begin, cols] receives rows [row_begin, row_end) of the dequantized matrix.
void dequantize(const QuantizedMatrix& q, TensorView<float> out, std::size_t row_begin = 0);
Tensor<float> dequantize(const QuantizedMatrix& q);

struct QuantErrorReport {
  double rmse = 0.0;           // sqrt(mean((a - b)^2))
  double max_abs_error = 0.0;  // max |a - b|
  double snr_db = 0.0;         // 10 log10(sum a^2 / sum (a - b)^2); +inf when exact
};

// Error of `approx` against `reference`; both [rows, cols] with equal shapes.
QuantErrorReport error_report(TensorView<const float> reference, TensorView<const float> approx);
QuantErrorReport error_report(TensorView<const float> reference, const QuantizedMatrix& q);

}  // namespace persona
