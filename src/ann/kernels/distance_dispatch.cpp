// Which distance table each SIMD level runs.
#include "ann/kernels/distance_kernel_table.hpp"
#include "core/kernel_dispatch.hpp"

namespace persona::detail {
namespace {

constexpr KernelLevels<DistanceKernelTable> kLevels{kDistanceReferenceKernels, PERSONA_IF_AVX2(kDistanceAvx2Kernels),
                                                    PERSONA_IF_AVX512(kDistanceAvx512Kernels)};

}  // namespace

const DistanceKernelTable& distance_kernels(IsaLevel level) noexcept { return kernels_for(kLevels, level); }

}  // namespace persona::detail
