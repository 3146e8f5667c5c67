// The core kernels written once over xsimd::batch<float, Arch>, each with a scalar tail, on the
// primitives of x86_io.hpp. Each core_<level>.cpp instantiates the table with make_core_kernel_table<Arch>()
// (and defines PERSONA_ARCH_EIGEN first, for eigen_matmul.hpp). The scalar oracles are in core_reference.cpp.
#pragma once

#include "core/kernels/core_kernel_table.hpp"
#include "core/kernels/dot_kernel.hpp"
#include "core/kernels/eigen_matmul.hpp"
#include "core/kernels/x86_io.hpp"
#include "persona/core/dtype.hpp"

#include <xsimd/xsimd.hpp>

#include <cmath>
#include <cstdint>

namespace persona::detail {

template <class Arch>
struct CoreKernels {
  using F = xsimd::batch<float, Arch>;
  using U = xsimd::batch<std::uint32_t, Arch>;
  static constexpr std::size_t W = F::size;

  static float dot(const float* a, const float* b, std::size_t n) noexcept { return dot_kernel<Arch>(a, b, n); }

  static void rmsnorm(const float* x, const float* weight, float eps, float* y, std::size_t n) noexcept {
    const float inv = 1.0f / std::sqrt(dot(x, x, n) / static_cast<float>(n) + eps);
    const F scale(inv);
    std::size_t i = 0;
    for (; i + W <= n; i += W) {
      (F::load_unaligned(x + i) * scale * F::load_unaligned(weight + i)).store_unaligned(y + i);
    }
    for (; i < n; ++i) y[i] = x[i] * inv * weight[i];
  }

  static void softmax(const float* x, float* y, std::size_t n) noexcept {
    if (n == 0) return;
    std::size_t i = 0;
    float max = x[0];
    if (n >= W) {
      F vmax = F::load_unaligned(x);
      for (i = W; i + W <= n; i += W) vmax = xsimd::max(vmax, F::load_unaligned(x + i));
      alignas(64) float lanes[W];
      vmax.store_aligned(lanes);
      for (float v : lanes) max = std::fmax(max, v);
    }
    for (; i < n; ++i) max = std::fmax(max, x[i]);

    const F vmax(max);
    F vsum(0.0f);
    for (i = 0; i + W <= n; i += W) {
      const F e = xsimd::exp(F::load_unaligned(x + i) - vmax);
      e.store_unaligned(y + i);
      vsum += e;
    }
    float sum = xsimd::hadd(vsum);
    for (; i < n; ++i) {
      y[i] = std::exp(x[i] - max);
      sum += y[i];
    }
    const float inv = 1.0f / sum;
    const F vinv(inv);
    for (i = 0; i + W <= n; i += W) (F::load_unaligned(y + i) * vinv).store_unaligned(y + i);
    for (; i < n; ++i) y[i] *= inv;
  }

  static F silu(F x) noexcept { return x / (F(1.0f) + xsimd::exp(-x)); }
  static float silu(float x) noexcept { return x / (1.0f + std::exp(-x)); }

  static void silu(const float* x, float* y, std::size_t n) noexcept {
    std::size_t i = 0;
    for (; i + W <= n; i += W) silu(F::load_unaligned(x + i)).store_unaligned(y + i);
    for (; i < n; ++i) y[i] = silu(x[i]);
  }

  static void swiglu(const float* gate, const float* up, float* y, std::size_t n) noexcept {
    std::size_t i = 0;
    for (; i + W <= n; i += W) {
      (silu(F::load_unaligned(gate + i)) * F::load_unaligned(up + i)).store_unaligned(y + i);
    }
    for (; i < n; ++i) y[i] = silu(gate[i]) * up[i];
  }

  static void rope(float* x, const float* cos, const float* sin, std::size_t half) noexcept {
    std::size_t i = 0;
    for (; i + W <= half; i += W) {
      const F x1 = F::load_unaligned(x + i), x2 = F::load_unaligned(x + half + i);
      const F c = F::load_unaligned(cos + i), s = F::load_unaligned(sin + i);
      fused_multiply_sub<Arch>(x1, c, x2 * s).store_unaligned(x + i);
      fused_multiply_add<Arch>(x2, c, x1 * s).store_unaligned(x + half + i);
    }
    for (; i < half; ++i) {
      const float x1 = x[i], x2 = x[i + half];
      x[i] = x1 * cos[i] - x2 * sin[i];
      x[i + half] = x2 * cos[i] + x1 * sin[i];
    }
  }

  static void f32_to_f16(const float* in, std::uint16_t* out, std::size_t n) noexcept {
    std::size_t i = 0;
    for (; i + W <= n; i += W) HalfIo<Arch>::store_f16(out + i, F::load_unaligned(in + i));
    for (; i < n; ++i) out[i] = f32_to_f16_bits(in[i]);
  }

  static void f16_to_f32(const std::uint16_t* in, float* out, std::size_t n) noexcept {
    std::size_t i = 0;
    for (; i + W <= n; i += W) HalfIo<Arch>::load_f16(in + i).store_unaligned(out + i);
    for (; i < n; ++i) out[i] = f16_bits_to_f32(in[i]);
  }

  // Round to nearest even in integer arithmetic (bit-exact with f32_to_bf16_bits, denormals included,
  // which the AVX-512 BF16 instruction would flush).
  static void f32_to_bf16(const float* in, std::uint16_t* out, std::size_t n) noexcept {
    const U one(1u), rounding(0x7fffu), quiet(0x40u);
    std::size_t i = 0;
    for (; i + W <= n; i += W) {
      const F v = F::load_unaligned(in + i);
      const U bits = xsimd::bitwise_cast<U>(v);
      const U rounded = (bits + rounding + ((bits >> 16) & one)) >> 16;
      const U nan = (bits >> 16) | quiet;
      // A float compare: xsimd 8.1 emulates unsigned 32-bit compares on AVX2.
      const F chosen = xsimd::select(xsimd::isnan(v), xsimd::bitwise_cast<F>(nan), xsimd::bitwise_cast<F>(rounded));
      HalfIo<Arch>::store_u16(out + i, xsimd::bitwise_cast<U>(chosen));
    }
    for (; i < n; ++i) out[i] = f32_to_bf16_bits(in[i]);
  }

  static void bf16_to_f32(const std::uint16_t* in, float* out, std::size_t n) noexcept {
    std::size_t i = 0;
    for (; i + W <= n; i += W) xsimd::bitwise_cast<F>(HalfIo<Arch>::load_u16(in + i) << 16).store_unaligned(out + i);
    for (; i < n; ++i) out[i] = bf16_bits_to_f32(in[i]);
  }
};

template <class Arch>
constexpr CoreKernelTable make_core_kernel_table(IsaLevel level) {
  using K = CoreKernels<Arch>;
  return CoreKernelTable{level,   K::dot,        K::rmsnorm,    K::softmax,     K::silu,        K::swiglu,
                         K::rope, K::f32_to_f16, K::f16_to_f32, K::f32_to_bf16, K::bf16_to_f32, eigen_matmul};
}

}  // namespace persona::detail
