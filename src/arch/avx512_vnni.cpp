// AVX-512 with VNNI: the avx512 level's flags plus -mavx512vnni; integer dot products use vpdpbusd.
#define PERSONA_ARCH_EIGEN persona_eigen_avx512_vnni
#include "arch/arch_kernels.hpp"
#include "arch/attention_kernels.hpp"
#include "arch/core_kernels.hpp"
#include "arch/quant_kernels.hpp"
#include "arch/router_kernels.hpp"

namespace persona::detail {
namespace {
constexpr CoreKernelTable kCore = make_core_kernel_table<Avx512VnniArch>(IsaLevel::avx512_vnni);
constexpr QuantKernelTable kQuant = make_quant_kernel_table<Avx512VnniArch>();
constexpr RouterKernelTable kRouter = make_router_kernel_table<Avx512VnniArch>();
constexpr AttentionKernelTable kAttention = make_attention_kernel_table<Avx512VnniArch>();
}  // namespace

const ArchKernels& avx512_vnni_kernels() noexcept {
  static constexpr ArchKernels kKernels{kCore, kQuant, kRouter, kAttention};
  return kKernels;
}

}  // namespace persona::detail
