// The core kernels at the AVX2 + FMA + F16C level: compiled with -mavx2 -mfma -mf16c, used only when the
// CPU has them.
#define PERSONA_ARCH_EIGEN persona_eigen_avx2
#include "core/kernels/core_kernels.hpp"

namespace persona::detail {

constinit const CoreKernelTable kCoreAvx2Kernels = make_core_kernel_table<Avx2Arch>(IsaLevel::avx2);

}  // namespace persona::detail
