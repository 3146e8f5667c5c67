// The attention kernel at the AVX2 + FMA + F16C level: compiled with -mavx2 -mfma -mf16c, used only when
// the CPU has them.
#include "kv/kernels/attention_kernels.hpp"

namespace persona::detail {

constinit const AttentionKernelTable kAttentionAvx2Kernels = make_attention_kernel_table<Avx2Arch>();

}  // namespace persona::detail
