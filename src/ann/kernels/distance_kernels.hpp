// The distance kernels written once over xsimd::batch<float, Arch>, each with a scalar tail, on core's x86
// primitives. Each distance_<level>.cpp instantiates the table with make_distance_kernel_table<Arch>();
// the scalar oracles are in distance_reference.cpp.
#pragma once

#include "ann/kernels/distance_kernel_table.hpp"
#include "core/kernels/dot_kernel.hpp"
#include "core/kernels/x86_io.hpp"

#include <xsimd/xsimd.hpp>

#include <cstddef>
#include <cstdint>

namespace persona::detail {

template <class Arch>
struct DistanceKernels {
  using F = xsimd::batch<float, Arch>;
  static constexpr std::size_t W = F::size;

  // Four independent accumulators hide the FMA latency.
  static float squared_l2(const float* a, const float* b, std::size_t n) noexcept {
    F acc0(0.0f), acc1(0.0f), acc2(0.0f), acc3(0.0f);
    std::size_t i = 0;
    const auto step = [&](F& acc, std::size_t at) {
      const F d = F::load_unaligned(a + at) - F::load_unaligned(b + at);
      acc = fused_multiply_add<Arch>(d, d, acc);
    };
    for (; i + 4 * W <= n; i += 4 * W) {
      step(acc0, i);
      step(acc1, i + W);
      step(acc2, i + 2 * W);
      step(acc3, i + 3 * W);
    }
    for (; i + W <= n; i += W) step(acc0, i);
    float sum = xsimd::hadd((acc0 + acc1) + (acc2 + acc3));
    for (; i < n; ++i) sum += (a[i] - b[i]) * (a[i] - b[i]);
    return sum;
  }

  static float dot_i8(const float* a, const std::int8_t* b, std::size_t n) noexcept {
    F acc0(0.0f), acc1(0.0f), acc2(0.0f), acc3(0.0f);
    std::size_t i = 0;
    for (; i + 4 * W <= n; i += 4 * W) {
      acc0 = fused_multiply_add<Arch>(F::load_unaligned(a + i), load_i8_as_f32<Arch>(b + i), acc0);
      acc1 = fused_multiply_add<Arch>(F::load_unaligned(a + i + W), load_i8_as_f32<Arch>(b + i + W), acc1);
      acc2 = fused_multiply_add<Arch>(F::load_unaligned(a + i + 2 * W), load_i8_as_f32<Arch>(b + i + 2 * W), acc2);
      acc3 = fused_multiply_add<Arch>(F::load_unaligned(a + i + 3 * W), load_i8_as_f32<Arch>(b + i + 3 * W), acc3);
    }
    for (; i + W <= n; i += W)
      acc0 = fused_multiply_add<Arch>(F::load_unaligned(a + i), load_i8_as_f32<Arch>(b + i), acc0);
    float sum = xsimd::hadd((acc0 + acc1) + (acc2 + acc3));
    for (; i < n; ++i) sum += a[i] * static_cast<float>(b[i]);
    return sum;
  }
};

template <class Arch>
constexpr DistanceKernelTable make_distance_kernel_table() {
  return DistanceKernelTable{dot_kernel<Arch>, DistanceKernels<Arch>::squared_l2, DistanceKernels<Arch>::dot_i8};
}

}  // namespace persona::detail
