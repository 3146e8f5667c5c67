// The kernel tables of one compiled SIMD level, gathered in one struct that each src/arch/<isa>.cpp
// defines, and the one place that maps a level to them; the component dispatchers (core_kernels,
// quant_kernels, ...) fall back to their scalar tables where this returns null.
#pragma once

#include "persona/core/cpu_features.hpp"

namespace persona::detail {

struct CoreKernelTable;
struct QuantKernelTable;
struct RouterKernelTable;
struct AttentionKernelTable;

struct ArchKernels {
  const CoreKernelTable& core;
  const QuantKernelTable& quant;
  const RouterKernelTable& router;
  const AttentionKernelTable& attention;
};

// The tables of `level`, or null where this build has no SIMD kernels for it (the scalar level).
const ArchKernels* arch_kernels(IsaLevel level) noexcept;

const ArchKernels& avx2_kernels() noexcept;
const ArchKernels& avx512_kernels() noexcept;
const ArchKernels& avx512_vnni_kernels() noexcept;

}  // namespace persona::detail
