// The distance kernels at the AVX2 + FMA + F16C level: compiled with -mavx2 -mfma -mf16c, used only when
// the CPU has them.
#include "ann/kernels/distance_kernels.hpp"

namespace persona::detail {

constinit const DistanceKernelTable kDistanceAvx2Kernels = make_distance_kernel_table<Avx2Arch>();

}  // namespace persona::detail
