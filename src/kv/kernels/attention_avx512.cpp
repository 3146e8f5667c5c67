// The attention kernel at the AVX-512 level (F/CD/BW/DQ/VL): compiled with its own flags, used only when
// the CPU has them, and at the avx512_vnni level too (attention has no integer dot products).
#include "kv/kernels/attention_kernels.hpp"

namespace persona::detail {

constinit const AttentionKernelTable kAttentionAvx512Kernels = make_attention_kernel_table<Avx512Arch>();

}  // namespace persona::detail
