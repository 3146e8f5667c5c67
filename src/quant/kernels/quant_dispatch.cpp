// Which quantized-product table each SIMD level runs.
#include "core/kernel_dispatch.hpp"
#include "quant/kernels/quant_kernel_table.hpp"

namespace persona::detail {
namespace {

constexpr KernelLevels<QuantKernelTable> kLevels{kQuantReferenceKernels, PERSONA_IF_AVX2(kQuantAvx2Kernels),
                                                 PERSONA_IF_AVX512(kQuantAvx512Kernels),
                                                 PERSONA_IF_AVX512_VNNI(kQuantAvx512VnniKernels)};

}  // namespace

const QuantKernelTable& quant_kernels(IsaLevel level) noexcept { return kernels_for(kLevels, level); }

}  // namespace persona::detail
