// AVX2 + FMA + F16C level: compiled with -mavx2 -mfma -mf16c, used only when the CPU has them.
#define PERSONA_ARCH_EIGEN persona_eigen_avx2
#include "arch/arch_kernels.hpp"
#include "arch/attention_kernels.hpp"
#include "arch/core_kernels.hpp"
#include "arch/quant_kernels.hpp"
#include "arch/router_kernels.hpp"

namespace persona::detail {
namespace {
constexpr CoreKernelTable kCore = make_core_kernel_table<Avx2Arch>(IsaLevel::avx2);
constexpr QuantKernelTable kQuant = make_quant_kernel_table<Avx2Arch>();
constexpr RouterKernelTable kRouter = make_router_kernel_table<Avx2Arch>();
constexpr AttentionKernelTable kAttention = make_attention_kernel_table<Avx2Arch>();
}  // namespace

const ArchKernels& avx2_kernels() noexcept {
  static constexpr ArchKernels kKernels{kCore, kQuant, kRouter, kAttention};
  return kKernels;
}

}  // namespace persona::detail
