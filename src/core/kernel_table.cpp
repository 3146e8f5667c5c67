#include "core/kernel_table.hpp"

namespace persona::detail {

const CoreKernelTable& core_kernels(IsaLevel level) noexcept {
  switch (level) {
#if PERSONA_HAVE_AVX512_VNNI_KERNELS
    case IsaLevel::avx512_vnni: return avx512_vnni_core_kernels();
#endif
#if PERSONA_HAVE_AVX512_KERNELS
    case IsaLevel::avx512: return avx512_core_kernels();
#endif
#if PERSONA_HAVE_AVX2_KERNELS
    case IsaLevel::avx2: return avx2_core_kernels();
#endif
    default: return scalar_core_kernels();
  }
}

const CoreKernelTable& core_kernels() { return core_kernels(active_isa_level()); }

}  // namespace persona::detail
