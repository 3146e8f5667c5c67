// The routing kernels at the AVX2 + FMA + F16C level: compiled with -mavx2 -mfma -mf16c, used only when
// the CPU has them.
#include "moe/kernels/router_kernels.hpp"

namespace persona::detail {

constinit const RouterKernelTable kRouterAvx2Kernels = make_router_kernel_table<Avx2Arch>();

}  // namespace persona::detail
