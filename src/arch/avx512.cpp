// AVX-512 level (F/CD/BW/DQ/VL): compiled with its own flags, used only when the CPU has them. Integer
// dot products use maddubs; src/arch/avx512_vnni.cpp is the same level with VNNI.
#define PERSONA_ARCH_EIGEN persona_eigen_avx512
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

const CoreKernelTable& avx512_core_kernels() noexcept { return kCore; }
const QuantKernelTable& avx512_quant_kernels() noexcept { return kQuant; }
const RouterKernelTable& avx512_router_kernels() noexcept { return kRouter; }
const AttentionKernelTable& avx512_attention_kernels() noexcept { return kAttention; }

}  // namespace persona::detail
