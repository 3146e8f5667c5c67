// Which core table each SIMD level runs.
#include "core/kernel_dispatch.hpp"
#include "core/kernels/core_kernel_table.hpp"

namespace persona::detail {
namespace {

constexpr KernelLevels<CoreKernelTable> kLevels{kCoreScalarKernels, PERSONA_IF_AVX2(kCoreAvx2Kernels),
                                                PERSONA_IF_AVX512(kCoreAvx512Kernels)};

}  // namespace

const CoreKernelTable& core_kernels(IsaLevel level) noexcept { return kernels_for(kLevels, level); }

const CoreKernelTable& core_kernels() { return active_kernels(kLevels); }

}  // namespace persona::detail
