// The routing kernels one SIMD level provides: sigmoid scores and top-k selection, over validated input.
// The generic kernels are in router_kernels.hpp, the oracles in router_reference.cpp (this folder).
#pragma once

#include "persona/core/cpu_features.hpp"

#include <cstddef>
#include <cstdint>

namespace persona::detail {

// Sigmoid inputs are clamped to [-kSigmoidLimit, kSigmoidLimit] on every path: beyond it the float exp of
// the vector kernels overflows (scores of exactly 0) where the double oracle would still rank them.
inline constexpr float kSigmoidLimit = 80.0f;

struct RouterKernelTable {
  // Whether every x[i], i < n, is finite (no NaN, no infinity).
  bool (*all_finite)(const float* x, std::size_t n) noexcept;
  // y[i] = 1 / (1 + exp(-clamp(x[i]))), i < n; y may equal x.
  void (*sigmoid)(const float* x, float* y, std::size_t n) noexcept;
  // The k largest values[i] with allowed[i] != 0 (allowed may be null: all), best first, equal values in
  // index order: ids[0..count) and their values best[0..count); returns count (< k when fewer are allowed).
  std::size_t (*select_top_k)(const float* values, const std::uint8_t* allowed, std::size_t n, std::size_t k,
                              std::int32_t* ids, float* best) noexcept;
};

// Inserts candidate (value, id) into the sorted list best/ids of `count` (at most k) entries, ids
// increasing over the candidates: an equal value never displaces an earlier one. Returns the new count.
inline std::size_t insert_candidate(float value, std::int32_t id, std::size_t count, std::size_t k, std::int32_t* ids,
                                    float* best) noexcept {
  if (count == k && !(value > best[k - 1])) return count;
  std::size_t pos = count < k ? count : k - 1;
  while (pos > 0 && value > best[pos - 1]) {
    best[pos] = best[pos - 1];
    ids[pos] = ids[pos - 1];
    --pos;
  }
  best[pos] = value;
  ids[pos] = id;
  return count < k ? count + 1 : count;
}

// The oracles, which the scalar level runs.
const RouterKernelTable& reference_router_kernels() noexcept;
// The kernels of one level (router_dispatch.cpp); the level must be in supported_isa_levels().
const RouterKernelTable& router_kernels(IsaLevel level) noexcept;

// The table of each level, for router_dispatch.cpp: the oracles (router_reference.cpp) and one per
// router_<level>.cpp, of which only the levels this build compiles exist. No VNNI table: the avx512_vnni
// level runs the avx512 one.
extern const RouterKernelTable kRouterReferenceKernels;
extern const RouterKernelTable kRouterAvx2Kernels;
extern const RouterKernelTable kRouterAvx512Kernels;

}  // namespace persona::detail
