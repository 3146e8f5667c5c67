#include "core/kernel_table.hpp"

#include "arch/arch_kernels.hpp"

namespace persona::detail {

const ArchKernels* arch_kernels(IsaLevel level) noexcept {
  switch (level) {
#if PERSONA_HAVE_AVX512_VNNI_KERNELS
    case IsaLevel::avx512_vnni: return &avx512_vnni_kernels();
#endif
#if PERSONA_HAVE_AVX512_KERNELS
    case IsaLevel::avx512: return &avx512_kernels();
#endif
#if PERSONA_HAVE_AVX2_KERNELS
    case IsaLevel::avx2: return &avx2_kernels();
#endif
    default: return nullptr;
  }
}

const CoreKernelTable& core_kernels(IsaLevel level) noexcept {
  const ArchKernels* arch = arch_kernels(level);
  return arch != nullptr ? arch->core : scalar_core_kernels();
}

const CoreKernelTable& core_kernels() { return core_kernels(active_isa_level()); }

}  // namespace persona::detail
