// The quantized products at the AVX-512 level with VNNI: the avx512 flags plus -mavx512vnni; integer dot
// products use vpdpbusd.
#include "quant/kernels/quant_kernels.hpp"

namespace persona::detail {

constinit const QuantKernelTable kQuantAvx512VnniKernels = make_quant_kernel_table<Avx512VnniArch>();

}  // namespace persona::detail
