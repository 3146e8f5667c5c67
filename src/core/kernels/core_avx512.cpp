// The core kernels at the AVX-512 level (F/CD/BW/DQ/VL): compiled with its own flags, used only when the
// CPU has them, and at the avx512_vnni level too (core has no integer dot products for VNNI to speed up).
#define PERSONA_ARCH_EIGEN persona_eigen_avx512
#include "core/kernels/core_kernels.hpp"

namespace persona::detail {

constinit const CoreKernelTable kCoreAvx512Kernels = make_core_kernel_table<Avx512Arch>(IsaLevel::avx512);

}  // namespace persona::detail
