// The quantized products at the AVX-512 level (F/CD/BW/DQ/VL): compiled with its own flags, used only
// when the CPU has them. Integer dot products use maddubs; quant_avx512_vnni.cpp is the same level with
// VNNI.
#include "quant/kernels/quant_kernels.hpp"

namespace persona::detail {

constinit const QuantKernelTable kQuantAvx512Kernels = make_quant_kernel_table<Avx512Arch>();

}  // namespace persona::detail
