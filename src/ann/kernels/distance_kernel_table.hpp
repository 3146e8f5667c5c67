// The distance kernels of the vector indexes that one SIMD level provides: over validated raw pointers
// and a length, noexcept. The inner product is core's dot kernel; the squared L2 distance and the dot
// product with int8 rows are ann's own.
#pragma once

#include "persona/core/cpu_features.hpp"

#include <cstddef>
#include <cstdint>

namespace persona::detail {

struct DistanceKernelTable {
  // sum a[i] * b[i], i < n (core's dot kernel at the same level).
  float (*dot)(const float* a, const float* b, std::size_t n) noexcept;
  // sum (a[i] - b[i])^2, i < n: the L2 distance, squared.
  float (*squared_l2)(const float* a, const float* b, std::size_t n) noexcept;
  // sum a[i] * b[i], i < n, over float a and signed bytes b: the int8 rows of HnswIndex.
  float (*dot_i8)(const float* a, const std::int8_t* b, std::size_t n) noexcept;
};

// The plain scalar oracles (also the scalar level); what the *_ref public functions run.
const DistanceKernelTable& reference_distance_kernels() noexcept;
// The kernels of one level; the level must be in supported_isa_levels().
const DistanceKernelTable& distance_kernels(IsaLevel level) noexcept;

// The table of each level, for distance_dispatch.cpp: one per distance_<level>.cpp, of which only the
// levels this build compiles exist. No VNNI table: the avx512_vnni level runs the avx512 one.
extern const DistanceKernelTable kDistanceReferenceKernels;
extern const DistanceKernelTable kDistanceAvx2Kernels;
extern const DistanceKernelTable kDistanceAvx512Kernels;

}  // namespace persona::detail
