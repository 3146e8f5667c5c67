// The dense ops a decoder needs. Each runs at the active SIMD level on up to num_threads() threads and
// has a *_ref twin: the plain scalar oracle the tests compare against (single-threaded, accumulating
// reductions in double). Results do not depend on the thread count.
//
// Activations are rank-2 views [rows, n] (rank 1 counts as one row) whose rows may be strided but whose elements within
// a row are contiguous. `out` may be the input itself (in place); any other overlap is an Error.
#pragma once

#include "persona/core/tensor.hpp"

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace persona {

enum class Transpose { no, yes };

// c[m, n] = a[m, k] · b[k, n], or a · b^T when b is [n, k] (Transpose::yes; the linear-layer layout,
// as torch.nn.functional.linear). c is overwritten. Uses Eigen's GEMM compiled for the active level.
void matmul(TensorView<const float> a, TensorView<const float> b, TensorView<float> c,
            Transpose transpose_b = Transpose::no);
void matmul_ref(TensorView<const float> a, TensorView<const float> b, TensorView<float> c,
                Transpose transpose_b = Transpose::no);

float dot(std::span<const float> a, std::span<const float> b);
float dot_ref(std::span<const float> a, std::span<const float> b);

// out[r, i] = x[r, i] / sqrt(mean_i(x[r, i]^2) + eps) * weight[i]   (Llama RMSNorm)
void rmsnorm(TensorView<const float> x, std::span<const float> weight, float eps, TensorView<float> out);
void rmsnorm_ref(TensorView<const float> x, std::span<const float> weight, float eps, TensorView<float> out);

// Numerically stable softmax over each row.
void softmax(TensorView<const float> x, TensorView<float> out);
void softmax_ref(TensorView<const float> x, TensorView<float> out);

// silu(x) = x * sigmoid(x);  swiglu(gate, up) = silu(gate) * up. Shapes [rows, n], all equal.
void silu(TensorView<const float> x, TensorView<float> out);
void silu_ref(TensorView<const float> x, TensorView<float> out);
void swiglu(TensorView<const float> gate, TensorView<const float> up, TensorView<float> out);
void swiglu_ref(TensorView<const float> gate, TensorView<const float> up, TensorView<float> out);

// Rotary position embedding, in place, in the Llama convention of Hugging Face transformers
// (rotate_half: dimension i pairs with i + head_dim/2; frequency theta^(-2i/head_dim)).
// x: [tokens, heads, head_dim] with contiguous heads; token t sits at position position_offset + t.
// Scaling of the frequencies for contexts past the training length, as transformers' rope_type:
// linear divides every frequency by factor (position interpolation); llama3 (Llama 3.1) divides the low
// frequencies by factor, keeps the high ones and interpolates between them.
enum class RopeScaling { none, linear, llama3 };
struct RopeConfig {
  float theta = 10000.0f;
  RopeScaling scaling = RopeScaling::none;
  float factor = 1.0f;                        // linear and llama3: finite, >= 1
  float low_freq_factor = 1.0f;               // llama3: 0 < low_freq_factor < high_freq_factor
  float high_freq_factor = 4.0f;              // llama3
  std::size_t original_max_positions = 8192;  // llama3: the training context, > 0
};
// The head_dim / 2 frequencies the rotation uses (theta^(-2i/head_dim), scaled); Error(invalid_argument)
// naming the field for a config out of the ranges above.
std::vector<double> rope_inverse_frequencies(const RopeConfig& config, std::size_t head_dim);
void rope(TensorView<float> x, std::size_t position_offset, const RopeConfig& config = {});
void rope_ref(TensorView<float> x, std::size_t position_offset, const RopeConfig& config = {});
// The same with an explicit position per token (a decode batch of different sequences).
void rope(TensorView<float> x, std::span<const std::size_t> positions, const RopeConfig& config = {});
void rope_ref(TensorView<float> x, std::span<const std::size_t> positions, const RopeConfig& config = {});

}  // namespace persona
