// The routing kernels written once over xsimd batches; each router_<level>.cpp instantiates the table
// with make_router_kernel_table<Arch>(). The scalar oracles are in router_reference.cpp.
#pragma once

#include "core/kernels/x86_io.hpp"
#include "moe/kernels/router_kernel_table.hpp"

#include <xsimd/xsimd.hpp>

#include <algorithm>
#include <array>
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
    const F limit(kSigmoidLimit);
    for (; i + L <= n; i += L) {
      const F v = xsimd::min(xsimd::max(F::load_unaligned(x + i), -limit), limit);
      (F(1.0f) / (F(1.0f) + xsimd::exp(-v))).store_unaligned(y + i);
    }
    for (; i < n; ++i) y[i] = 1.0f / (1.0f + std::exp(-std::clamp(x[i], -kSigmoidLimit, kSigmoidLimit)));
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
    if (allowed == nullptr && vectors >= sets && sets == 1) {
      F maxima = F::load_unaligned(values);
      for (std::size_t v = 1; v < vectors; ++v) maxima = xsimd::max(maxima, F::load_unaligned(values + v * L));
      alignas(64) float lane_maxima[L];
      maxima.store_aligned(lane_maxima);
      std::nth_element(lane_maxima, lane_maxima + (k - 1), lane_maxima + L, std::greater<float>());
      bound = lane_maxima[k - 1];
    } else if (allowed == nullptr && vectors >= sets && sets <= kMaxSets) {
      std::array<float, kMaxSets * L> lane_maxima;
      for (std::size_t m = 0; m < sets; ++m) {
        F maxima = F::load_unaligned(values + m * L);
        for (std::size_t v = m + sets; v < vectors; v += sets) {
          maxima = xsimd::max(maxima, F::load_unaligned(values + v * L));
        }
        maxima.store_unaligned(lane_maxima.data() + m * L);
      }
      const auto end = lane_maxima.begin() + static_cast<std::ptrdiff_t>(sets * L);
      std::nth_element(lane_maxima.begin(), lane_maxima.begin() + static_cast<std::ptrdiff_t>(k - 1), end,
                       std::greater<float>());
      bound = lane_maxima[k - 1];
    }
    if (allowed == nullptr && bound > -std::numeric_limits<float>::infinity()) {
      const std::size_t count = select_by_rank(values, n, k, bound, ids, best);
      if (count != kTooMany) return count;
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

  // The candidates at or above the bound (at least k of them), in index order, each placed by its rank
  // under (value descending, index ascending): the insertion's order without its data-dependent
  // branches. kTooMany when more than kMaxCandidates pass (many equal values).
  static constexpr std::size_t kMaxCandidates = 64;
  static constexpr std::size_t kTooMany = ~std::size_t{0};
  static std::size_t select_by_rank(const float* values, std::size_t n, std::size_t k, float bound, std::int32_t* ids,
                                    float* best) noexcept {
    alignas(64) float candidate[kMaxCandidates + L];
    std::int32_t index[kMaxCandidates];
    std::size_t m = 0, i = 0;
    for (; i + L <= n; i += L) {
      std::uint32_t bits = lane_bits<Arch>(F::load_unaligned(values + i) >= F(bound));
      while (bits != 0) {
        if (m == kMaxCandidates) return kTooMany;
        const auto j = static_cast<std::size_t>(__builtin_ctz(bits));
        bits &= bits - 1;
        candidate[m] = values[i + j];
        index[m++] = static_cast<std::int32_t>(i + j);
      }
    }
    for (; i < n; ++i) {
      if (values[i] >= bound) {
        if (m == kMaxCandidates) return kTooMany;
        candidate[m] = values[i];
        index[m++] = static_cast<std::int32_t>(i);
      }
    }
    // Pad to whole vectors with -inf, which ranks below every candidate.
    for (std::size_t p = m; p < (m + L - 1) / L * L; ++p) candidate[p] = -std::numeric_limits<float>::infinity();
    for (std::size_t c = 0; c < m; ++c) {
      const F value(candidate[c]);
      std::size_t rank = 0;
      for (std::size_t j = 0; j < m; j += L) {
        const F other = F::load_aligned(candidate + j);
        // Better: larger, or equal and earlier (candidates are in index order).
        const std::uint32_t larger = lane_bits<Arch>(other > value);
        const std::uint32_t equal = lane_bits<Arch>(other == value);
        const std::uint32_t earlier = c >= j + L ? (std::uint32_t{1} << L) - 1
                                      : c > j    ? (std::uint32_t{1} << (c - j)) - 1
                                                 : 0;
        rank += static_cast<std::size_t>(__builtin_popcount(larger | (equal & earlier)));
      }
      if (rank < k) {
        best[rank] = candidate[c];
        ids[rank] = index[c];
      }
    }
    return std::min(k, m);
  }

  static constexpr std::size_t kMaxSets = 8;
};

template <class Arch>
constexpr RouterKernelTable make_router_kernel_table() {
  return {RouterKernels<Arch>::all_finite, RouterKernels<Arch>::sigmoid, RouterKernels<Arch>::select_top_k};
}

}  // namespace persona::detail
