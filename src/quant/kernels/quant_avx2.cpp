// The quantized products at the AVX2 + FMA + F16C level: compiled with -mavx2 -mfma -mf16c, used only
// when the CPU has them. Integer dot products use maddubs.
#include "quant/kernels/quant_kernels.hpp"

namespace persona::detail {

constinit const QuantKernelTable kQuantAvx2Kernels = make_quant_kernel_table<Avx2Arch>();

}  // namespace persona::detail
