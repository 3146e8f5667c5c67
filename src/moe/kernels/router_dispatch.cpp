// Which routing table each SIMD level runs.
#include "core/kernel_dispatch.hpp"
#include "moe/kernels/router_kernel_table.hpp"

namespace persona::detail {
namespace {

constexpr KernelLevels<RouterKernelTable> kLevels{kRouterReferenceKernels, PERSONA_IF_AVX2(kRouterAvx2Kernels),
                                                  PERSONA_IF_AVX512(kRouterAvx512Kernels)};

}  // namespace

const RouterKernelTable& router_kernels(IsaLevel level) noexcept { return kernels_for(kLevels, level); }

}  // namespace persona::detail
