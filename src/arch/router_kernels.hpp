// The routing kernels written once over xsimd batches; each src/arch/<isa>.cpp instantiates the table
// with make_router_kernel_table<Arch>(). The scalar oracles are in src/moe/router_reference.cpp.
#pragma once

#include "arch/x86_io.hpp"
#include "moe/router_kernel_table.hpp"

#include <xsimd/xsimd.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>

namespace persona::detail {

template <class Arch>
struct RouterKernels {
  using F = xsimd::batch<float, Arch>;
  static constexpr std::size_t L = F::size;

  static bool all_finite(const float* x, std::size_t n) noexcept {
    const F max(std::numeric_limits<float>::max());
    auto finite = F(0.0f) <= max;
    std::size_t i = 0;
    for (; i + L <= n; i += L) finite = finite && (xsimd::abs(F::load_unaligned(x + i)) <= max);  // NaN: false
    bool all = xsimd::all(finite);
    for (; i < n; ++i) all = all && std::isfinite(x[i]);
    return all;
  }

  static void sigmoid(const float* x, float* y, std::size_t n) noexcept {
    std::size_t i = 0;
    for (; i + L <= n; i += L) (F(1.0f) / (F(1.0f) + xsimd::exp(-F::load_unaligned(x + i)))).store_unaligned(y + i);
    for (; i < n; ++i) y[i] = 1.0f / (1.0f + std::exp(-x[i]));
  }

  // Two passes. First, lane-wise maxima over ceil(k / L) interleaved sets of vectors: m L values, each
  // an element, so their k-th largest is a lower bound of the answer's. Then a vector compare against
  // that bound (or, once k are held, the current k-th best) rejects most vectors at once; the few lanes
  // that pass are inserted one by one in index order, exactly as the oracle does. With a mask the bound
  // could come from an excluded expert, so masked calls skip the first pass.
  static std::size_t select_top_k(const float* values, const std::uint8_t* allowed, std::size_t n, std::size_t k,
                                  std::int32_t* ids, float* best) noexcept {
    const std::size_t vectors = n / L, sets = (k + L - 1) / L;
    float bound = -std::numeric_limits<float>::infinity();
    if (allowed == nullptr && sets <= kMaxSets && vectors >= sets) {
      F maxima[kMaxSets];
      for (std::size_t m = 0; m < sets; ++m) maxima[m] = F::load_unaligned(values + m * L);
      for (std::size_t v = sets; v < vectors; ++v) {
        maxima[v % sets] = xsimd::max(maxima[v % sets], F::load_unaligned(values + v * L));
      }
      alignas(64) float lane_maxima[kMaxSets * L] = {};
      for (std::size_t m = 0; m < sets; ++m) maxima[m].store_aligned(lane_maxima + m * L);
      std::nth_element(lane_maxima, lane_maxima + (k - 1), lane_maxima + sets * L, std::greater<float>());
      bound = lane_maxima[k - 1];
    }
    std::size_t count = 0, i = 0;
    alignas(64) float lanes[L];
    for (; i + L <= n; i += L) {
      const F v = F::load_unaligned(values + i);
      if (count == k ? !xsimd::any(v > F(best[k - 1])) : !xsimd::any(v >= F(bound))) continue;
      v.store_aligned(lanes);
      for (std::size_t j = 0; j < L; ++j) {
        if (lanes[j] >= bound && (allowed == nullptr || allowed[i + j] != 0)) {
          count = insert_candidate(lanes[j], static_cast<std::int32_t>(i + j), count, k, ids, best);
        }
      }
    }
    for (; i < n; ++i) {
      if (values[i] >= bound && (allowed == nullptr || allowed[i] != 0)) {
        count = insert_candidate(values[i], static_cast<std::int32_t>(i), count, k, ids, best);
      }
    }
    return count;
  }

  static constexpr std::size_t kMaxSets = 8;
};

template <class Arch>
constexpr RouterKernelTable make_router_kernel_table() {
  return {RouterKernels<Arch>::all_finite, RouterKernels<Arch>::sigmoid, RouterKernels<Arch>::select_top_k};
}

}  // namespace persona::detail
