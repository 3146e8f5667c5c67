// The scalar level and the reference oracles: plain loops that define what every SIMD kernel must
// compute. The scalar level runs these, except matmul, where it uses Eigen built for the baseline ISA.
#include "core/kernels/core_kernel_table.hpp"
#include "persona/core/dtype.hpp"

#define PERSONA_ARCH_EIGEN persona_eigen_scalar
#include "core/kernels/eigen_matmul.hpp"

#include <cmath>

namespace persona::detail {

// Reductions accumulate in double: the oracle should be more accurate than what it checks.
float dot_ref(const float* a, const float* b, std::size_t n) noexcept {
  double sum = 0.0;
  for (std::size_t i = 0; i < n; ++i) sum += static_cast<double>(a[i]) * b[i];
  return static_cast<float>(sum);
}

namespace {

void rmsnorm_ref(const float* x, const float* weight, float eps, float* y, std::size_t n) noexcept {
  double sum = 0.0;
  for (std::size_t i = 0; i < n; ++i) sum += static_cast<double>(x[i]) * x[i];
  const double inv = 1.0 / std::sqrt(sum / static_cast<double>(n) + eps);
  for (std::size_t i = 0; i < n; ++i) y[i] = static_cast<float>(x[i] * inv * weight[i]);
}

void softmax_ref(const float* x, float* y, std::size_t n) noexcept {
  if (n == 0) return;
  float max = x[0];
  for (std::size_t i = 1; i < n; ++i) max = std::fmax(max, x[i]);
  double sum = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    y[i] = std::exp(x[i] - max);
    sum += y[i];
  }
  const double inv = 1.0 / sum;
  for (std::size_t i = 0; i < n; ++i) y[i] = static_cast<float>(y[i] * inv);
}

float silu_one(float x) noexcept { return x / (1.0f + std::exp(-x)); }

void silu_ref(const float* x, float* y, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) y[i] = silu_one(x[i]);
}

void swiglu_ref(const float* gate, const float* up, float* y, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) y[i] = silu_one(gate[i]) * up[i];
}

void rope_ref(float* x, const float* cos, const float* sin, std::size_t half) noexcept {
  for (std::size_t i = 0; i < half; ++i) {
    const float x1 = x[i], x2 = x[i + half];
    x[i] = x1 * cos[i] - x2 * sin[i];
    x[i + half] = x2 * cos[i] + x1 * sin[i];
  }
}

void f32_to_f16_ref(const float* in, std::uint16_t* out, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) out[i] = f32_to_f16_bits(in[i]);
}
void f16_to_f32_ref(const std::uint16_t* in, float* out, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) out[i] = f16_bits_to_f32(in[i]);
}
void f32_to_bf16_ref(const float* in, std::uint16_t* out, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) out[i] = f32_to_bf16_bits(in[i]);
}
void bf16_to_f32_ref(const std::uint16_t* in, float* out, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) out[i] = bf16_bits_to_f32(in[i]);
}

void matmul_ref(const MatmulArgs& p) noexcept {
  for (std::size_t i = 0; i < p.m; ++i) {
    for (std::size_t j = 0; j < p.n; ++j) {
      double sum = 0.0;
      for (std::size_t l = 0; l < p.k; ++l) {
        const float b = p.b_transposed ? p.b[j * p.ldb + l] : p.b[l * p.ldb + j];
        sum += static_cast<double>(p.a[i * p.lda + l]) * b;
      }
      p.c[i * p.ldc + j] = static_cast<float>(sum);
    }
  }
}

constexpr CoreKernelTable kReference{IsaLevel::scalar, dot_ref,         rmsnorm_ref,     softmax_ref,
                                     silu_ref,         swiglu_ref,      rope_ref,        f32_to_f16_ref,
                                     f16_to_f32_ref,   f32_to_bf16_ref, bf16_to_f32_ref, matmul_ref};

constexpr CoreKernelTable with_eigen_matmul(CoreKernelTable table) {
  table.matmul = eigen_matmul;
  return table;
}

}  // namespace

constinit const CoreKernelTable kCoreScalarKernels = with_eigen_matmul(kReference);

const CoreKernelTable& reference_core_kernels() noexcept { return kReference; }

}  // namespace persona::detail
