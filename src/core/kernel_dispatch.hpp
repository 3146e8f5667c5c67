// The dispatch mechanism every kernel family uses: the tables of one family's SIMD levels and the table a
// level runs. A family (its component's kernels/ folder) defines one table per level it compiles and
// gathers them in a KernelLevels in its <family>_dispatch.cpp; core knows none of the families.
#pragma once

#include "persona/core/cpu_features.hpp"

namespace persona::detail {

// A table is null where this build does not compile its level (PERSONA_IF_* below), or, for avx512_vnni,
// where the family has no VNNI kernels.
template <class Table>
struct KernelLevels {
  const Table& scalar;
  const Table* avx2 = nullptr;
  const Table* avx512 = nullptr;
  const Table* avx512_vnni = nullptr;
};

// The table of `level`, or of the best level below it that the family has.
template <class Table>
constexpr const Table& kernels_for(const KernelLevels<Table>& levels, IsaLevel level) noexcept {
  switch (level) {
    case IsaLevel::avx512_vnni:
      if (levels.avx512_vnni != nullptr) return *levels.avx512_vnni;
      [[fallthrough]];
    case IsaLevel::avx512:
      if (levels.avx512 != nullptr) return *levels.avx512;
      [[fallthrough]];
    case IsaLevel::avx2:
      if (levels.avx2 != nullptr) return *levels.avx2;
      [[fallthrough]];
    case IsaLevel::scalar: break;
  }
  return levels.scalar;
}

// The table of active_isa_level(), read on every call (one atomic load) rather than cached, so that
// set_isa_level and ScopedIsaLevel take effect at once; the first call applies PERSONA_ISA.
template <class Table>
const Table& active_kernels(const KernelLevels<Table>& levels) {
  return kernels_for(levels, active_isa_level());
}

}  // namespace persona::detail

// `&table` where this build compiles the level, else null: for the KernelLevels of a family. The build
// (persona_add_kernel_family in cmake/PersonaTargets.cmake) defines PERSONA_HAVE_<LEVEL>_KERNELS for the
// levels it compiles; the CPU probe (src/core/cpu_features.cpp) never reports a level above them.
#if PERSONA_HAVE_AVX2_KERNELS
#define PERSONA_IF_AVX2(table) (&(table))
#else
#define PERSONA_IF_AVX2(table) nullptr
#endif
#if PERSONA_HAVE_AVX512_KERNELS
#define PERSONA_IF_AVX512(table) (&(table))
#else
#define PERSONA_IF_AVX512(table) nullptr
#endif
#if PERSONA_HAVE_AVX512_VNNI_KERNELS
#define PERSONA_IF_AVX512_VNNI(table) (&(table))
#else
#define PERSONA_IF_AVX512_VNNI(table) nullptr
#endif
