// The routing kernels at the AVX-512 level (F/CD/BW/DQ/VL): compiled with its own flags, used only when
// the CPU has them, and at the avx512_vnni level too (routing has no integer dot products).
#include "moe/kernels/router_kernels.hpp"

namespace persona::detail {

constinit const RouterKernelTable kRouterAvx512Kernels = make_router_kernel_table<Avx512Arch>();

}  // namespace persona::detail
