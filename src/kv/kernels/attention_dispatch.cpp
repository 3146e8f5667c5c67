// Which attention table each SIMD level runs.
#include "core/kernel_dispatch.hpp"
#include "kv/kernels/attention_kernel_table.hpp"

namespace persona::detail {
namespace {

constexpr KernelLevels<AttentionKernelTable> kLevels{kAttentionReferenceKernels, PERSONA_IF_AVX2(kAttentionAvx2Kernels),
                                                     PERSONA_IF_AVX512(kAttentionAvx512Kernels)};

}  // namespace

const AttentionKernelTable& attention_kernels(IsaLevel level) noexcept { return kernels_for(kLevels, level); }

}  // namespace persona::detail
