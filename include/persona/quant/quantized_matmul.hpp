// Products with quantized weights: y[m, n] = x[m, k] · W[n, k]^T, W a QuantizedMatrix (any spec), x f32.
// Two paths, each at the active SIMD level on up to num_threads() threads (split over row panels, so
// results do not depend on the thread count), each with a *_ref scalar oracle that computes the same
// operations in the same order: the SIMD and scalar results agree bit for bit.
#pragma once

#include "persona/core/tensor.hpp"
#include "persona/quant/quantized_matrix.hpp"

namespace persona {

enum class QuantProductPath {
  // Codes are turned into floats in registers; every product and sum is f32. Per output:
  //   y = sum over groups g of (scale_g * sum_{k in g} code_k x_k + minimum_g * sum_{k in g} x_k)
  f32_activations,
  // Each token's activations are quantized on the fly to int8, with one scale per group of the
  // weight's group size (absmax / 127); code x activation products are summed exactly in int32
  // (AVX-512 VNNI vpdpbusd, or maddubs), then each group is scaled in f32. NF4 codes enter as the int8
  // values round(127 * nf4) (error <= 0.4% of the scale).
  int8_activations,
};

void quantized_matmul(TensorView<const float> x, const QuantizedMatrix& w, TensorView<float> y,
                      QuantProductPath path = QuantProductPath::int8_activations);
void quantized_matmul_ref(TensorView<const float> x, const QuantizedMatrix& w, TensorView<float> y,
                          QuantProductPath path = QuantProductPath::int8_activations);

}  // namespace persona
