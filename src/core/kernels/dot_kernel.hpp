// The dot product kernel over xsimd::batch<float, Arch>, with a scalar tail: core's dot and the inner
// product of ann's distance table, one kernel for both.
#pragma once

#include "core/kernels/x86_io.hpp"

#include <xsimd/xsimd.hpp>

#include <cstddef>

namespace persona::detail {

// sum a[i] * b[i], i < n. Four independent accumulators hide the FMA latency.
template <class Arch>
float dot_kernel(const float* a, const float* b, std::size_t n) noexcept {
  using F = xsimd::batch<float, Arch>;
  constexpr std::size_t W = F::size;
  F acc0(0.0f), acc1(0.0f), acc2(0.0f), acc3(0.0f);
  std::size_t i = 0;
  for (; i + 4 * W <= n; i += 4 * W) {
    acc0 = fused_multiply_add<Arch>(F::load_unaligned(a + i), F::load_unaligned(b + i), acc0);
    acc1 = fused_multiply_add<Arch>(F::load_unaligned(a + i + W), F::load_unaligned(b + i + W), acc1);
    acc2 = fused_multiply_add<Arch>(F::load_unaligned(a + i + 2 * W), F::load_unaligned(b + i + 2 * W), acc2);
    acc3 = fused_multiply_add<Arch>(F::load_unaligned(a + i + 3 * W), F::load_unaligned(b + i + 3 * W), acc3);
  }
  for (; i + W <= n; i += W) acc0 = fused_multiply_add<Arch>(F::load_unaligned(a + i), F::load_unaligned(b + i), acc0);
  float sum = xsimd::hadd((acc0 + acc1) + (acc2 + acc3));
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

}  // namespace persona::detail
