// AVX-512 level (F/CD/BW/DQ/VL): compiled with its own flags, used only when the CPU has them. Integer
// dot products use maddubs; src/arch/avx512_vnni.cpp is the same level with VNNI.
#define PERSONA_ARCH_EIGEN persona_eigen_avx512
#include "arch/arch_kernels.hpp"
#include "arch/attention_kernels.hpp"
#include "arch/core_kernels.hpp"
#include "arch/quant_kernels.hpp"
#include "arch/router_kernels.hpp"

namespace persona::detail {
namespace {
constexpr CoreKernelTable kCore = make_core_kernel_table<Avx512Arch>(IsaLevel::avx512);
constexpr QuantKernelTable kQuant = make_quant_kernel_table<Avx512Arch>();
constexpr RouterKernelTable kRouter = make_router_kernel_table<Avx512Arch>();
constexpr AttentionKernelTable kAttention = make_attention_kernel_table<Avx512Arch>();
}  // namespace

const ArchKernels& avx512_kernels() noexcept {
  static constexpr ArchKernels kKernels{kCore, kQuant, kRouter, kAttention};
  return kKernels;
}

}  // namespace persona::detail
