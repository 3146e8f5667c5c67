// The distance kernels at the AVX-512 level (F/CD/BW/DQ/VL): compiled with its own flags, used only when
// the CPU has them, and at the avx512_vnni level too (float distances gain nothing from VNNI).
#include "ann/kernels/distance_kernels.hpp"

namespace persona::detail {

constinit const DistanceKernelTable kDistanceAvx512Kernels = make_distance_kernel_table<Avx512Arch>();

}  // namespace persona::detail
