// The routing kernels written once over xsimd batches; each src/arch/<isa>.cpp instantiates the table
// with make_router_kernel_table<Arch>(). The scalar oracles are in src/moe/router_reference.cpp.
#pragma once

#include "arch/x86_io.hpp"
#include "moe/router_kernel_table.hpp"

#include <xsimd/xsimd.hpp>

#include <cstdint>
#include <cstring>

namespace persona::detail {

template <class Arch>
struct RouterKernels {
  using F = xsimd::batch<float, Arch>;
  static constexpr std::size_t L = F::size;

  static void sigmoid(const float* x, float* y, std::size_t n) noexcept {
    std::size_t i = 0;
    for (; i + L <= n; i += L) (F(1.0f) / (F(1.0f) + xsimd::exp(-F::load_unaligned(x + i)))).store_unaligned(y + i);
    for (; i < n; ++i) y[i] = 1.0f / (1.0f + std::exp(-x[i]));
  }

  // A vector compare against the current k-th best rejects most candidates at once; the few that beat
  // it are inserted one by one in index order, exactly as the oracle does.
  static std::size_t select_top_k(const float* values, const std::uint8_t* allowed, std::size_t n, std::size_t k,
                                  std::int32_t* ids, float* best) noexcept {
    std::size_t count = 0, i = 0;
    alignas(64) float lanes[L];
    for (; i + L <= n; i += L) {
      const F v = F::load_unaligned(values + i);
      if (count == k && !xsimd::any(v > F(best[k - 1]))) continue;
      v.store_aligned(lanes);
      for (std::size_t j = 0; j < L; ++j) {
        if (allowed == nullptr || allowed[i + j] != 0) {
          count = insert_candidate(lanes[j], static_cast<std::int32_t>(i + j), count, k, ids, best);
        }
      }
    }
    for (; i < n; ++i) {
      if (allowed == nullptr || allowed[i] != 0) {
        count = insert_candidate(values[i], static_cast<std::int32_t>(i), count, k, ids, best);
      }
    }
    return count;
  }
};

template <class Arch>
constexpr RouterKernelTable make_router_kernel_table() {
  return {RouterKernels<Arch>::sigmoid, RouterKernels<Arch>::select_top_k};
}

}  // namespace persona::detail
